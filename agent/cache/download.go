package cache

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
)

// downloaded is a verified download in a temporary file.
type downloaded struct {
	path         string
	size         int64
	sha256, sha1 string
	etag         string
	lastModified string
}

// download GETs rawURL into a temporary file, hashing it on the way, and verifies it against
// want (a digest of alg) when set. On error nothing is left behind.
func (c *Cache) download(ctx context.Context, rawURL, alg, want string) (*downloaded, error) {
	shown := redact(rawURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w: %v", shown, ErrInvalid, err)
	}
	c.downloads.Add(1)
	c.log.Debug("downloading", "url", shown)
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("download %s: %w", shown, ctx.Err())
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text repeats the whole URL
		}
		return nil, fmt.Errorf("download %s: %w: %v", shown, ErrDownload, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("download %s: %w: unexpected HTTP status %s", shown, ErrDownload, resp.Status)
	}
	f, err := os.CreateTemp(filepath.Join(c.cfg.Dir, tmpDir), "download-*")
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", shown, err)
	}
	dl := &downloaded{
		path:         f.Name(),
		etag:         resp.Header.Get("ETag"),
		lastModified: resp.Header.Get("Last-Modified"),
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(dl.path)
		}
	}()
	h256, h1 := sha256.New(), sha1.New()
	n, err := io.Copy(io.MultiWriter(f, h256, h1), resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("download %s: %w", shown, ctx.Err())
		}
		return nil, fmt.Errorf("download %s: %w: after %d bytes: %v", shown, ErrDownload, n, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("download %s: sync %s: %w", shown, dl.path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("download %s: close %s: %w", shown, dl.path, err)
	}
	dl.size = n
	dl.sha256 = hex.EncodeToString(h256.Sum(nil))
	dl.sha1 = hex.EncodeToString(h1.Sum(nil))
	if want != "" {
		got := dl.sha256
		if alg == "sha1" {
			got = dl.sha1
		}
		if got != want {
			return nil, &ChecksumError{URL: rawURL, Algorithm: alg, Expected: want, Actual: got}
		}
	}
	ok = true
	return dl, nil
}

// openTemp returns a reader of an uncached download that deletes the file on Close.
func (dl *downloaded) openTemp() (io.ReadCloser, int64, error) {
	f, err := os.Open(dl.path)
	if err != nil {
		os.Remove(dl.path)
		return nil, 0, fmt.Errorf("open downloaded file: %w", err)
	}
	return &tempReader{File: f}, dl.size, nil
}

// tempReader deletes its file on Close.
type tempReader struct {
	*os.File
	once sync.Once
}

func (r *tempReader) Close() error {
	var err error
	r.once.Do(func() {
		err = r.File.Close()
		if rerr := os.Remove(r.Name()); rerr != nil && err == nil {
			err = fmt.Errorf("remove downloaded file: %w", rerr)
		}
	})
	return err
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return hex.EncodeToString(b), nil
}
