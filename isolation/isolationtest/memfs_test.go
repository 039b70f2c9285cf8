package isolationtest

import (
	"archive/tar"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"
)

func fsWith(t *testing.T, members []tarMember) *memFS {
	t.Helper()
	f := newMemFS(0, time.Now())
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Linkname: m.linkname, Size: int64(len(m.body))}
		if err := f.apply("/", tarEntry{hdr: hdr, data: []byte(m.body)}); err != nil {
			t.Fatalf("apply %v: %v", m, err)
		}
	}
	return f
}

func TestMemFSResolve(t *testing.T) {
	f := fsWith(t, []tarMember{
		{name: "a/b/", typ: tar.TypeDir, mode: 0o755},
		{name: "a/b/file", typ: tar.TypeReg, mode: 0o644, body: "x"},
		{name: "a/rel", typ: tar.TypeSymlink, linkname: "b"},
		{name: "a/abs", typ: tar.TypeSymlink, linkname: "/a/b/file"},
		{name: "a/up", typ: tar.TypeSymlink, linkname: "../../../../.."},
		{name: "loop1", typ: tar.TypeSymlink, linkname: "loop2"},
		{name: "loop2", typ: tar.TypeSymlink, linkname: "loop1"},
		{name: "dangling", typ: tar.TypeSymlink, linkname: "/nowhere/new"},
	})
	cases := []struct {
		path       string
		followLast bool
		want       string // canonical path; "" when an error is wanted
		exists     bool
		err        error
	}{
		{"/", true, "/", true, nil},
		{"/../..", true, "/", true, nil},
		{"/a/b/file", true, "/a/b/file", true, nil},
		{"/a/./b//file", true, "/a/b/file", true, nil},
		{"/a/rel/file", true, "/a/b/file", true, nil},
		{"/a/rel", false, "/a/rel", true, nil},
		{"/a/rel", true, "/a/b", true, nil},
		{"/a/abs", true, "/a/b/file", true, nil},
		{"/a/up/a/b/file", true, "/a/b/file", true, nil},
		{"/a/rel/../b/file", true, "/a/b/file", true, nil},
		{"/a/missing", true, "/a/missing", false, nil},
		{"/a/missing/deeper", true, "", false, fs.ErrNotExist},
		{"/a/b/file/under", true, "", false, errNotDir},
		{"/loop1", true, "", false, errTooManyLinks},
		{"/loop1", false, "/loop1", true, nil},
		{"/dangling", true, "", false, fs.ErrNotExist},
		{"relative", true, "", false, fs.ErrInvalid},
	}
	for _, tc := range cases {
		l, err := f.resolve(tc.path, tc.followLast)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("resolve(%q): %v, want %v", tc.path, err, tc.err)
			}
			continue
		}
		if err != nil || l.path != tc.want || (l.node != nil) != tc.exists {
			t.Errorf("resolve(%q, %v) = %q exists=%v, %v; want %q exists=%v", tc.path, tc.followLast, l.path, l.node != nil, err, tc.want, tc.exists)
		}
	}
}

func TestMemFSHardLinksAndUsage(t *testing.T) {
	f := fsWith(t, []tarMember{
		{name: "one", typ: tar.TypeReg, mode: 0o644, body: "12345"},
		{name: "two", typ: tar.TypeLink, linkname: "one"},
		{name: "three", typ: tar.TypeReg, mode: 0o644, body: "abc"},
	})
	if f.used != 8 {
		t.Fatalf("used %d, want 8 (a hard link holds no extra bytes)", f.used)
	}
	if err := f.writeFile("/two", []byte("1234567"), 0o600, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.readFile("/one"); string(got) != "1234567" || f.used != 10 {
		t.Fatalf("through the other link: %q, used %d", got, f.used)
	}
	if err := f.apply("/", tarEntry{hdr: &tar.Header{Name: "one", Typeflag: tar.TypeReg, Mode: 0o644}, data: nil}); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.readFile("/two"); string(got) != "1234567" || f.used != 10 {
		t.Fatalf("replacing one name must keep the other link: %q, used %d", got, f.used)
	}
	if err := f.apply("/", tarEntry{hdr: &tar.Header{Name: "two", Typeflag: tar.TypeSymlink, Linkname: "three"}}); err != nil {
		t.Fatal(err)
	}
	if f.used != 3 {
		t.Fatalf("used %d after the last link of a 7-byte file went, want 3", f.used)
	}
	bad := []tarEntry{
		{hdr: &tar.Header{Name: "dev", Typeflag: tar.TypeChar}},
		{hdr: &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "missing"}},
		{hdr: &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/"}},
		{hdr: &tar.Header{Name: "/", Typeflag: tar.TypeReg}},
	}
	for _, e := range bad {
		if err := f.apply("/", e); err == nil {
			t.Errorf("apply(%+v) accepted", e.hdr)
		}
	}
}

func TestMemFSArchiveRoot(t *testing.T) {
	f := fsWith(t, []tarMember{{name: "x/y", typ: tar.TypeReg, mode: 0o600, body: "y"}, {name: "l", typ: tar.TypeSymlink, linkname: "x"}})
	buf, err := f.archive("/")
	if err != nil {
		t.Fatal(err)
	}
	members, err := readTar(buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members {
		names = append(names, m.name)
	}
	if !slices.Equal(names, []string{"l", "x", "x/y"}) || members[0].linkname != "x" {
		t.Fatalf("archive of / = %v", members)
	}
	// A final symlink is archived as itself, not followed.
	buf, _ = f.archive("/l")
	members, _ = readTar(buf)
	if len(members) != 1 || members[0].typ != tar.TypeSymlink {
		t.Fatalf("archive of a symlink = %v", members)
	}
}

func TestRangeAllocator(t *testing.T) {
	a := newRangeAllocator(10, 12)
	var got []uint32
	for range 3 {
		v, ok := a.allocate()
		if !ok {
			t.Fatal("allocate failed with room left")
		}
		got = append(got, v)
	}
	if !slices.Equal(got, []uint32{10, 11, 12}) {
		t.Fatalf("allocated %v", got)
	}
	if !a.claim(99) || a.claim(99) {
		t.Fatal("claim of a value outside the range must succeed once")
	}
	if _, ok := a.allocate(); ok {
		t.Fatal("allocate succeeded with the range full")
	}
	a.release(11)
	a.release(11)
	a.release(99)
	if v, ok := a.allocate(); !ok || v != 11 {
		t.Fatalf("allocate after release = %d, %v", v, ok)
	}
	a.release(10)
	a.release(12)
	// The cursor moves on: the most recently released value is not handed out first.
	if v, _ := a.allocate(); v != 12 {
		t.Fatalf("allocate = %d, want 12 (next after the cursor)", v)
	}
}
