package standalone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/etcd"
	"github.com/trellis-run/trellis/bbs/store"
)

// ErrInvalidConfig is returned for an unusable Config.
var ErrInvalidConfig = errors.New("invalid BBS configuration")

// Config configures a standalone BBS.
type Config struct {
	// DataDir holds the embedded etcd member's data (in DataDir/etcd). Required unless
	// Etcd.Endpoints names an external cluster.
	DataDir string
	// Etcd, when it has endpoints, points at an external etcd cluster instead of the embedded
	// member.
	Etcd etcd.ClientConfig
	// EmbeddedEtcd tunes the embedded member; DataDir is set from DataDir.
	EmbeddedEtcd etcd.Config
	// Store tunes the store (key prefix, retries).
	Store store.Options
	// EtcdConnections is how many etcd clients, each with a gRPC connection of its own, the
	// store spreads its requests over (Store.Clients); 0 means DefaultEtcdConnections. On one
	// connection a busy BBS queues its requests behind each other. With the embedded member
	// it does not apply: the store calls the member in-process.
	EtcdConnections int
	// Server is the HTTP server's configuration.
	Server bbs.Config
}

// DefaultEtcdConnections is the number of etcd connections of a BBS by default.
const DefaultEtcdConnections = 4

// maxEtcdConnections bounds Config.EtcdConnections.
const maxEtcdConnections = 64

// DefaultConfig returns the defaults of each part.
func DefaultConfig() Config {
	return Config{
		Etcd:         etcd.DefaultClientConfig(),
		EmbeddedEtcd: etcd.DefaultConfig(),
		Server:       bbs.DefaultConfig(),
	}
}

// Validate reports the first problem with c. Errors: ErrInvalidConfig, or the wrapped
// configuration errors of the parts.
func (c Config) Validate() error {
	if len(c.Etcd.Endpoints) == 0 && c.DataDir == "" {
		return fmt.Errorf("%w: data dir is required for the embedded etcd (or give etcd endpoints)", ErrInvalidConfig)
	}
	if len(c.Etcd.Endpoints) > 0 {
		if err := c.Etcd.Validate(); err != nil {
			return err
		}
	}
	if c.EtcdConnections < 0 || c.EtcdConnections > maxEtcdConnections {
		return fmt.Errorf("%w: etcd connections %d must be between 1 and %d (0 for the default %d)",
			ErrInvalidConfig, c.EtcdConnections, maxEtcdConnections, DefaultEtcdConnections)
	}
	return c.Server.Validate()
}

// BBS is a running BBS.
type BBS struct {
	Server   *bbs.Server
	Store    *store.Store
	embedded *etcd.Embedded
	client   *clientv3.Client
	extra    []*clientv3.Client // more connections for the store's requests
	insecure bool
	done     chan error
	cancel   context.CancelFunc
}

// Start starts etcd (or connects to the external cluster), the store and the server, and
// returns once the server accepts connections. The BBS runs until ctx ends or Close.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*BBS, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &BBS{done: make(chan error, 1), insecure: cfg.Server.Insecure}
	if len(cfg.Etcd.Endpoints) == 0 {
		ec := cfg.EmbeddedEtcd
		ec.DataDir = filepath.Join(cfg.DataDir, "etcd")
		em, err := etcd.StartEmbedded(ctx, ec, logger.With("component", "etcd"))
		if err != nil {
			return nil, err
		}
		b.embedded = em
		b.client = em.Client()
	} else {
		ecfg := cfg.Etcd
		if ecfg.Logger == nil {
			ecfg.Logger = logger.With("component", "etcd-client")
		}
		c, err := etcd.NewClient(ecfg)
		if err != nil {
			return nil, err
		}
		b.client = c
	}
	conns := cfg.EtcdConnections
	if conns == 0 {
		conns = DefaultEtcdConnections
	}
	if b.embedded != nil {
		conns = 1 // the embedded member's client is in-process: there is no connection to queue on
	}
	for len(b.extra) < conns-1 {
		ecfg := cfg.Etcd
		if ecfg.Logger == nil {
			ecfg.Logger = logger.With("component", "etcd-client")
		}
		c, err := etcd.NewClient(ecfg)
		if err != nil {
			b.closeEtcd()
			return nil, err
		}
		b.extra = append(b.extra, c)
	}
	so := cfg.Store
	if so.Logger == nil {
		so.Logger = logger.With("component", "store")
	}
	so.Clients = append(append([]*clientv3.Client(nil), so.Clients...), b.extra...)
	b.Store = store.New(b.client, so)

	srv, err := bbs.NewServer(cfg.Server, b.Store, logger.With("component", "bbs"))
	if err != nil {
		b.closeEtcd()
		return nil, err
	}
	b.Server = srv
	ln, err := net.Listen("tcp", cfg.Server.ListenAddress)
	if err != nil {
		b.closeEtcd()
		return nil, fmt.Errorf("bbs: listen on %s: %w", cfg.Server.ListenAddress, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	b.cancel = cancel
	go func() {
		b.done <- srv.Serve(sctx, ln)
		b.closeEtcd()
		close(b.done)
	}()
	select {
	case <-srv.Ready():
	case err := <-b.done:
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	return b, nil
}

// URL is the base URL clients use ("https://127.0.0.1:8889").
func (b *BBS) URL() string {
	scheme := "https"
	if b.insecure {
		scheme = "http"
	}
	return scheme + "://" + b.Server.Addr().String()
}

// EtcdEndpoints returns the client URLs of the etcd the BBS uses.
func (b *BBS) EtcdEndpoints() []string { return b.client.Endpoints() }

// Done is closed after the server has stopped and etcd is closed; it first yields the
// server's error, if any.
func (b *BBS) Done() <-chan error { return b.done }

// Close stops the server and etcd and waits for both. It is safe to call more than once.
func (b *BBS) Close() error {
	b.cancel()
	var err error
	for e := range b.done {
		err = e
	}
	return err
}

func (b *BBS) closeEtcd() {
	for _, c := range b.extra {
		c.Close()
	}
	if b.embedded != nil {
		b.embedded.Close()
		return
	}
	if b.client != nil {
		b.client.Close()
	}
}
