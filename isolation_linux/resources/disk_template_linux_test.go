package resources

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// templates lists the published templates and the temporary files under base.
func templates(t *testing.T, base string) (published, temporary []string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(base, templatesDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), templateTemp) {
			temporary = append(temporary, e.Name())
		} else {
			published = append(published, e.Name())
		}
	}
	return published, temporary
}

// fsck checks an unmounted image with e2fsck, which verifies every metadata checksum, and
// returns its UUID as dumpe2fs reads it from the primary superblock and from each backup at
// the given blocks (dumpe2fs verifies each one's checksum).
func fsck(t *testing.T, image string, backups ...int64) string {
	t.Helper()
	e2fsck, err := findTool("e2fsck")
	if err != nil {
		t.Skip(err)
	}
	if out, err := exec.Command(e2fsck, "-fn", image).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", image, err, out)
	}
	uuid := dumpUUID(t, image, "-h")
	for _, b := range backups {
		if u := dumpUUID(t, image, "-h", "-o", fmt.Sprintf("superblock=%d", b), "-o", "blocksize=4096"); u != uuid {
			t.Fatalf("%s: backup superblock at block %d has UUID %s, the primary %s", image, b, u, uuid)
		}
	}
	return uuid
}

func dumpUUID(t *testing.T, image string, args ...string) string {
	t.Helper()
	dumpe2fs, err := findTool("dumpe2fs")
	if err != nil {
		t.Skip(err)
	}
	out, err := exec.Command(dumpe2fs, append(args, image)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs %v: %v\n%s", args, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Filesystem UUID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("dumpe2fs printed no UUID:\n%s", out)
	return ""
}

// TestDiskTemplateCopies: copies of one template are sound filesystems, each with its own UUID,
// and stay sparse; this holds for sizes with backup superblocks too (a group is 128 MiB).
func TestDiskTemplateCopies(t *testing.T) {
	q, base := newTestQuota(t)
	for _, size := range []int64{8 << 20, 72 << 20, 1100 << 20} {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			tmpl, err := q.templateFor(size)
			if err != nil {
				t.Fatal(err)
			}
			if size > 128<<20 && len(tmpl.supers) < 3 {
				t.Fatalf("a %d-byte template has %d superblocks, want backups too", size, len(tmpl.supers))
			}
			var backups []int64
			for _, c := range tmpl.supers[1:] {
				backups = append(backups, c.off/blockSize)
			}
			uuids := map[string]bool{fsck(t, tmpl.path, backups...): true}
			for i := range 2 {
				image := filepath.Join(t.TempDir(), fmt.Sprintf("copy%d.img", i))
				if err := q.copyTemplate(tmpl, image); err != nil {
					t.Fatal(err)
				}
				uuid := fsck(t, image, backups...)
				if uuids[uuid] {
					t.Fatalf("copy %d has UUID %s, already seen", i, uuid)
				}
				uuids[uuid] = true
				var st unix.Stat_t
				if err := unix.Stat(image, &st); err != nil {
					t.Fatal(err)
				}
				if st.Size != size || st.Blocks*512 > 4<<20 {
					t.Fatalf("copy is %d bytes with %d on disk; want %d, sparse", st.Size, st.Blocks*512, size)
				}
			}
		})
	}
	if pub, tmp := templates(t, base); len(pub) != 3 || len(tmp) != 0 {
		t.Fatalf("templates %v, temporary files %v; want 3 and none", pub, tmp)
	}
}

// TestDiskTemplateVolumesDistinct: volumes made from one template mount side by side with
// distinct filesystem ids (statfs f_fsid derives from the UUID on ext4).
func TestDiskTemplateVolumesDistinct(t *testing.T) {
	q, base := newTestQuota(t)
	fsids := map[[2]int32]string{}
	for i := range 3 {
		dir, err := q.Dir(fmt.Sprintf("same-%d", i), 4*mib)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if other, dup := fsids[st.Fsid.Val]; dup {
			t.Fatalf("%s and %s have the same filesystem id", dir, other)
		}
		fsids[st.Fsid.Val] = dir
	}
	if pub, _ := templates(t, base); len(pub) != 1 {
		t.Fatalf("templates %v; want one for the one size", pub)
	}
}

// TestDiskTemplateConcurrentFirstUse: the first users of a size, in this process and in
// another owner of the base (as a second process would be), all get their volumes, and one
// template is published.
func TestDiskTemplateConcurrentFirstUse(t *testing.T) {
	q, base := newTestQuota(t)
	q2, err := NewDiskQuota(base)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		owner := q
		if i%2 == 1 {
			owner = q2
		}
		wg.Go(func() { _, errs[i] = owner.Dir(fmt.Sprintf("first-%d", i), 3*mib) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Dir first-%d: %v", i, err)
		}
	}
	if pub, tmp := templates(t, base); len(pub) != 1 || len(tmp) != 0 {
		t.Fatalf("templates %v, temporary files %v; want one and none", pub, tmp)
	}
}

// TestDiskTemplateRecovers: a template damaged on disk is discarded and formatted again, by a
// new owner (which checks it on load) and by one that had it loaded (whose copy then fails to
// mount); a template removed under a live owner is formatted again.
func TestDiskTemplateRecovers(t *testing.T) {
	q, base := newTestQuota(t)
	if _, err := q.Dir("a", 4*mib); err != nil {
		t.Fatal(err)
	}
	pub, _ := templates(t, base)
	if len(pub) != 1 {
		t.Fatalf("templates %v", pub)
	}
	path := filepath.Join(base, templatesDir, pub[0])
	damage := func(off int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name  string
		owner func() *DiskQuota
		spoil func()
	}{
		{"superblock zeroed, new owner", func() *DiskQuota {
			q2, err := NewDiskQuota(base)
			if err != nil {
				t.Fatal(err)
			}
			return q2
		}, func() { damage(0) }},
		// Block 1 holds the group descriptors: the superblock still checks out, mount fails.
		{"descriptors zeroed, loaded owner", func() *DiskQuota { return q }, func() { damage(4096) }},
		{"removed, loaded owner", func() *DiskQuota { return q }, func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			owner := st.owner()
			st.spoil()
			handle := fmt.Sprintf("after-%d", i)
			_, err := owner.Dir(handle, 4*mib)
			if err != nil {
				// A copy of a template whose damage only mounting finds fails once.
				t.Logf("first Dir after the template was %s: %v", st.name, err)
				if _, err = owner.Dir(handle, 4*mib); err != nil {
					t.Fatalf("Dir after the template was %s: %v", st.name, err)
				}
			}
			if pub, tmp := templates(t, base); len(pub) != 1 || len(tmp) != 0 {
				t.Fatalf("templates %v, temporary files %v; want one and none", pub, tmp)
			}
			fsck(t, path)
		})
	}
}

// TestDiskTemplatePrune: formatting a template removes crashed formats' leftovers, templates of
// another mkfs, and the least recently used beyond maxTemplates.
func TestDiskTemplatePrune(t *testing.T) {
	q, base := newTestQuota(t)
	key, err := q.mkfsKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, templatesDir)
	old := time.Now().Add(-time.Hour)
	touch := func(name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	name := func(size int, k string) string {
		return fmt.Sprintf("%s%d-%s%s", templatePrefix, size, k, templateSuffix)
	}
	touch(templateTemp+"crashed", old)
	touch(templateTemp+"in-progress", time.Now())
	touch(name(1<<20, "0123456789ab"), time.Now())
	var want []string
	for i := range maxTemplates + 2 {
		n := name((i+100)<<20, key)
		touch(n, old.Add(time.Duration(i)*time.Minute))
		if i >= 3 { // the three oldest go: 18 left plus the new one, 16 kept
			want = append(want, n)
		}
	}
	want = append(want, templateTemp+"in-progress")
	if _, err := q.Dir("new", 2*mib); err != nil {
		t.Fatal(err)
	}
	pub, tmp := templates(t, base)
	got := append([]string{}, tmp...)
	for _, p := range pub {
		if p != name(7<<20, key) { // the one Dir formatted: 2 MiB + 1/32 + 4 MiB, rounded up to 1 MiB
			got = append(got, p)
		}
	}
	var wantSet, gotSet = map[string]bool{}, map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	for _, g := range got {
		gotSet[g] = true
	}
	if len(pub) != maxTemplates || !reflect.DeepEqual(wantSet, gotSet) {
		t.Fatalf("after pruning: %d templates %v, temporary %v; want %d: %v", len(pub), pub, tmp, maxTemplates, want)
	}
}

func TestBackupGroups(t *testing.T) {
	sb := func(compat, roCompat uint32, bgs ...uint32) *[sbSize]byte {
		var b [sbSize]byte
		binary.LittleEndian.PutUint32(b[sbFeatureCompat:], compat)
		binary.LittleEndian.PutUint32(b[sbFeatureROCompat:], roCompat)
		for i, g := range bgs {
			binary.LittleEndian.PutUint32(b[sbBackupBGs+4*i:], g)
		}
		return &b
	}
	tests := []struct {
		name   string
		sb     *[sbSize]byte
		groups uint64
		want   []uint64
	}{
		{"one group", sb(0, roCompatSparseSuper), 1, nil},
		{"sparse_super", sb(0, roCompatSparseSuper), 50, []uint64{1, 3, 5, 7, 9, 25, 27, 49}},
		{"sparse_super2", sb(compatSparseSuper2, 0, 1, 40), 41, []uint64{1, 40}},
		{"sparse_super2 past the end", sb(compatSparseSuper2, 0, 1, 40), 10, []uint64{1}},
		{"every group", sb(0, 0), 4, []uint64{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := backupGroups(tt.sb, tt.groups); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("backupGroups = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDiskTemplateReflink: on a host filesystem with reflinks (XFS), copies are clones of the
// template, and still get their own UUID and enforce their limit.
func TestDiskTemplateReflink(t *testing.T) {
	base := filepath.Join(mountXFS(t), "quota")
	q, err := NewDiskQuota(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, h := range []string{"r0", "r1"} {
			if err := q.Release(h); err != nil {
				t.Errorf("Release(%s): %v", h, err)
			}
		}
	})
	fsids := map[[2]int32]bool{}
	for i := range 2 {
		dir, err := q.Dir(fmt.Sprintf("r%d", i), 4*mib)
		if err != nil {
			t.Fatal(err)
		}
		if q.noReflink.Load() {
			t.Fatal("FICLONE failed on XFS, which supports reflinks")
		}
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if fsids[st.Fsid.Val] {
			t.Fatalf("clone %d has the filesystem id of another", i)
		}
		fsids[st.Fsid.Val] = true
		if written, err := fill(t, filepath.Join(dir, "f"), int(8*mib)); !errors.Is(err, unix.ENOSPC) || written > int(4*mib) {
			t.Fatalf("wrote %d bytes, stopped by %v; want ENOSPC within 4 MiB", written, err)
		}
	}
	tmpl, err := q.templateFor(9 << 20)
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(base, "clone.img")
	if err := q.copyTemplate(tmpl, image); err != nil {
		t.Fatal(err)
	}
	if fsck(t, image) == fsck(t, tmpl.path) {
		t.Fatal("the clone kept the template's UUID")
	}
}
