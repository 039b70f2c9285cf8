package auction

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorder collects the batches a Batcher delivers.
type recorder struct {
	mu      sync.Mutex
	batches []Results
	got     chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 100)} }

func (r *recorder) deliver(_ context.Context, res Results) {
	r.mu.Lock()
	r.batches = append(r.batches, res)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *recorder) wait(t *testing.T, n int) []Results {
	t.Helper()
	for {
		r.mu.Lock()
		if len(r.batches) >= n {
			out := append([]Results(nil), r.batches...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %d batches", n)
		}
	}
}

func startBatcher(t *testing.T, cfg BatcherConfig) *Batcher {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := NewBatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return b
}

func TestBatcherWorkDuringAnAuctionJoinsTheNext(t *testing.T) {
	rec := newRecorder()
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls int
	cfg := DefaultBatcherConfig()
	cfg.Cells = func(ctx context.Context) ([]*CellState, error) {
		calls++
		if calls == 1 {
			close(entered)
			<-release // hold the first auction open
		}
		return []*CellState{linuxCell("c1", "z1"), linuxCell("c2", "z1")}, nil
	}
	cfg.Deliver = rec.deliver
	b := startBatcher(t, cfg)

	b.AddLRPs(lrp("first", 0, 128))
	<-entered
	b.AddLRPs(lrp("second", 0, 128), lrp("second", 1, 128))
	b.AddTasks(task("t", 64))
	if got := b.Pending(); got != 3 {
		t.Fatalf("Pending() = %d during the first auction, want 3", got)
	}
	close(release)

	batches := rec.wait(t, 2)
	if got := summarize(batches[0]); len(got) != 1 || got[0] != "lrp first/0 -> c1" {
		t.Fatalf("first batch %v, want only first/0", got)
	}
	if got := batches[1].Len(); got != 3 || len(batches[1].PlacedLRPs) != 2 || len(batches[1].PlacedTasks) != 1 {
		t.Fatalf("second batch %v, want second/0, second/1 and t", summarize(batches[1]))
	}
}

func TestBatcherDeduplicatesQueuedWork(t *testing.T) {
	rec := newRecorder()
	hold := make(chan struct{})
	started := make(chan struct{}, 1)
	cfg := DefaultBatcherConfig()
	cfg.Cells = func(ctx context.Context) ([]*CellState, error) {
		started <- struct{}{}
		<-hold
		return []*CellState{linuxCell("c1", "z1")}, nil
	}
	cfg.Deliver = rec.deliver
	b := startBatcher(t, cfg)
	b.AddLRPs(lrp("warmup", 0, 1))
	<-started
	// While the warm-up auction is held, queue the same work twice; the later copy wins.
	b.AddLRPs(lrp("p", 0, 128), lrp("p", 0, 256))
	b.AddTasks(task("t", 64), task("t", 32))
	hold <- struct{}{}
	<-started
	hold <- struct{}{}
	batches := rec.wait(t, 2)
	res := batches[1]
	if len(res.PlacedLRPs) != 1 || res.PlacedLRPs[0].Work.MemoryMB != 256 {
		t.Fatalf("second batch LRPs %+v, want one p/0 of 256 MB", res.PlacedLRPs)
	}
	if len(res.PlacedTasks) != 1 || res.PlacedTasks[0].Work.MemoryMB != 32 {
		t.Fatalf("second batch tasks %+v, want one t of 32 MB", res.PlacedTasks)
	}
}

func TestBatcherRetriesWhenCellsFail(t *testing.T) {
	rec := newRecorder()
	var mu sync.Mutex
	failures := 2
	cfg := DefaultBatcherConfig()
	cfg.RetryDelay = time.Millisecond
	cfg.Cells = func(ctx context.Context) ([]*CellState, error) {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return nil, errors.New("bbs unavailable")
		}
		return []*CellState{linuxCell("c1", "z1")}, nil
	}
	cfg.Deliver = rec.deliver
	b := startBatcher(t, cfg)
	b.AddLRPs(lrp("p", 0, 128))
	batches := rec.wait(t, 1)
	if got := summarize(batches[0]); len(got) != 1 || got[0] != "lrp p/0 -> c1" {
		t.Fatalf("batch %v, want p/0 placed after the retries", got)
	}
}

func TestBatcherRunsOnce(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	cfg := DefaultBatcherConfig()
	cfg.Cells = func(context.Context) ([]*CellState, error) {
		close(entered)
		<-release
		return nil, nil
	}
	cfg.Deliver = func(context.Context, Results) {}
	b := startBatcher(t, cfg)
	defer close(release)
	b.AddTasks(task("t", 1))
	<-entered // the first Run is inside an auction
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Run(ctx); !errors.Is(err, ErrBatcherRunning) {
		t.Fatalf("second Run returned %v, want ErrBatcherRunning", err)
	}
}

func TestBatcherConfigValidate(t *testing.T) {
	cells := func(context.Context) ([]*CellState, error) { return nil, nil }
	deliver := func(context.Context, Results) {}
	tests := []struct {
		name string
		cfg  BatcherConfig
		ok   bool
	}{
		{"complete", BatcherConfig{Cells: cells, Deliver: deliver}, true},
		{"no cells", BatcherConfig{Deliver: deliver}, false},
		{"no deliver", BatcherConfig{Cells: cells}, false},
		{"negative retry", BatcherConfig{Cells: cells, Deliver: deliver, RetryDelay: -1}, false},
		{"bad options", BatcherConfig{Cells: cells, Deliver: deliver, Options: Options{StartingContainerWeight: -1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBatcher(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewBatcher error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
