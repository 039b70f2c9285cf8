package isolationlinux

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An archive in a regular file is unpacked by the init with in-kernel copies; what lands in the
// container must be exactly what a stream through a pipe gives: regular files of every size,
// hard links, long (PAX) names, a sparse file; and a truncated archive must fail.
func TestStreamInFromFile(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	big := make([]byte, 3<<20+123)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	long := strings.Repeat("d", 120) + "/" + strings.Repeat("f", 130)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "app/empty", Typeflag: tar.TypeReg}, nil)
	add(&tar.Header{Name: "app/small", Typeflag: tar.TypeReg}, []byte("small\n"))
	add(&tar.Header{Name: "app/big", Typeflag: tar.TypeReg, Mode: 0o755}, big)
	add(&tar.Header{Name: "app/" + long, Typeflag: tar.TypeReg, Format: tar.FormatPAX}, []byte("long name\n"))
	add(&tar.Header{Name: "app/link", Typeflag: tar.TypeLink, Linkname: "app/small"}, nil)
	add(&tar.Header{Name: "app/after", Typeflag: tar.TypeReg}, []byte("after\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.tar")
	if err := os.WriteFile(whole, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(whole)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.StreamIn(context.Background(), "/x", f); err != nil {
		t.Fatalf("StreamIn from a file: %v", err)
	}
	sum := md5.Sum(big)
	res := sh(t, c, "", fmt.Sprintf(`cd /x/app && wc -c <empty && cat small && md5sum big | cut -d' ' -f1 && cat %s && cat link && cat after && stat -c %%h small`, long))
	want := fmt.Sprintf("0\nsmall\n%s\nlong name\nsmall\nafter\n2\n", hex.EncodeToString(sum[:]))
	if res.code != 0 || res.stdout != want {
		t.Fatalf("unpacked from a file: %+v\nwant stdout %q", res, want)
	}

	// Cut inside big's data: the unpack fails rather than leave a short file unnoticed.
	cut := filepath.Join(dir, "cut.tar")
	if err := os.WriteFile(cut, buf.Bytes()[:2<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(cut)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := c.StreamIn(context.Background(), "/y", g); err == nil {
		t.Fatal("StreamIn of a truncated archive file succeeded")
	}
}
