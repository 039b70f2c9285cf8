package auction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrBatcherRunning is returned by Run when the Batcher is already running.
var ErrBatcherRunning = errors.New("auction batcher is already running")

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Cells returns the cells to auction over, as they are when an auction starts. Required.
	// An error skips the auction: the batch waits RetryDelay and is auctioned again together
	// with whatever arrived meanwhile.
	Cells func(ctx context.Context) ([]*CellState, error)
	// Deliver receives the results of each auction, on Run's goroutine. Required. The next
	// auction starts only after it returns, so it should record the placements (in the BBS and
	// in whatever Cells reads) before returning; otherwise the next auction does not see them.
	Deliver func(ctx context.Context, results Results)
	// Options tune each auction; the zero value is valid but see Options.
	Options Options
	// RetryDelay is how long to wait after Cells fails before trying again. Default 1 s.
	RetryDelay time.Duration
	// Logger receives one line per auction. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultBatcherConfig returns a configuration with DefaultOptions and a 1 s retry delay;
// Cells and Deliver are left for the caller to set.
func DefaultBatcherConfig() BatcherConfig {
	return BatcherConfig{Options: DefaultOptions(), RetryDelay: time.Second}
}

// Validate reports whether c can be used.
func (c *BatcherConfig) Validate() error {
	if c.Cells == nil {
		return errors.New("auction batcher config: Cells is required")
	}
	if c.Deliver == nil {
		return errors.New("auction batcher config: Deliver is required")
	}
	if c.RetryDelay < 0 {
		return fmt.Errorf("auction batcher config: retry delay %v must not be negative", c.RetryDelay)
	}
	if err := c.Options.Validate(); err != nil {
		return fmt.Errorf("auction batcher config: %w", err)
	}
	return nil
}

// Batcher collects work as it arrives and auctions it in batches, one auction at a time.
// There is no fixed interval: an auction starts as soon as there is work and no auction is in
// flight, and everything that arrives during an auction joins the next one. Adding the same
// instance (process guid and index) or task (guid) again before it is auctioned replaces the
// earlier entry, so the converger may resubmit freely.
//
// Add methods are safe for concurrent use; Run drives the auctions.
type Batcher struct {
	cfg    BatcherConfig
	log    *slog.Logger
	wake   chan struct{}
	mu     sync.Mutex
	lrps   []LRPWork
	lrpAt  map[lrpKey]int
	tasks  []TaskWork
	taskAt map[string]int
	active bool
}

type lrpKey struct {
	guid  string
	index int32
}

// NewBatcher returns a Batcher for cfg (defaults applied to a zero RetryDelay and a nil
// Logger). Errors: cfg fails Validate.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Batcher{
		cfg:    cfg,
		log:    log.With("component", "auction"),
		wake:   make(chan struct{}, 1),
		lrpAt:  map[lrpKey]int{},
		taskAt: map[string]int{},
	}, nil
}

// AddLRPs queues instances for the next auction.
func (b *Batcher) AddLRPs(work ...LRPWork) {
	if len(work) == 0 {
		return
	}
	b.mu.Lock()
	for _, w := range work {
		k := lrpKey{w.ProcessGuid, w.Index}
		if i, ok := b.lrpAt[k]; ok {
			b.lrps[i] = w
			continue
		}
		b.lrpAt[k] = len(b.lrps)
		b.lrps = append(b.lrps, w)
	}
	b.mu.Unlock()
	b.signal()
}

// AddTasks queues tasks for the next auction.
func (b *Batcher) AddTasks(work ...TaskWork) {
	if len(work) == 0 {
		return
	}
	b.mu.Lock()
	for _, w := range work {
		if i, ok := b.taskAt[w.TaskGuid]; ok {
			b.tasks[i] = w
			continue
		}
		b.taskAt[w.TaskGuid] = len(b.tasks)
		b.tasks = append(b.tasks, w)
	}
	b.mu.Unlock()
	b.signal()
}

// Pending returns how much work waits for the next auction.
func (b *Batcher) Pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lrps) + len(b.tasks)
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take removes and returns everything queued.
func (b *Batcher) take() ([]LRPWork, []TaskWork) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lrps, tasks := b.lrps, b.tasks
	b.lrps, b.tasks = nil, nil
	clear(b.lrpAt)
	clear(b.taskAt)
	return lrps, tasks
}

// requeue puts a batch that could not be auctioned back, behind nothing: work added since it
// was taken is newer and wins over it.
func (b *Batcher) requeue(lrps []LRPWork, tasks []TaskWork) {
	b.mu.Lock()
	for _, w := range lrps {
		k := lrpKey{w.ProcessGuid, w.Index}
		if _, ok := b.lrpAt[k]; !ok {
			b.lrpAt[k] = len(b.lrps)
			b.lrps = append(b.lrps, w)
		}
	}
	for _, w := range tasks {
		if _, ok := b.taskAt[w.TaskGuid]; !ok {
			b.taskAt[w.TaskGuid] = len(b.tasks)
			b.tasks = append(b.tasks, w)
		}
	}
	b.mu.Unlock()
}

// Run auctions batches until ctx ends, and returns ctx's error. Errors: ErrBatcherRunning when
// another Run is active.
func (b *Batcher) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.active {
		b.mu.Unlock()
		return ErrBatcherRunning
	}
	b.active = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.active = false
		b.mu.Unlock()
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.wake:
		}
		lrps, tasks := b.take()
		if len(lrps)+len(tasks) == 0 {
			continue
		}
		cells, err := b.cfg.Cells(ctx)
		if err != nil {
			b.requeue(lrps, tasks)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.log.WarnContext(ctx, "cannot read cells for the auction; retrying",
				"error", err, "lrps", len(lrps), "tasks", len(tasks), "retry_in", b.cfg.RetryDelay)
			t := time.NewTimer(b.cfg.RetryDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			b.signal()
			continue
		}
		start := time.Now()
		res := Auction(cells, lrps, tasks, b.cfg.Options)
		b.log.DebugContext(ctx, "auction done", "cells", len(cells),
			"lrps_placed", len(res.PlacedLRPs), "lrps_failed", len(res.FailedLRPs),
			"tasks_placed", len(res.PlacedTasks), "tasks_failed", len(res.FailedTasks),
			"duration", time.Since(start))
		b.cfg.Deliver(ctx, res)
	}
}
