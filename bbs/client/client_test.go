package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(`{"url":"https://127.0.0.1:8889","ca_file":"ca.crt","cert_file":"/abs/op.crt","key_file":"op.key"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CAFile != filepath.Join(dir, "ca.crt") || cfg.CertFile != "/abs/op.crt" || cfg.KeyFile != filepath.Join(dir, "op.key") {
		t.Fatalf("file names not resolved against the config's directory: %+v", cfg)
	}
	if cfg.Timeout != DefaultConfig().Timeout {
		t.Fatalf("Timeout = %v, want the default", cfg.Timeout)
	}

	out := filepath.Join(dir, "sub", "written.json")
	if err := WriteConfig(out, cfg); err != nil {
		t.Fatal(err)
	}
	back, err := LoadConfig(out)
	if err != nil || back.URL != cfg.URL || back.CAFile != cfg.CAFile {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, want 0600", st.Mode().Perm())
	}

	if err := os.WriteFile(path, []byte(`{"url":"http://10.0.0.1:1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("plain http without insecure = %v, want ErrInvalidConfig", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file = %v, want ErrNotExist", err)
	}
	t.Setenv("HOME", dir)
	if got := DefaultConfigPath(); got != filepath.Join(dir, ".trellis", "config.json") {
		t.Fatalf("DefaultConfigPath = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"https", Config{URL: "https://h:1", CAFile: "ca"}, true},
		{"https without CA", Config{URL: "https://h:1"}, false},
		{"insecure", Config{URL: "http://127.0.0.1:1", Insecure: true, Identity: "cell:a"}, true},
		{"insecure https", Config{URL: "https://h:1", Insecure: true}, false},
		{"bad identity", Config{URL: "http://127.0.0.1:1", Insecure: true, Identity: "root"}, false},
		{"cert without key", Config{URL: "https://h:1", CAFile: "ca", CertFile: "c"}, false},
		{"relative URL", Config{URL: "/v1", CAFile: "ca"}, false},
		{"negative max conns", Config{URL: "http://127.0.0.1:1", Insecure: true, MaxConns: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestReadAPIError: API bodies keep their type and message; other bodies (a proxy's page) get a
// type from the status.
func TestReadAPIError(t *testing.T) {
	tests := []struct {
		status int
		body   string
		is     error
		typ    string
	}{
		{404, `{"error":{"type":"NotFound","message":"desired_lrp x: not found"}}`, models.ErrNotFound, "NotFound"},
		{400, `{"error":{"type":"InvalidRequest","message":"body: malformed"}}`, models.ErrInvalidRecord, "InvalidRequest"},
		{409, `{"error":{"type":"LockHeld","message":"held by b1"}}`, models.ErrLockHeld, "LockHeld"},
		{502, `<html>bad gateway</html>`, models.ErrUnavailable, "Unavailable"},
		{413, `too big`, models.ErrTooLarge, "TooLarge"},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			err := readAPIError(&http.Response{StatusCode: tt.status, Body: io.NopCloser(strings.NewReader(tt.body))})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Type != tt.typ || !errors.Is(err, tt.is) {
				t.Fatalf("readAPIError = %#v, want type %s wrapping %v", err, tt.typ, tt.is)
			}
		})
	}
}

// TestMaxConnsBoundsConnections: concurrent requests share at most MaxConns connections.
func TestMaxConnsBoundsConnections(t *testing.T) {
	for _, max := range []int{1, 3} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			var mu sync.Mutex
			conns := map[string]bool{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				conns[r.RemoteAddr] = true
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"process_guid":"web","domain":"d","rootfs":"docker:///x","instances":1}`)
			}))
			defer srv.Close()
			c, err := New(Config{URL: srv.URL, Insecure: true, MaxConns: max})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := c.DesiredLRP(t.Context(), "web"); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(conns) > max {
				t.Errorf("20 concurrent requests used %d connections, want at most %d", len(conns), max)
			}
		})
	}
}

// TestLeaseRenewalsDoNotQueue: with every connection of MaxConns held by slow requests, a
// heartbeat and a lock renewal still go out at once, over the lease connection.
func TestLeaseRenewalsDoNotQueue(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			<-release // the work requests hang
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer close(release)
	c, err := New(Config{URL: srv.URL, Insecure: true, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		go func() { _, _ = c.DesiredLRP(t.Context(), "web") }() // hangs until the test ends
	}
	time.Sleep(50 * time.Millisecond) // let them take both connections
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := c.Heartbeat(ctx, &models.CellPresence{CellID: "cell-1"}, 10*time.Second); err != nil {
		t.Fatalf("heartbeat behind hung requests: %v", err)
	}
	if err := c.AcquireLock(ctx, "brain", "brain-a", 5*time.Second); err != nil {
		t.Fatalf("lock renewal behind hung requests: %v", err)
	}
}
