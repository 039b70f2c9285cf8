package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Embedded is a running single-node etcd member inside this process, with one in-process
// client of it.
type Embedded struct {
	etcd      *embed.Etcd
	client    *clientv3.Client
	endpoints []string
	logger    *slog.Logger
	// shutdown demotes etcd's log lines while it closes.
	shutdown atomic.Bool

	closeOnce sync.Once
}

// StartEmbedded starts the member described by cfg and waits until it serves clients, up to
// cfg.ReadyTimeout or the end of ctx. logger receives etcd's own log lines at cfg.LogLevel
// and above (nil discards them). The member lives until Close, not until ctx ends.
//
// Errors: ErrInvalidConfig; ErrNotReady (timeout, ctx done or the member stopped while
// starting); others from creating the data dir or binding the client port.
func StartEmbedded(ctx context.Context, cfg Config, logger *slog.Logger) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd data dir: %w", err)
	}
	clientURL, err := parseClientURL(cfg.ClientURL)
	if err != nil {
		return nil, err
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	// A single member needs no peer transport: raft elects it alone. It still has to
	// advertise a peer URL for its membership record; it names a loopback address that
	// nothing listens on, so no peer port is ever opened.
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.TickMs = uint(cfg.HeartbeatInterval / time.Millisecond)
	ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
	ec.EnableGRPCGateway = false
	switch {
	case cfg.AutoCompaction.Revisions > 0:
		ec.AutoCompactionMode = embed.CompactorModeRevision
		ec.AutoCompactionRetention = strconv.FormatInt(cfg.AutoCompaction.Revisions, 10)
	case cfg.AutoCompaction.Period > 0:
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = cfg.AutoCompaction.Period.String()
	default:
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = "0"
	}
	ec.Logger = "zap"

	em := &Embedded{logger: logger}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(logger, cfg.LogLevel, &em.shutdown))

	started := time.Now()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	}
	em.etcd = e

	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		em.Close()
		return nil, fmt.Errorf("%w: member stopped while starting: %w", ErrNotReady, err)
	case <-timer.C:
		em.Close()
		return nil, fmt.Errorf("%w: not ready after %s", ErrNotReady, cfg.ReadyTimeout)
	case <-ctx.Done():
		em.Close()
		return nil, fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	}

	for _, l := range e.Clients {
		em.endpoints = append(em.endpoints, clientURL.Scheme+"://"+l.Addr().String())
	}
	// The member's own client calls the server's functions directly: no gRPC, no protobuf
	// encoding, no loopback socket. In a BBS filling a fleet those were 40% of the process's
	// CPU (both ends of every read, transaction and lease renewal).
	client := v3client.New(e.Server)
	em.client = client
	logger.Info("embedded etcd ready", "data_dir", cfg.DataDir, "endpoints", em.endpoints,
		"took", time.Since(started))
	return em, nil
}

// Endpoints returns the client URLs the member serves, with the real port when ClientURL
// asked for port 0.
func (e *Embedded) Endpoints() []string {
	return append([]string(nil), e.endpoints...)
}

// Client returns the member's in-process client, owned by e: do not close it; Close does.
// It has no gRPC connection (ActiveConnection is nil), so one serves any number of requests
// at once. Extra clients made by callers must be closed before Close, or Close waits for
// them to time out.
func (e *Embedded) Client() *clientv3.Client {
	return e.client
}

// NewClient returns a client of the member over its client URL, with a gRPC connection of
// its own, as a client in another process would have. The caller closes it before Close.
func (e *Embedded) NewClient() (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   e.endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      newZapLogger(e.logger, slog.LevelWarn, &e.shutdown),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to embedded etcd at %v: %w", e.endpoints, err)
	}
	return c, nil
}

// Err returns a channel that receives an error if the member fails while running.
func (e *Embedded) Err() <-chan error {
	return e.etcd.Err()
}

// Close closes the client and then stops the member, flushing its data dir. It is safe to
// call more than once and from several goroutines; only the first call does the work.
func (e *Embedded) Close() error {
	var err error
	e.closeOnce.Do(func() {
		if e.client != nil {
			if cerr := e.client.Close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
				err = fmt.Errorf("close embedded etcd client: %w", cerr)
			}
		}
		e.shutdown.Store(true)
		e.etcd.Close()
		e.logger.Info("embedded etcd stopped")
	})
	return err
}
