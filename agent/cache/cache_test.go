package cache

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// server serves fixed artifacts by path and counts the requests per path.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	requests map[string]int
	gate     chan struct{} // when non-nil, responses wait for it to close
	arrived  chan string   // when non-nil, receives each request path
}

func newServer(t *testing.T, files map[string][]byte) *server {
	t.Helper()
	s := &server{files: files, requests: make(map[string]int)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[r.URL.Path]++
		data, ok := s.files[r.URL.Path]
		gate, arrived := s.gate, s.arrived
		s.mu.Unlock()
		if arrived != nil {
			arrived <- r.URL.Path
		}
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+sha(data)+`"`)
		w.Write(data)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func newCache(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.MaxBytes = max
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// fetch fetches and reads the whole content, checking the reported size.
func fetch(t *testing.T, c *Cache, url, key, alg, sum string) []byte {
	t.Helper()
	rc, size, err := c.Fetch(context.Background(), url, key, alg, sum)
	if err != nil {
		t.Fatalf("Fetch(%s, key %q): %v", url, key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	if int64(len(data)) != size {
		t.Fatalf("Fetch(%s) size %d, read %d bytes", url, size, len(data))
	}
	return data
}

func dirLen(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestUncachedFetch(t *testing.T) {
	content := []byte("droplet bits")
	srv := newServer(t, map[string][]byte{"/a": content})
	dir := t.TempDir()
	c := newCache(t, dir, 1<<20)
	for i := range 2 {
		if got := fetch(t, c, srv.URL+"/a", "", "sha256", sha(content)); !bytes.Equal(got, content) {
			t.Fatalf("fetch %d = %q, want %q", i, got, content)
		}
		if n := dirLen(t, filepath.Join(dir, tmpDir)); n != 0 {
			t.Fatalf("%d temporary files left after Close", n)
		}
	}
	if n := srv.count("/a"); n != 2 {
		t.Errorf("server saw %d requests, want 2 (no cache key, no caching)", n)
	}
	if st := c.Stats(); st.Downloads != 2 || st.Entries != 0 {
		t.Errorf("Stats = %+v, want 2 downloads and no entries", st)
	}
}

func TestSameKeyDownloadsOnce(t *testing.T) {
	content := bytes.Repeat([]byte("buildpack "), 1000)
	srv := newServer(t, map[string][]byte{"/bp.tgz": content})
	c := newCache(t, t.TempDir(), 1<<20)
	for _, sum := range []string{"", sha(content), strings.ToUpper(sha(content))} {
		if got := fetch(t, c, srv.URL+"/bp.tgz", "bp", "", sum); !bytes.Equal(got, content) {
			t.Fatal("content differs")
		}
	}
	sum1 := sha1.Sum(content)
	fetch(t, c, srv.URL+"/bp.tgz", "bp", "sha1", hex.EncodeToString(sum1[:]))
	if n := srv.count("/bp.tgz"); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
	if st := c.Stats(); st.Downloads != 1 || st.Hits != 3 || st.Entries != 1 || st.Bytes != int64(len(content)) {
		t.Errorf("Stats = %+v, want 1 download, 3 hits, 1 entry of %d bytes", st, len(content))
	}
}

func TestConcurrentFetchesCoalesce(t *testing.T) {
	content := bytes.Repeat([]byte{7}, 64<<10)
	srv := newServer(t, map[string][]byte{"/big": content})
	srv.gate = make(chan struct{})
	c := newCache(t, t.TempDir(), 1<<20)

	const n = 20
	var wg sync.WaitGroup
	var started sync.WaitGroup
	errs := make(chan error, n)
	started.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			rc, _, err := c.Fetch(context.Background(), srv.URL+"/big", "big", "sha256", sha(content))
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if err == nil && !bytes.Equal(data, content) {
				err = errors.New("content differs")
			}
			errs <- err
		}()
	}
	started.Wait()
	time.Sleep(100 * time.Millisecond) // let the fetches reach the download in flight
	close(srv.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.count("/big"); got != 1 {
		t.Fatalf("server saw %d requests for 20 concurrent fetches of one key, want 1", got)
	}
}

func TestCancelledDownloaderHandsOver(t *testing.T) {
	content := []byte("shared")
	srv := newServer(t, map[string][]byte{"/s": content})
	srv.gate = make(chan struct{})
	srv.arrived = make(chan string, 4)
	c := newCache(t, t.TempDir(), 1<<20)

	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, _, err := c.Fetch(ctx1, srv.URL+"/s", "s", "", "")
		first <- err
	}()
	<-srv.arrived // the first Fetch's request is in flight
	second := make(chan []byte, 1)
	go func() {
		rc, _, err := c.Fetch(context.Background(), srv.URL+"/s", "s", "", "")
		if err != nil {
			t.Errorf("second Fetch: %v", err)
			second <- nil
			return
		}
		defer rc.Close()
		data, _ := io.ReadAll(rc)
		second <- data
	}()
	time.Sleep(50 * time.Millisecond) // the second Fetch waits on the first's download
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Fetch = %v, want context.Canceled", err)
	}
	<-srv.arrived // the second Fetch took over with its own request
	close(srv.gate)
	if got := <-second; !bytes.Equal(got, content) {
		t.Fatalf("second Fetch read %q, want %q", got, content)
	}
}

func TestChecksumMismatchCachesNothing(t *testing.T) {
	content := []byte("tampered")
	srv := newServer(t, map[string][]byte{"/x": content})
	dir := t.TempDir()
	c := newCache(t, dir, 1<<20)
	wrong := strings.Repeat("ab", 32)
	for _, key := range []string{"x", ""} {
		_, _, err := c.Fetch(context.Background(), srv.URL+"/x", key, "sha256", wrong)
		want := "checksum mismatch for " + srv.URL + "/x: expected sha256 " + wrong + ", got " + sha(content)
		if err == nil || err.Error() != want {
			t.Fatalf("key %q: err = %v, want %q", key, err, want)
		}
		if !IsChecksumMismatch(err) {
			t.Errorf("IsChecksumMismatch(%v) = false", err)
		}
	}
	for _, sub := range []string{entriesDir, blobsDir, tmpDir} {
		if n := dirLen(t, filepath.Join(dir, sub)); n != 0 {
			t.Errorf("%s holds %d files after checksum failures, want 0", sub, n)
		}
	}
	// The right checksum then downloads and caches it.
	fetch(t, c, srv.URL+"/x", "x", "", sha(content))
	if st := c.Stats(); st.Entries != 1 || st.Downloads != 3 {
		t.Errorf("Stats = %+v, want 1 entry after 3 downloads", st)
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	files := map[string][]byte{
		"/a": bytes.Repeat([]byte("a"), 100),
		"/b": bytes.Repeat([]byte("b"), 100),
		"/c": bytes.Repeat([]byte("c"), 100),
	}
	srv := newServer(t, files)
	dir := t.TempDir()
	c := newCache(t, dir, 250)
	fetch(t, c, srv.URL+"/a", "a", "", "")
	fetch(t, c, srv.URL+"/b", "b", "", "")
	fetch(t, c, srv.URL+"/a", "a", "", "") // a is now more recent than b
	fetch(t, c, srv.URL+"/c", "c", "", "") // 300 bytes > 250: b goes
	if st := c.Stats(); st.Evictions != 1 || st.Entries != 2 || st.Bytes != 200 {
		t.Fatalf("Stats = %+v, want 1 eviction leaving 2 entries of 200 bytes", st)
	}
	if n := dirLen(t, filepath.Join(dir, blobsDir)); n != 2 {
		t.Errorf("%d blobs on disk, want 2", n)
	}
	fetch(t, c, srv.URL+"/a", "a", "", "")
	fetch(t, c, srv.URL+"/b", "b", "", "")
	if a, b := srv.count("/a"), srv.count("/b"); a != 1 || b != 2 {
		t.Errorf("requests a=%d b=%d, want a=1 (kept) b=2 (evicted, fetched again)", a, b)
	}
	// An artifact larger than the whole cache is served but not kept.
	srv.mu.Lock()
	srv.files["/huge"] = bytes.Repeat([]byte("h"), 300)
	srv.mu.Unlock()
	if got := fetch(t, c, srv.URL+"/huge", "huge", "", ""); len(got) != 300 {
		t.Fatalf("huge read %d bytes", len(got))
	}
	if st := c.Stats(); st.Bytes > 250 {
		t.Errorf("cache holds %d bytes, over its 250 bound", st.Bytes)
	}
}

func TestEntryInUseIsNotDeleted(t *testing.T) {
	oldContent := bytes.Repeat([]byte("o"), 100)
	srv := newServer(t, map[string][]byte{
		"/v1": oldContent,
		"/v2": bytes.Repeat([]byte("n"), 100),
		"/b":  bytes.Repeat([]byte("b"), 100),
	})
	dir := t.TempDir()
	c := newCache(t, dir, 150)

	held, _, err := c.Fetch(context.Background(), srv.URL+"/v1", "k", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// Over the bound while k is being read: k must stay readable.
	fetch(t, c, srv.URL+"/b", "b", "", "")
	// The same key now points at a new URL: k is replaced, but its reader keeps its content.
	fetch(t, c, srv.URL+"/v2", "k", "", "")
	got, err := io.ReadAll(held)
	if err != nil || !bytes.Equal(got, oldContent) {
		t.Fatalf("held reader read %d bytes (%v), want the old 100", len(got), err)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dirLen(t, filepath.Join(dir, blobsDir)); n != 1 {
		t.Errorf("%d blobs on disk after the replaced entry's reader closed, want 1", n)
	}
	if st := c.Stats(); st.Bytes > 150 {
		t.Errorf("cache holds %d bytes after readers closed, over its 150 bound", st.Bytes)
	}
}

func TestRestartRebuildsIndex(t *testing.T) {
	files := map[string][]byte{"/a": []byte("alpha"), "/b": []byte("bravo")}
	srv := newServer(t, files)
	dir := t.TempDir()
	c1 := newCache(t, dir, 1<<20)
	fetch(t, c1, srv.URL+"/a", "a", "", "")
	fetch(t, c1, srv.URL+"/b", "b", "", "")

	// What a crash can leave: a half-written download, an orphan blob, a metadata file whose
	// blob is gone, and a corrupt metadata file.
	for name, data := range map[string]string{
		filepath.Join(tmpDir, "download-123"):                 "partial",
		filepath.Join(blobsDir, keyID("z")+"-00.blob"):        "orphan",
		filepath.Join(entriesDir, keyID("gone")+".json"):      `{"version":1,"key":"gone","blob":"` + keyID("gone") + `-1.blob","size":3}`,
		filepath.Join(entriesDir, keyID("corrupt")+".json"):   "{",
		filepath.Join(entriesDir, keyID("wrong-key")+".json"): `{"version":1,"key":"other"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c2 := newCache(t, dir, 1<<20)
	if st := c2.Stats(); st.Entries != 2 || st.Bytes != 10 {
		t.Fatalf("after restart Stats = %+v, want 2 entries of 10 bytes", st)
	}
	if got := fetch(t, c2, srv.URL+"/a", "a", "", ""); string(got) != "alpha" {
		t.Fatalf("a = %q", got)
	}
	fetch(t, c2, srv.URL+"/b", "b", "", "")
	if a, b := srv.count("/a"), srv.count("/b"); a != 1 || b != 1 {
		t.Errorf("requests a=%d b=%d after restart, want 1 each (served from the rebuilt index)", a, b)
	}
	for sub, want := range map[string]int{tmpDir: 0, blobsDir: 2, entriesDir: 2} {
		if n := dirLen(t, filepath.Join(dir, sub)); n != want {
			t.Errorf("%s holds %d files after rebuild, want %d", sub, n, want)
		}
	}
}

func TestFetchErrors(t *testing.T) {
	srv := newServer(t, map[string][]byte{})
	c := newCache(t, t.TempDir(), 1<<20)
	for _, tc := range []struct {
		name      string
		url       string
		alg, sum  string
		isInvalid bool
	}{
		{"not found", srv.URL + "/missing", "", "", false},
		{"relative URL", "/missing", "", "", true},
		{"ftp URL", "ftp://example.com/x", "", "", true},
		{"md5", srv.URL + "/x", "md5", strings.Repeat("a", 32), true},
		{"short digest", srv.URL + "/x", "sha256", "abc", true},
		{"non-hex digest", srv.URL + "/x", "sha1", strings.Repeat("g", 40), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := c.Fetch(context.Background(), tc.url, "k", tc.alg, tc.sum)
			if tc.isInvalid && !IsInvalid(err) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !tc.isInvalid && (!IsDownload(err) || !strings.Contains(err.Error(), "404")) {
				t.Fatalf("err = %v, want ErrDownload naming the 404", err)
			}
		})
	}
	if st := c.Stats(); st.Entries != 0 {
		t.Errorf("Stats = %+v, want no entries", st)
	}
	for _, cfg := range []Config{{MaxBytes: 1}, {Dir: t.TempDir()}} {
		if _, err := New(cfg); !IsInvalid(err) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestErrorsLeaveOutURLSecrets(t *testing.T) {
	srv := newServer(t, map[string][]byte{"/x": []byte("x")})
	c := newCache(t, t.TempDir(), 1<<20)
	ctx := context.Background()
	for _, u := range []string{
		srv.URL + "/x?signature=secret",
		srv.URL + "/missing?signature=secret",
		"http://user:secret@127.0.0.1:1/refused",
	} {
		_, _, err := c.Fetch(ctx, u, "", "sha256", strings.Repeat("0", 64))
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("Fetch(%s) = %v, want an error without the secret", u, err)
		}
	}
}
