package cache

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
)

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipOf(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A gzipped tar is stored and served as the tar inside it, from the first Fetch on and after a
// restart; everything else is stored as downloaded. Checksums stay those of the download.
func TestGzippedTarStoredExpanded(t *testing.T) {
	tarball := tarOf(t, map[string]string{"app/run": "#!/bin/sh\necho hello\n", "app/data": "x"})
	tgz := gzipOf(t, tarball)
	notTar := gzipOf(t, []byte("console.log('not a tar')\n"))
	corrupt := append([]byte(nil), tgz[:len(tgz)-12]...) // the tar header inflates, the end does not
	tests := []struct {
		name     string
		artifact []byte
		want     []byte
	}{
		{"gzipped tar", tgz, tarball},
		{"plain tar", tarball, tarball},
		{"gzip of a file", notTar, notTar},
		{"corrupt gzipped tar", corrupt, corrupt},
		{"not gzip", []byte("plain bytes"), []byte("plain bytes")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, map[string][]byte{"/a": tt.artifact})
			dir := t.TempDir()
			c := newCache(t, dir, 1<<20)
			for range 2 {
				if got := fetch(t, c, srv.URL+"/a", "k", "sha256", sha(tt.artifact)); !bytes.Equal(got, tt.want) {
					t.Fatalf("served %d bytes, want %d (%q…)", len(got), len(tt.want), got[:min(len(got), 16)])
				}
			}
			if st := c.Stats(); st.Downloads != 1 || st.Bytes != int64(len(tt.want)) {
				t.Errorf("Stats = %+v, want 1 download and %d bytes", st, len(tt.want))
			}
			if n := dirLen(t, dir+"/"+tmpDir); n != 0 {
				t.Errorf("%d files left in tmp", n)
			}
			restarted := newCache(t, dir, 1<<20)
			if got := fetch(t, restarted, srv.URL+"/a", "k", "sha256", sha(tt.artifact)); !bytes.Equal(got, tt.want) {
				t.Fatalf("after a restart: served %d bytes, want %d", len(got), len(tt.want))
			}
			if n := srv.count("/a"); n != 1 {
				t.Errorf("server saw %d requests, want 1", n)
			}
		})
	}
}
