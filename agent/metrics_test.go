package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// countingMetrics counts BulkMetrics calls.
type countingMetrics struct {
	isolation.Backend
	calls atomic.Int64
}

func (b *countingMetrics) BulkMetrics(ctx context.Context, handles []string) (map[string]isolation.Metrics, error) {
	b.calls.Add(1)
	return b.Backend.BulkMetrics(ctx, handles)
}

// TestMetricsSampledOnlyWhileAsked: the sampler leaves the containers alone until metrics are
// asked for; a request while idle samples twice, warmup apart; it then samples every interval
// until idle has passed since the last request.
func TestMetricsSampledOnlyWhileAsked(t *testing.T) {
	b := &countingMetrics{Backend: memoryBackend(t)}
	m := newMetricsSampler(b)
	m.handles = func() []string { return nil }
	m.interval, m.idle, m.warmup = 10*time.Millisecond, 300*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.loop(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	time.Sleep(100 * time.Millisecond)
	if n := b.calls.Load(); n != 0 {
		t.Fatalf("%d samples before metrics were asked for, want 0", n)
	}
	start := time.Now()
	if err := m.current(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < m.warmup {
		t.Fatalf("the first request took %v, want at least the warmup %v between its two samples", d, m.warmup)
	}
	waitFor(t, 5*time.Second, "sampling while warm", func() bool { return b.calls.Load() >= 5 })
	waitFor(t, 5*time.Second, "the sampler going idle", func() bool { return !m.warm() })
	time.Sleep(3 * m.interval) // a sample already under way may still finish
	idle := b.calls.Load()
	time.Sleep(100 * time.Millisecond)
	if n := b.calls.Load(); n != idle {
		t.Fatalf("%d samples while idle, want 0", n-idle)
	}
	// A request while warm answers at once.
	if err := m.current(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := m.current(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= m.warmup {
		t.Fatalf("a request while warm took %v", d)
	}
}
