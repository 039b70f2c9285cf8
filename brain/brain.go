package brain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// ErrAlreadyRunning is returned by Run when the Brain is already running.
var ErrAlreadyRunning = errors.New("brain is already running")

// releaseTimeout bounds the ReleaseLock call on the way out.
const releaseTimeout = 2 * time.Second

// Brain is one brain process: a standby that contends for the BBS lock and, while it holds
// it, the auctioneer and the converger of the cluster. Any number of brains may run against
// one BBS; at most one acts at a time.
type Brain struct {
	cfg     Config
	bbs     store.Interface
	log     *slog.Logger
	metrics *metrics
	clock   Clock
	http    *http.Client

	running atomic.Bool
	leading atomic.Bool
}

// New returns a Brain that talks to the BBS through bbs (a *client.Client for a remote BBS
// with the brain's certificate, or a *store.Store in-process). A nil logger discards logs; a
// nil reg leaves the metrics unregistered. Errors: ErrInvalidConfig, or reg's registration
// error (one brain per registry).
func New(cfg Config, bbs store.Interface, logger *slog.Logger, reg prometheus.Registerer) (*Brain, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if bbs == nil {
		return nil, fmt.Errorf("%w: a BBS is required", ErrInvalidConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	b := &Brain{
		cfg:     cfg,
		bbs:     bbs,
		log:     logger.With("component", "brain", "owner", cfg.OwnerID),
		metrics: m,
		clock:   cfg.Clock,
		http:    cfg.CallbackClient,
	}
	if b.clock == nil {
		b.clock = SystemClock{}
	}
	if b.http == nil {
		b.http = &http.Client{Timeout: cfg.CallbackTimeout}
	}
	return b, nil
}

// IsLeader reports whether this brain holds the lock and acts as auctioneer and converger.
func (b *Brain) IsLeader() bool { return b.leading.Load() }

// Run contends for the lock until ctx ends. While it holds the lock it reads the BBS, follows
// its event stream, places work and repairs state; when it cannot renew the lock in time it
// stops at once, before the lease can have expired, and contends again. When ctx ends it stops
// and releases the lock, so a standby takes over at once, and returns nil.
// Errors: ErrAlreadyRunning.
func (b *Brain) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer b.running.Store(false)
	b.metrics.leader.Set(0)
	b.log.InfoContext(ctx, "brain standing by", "lock", b.cfg.LockName, "lock_ttl", b.cfg.LockTTL)

	var lastErr string
	for {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, b.cfg.leaseTTL()-b.cfg.leaseMargin())
		err := b.bbs.AcquireLock(actx, b.cfg.LockName, b.cfg.OwnerID, b.cfg.leaseTTL())
		cancel()
		switch {
		case ctx.Err() != nil:
			if err == nil {
				b.release(ctx)
			}
			return nil
		case err == nil:
			lastErr = ""
			b.lead(ctx, start.Add(b.cfg.leaseTTL()-b.cfg.leaseMargin()))
			if ctx.Err() != nil {
				return nil
			}
		case models.IsLockHeld(err):
			if lastErr != "held" {
				b.log.InfoContext(ctx, "another brain leads; standing by", "detail", err)
				lastErr = "held"
			}
		default:
			if msg := err.Error(); msg != lastErr {
				b.log.WarnContext(ctx, "cannot reach the BBS lock; retrying", "error", err)
				lastErr = msg
			}
		}
		t := time.NewTimer(b.cfg.LockRetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// lead acts as the leader until ctx ends or the lock cannot be renewed before validUntil (the
// moment before which the lease is certainly still ours).
func (b *Brain) lead(ctx context.Context, validUntil time.Time) {
	lctx, cancel := context.WithCancel(ctx)
	b.leading.Store(true)
	b.metrics.leader.Set(1)
	b.log.InfoContext(ctx, "became leader", "lock", b.cfg.LockName)

	sess := newSession(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.run(lctx)
	}()

	renew := time.NewTicker(b.cfg.renewInterval())
	defer renew.Stop()
	expiry := time.NewTimer(time.Until(validUntil))
	defer expiry.Stop()
	var lost error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-expiry.C:
			lost = errors.New("the lock was not renewed in time")
			break loop
		case <-renew.C:
			start := time.Now()
			rctx, rcancel := context.WithDeadline(ctx, validUntil)
			err := b.bbs.AcquireLock(rctx, b.cfg.LockName, b.cfg.OwnerID, b.cfg.leaseTTL())
			rcancel()
			if ctx.Err() != nil {
				break loop
			}
			if err != nil {
				lost = err
				break loop
			}
			validUntil = start.Add(b.cfg.leaseTTL() - b.cfg.leaseMargin())
			expiry.Reset(time.Until(validUntil))
		}
	}
	// Stop placing first, then wait for what is in flight to end.
	if lost != nil {
		b.metrics.lockLosses.Inc()
	}
	b.leading.Store(false)
	b.metrics.leader.Set(0)
	cancel()
	<-done
	if lost != nil {
		b.log.WarnContext(ctx, "lost leadership: stopped acting", "error", lost)
		if models.IsLockHeld(lost) {
			return
		}
	} else {
		b.log.InfoContext(ctx, "stepping down", "lock", b.cfg.LockName)
	}
	b.release(ctx)
}

// release gives the lock up so that a standby takes over without waiting for the lease.
func (b *Brain) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := b.bbs.ReleaseLock(rctx, b.cfg.LockName, b.cfg.OwnerID); err != nil {
		b.log.WarnContext(ctx, "cannot release the lock; a standby takes over when it expires",
			"lock", b.cfg.LockName, "error", err)
	}
}
