package image

import (
	"context"
	"fmt"
	"sync"
)

// flight is one download that any number of pulls wait for. It runs on the store's
// context, not on a puller's, so that one impatient puller does not fail the others; it is
// canceled when the last waiter gives up.
type flight struct {
	done     chan struct{}
	err      error // set before done closes
	waiters  int   // guarded by Store.mu
	finished bool  // guarded by Store.mu
	cancel   context.CancelFunc

	pmu  sync.Mutex
	subs map[int]func(int64)
	next int
}

// startFlight runs work in the background as the flight key. finish is called with s.mu
// held after work returns (f.err set; finish may change it), before waiters wake. The
// caller holds s.mu.
func (s *Store) startFlight(key string, work func(ctx context.Context, report func(int64)) error, finish func(f *flight)) *flight {
	ctx, cancel := context.WithCancel(s.ctx)
	f := &flight{done: make(chan struct{}), cancel: cancel, subs: map[int]func(int64){}}
	s.flights[key] = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := work(ctx, f.report)
		s.mu.Lock()
		if s.flights[key] == f {
			delete(s.flights, key)
		}
		if err != nil && s.closed {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		f.err = err
		finish(f)
		f.finished = true
		s.mu.Unlock()
		cancel()
		close(f.done)
	}()
	return f
}

// wait waits for f, which the caller joined (f.waiters++ under s.mu). If ctx ends first the
// caller leaves: the last one to leave cancels the download. abandon, if not nil, is
// called with s.mu held when the caller leaves a flight that had just succeeded.
func (s *Store) wait(ctx context.Context, f *flight, progress func(int64), abandon func()) error {
	if progress != nil {
		f.pmu.Lock()
		id := f.next
		f.next++
		f.subs[id] = progress
		f.pmu.Unlock()
		defer func() {
			f.pmu.Lock()
			delete(f.subs, id)
			f.pmu.Unlock()
		}()
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.finished {
		if f.err == nil && abandon != nil {
			abandon()
		}
	} else if f.waiters--; f.waiters == 0 {
		f.cancel()
		// A pull arriving now starts afresh instead of joining a canceled download.
		for k, g := range s.flights {
			if g == f {
				delete(s.flights, k)
			}
		}
	}
	return ctx.Err()
}

func (f *flight) report(n int64) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	for _, sub := range f.subs {
		sub(n)
	}
}
