package installer

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

// recorder collects the reports serve sends.
type recorder struct {
	mu      sync.Mutex
	reports []report
	ch      chan report
}

func newRecorder() *recorder { return &recorder{ch: make(chan report, 1024)} }

func (r *recorder) send(rep report) {
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	r.mu.Unlock()
	r.ch <- rep
}

// await returns the first report of phase p, failing after a while.
func (r *recorder) await(t *testing.T, p phase) report {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case rep := <-r.ch:
			if rep.phase == p {
				return rep
			}
		case <-timeout:
			t.Fatalf("no report of phase %d", p)
		}
	}
}

// TestServeStopDrains asks a running program to stop: Stop is called once (a second stop
// request does not call it again), the service reports stopping with a rising checkpoint
// while the drain lasts, and stopped when Run returns.
func TestServeStopDrains(t *testing.T) {
	drain := make(chan struct{})
	var stops int
	var mu sync.Mutex
	p := Program{
		Run: func(ctx context.Context) error {
			select {
			case <-drain:
				time.Sleep(50 * time.Millisecond) // the drain takes a while
				return nil
			case <-ctx.Done():
				return errors.New("context ended instead of a drain")
			}
		},
		Stop: func() {
			mu.Lock()
			defer mu.Unlock()
			stops++
			if stops == 1 {
				close(drain)
			}
		},
	}
	reqs := make(chan request)
	rec := newRecorder()
	errc := make(chan error, 1)
	go func() { errc <- serve(context.Background(), p, reqs, rec.send, 5*time.Millisecond) }()
	rec.await(t, phaseRunning)
	reqs <- reqInterrogate
	if rep := rec.await(t, phaseRunning); rep.phase != phaseRunning {
		t.Fatalf("interrogate answered %+v", rep)
	}
	reqs <- reqStop
	first := rec.await(t, phaseStopping)
	reqs <- reqStop
	if err := <-errc; err != nil {
		t.Fatalf("serve = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if stops != 1 {
		t.Errorf("Stop called %d times, want once", stops)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	last := rec.reports[len(rec.reports)-1]
	if last.phase != phaseStopped {
		t.Errorf("last report %+v, want stopped", last)
	}
	var maxCP uint32
	for _, r := range rec.reports {
		if r.phase == phaseStopping {
			if r.checkpoint < maxCP {
				t.Errorf("checkpoint went back: %+v", rec.reports)
			}
			maxCP = r.checkpoint
			if r.waitHint <= 0 {
				t.Errorf("stopping report without a wait hint: %+v", r)
			}
		}
	}
	if first.checkpoint != 1 || maxCP < 3 {
		t.Errorf("checkpoints did not rise during a 50 ms drain reported every 5 ms: %+v", rec.reports)
	}
}

// TestServeWithoutStopCancels: with no Stop, a stop request cancels Run's context.
func TestServeWithoutStopCancels(t *testing.T) {
	p := Program{Run: func(ctx context.Context) error { <-ctx.Done(); return nil }}
	reqs := make(chan request, 1)
	rec := newRecorder()
	reqs <- reqStop
	if err := serve(context.Background(), p, reqs, rec.send, time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestServeRunFails: a program that ends by itself with an error ends the service with it.
func TestServeRunFails(t *testing.T) {
	boom := errors.New("bbs unreachable")
	p := Program{Run: func(context.Context) error { return boom }}
	rec := newRecorder()
	if err := serve(context.Background(), p, make(chan request), rec.send, time.Second); !errors.Is(err, boom) {
		t.Fatalf("serve = %v, want %v", err, boom)
	}
	rec.await(t, phaseStarting)
	rec.await(t, phaseStopped)
}

func TestRunServiceUnsupportedHere(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("RunService is the real thing on Windows")
	}
	err := RunService(context.Background(), "trellis-agent", Program{Run: func(context.Context) error { return nil }})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("RunService on %s = %v, want ErrUnsupported", runtime.GOOS, err)
	}
	if err := SetRecovery("trellis-agent"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("SetRecovery = %v, want ErrUnsupported", err)
	}
}
