package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const metadataVersion = 1

// metadata is the JSON file describing one entry.
type metadata struct {
	Version int    `json:"version"`
	Key     string `json:"key"`
	URL     string `json:"url"`
	Blob    string `json:"blob"`
	Size    int64  `json:"size"`
	// Expanded: the download was a gzipped tar and the blob is the tar inside it (Size is the
	// blob's); SHA256 and SHA1 are the download's.
	Expanded     bool      `json:"expanded,omitempty"`
	SHA256       string    `json:"sha256"`
	SHA1         string    `json:"sha1"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	StoredAt     time.Time `json:"stored_at"`
}

// writeMetadata writes m to path atomically: a synced temporary file in tmp, then a rename.
func writeMetadata(tmp, path string, m metadata) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode cache metadata: %w", err)
	}
	f, err := os.CreateTemp(tmp, "meta-*")
	if err != nil {
		return fmt.Errorf("write cache metadata: %w", err)
	}
	name := f.Name()
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(name)
		return fmt.Errorf("write cache metadata %s: %w", name, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("write cache metadata: %w", err)
	}
	return nil
}

// rebuild creates the layout and indexes the entries an earlier Cache left, deleting what an
// interrupted download or store left half-done: temporary files, metadata without its blob
// (or with a blob of another size), and blobs without metadata.
func (c *Cache) rebuild() error {
	dir := c.cfg.Dir
	for _, sub := range []string{entriesDir, blobsDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return fmt.Errorf("open cache %s: %w", dir, err)
		}
	}
	tmps, err := os.ReadDir(filepath.Join(dir, tmpDir))
	if err != nil {
		return fmt.Errorf("open cache %s: %w", dir, err)
	}
	for _, t := range tmps {
		if err := os.RemoveAll(filepath.Join(dir, tmpDir, t.Name())); err != nil {
			c.log.Warn("remove leftover cache download", "name", t.Name(), "error", err)
		}
	}
	metas, err := os.ReadDir(filepath.Join(dir, entriesDir))
	if err != nil {
		return fmt.Errorf("open cache %s: %w", dir, err)
	}
	referenced := make(map[string]bool)
	for _, m := range metas {
		path := filepath.Join(dir, entriesDir, m.Name())
		e, err := c.loadEntry(path, m.Name())
		if err != nil {
			c.log.Warn("dropping unusable cache entry", "file", m.Name(), "error", err)
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.log.Warn("remove cache metadata", "file", m.Name(), "error", err)
			}
			continue
		}
		referenced[e.meta.Blob] = true
		c.entries[e.meta.Key] = e
		c.bytes += e.meta.Size
	}
	blobs, err := os.ReadDir(filepath.Join(dir, blobsDir))
	if err != nil {
		return fmt.Errorf("open cache %s: %w", dir, err)
	}
	for _, b := range blobs {
		if referenced[b.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, blobsDir, b.Name())); err != nil {
			c.log.Warn("remove unreferenced cache blob", "name", b.Name(), "error", err)
		}
	}
	c.mu.Lock()
	c.evictLocked() // MaxBytes may have shrunk since the last run
	c.mu.Unlock()
	c.log.Info("cache opened", "dir", dir, "entries", len(c.entries), "bytes", c.bytes)
	return nil
}

// loadEntry reads one metadata file and checks it against its blob.
func (c *Cache) loadEntry(path, name string) (*entry, error) {
	id, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return nil, errors.New("not a metadata file")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	switch {
	case m.Version != metadataVersion:
		return nil, fmt.Errorf("version %d, want %d", m.Version, metadataVersion)
	case keyID(m.Key) != id:
		return nil, fmt.Errorf("key %q does not hash to the file name", m.Key)
	case m.Blob != filepath.Base(m.Blob) || !strings.HasPrefix(m.Blob, id+"-"):
		return nil, fmt.Errorf("blob name %q does not belong to the entry", m.Blob)
	}
	fi, err := os.Stat(filepath.Join(c.cfg.Dir, blobsDir, m.Blob))
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != m.Size {
		return nil, fmt.Errorf("blob is %d bytes, metadata says %d", fi.Size(), m.Size)
	}
	return &entry{meta: m, lastUsed: fi.ModTime()}, nil
}
