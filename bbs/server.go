package bbs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/store"
)

// Server is the BBS HTTP server. It holds no state of its own beyond metrics: every record lives
// in the store, so any number of servers may run against one etcd.
type Server struct {
	cfg     Config
	store   store.Interface
	logger  *slog.Logger
	tls     *tls.Config
	metrics *metrics
	handler http.Handler

	addr      atomic.Pointer[net.Addr]
	ready     chan struct{}
	readyOnce sync.Once
	served    atomic.Bool

	// streams ends every open event stream when the server shuts down: http.Server.Shutdown
	// waits for handlers, and a stream handler would otherwise run until its client leaves.
	streams     context.Context
	stopStreams context.CancelFunc
}

// NewServer checks cfg, loads the TLS files (unless cfg.Insecure) and builds a server over st.
// A nil logger discards logs. Errors: ErrInvalidConfig, or the TLS files could not be loaded.
func NewServer(cfg Config, st store.Interface, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		store:   st,
		logger:  logger.With("component", "bbs"),
		metrics: newMetrics(),
		ready:   make(chan struct{}),
	}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	if cfg.ImageResolver == nil && !cfg.ImageResolution.Skip {
		s.logger.Info("no image resolver configured: docker:// and oci:// tags are stored unpinned")
	}
	if !cfg.Insecure {
		tc, err := certs.ServerTLSConfig(cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bbs: server TLS: %w", err)
		}
		s.tls = tc
	}
	s.handler = s.instrument(s.routes())
	return s, nil
}

// Handler returns the server's HTTP handler (every route, with authentication, metrics and
// logging). Without Serve it sees no TLS state, so it suits tests only in insecure mode.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the address the server listens on, or nil before Serve has started.
func (s *Server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Ready is closed once Serve listens (Addr is then set).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// ListenAndServe listens on cfg.ListenAddress and serves until ctx ends (see Serve).
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("bbs: listen on %s: %w", s.cfg.ListenAddress, err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers requests on ln (wrapping it in TLS unless insecure) until ctx ends, then shuts
// down gracefully: it stops accepting, ends event streams, and waits up to cfg.ShutdownTimeout
// for requests in flight. It returns nil after a shutdown caused by ctx and closes ln in every
// case. A Server serves once. Errors: ErrInvalidConfig (insecure on a non-loopback listener, or
// a second Serve), or the listener's.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.Insecure && !isLoopback(ln.Addr().String()) {
		ln.Close()
		return fmt.Errorf("%w: insecure (plain HTTP) is allowed only on a loopback address, not %s", ErrInvalidConfig, ln.Addr())
	}
	if !s.served.CompareAndSwap(false, true) {
		ln.Close()
		return fmt.Errorf("%w: Serve called twice", ErrInvalidConfig)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	addr := ln.Addr()
	s.addr.Store(&addr)
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures (no or foreign client certificates, scanners) land here.
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("serving", "address", addr.String(), "tls", s.tls != nil)

	select {
	case err := <-errc:
		s.stopStreams()
		return fmt.Errorf("bbs: serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	s.logger.Info("shutting down", "address", addr.String())
	s.stopStreams()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.logger.Warn("graceful shutdown timed out; closing connections", "error", err)
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bbs: serve on %s: %w", addr, err)
	}
	return nil
}

// reqInfo carries what the inner handler learned (the caller) out to the logging middleware.
type reqInfo struct{ identity string }

type reqInfoKey struct{}

// instrument logs each request at debug level and records its metrics by route template.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		route := r.Pattern // set by the ServeMux on this request
		if route == "" {
			route = "unmatched"
		}
		took := time.Since(start)
		s.metrics.observe(route, status, took)
		if s.logger.Enabled(r.Context(), slog.LevelDebug) {
			attrs := append(logAttrs(r, status, info.identity), slog.Duration("took", took))
			s.logger.LogAttrs(r.Context(), slog.LevelDebug, "request", attrs...)
		}
	})
}
