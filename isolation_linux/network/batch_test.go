package network

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestGroupCommit(t *testing.T) {
	t.Run("alone, a request runs at once in a batch of its own", func(t *testing.T) {
		var batches [][]int
		g := groupCommit[int]{run: func(b []int) []error {
			batches = append(batches, slices.Clone(b))
			return make([]error, len(b))
		}}
		for i := range 3 {
			if err := g.do(i); err != nil {
				t.Fatal(err)
			}
		}
		if want := [][]int{{0}, {1}, {2}}; !slices.EqualFunc(batches, want, slices.Equal) {
			t.Errorf("batches %v, want %v", batches, want)
		}
	})

	t.Run("requests arriving during a batch share the next, and each gets its own result", func(t *testing.T) {
		const n = 8
		release := make(chan struct{})
		var mu sync.Mutex
		var batches [][]int
		g := groupCommit[int]{}
		g.run = func(b []int) []error {
			mu.Lock()
			first := len(batches) == 0
			batches = append(batches, slices.Clone(b))
			mu.Unlock()
			if first {
				<-release
			}
			errs := make([]error, len(b))
			for i, v := range b {
				if v%3 == 0 {
					errs[i] = fmt.Errorf("request %d failed", v)
				}
			}
			return errs
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		wg.Go(func() { errs[0] = g.do(0) })
		waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
		for i := 1; i < n; i++ {
			wg.Go(func() { errs[i] = g.do(i) })
		}
		waitFor(t, func() bool { return g.queued() == n-1 })
		close(release)
		wg.Wait()
		if len(batches) != 2 || len(batches[1]) != n-1 {
			t.Errorf("batches %v, want [0] then the other %d together", batches, n-1)
		}
		for i, err := range errs {
			if want := i%3 == 0; (err != nil) != want {
				t.Errorf("request %d: err %v, want failure %v", i, err, want)
			}
			if err != nil && err.Error() != fmt.Sprintf("request %d failed", i) {
				t.Errorf("request %d got another's result: %v", i, err)
			}
		}
		// The drain goroutine is gone once idle: a new request starts a new one.
		if err := g.do(1); err != nil || len(batches) != 3 {
			t.Errorf("request after idle: %v, %d batches", err, len(batches))
		}
	})

	t.Run("a request run returned no result for fails", func(t *testing.T) {
		g := groupCommit[int]{run: func(b []int) []error { return nil }}
		if err := g.do(1); err == nil {
			t.Error("do = nil, want an error")
		}
	})
}

// queued returns the number of requests waiting for the next batch.
func (g *groupCommit[T]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
