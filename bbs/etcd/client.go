package etcd

import (
	"fmt"
	"log/slog"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// NewClient returns a client of the external cluster described by cfg, with TLS when cfg
// names a CA or client certificate or an endpoint is https. The connection is made lazily:
// an unreachable cluster shows up as errors (and DialTimeout) on the first requests.
// The caller closes the client.
//
// Errors: ErrInvalidConfig; others from reading the certificate files.
func NewClient(cfg ClientConfig) (*clientv3.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Logger:      newZapLogger(cfg.Logger, slog.LevelWarn, nil),
	}
	if cfg.wantsTLS() {
		info := transport.TLSInfo{
			CertFile:      cfg.CertFile,
			KeyFile:       cfg.KeyFile,
			TrustedCAFile: cfg.CAFile,
		}
		tlsConfig, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load etcd client TLS files (ca %q, cert %q, key %q): %w",
				cfg.CAFile, cfg.CertFile, cfg.KeyFile, err)
		}
		cc.TLS = tlsConfig
	}
	client, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("create etcd client for %v: %w", cfg.Endpoints, err)
	}
	return client, nil
}
