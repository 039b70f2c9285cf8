package cache

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Config configures a Cache.
type Config struct {
	// Dir holds the cache; it is created if missing. Required.
	Dir string
	// MaxBytes bounds the bytes of cached content; least recently used entries are evicted
	// past it. Must be positive. Downloads in progress and uncached downloads are not counted.
	MaxBytes int64
	// HTTPClient makes the requests; nil means a client with DefaultResponseHeaderTimeout and
	// no overall timeout (artifacts can be large; cancel the Fetch context to bound one).
	HTTPClient *http.Client
	// Logger receives download and eviction records; nil discards them.
	Logger *slog.Logger
}

// DefaultMaxBytes is the DefaultConfig bound: 10 GiB.
const DefaultMaxBytes = 10 << 30

// DefaultResponseHeaderTimeout bounds the wait for a server's response headers with the
// default HTTP client.
const DefaultResponseHeaderTimeout = 30 * time.Second

// DefaultConfig returns a Config with MaxBytes DefaultMaxBytes; Dir must still be set.
func DefaultConfig() Config {
	return Config{MaxBytes: DefaultMaxBytes}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("cache config: Dir is required: %w", ErrInvalid)
	}
	if c.MaxBytes <= 0 {
		return fmt.Errorf("cache config: MaxBytes must be positive, got %d: %w", c.MaxBytes, ErrInvalid)
	}
	return nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	return &http.Client{Transport: t}
}
