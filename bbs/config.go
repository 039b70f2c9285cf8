package bbs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ErrInvalidConfig is returned by Config.Validate and NewServer for an unusable configuration.
var ErrInvalidConfig = errors.New("invalid BBS configuration")

// TLSConfig names the PEM files of the server's mutual TLS.
type TLSConfig struct {
	// CAFile verifies client certificates.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are the server's certificate and key.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// Config configures a Server. Use DefaultConfig and change what you need.
type Config struct {
	// ListenAddress is host:port for ListenAndServe. Default "127.0.0.1:8889".
	ListenAddress string `json:"listen_address"`
	// TLS is required unless Insecure is set.
	TLS TLSConfig `json:"tls"`
	// Insecure serves plain HTTP and takes the caller's identity from the X-Trellis-Identity
	// header ("operator" when absent). Only allowed on a loopback address.
	Insecure bool `json:"insecure"`
	// MaxBodyBytes bounds a request body; larger bodies get 413. Default 1 MiB.
	MaxBodyBytes int64 `json:"max_body_bytes"`
	// EventKeepalive is how often an idle event stream gets a comment line. Default 15 s.
	EventKeepalive time.Duration `json:"event_keepalive"`
	// PresenceTTL is the cell presence lease when a heartbeat names none. Default 10 s.
	PresenceTTL time.Duration `json:"presence_ttl"`
	// MaxPresenceTTL bounds the ttl_ms a heartbeat may ask for. Default 10 min.
	MaxPresenceTTL time.Duration `json:"max_presence_ttl"`
	// ShutdownTimeout bounds the graceful shutdown: requests still running after it are cut.
	// Default 10 s.
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
	// ReadHeaderTimeout bounds how long a client may take to send request headers. Default 10 s.
	ReadHeaderTimeout time.Duration `json:"read_header_timeout"`
	// Version is reported by GET /v1/info. Default "dev".
	Version string `json:"version"`
	// ImageResolution says whether docker:// and oci:// rootfs tags are pinned to a digest
	// when a DesiredLRP is created (the default) and how long the registry may take.
	ImageResolution ImageResolutionConfig `json:"image_resolution"`
	// ImageResolver pins image tags (see ImageResolver). Nil stores image rootfs URIs as
	// given, as ImageResolution.Skip does; the trellis program sets the registry-backed one.
	ImageResolver ImageResolver `json:"-"`
}

// DefaultConfig returns the defaults documented on Config. TLS files are left empty.
func DefaultConfig() Config {
	return Config{
		ListenAddress:     "127.0.0.1:8889",
		MaxBodyBytes:      1 << 20,
		EventKeepalive:    15 * time.Second,
		PresenceTTL:       10 * time.Second,
		MaxPresenceTTL:    10 * time.Minute,
		ShutdownTimeout:   10 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		ImageResolution:   ImageResolutionConfig{Timeout: DefaultImageResolveTimeout},
		Version:           "dev",
	}
}

// Validate reports the first problem with c. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
		return fmt.Errorf("%w: listen_address %q: %v", ErrInvalidConfig, c.ListenAddress, err)
	}
	if c.Insecure {
		if !isLoopback(c.ListenAddress) {
			return fmt.Errorf("%w: insecure (plain HTTP) is allowed only on a loopback address, not %q; configure tls instead",
				ErrInvalidConfig, c.ListenAddress)
		}
	} else if c.TLS.CAFile == "" || c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
		return fmt.Errorf("%w: tls.ca_file, tls.cert_file and tls.key_file are required unless insecure is set", ErrInvalidConfig)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"event_keepalive", c.EventKeepalive},
		{"presence_ttl", c.PresenceTTL},
		{"max_presence_ttl", c.MaxPresenceTTL},
		{"shutdown_timeout", c.ShutdownTimeout},
		{"read_header_timeout", c.ReadHeaderTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %v", ErrInvalidConfig, d.name, d.v)
		}
	}
	if c.PresenceTTL > c.MaxPresenceTTL {
		return fmt.Errorf("%w: presence_ttl %v is above max_presence_ttl %v", ErrInvalidConfig, c.PresenceTTL, c.MaxPresenceTTL)
	}
	if c.ImageResolution.Timeout < 0 {
		return fmt.Errorf("%w: image_resolution.timeout must not be negative, got %v", ErrInvalidConfig, c.ImageResolution.Timeout)
	}
	if c.MaxBodyBytes <= 0 {
		return fmt.Errorf("%w: max_body_bytes must be positive, got %d", ErrInvalidConfig, c.MaxBodyBytes)
	}
	return nil
}

// isLoopback reports whether the host of addr (host:port) is a loopback IP or "localhost". An
// empty host (all interfaces) is not loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
