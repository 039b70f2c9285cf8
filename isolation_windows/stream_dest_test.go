package isolationwindows

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// TestUnpackTarMakesDestination: StreamIn into a directory that does not exist yet makes it
// and its parents (as the Linux and memory backends do), and a destination that is a file is
// refused.
func TestUnpackTarMakesDestination(t *testing.T) {
	rootDir := t.TempDir()
	root := fsRoot{dir: rootDir}
	archive := func() *bytes.Buffer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "app.exe", Typeflag: tar.TypeReg, Size: 2, Mode: 0o755})
		tw.Write([]byte("MZ"))
		tw.Close()
		return &buf
	}
	if err := unpackTar(context.Background(), root, "/home/vcap/app", archive()); err != nil {
		t.Fatalf("unpackTar into a missing directory: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(rootDir, "home", "vcap", "app", "app.exe")); err != nil || string(got) != "MZ" {
		t.Fatalf("app.exe = %q, %v", got, err)
	}
	if err := unpackTar(context.Background(), root, "/home/vcap/app/app.exe", archive()); !isolation.IsInvalidSpec(err) {
		t.Fatalf("unpackTar onto a file = %v, want ErrInvalidSpec", err)
	}
}
