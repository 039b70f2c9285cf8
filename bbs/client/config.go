package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
)

// ErrInvalidConfig is returned for an unusable client configuration.
var ErrInvalidConfig = errors.New("invalid client configuration")

// Config configures a Client. LoadConfig reads the file form.
type Config struct {
	// URL of the BBS, e.g. "https://127.0.0.1:8889". Required.
	URL string `json:"url"`
	// CAFile verifies the server. Required for https.
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are the client certificate whose CommonName is the caller's role.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// Insecure talks plain HTTP to a BBS in insecure mode (loopback only).
	Insecure bool `json:"insecure,omitempty"`
	// Identity is sent as the X-Trellis-Identity header in insecure mode ("operator",
	// "brain", "cell:<id>"); empty means the server's default, operator.
	Identity string `json:"identity,omitempty"`
	// Timeout bounds each request except event streams. Default 30 s.
	Timeout time.Duration `json:"-"`
	// EventIdleTimeout ends an event stream connection that has received nothing (not even a
	// keepalive comment) for this long, and reconnects. Default 45 s (three server keepalives).
	EventIdleTimeout time.Duration `json:"-"`
	// ReconnectDelay is the first wait before reconnecting an event stream; it doubles up to
	// 5 s. Default 100 ms.
	ReconnectDelay time.Duration `json:"-"`
	// MaxConns bounds the client's connections to the BBS, event streams included; requests
	// beyond it wait for a free connection. 0 means no bound. A cell agent starting hundreds
	// of instances at once otherwise opens a connection per request in flight, and a thousand
	// such cells exhaust the BBS's file descriptors (measured by the scale simulator). Lease
	// renewals (Heartbeat, AcquireLock) have one connection of their own besides, so they
	// never wait behind other requests.
	MaxConns int `json:"-"`
}

// DefaultConfig returns the defaults for the durations; URL and files are left empty.
func DefaultConfig() Config {
	return Config{Timeout: 30 * time.Second, EventIdleTimeout: 45 * time.Second, ReconnectDelay: 100 * time.Millisecond}
}

// Validate reports the first problem with c. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: url %q is not an absolute URL", ErrInvalidConfig, c.URL)
	}
	switch {
	case c.Insecure && u.Scheme != "http":
		return fmt.Errorf("%w: insecure needs an http:// url, got %q", ErrInvalidConfig, c.URL)
	case !c.Insecure && u.Scheme != "https":
		return fmt.Errorf("%w: url %q must be https:// (or set insecure for a loopback BBS)", ErrInvalidConfig, c.URL)
	case !c.Insecure && c.CAFile == "":
		return fmt.Errorf("%w: ca_file is required for https", ErrInvalidConfig)
	case (c.CertFile == "") != (c.KeyFile == ""):
		return fmt.Errorf("%w: cert_file and key_file go together", ErrInvalidConfig)
	case c.Timeout < 0, c.EventIdleTimeout < 0, c.ReconnectDelay < 0:
		return fmt.Errorf("%w: durations must not be negative", ErrInvalidConfig)
	case c.MaxConns < 0:
		return fmt.Errorf("%w: max conns %d must not be negative", ErrInvalidConfig, c.MaxConns)
	}
	if c.Identity != "" {
		if _, err := certs.ParseIdentity(c.Identity); err != nil {
			return fmt.Errorf("%w: identity: %v", ErrInvalidConfig, err)
		}
	}
	return nil
}

// DefaultConfigPath is $HOME/.trellis/config.json, where `trellis dev` writes the operator's
// client configuration.
func DefaultConfigPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".trellis", "config.json")
}

// LoadConfig reads a JSON client configuration ({url, ca_file, cert_file, key_file} and
// optionally insecure, identity) over DefaultConfig. Relative file names are relative to the
// file's directory. Errors: ErrInvalidConfig, or the file system's.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("client: read config: %w", err)
	}
	cfg := DefaultConfig()
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, path, err)
	}
	dir := filepath.Dir(path)
	for _, f := range []*string{&cfg.CAFile, &cfg.CertFile, &cfg.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// WriteConfig writes cfg as JSON to path (mode 0600, directory 0700), for `trellis dev`.
func WriteConfig(path string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("client: encode config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client: write config: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("client: write config: %w", err)
	}
	return nil
}
