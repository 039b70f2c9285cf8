package containerinit

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

func TestEntriesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := []*Entry{
		{Name: "d/", Type: EntryDir, Mode: 0o755, ModTime: 1, Offset: -1},
		{Name: "d/f", Type: EntryRegular, Mode: 0o4755, UID: 7, GID: 8, Size: 5, ModTime: 2, Offset: -1},
		{Name: "d/l", Type: EntrySymlink, Linkname: "../etc", Offset: -1},
		{Name: "d/g", Type: EntryRegular, Size: 1 << 20, Offset: 4096},
	}
	for _, e := range in {
		if err := WriteEntry(&buf, e); err != nil {
			t.Fatal(err)
		}
		if e.Name == "d/f" {
			buf.WriteString("hello")
		}
	}
	if err := EndEntries(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range in {
		got, err := ReadEntry(&buf)
		if err != nil {
			t.Fatalf("reading %s: %v", want.Name, err)
		}
		if *got != *want {
			t.Fatalf("read %+v, wrote %+v", got, want)
		}
		if got.Name == "d/f" {
			body := make([]byte, got.Size)
			if _, err := io.ReadFull(&buf, body); err != nil || string(body) != "hello" {
				t.Fatalf("content %q, %v", body, err)
			}
		}
	}
	if _, err := ReadEntry(&buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the end frame: %v, want io.EOF", err)
	}
}

func TestEntriesCutOrOversized(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteEntry(&buf, &Entry{Name: "f", Type: EntryRegular}); err != nil {
		t.Fatal(err)
	}
	whole := buf.Bytes()
	for _, cut := range []int{0, 2, 4, len(whole) - 1} {
		if _, err := ReadEntry(bytes.NewReader(whole[:cut])); !errors.Is(err, ErrEntriesCut) {
			t.Errorf("stream cut at %d of %d bytes: %v, want ErrEntriesCut", cut, len(whole), err)
		}
	}
	if _, err := ReadEntry(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff})); err == nil || errors.Is(err, ErrEntriesCut) {
		t.Errorf("a 4 GiB frame: %v, want a size error", err)
	}
	if err := WriteEntry(io.Discard, &Entry{Name: strings.Repeat("n", maxEntryFrame)}); err == nil {
		t.Error("an entry larger than a frame was written")
	}
}

// The init takes over in this package's init function, once its imports have initialised,
// and Go initialises ready packages in import-path order: an import that sorts late (and
// what imports it) holds the init back until nearly the whole program has initialised —
// etcd, gRPC, protobuf registries — which cost each container start about a millisecond of
// CPU and its init 400 KB of heap. These must stay out of the init's imports.
func TestInitImportsStayEarly(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the imports with")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	for _, late := range []string{"archive/tar", "path/filepath", "os/user", "log/slog", "net", "net/http"} {
		if deps[late] {
			t.Errorf("the init imports %s", late)
		}
	}
}
