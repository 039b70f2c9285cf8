package etcd

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"
)

// Config configures the embedded etcd member. The zero value is not usable: start from
// DefaultConfig and set DataDir.
type Config struct {
	// DataDir holds the member's write-ahead log and database. It is created (mode 0700) if
	// missing and reused as is on the next start, so records survive restarts. Required.
	DataDir string
	// ClientURL is where the member serves clients: an http URL on a loopback address
	// (127.0.0.1, ::1 or localhost). Port 0 picks a free port; Embedded.Endpoints reports it.
	// The embedded member speaks plain HTTP, so it never listens beyond loopback; use an
	// external cluster with TLS (NewClient) to reach etcd from other machines.
	ClientURL string
	// Name is the member's name, recorded in the data dir.
	Name string
	// QuotaBackendBytes is the database size at which etcd raises its NOSPACE alarm and turns
	// read-only; 0 means etcd's default (2 GiB).
	QuotaBackendBytes int64
	// AutoCompaction says how much history etcd keeps. Event streams can resume only from a
	// revision that is still kept; older ones get models.ErrCompacted and must resynchronise.
	AutoCompaction Compaction
	// HeartbeatInterval and ElectionTimeout are raft timings. A single member elects itself at
	// once, so short timings make it ready in tens of milliseconds.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	// ReadyTimeout bounds how long StartEmbedded waits for the member to serve.
	ReadyTimeout time.Duration
	// LogLevel is the lowest level of etcd's own log lines passed to the slog logger.
	// etcd logs many lines at info; the default passes warnings and errors.
	LogLevel slog.Level
}

// Compaction is the history retention of the embedded member. Set at most one field; both
// zero disables automatic compaction (history then grows until the quota is reached).
type Compaction struct {
	// Revisions keeps the latest Revisions revisions.
	Revisions int64
	// Period keeps the history of the latest Period (at least one minute).
	Period time.Duration
}

// DefaultConfig returns a configuration for a single-node embedded member on a free loopback
// port that keeps the last 100 000 revisions. DataDir is left empty: the caller must set it.
func DefaultConfig() Config {
	return Config{
		ClientURL:         "http://127.0.0.1:0",
		Name:              "trellis",
		AutoCompaction:    Compaction{Revisions: 100_000},
		HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout:   100 * time.Millisecond,
		ReadyTimeout:      30 * time.Second,
		LogLevel:          slog.LevelWarn,
	}
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: data dir must be set", ErrInvalidConfig)
	}
	if c.Name == "" {
		return fmt.Errorf("%w: name must be set", ErrInvalidConfig)
	}
	if _, err := parseClientURL(c.ClientURL); err != nil {
		return err
	}
	if c.QuotaBackendBytes < 0 {
		return fmt.Errorf("%w: quota backend bytes %d is negative", ErrInvalidConfig, c.QuotaBackendBytes)
	}
	if err := c.AutoCompaction.validate(); err != nil {
		return err
	}
	if c.HeartbeatInterval < time.Millisecond {
		return fmt.Errorf("%w: heartbeat interval %s is under 1ms", ErrInvalidConfig, c.HeartbeatInterval)
	}
	if c.ElectionTimeout < 5*c.HeartbeatInterval {
		return fmt.Errorf("%w: election timeout %s must be at least 5 heartbeat intervals (%s)",
			ErrInvalidConfig, c.ElectionTimeout, 5*c.HeartbeatInterval)
	}
	if c.ReadyTimeout <= 0 {
		return fmt.Errorf("%w: ready timeout must be positive", ErrInvalidConfig)
	}
	return nil
}

func (c Compaction) validate() error {
	switch {
	case c.Revisions < 0:
		return fmt.Errorf("%w: auto compaction revisions %d is negative", ErrInvalidConfig, c.Revisions)
	case c.Period < 0:
		return fmt.Errorf("%w: auto compaction period %s is negative", ErrInvalidConfig, c.Period)
	case c.Revisions > 0 && c.Period > 0:
		return fmt.Errorf("%w: auto compaction takes revisions or a period, not both", ErrInvalidConfig)
	case c.Period > 0 && c.Period < time.Minute:
		return fmt.Errorf("%w: auto compaction period %s is under one minute", ErrInvalidConfig, c.Period)
	}
	return nil
}

// parseClientURL checks that raw is an http URL on a loopback host with a port.
func parseClientURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: client url %q: %w", ErrInvalidConfig, raw, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%w: client url %q: scheme must be http (the embedded member is loopback only)", ErrInvalidConfig, raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: client url %q: %w", ErrInvalidConfig, raw, err)
	}
	if port == "" {
		return nil, fmt.Errorf("%w: client url %q: port must be set (0 picks a free one)", ErrInvalidConfig, raw)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: client url %q: host must be a loopback address", ErrInvalidConfig, raw)
		}
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%w: client url %q: must not have a path", ErrInvalidConfig, raw)
	}
	return u, nil
}

// ClientConfig configures a client of an external etcd cluster.
type ClientConfig struct {
	// Endpoints are the cluster members' client URLs, e.g. https://10.0.0.5:2379. Required.
	Endpoints []string
	// CAFile verifies the members' certificates. With CertFile and KeyFile it also turns on
	// TLS; an https endpoint without CAFile is verified against the system roots.
	CAFile string
	// CertFile and KeyFile are this client's certificate and key, for clusters that require
	// client certificates. Set both or neither.
	CertFile string
	KeyFile  string
	// DialTimeout bounds establishing the first connection.
	DialTimeout time.Duration
	// Logger receives the client's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// DefaultClientConfig returns a ClientConfig with a 5 s dial timeout and no endpoints.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{DialTimeout: 5 * time.Second}
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig.
func (c ClientConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("%w: at least one endpoint is required", ErrInvalidConfig)
	}
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("%w: endpoint %q: %w", ErrInvalidConfig, ep, err)
		}
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				return fmt.Errorf("%w: endpoint %q has no host", ErrInvalidConfig, ep)
			}
		case "unix", "unixs":
		default:
			return fmt.Errorf("%w: endpoint %q: scheme must be http, https, unix or unixs", ErrInvalidConfig, ep)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%w: cert file and key file must be set together", ErrInvalidConfig)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("%w: dial timeout must be positive", ErrInvalidConfig)
	}
	return nil
}

func (c ClientConfig) wantsTLS() bool {
	if c.CAFile != "" || c.CertFile != "" {
		return true
	}
	for _, ep := range c.Endpoints {
		if u, err := url.Parse(ep); err == nil && (u.Scheme == "https" || u.Scheme == "unixs") {
			return true
		}
	}
	return false
}
