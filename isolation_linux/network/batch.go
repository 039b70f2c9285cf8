package network

import (
	"errors"
	"sync"
)

// errNoResult is what a request gets if run returned fewer results than it was given: a bug,
// which must not pass for success.
var errNoResult = errors.New("network: batched request got no result")

// groupCommit runs submitted requests in batches, one batch at a time: a request that arrives
// while nothing runs starts a batch of its own at once (no added latency); requests arriving
// while a batch runs wait and go together in the next one. It serves the DNAT rule changes of
// concurrent Setups and Teardowns, which then share one iptables-restore process (a fork and
// exec of a C binary, several milliseconds of CPU with the nf_tables backend) instead of
// paying one each.
//
// Batches run on a goroutine that exists only while requests are pending, so a groupCommit
// needs no Close. The zero value is not usable: set run.
type groupCommit[T any] struct {
	// run processes one batch, in arrival order, and returns one error per request (nil for
	// success). It is never called concurrently with itself and never with an empty batch.
	run func(batch []T) []error

	mu      sync.Mutex
	pending []*gcRequest[T]
	running bool // a drain goroutine exists
}

type gcRequest[T any] struct {
	v    T
	err  error
	done chan struct{}
}

// do submits v and returns its result once the batch holding it has run. It does not give up
// early: once queued, a request is carried out, and its caller must learn the outcome.
func (g *groupCommit[T]) do(v T) error {
	r := &gcRequest[T]{v: v, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, r)
	if !g.running {
		g.running = true
		go g.drain()
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

func (g *groupCommit[T]) drain() {
	for {
		g.mu.Lock()
		reqs := g.pending
		g.pending = nil
		if len(reqs) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		batch := make([]T, len(reqs))
		for i, r := range reqs {
			batch[i] = r.v
		}
		errs := g.run(batch)
		for i, r := range reqs {
			if i < len(errs) {
				r.err = errs[i]
			} else {
				r.err = errNoResult
			}
			close(r.done)
		}
	}
}
