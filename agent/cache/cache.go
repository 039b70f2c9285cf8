package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	entriesDir = "entries"
	blobsDir   = "blobs"
	tmpDir     = "tmp"
)

// Cache is a per-cell download cache. It is safe for concurrent use; one Cache should own a
// directory at a time.
type Cache struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex
	entries  map[string]*entry // by cache key
	inflight map[string]*call  // by cache key
	bytes    int64             // sum of the sizes of entries

	downloads atomic.Int64
	hits      atomic.Int64
	evictions atomic.Int64
}

// entry is one cached artifact. refs counts open readers; stale marks an entry removed from
// the index (replaced or evicted) whose blob is deleted when the last reader closes.
type entry struct {
	meta     metadata
	lastUsed time.Time
	refs     int
	stale    bool
}

// call is a download in flight that other Fetches of the same key wait for.
type call struct {
	done           chan struct{}
	url, alg, want string
	err            error
}

// Stats are counters of a Cache since New.
type Stats struct {
	// Downloads counts HTTP requests made (cached and uncached Fetches).
	Downloads int64
	// Hits counts Fetches served from an entry without a request.
	Hits int64
	// Evictions counts entries removed to stay under MaxBytes.
	Evictions int64
	// Entries and Bytes describe the entries now indexed.
	Entries int
	Bytes   int64
}

// New opens the cache in cfg.Dir, rebuilding its index from what an earlier Cache left there
// and deleting leftovers of interrupted downloads.
// Errors: ErrInvalid (cfg), or the directory cannot be created or read.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{
		cfg:      cfg,
		client:   cfg.HTTPClient,
		log:      cfg.Logger,
		entries:  make(map[string]*entry),
		inflight: make(map[string]*call),
	}
	if c.client == nil {
		c.client = defaultHTTPClient()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := c.rebuild(); err != nil {
		return nil, err
	}
	return c, nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Downloads: c.downloads.Load(),
		Hits:      c.hits.Load(),
		Evictions: c.evictions.Load(),
		Entries:   len(c.entries),
		Bytes:     c.bytes,
	}
}

// Fetch returns the content of rawURL and its size; for a gzipped tar served from the cache (a
// cache key given), the content is the tar it holds (see expand.go). checksumAlg is "sha256" (the default when
// empty) or "sha1"; checksumValue, when set, is the expected hex digest. With cacheKey the
// content is served from and stored in the cache (see the package doc). The caller must close
// the reader; an entry stays on disk at least until then.
// Errors: ErrInvalid (URL, algorithm or digest malformed), ErrDownload (request failed or
// non-2xx status), *ChecksumError (ErrChecksumMismatch), ctx's error, or a local I/O error.
func (c *Cache) Fetch(ctx context.Context, rawURL, cacheKey, checksumAlg, checksumValue string) (io.ReadCloser, int64, error) {
	alg, want, err := checkRequest(rawURL, checksumAlg, checksumValue)
	if err != nil {
		return nil, 0, err
	}
	if cacheKey == "" {
		dl, err := c.download(ctx, rawURL, alg, want)
		if err != nil {
			return nil, 0, err
		}
		return dl.openTemp()
	}
	for {
		c.mu.Lock()
		if e := c.entries[cacheKey]; e != nil && e.matches(rawURL, alg, want) {
			e.refs++
			e.lastUsed = time.Now()
			c.mu.Unlock()
			rc, err := c.openEntry(e)
			if err != nil {
				c.log.Warn("cache entry unreadable, downloading again", "key", cacheKey, "error", err)
				continue
			}
			c.hits.Add(1)
			return rc, e.meta.Size, nil
		}
		if cl := c.inflight[cacheKey]; cl != nil {
			c.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				return nil, 0, fmt.Errorf("fetch %s: waiting for the download in progress: %w", redact(rawURL), ctx.Err())
			}
			// The same request failing for a reason of its own (not the cancellation of the
			// Fetch that ran it) fails this one too: trying again would fail alike.
			if cl.err != nil && cl.url == rawURL && cl.alg == alg && cl.want == want &&
				!errors.Is(cl.err, context.Canceled) && !errors.Is(cl.err, context.DeadlineExceeded) {
				return nil, 0, cl.err
			}
			continue
		}
		cl := &call{done: make(chan struct{}), url: rawURL, alg: alg, want: want}
		c.inflight[cacheKey] = cl
		c.mu.Unlock()

		rc, size, err := c.fill(ctx, cacheKey, rawURL, alg, want)

		c.mu.Lock()
		delete(c.inflight, cacheKey)
		cl.err = err
		close(cl.done)
		c.mu.Unlock()
		return rc, size, err
	}
}

// fill downloads rawURL into the entry of key and returns a reader of it.
func (c *Cache) fill(ctx context.Context, key, rawURL, alg, want string) (io.ReadCloser, int64, error) {
	dl, err := c.download(ctx, rawURL, alg, want)
	if err != nil {
		return nil, 0, err
	}
	if dl.size > c.cfg.MaxBytes {
		c.log.Info("artifact larger than the cache, not caching it", "url", redact(rawURL), "bytes", dl.size, "max_bytes", c.cfg.MaxBytes)
		return dl.openTemp()
	}
	expanded, err := c.expandGzipTar(dl)
	if err != nil {
		os.Remove(dl.path)
		return nil, 0, fmt.Errorf("store %s in the cache: %w", redact(rawURL), err)
	}
	if expanded && dl.size > c.cfg.MaxBytes {
		c.log.Info("expanded artifact larger than the cache, not caching it", "url", redact(rawURL), "bytes", dl.size, "max_bytes", c.cfg.MaxBytes)
		return dl.openTemp()
	}
	e, err := c.store(key, rawURL, dl, expanded)
	if err != nil {
		os.Remove(dl.path)
		return nil, 0, err
	}
	rc, err := c.openEntry(e)
	if err != nil {
		return nil, 0, err
	}
	return rc, e.meta.Size, nil
}

// store moves a verified download into the cache as the entry of key, with one reference
// held for the caller.
func (c *Cache) store(key, rawURL string, dl *downloaded, expanded bool) (*entry, error) {
	id := keyID(key)
	suffix, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	meta := metadata{
		Version:      metadataVersion,
		Key:          key,
		URL:          rawURL,
		Blob:         id + "-" + suffix + ".blob",
		Size:         dl.size,
		Expanded:     expanded,
		SHA256:       dl.sha256,
		SHA1:         dl.sha1,
		ETag:         dl.etag,
		LastModified: dl.lastModified,
		StoredAt:     time.Now().UTC(),
	}
	blob := filepath.Join(c.cfg.Dir, blobsDir, meta.Blob)
	if err := os.Rename(dl.path, blob); err != nil {
		return nil, fmt.Errorf("store %s in the cache: %w", redact(rawURL), err)
	}
	if err := writeMetadata(filepath.Join(c.cfg.Dir, tmpDir), c.metaPath(id), meta); err != nil {
		os.Remove(blob)
		return nil, fmt.Errorf("store %s in the cache: %w", redact(rawURL), err)
	}
	e := &entry{meta: meta, lastUsed: time.Now(), refs: 1}

	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[key]; old != nil {
		// Replaced: its metadata file now describes the new entry, so only its blob goes.
		c.dropLocked(old, false)
	}
	c.entries[key] = e
	c.bytes += e.meta.Size
	c.log.Debug("cached artifact", "key", key, "url", redact(rawURL), "bytes", e.meta.Size)
	c.evictLocked()
	return e, nil
}

// openEntry opens the blob of e, whose reference the caller already holds; the returned
// reader drops it on Close. On error the reference is dropped and the entry forgotten.
func (c *Cache) openEntry(e *entry) (io.ReadCloser, error) {
	blob := filepath.Join(c.cfg.Dir, blobsDir, e.meta.Blob)
	f, err := os.Open(blob)
	if err != nil {
		c.mu.Lock()
		e.refs--
		if c.entries[e.meta.Key] == e {
			c.dropLocked(e, true)
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("open cached %s: %w", redact(e.meta.URL), err)
	}
	now := time.Now()
	// The modification time is the last use when the index is rebuilt; failing to record
	// it only makes eviction order less exact.
	_ = os.Chtimes(blob, now, now)
	return &entryReader{File: f, c: c, e: e}, nil
}

// dropLocked removes e from the index. Its blob (and with meta its metadata file) is deleted
// now, or when its last reader closes.
func (c *Cache) dropLocked(e *entry, meta bool) {
	if c.entries[e.meta.Key] == e {
		delete(c.entries, e.meta.Key)
		c.bytes -= e.meta.Size
	}
	e.stale = true
	if meta {
		if err := os.Remove(c.metaPath(keyID(e.meta.Key))); err != nil && !os.IsNotExist(err) {
			c.log.Warn("remove cache metadata", "key", e.meta.Key, "error", err)
		}
	}
	if e.refs == 0 {
		c.removeBlob(e)
	}
}

func (c *Cache) removeBlob(e *entry) {
	if err := os.Remove(filepath.Join(c.cfg.Dir, blobsDir, e.meta.Blob)); err != nil && !os.IsNotExist(err) {
		c.log.Warn("remove cache blob", "key", e.meta.Key, "error", err)
	}
}

// evictLocked drops least recently used unreferenced entries until the cache fits.
func (c *Cache) evictLocked() {
	for c.bytes > c.cfg.MaxBytes {
		var victim *entry
		for _, e := range c.entries {
			if e.refs == 0 && (victim == nil || e.lastUsed.Before(victim.lastUsed)) {
				victim = e
			}
		}
		if victim == nil {
			return // everything left is being read; eviction resumes as readers close
		}
		c.log.Debug("evicting cached artifact", "key", victim.meta.Key, "bytes", victim.meta.Size)
		c.dropLocked(victim, true)
		c.evictions.Add(1)
	}
}

// release drops a reader's reference to e.
func (c *Cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs > 0 {
		return
	}
	if e.stale {
		c.removeBlob(e)
		return
	}
	c.evictLocked()
}

func (c *Cache) metaPath(id string) string {
	return filepath.Join(c.cfg.Dir, entriesDir, id+".json")
}

// entryReader is the reader of a cached blob.
type entryReader struct {
	*os.File
	c    *Cache
	e    *entry
	once sync.Once
}

// Close closes the file and releases the entry; it is idempotent.
func (r *entryReader) Close() error {
	var err error
	r.once.Do(func() {
		err = r.File.Close()
		r.c.release(r.e)
	})
	return err
}

// matches reports whether e can serve a Fetch of rawURL with the expected digest (if any).
func (e *entry) matches(rawURL, alg, want string) bool {
	if e.meta.URL != rawURL {
		return false
	}
	if want == "" {
		return true
	}
	switch alg {
	case "sha1":
		return e.meta.SHA1 == want
	default:
		return e.meta.SHA256 == want
	}
}

// checkRequest validates a Fetch's arguments and normalizes the algorithm and digest.
func checkRequest(rawURL, alg, value string) (string, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("fetch %q: %w: %v", redact(rawURL), ErrInvalid, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("fetch %q: %w: want an absolute http or https URL", redact(rawURL), ErrInvalid)
	}
	hexLen := 0
	switch alg {
	case "", "sha256":
		alg, hexLen = "sha256", sha256.Size*2
	case "sha1":
		hexLen = 40
	default:
		return "", "", fmt.Errorf("fetch %s: checksum algorithm %q: %w: want sha256 or sha1", redact(rawURL), alg, ErrInvalid)
	}
	value = strings.ToLower(value)
	if value != "" {
		if _, err := hex.DecodeString(value); err != nil || len(value) != hexLen {
			return "", "", fmt.Errorf("fetch %s: %s checksum %q: %w: want %d hex digits", redact(rawURL), alg, value, ErrInvalid, hexLen)
		}
	}
	return alg, value, nil
}

func keyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
