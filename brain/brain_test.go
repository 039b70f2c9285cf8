package brain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

const (
	linux   = "preloaded:cflinuxfs4"
	windows = "preloaded:windows2019"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no owner", func(c *Config) { c.OwnerID = "" }, false},
		{"bad lock name", func(c *Config) { c.LockName = "a/b" }, false},
		{"ttl below a second", func(c *Config) { c.LockTTL = 500 * time.Millisecond }, false},
		{"retry not shorter than ttl", func(c *Config) { c.LockRetryInterval = c.LockTTL }, false},
		{"no sweep", func(c *Config) { c.ConvergeInterval = 0 }, false},
		{"negative debounce", func(c *Config) { c.ConvergeDebounce = -1 }, false},
		{"no concurrency", func(c *Config) { c.ApplyConcurrency = 0 }, false},
		{"default batch concurrency", func(c *Config) { c.BatchConcurrency = 0 }, true},
		{"negative batch concurrency", func(c *Config) { c.BatchConcurrency = -1 }, false},
		{"no callback attempts", func(c *Config) { c.CallbackAttempts = 0 }, false},
		{"negative converge option", func(c *Config) { c.Converge.PendingTaskTimeout = -1 }, false},
		{"negative auction weight", func(c *Config) { c.Auction.StartingContainerWeight = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
		})
	}
}

// TestPlacement: the auction's rules seen through the running system — an even spread over
// equal cells, rootfs pinning, and a placement error recorded on the instance.
// writeCounter counts the brain's instance writes: one by one, and in batches.
type writeCounter struct {
	store.Interface
	singles, batches, batched atomic.Int64
}

func (w *writeCounter) PlaceActualLRP(ctx context.Context, k models.ActualLRPKey, cell string, rev int64) (*models.ActualLRP, error) {
	w.singles.Add(1)
	return w.Interface.PlaceActualLRP(ctx, k, cell, rev)
}

func (w *writeCounter) FailActualLRPPlacement(ctx context.Context, k models.ActualLRPKey, reason string, rev int64) (*models.ActualLRP, error) {
	w.singles.Add(1)
	return w.Interface.FailActualLRPPlacement(ctx, k, reason, rev)
}

func (w *writeCounter) MarkActualLRPSuspect(ctx context.Context, k models.ActualLRPKey, rev int64) (*models.ActualLRP, error) {
	w.singles.Add(1)
	return w.Interface.MarkActualLRPSuspect(ctx, k, rev)
}

func (w *writeCounter) ApplyActualLRPOps(ctx context.Context, ops []store.ActualLRPOp) ([]store.ActualLRPOpResult, error) {
	w.batches.Add(1)
	w.batched.Add(int64(len(ops)))
	return w.Interface.ApplyActualLRPOps(ctx, ops)
}

func TestPlacement(t *testing.T) {
	c := newCluster(t, nil)
	log := c.watchPlacements()
	writes := &writeCounter{}
	b := c.startBrain(brainOpts{wrap: func(s store.Interface) store.Interface { writes.Interface = s; return writes }})
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		c.startCell(id, "z1", []string{linux}, 10*time.Second, false)
	}
	c.startCell("cell-win", "z1", []string{windows}, 10*time.Second, false)

	t.Run("spread", func(t *testing.T) {
		c.desire("web", linux, 30)
		var per map[string]int
		took := eventually(t, 20*time.Second, func() (why string) {
			per, why = c.runningPerCell("web", 30)
			return why
		})
		for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
			if per[id] != 10 {
				t.Errorf("instances per cell = %v, want 10 on each linux cell", per)
				break
			}
		}
		report(t, "30 instances over 3 cells %v, all RUNNING after %v", per, took.Round(time.Millisecond))
	})
	t.Run("rootfs pinned", func(t *testing.T) {
		c.desire("dotnet", windows, 4)
		var per map[string]int
		eventually(t, 10*time.Second, func() (why string) {
			per, why = c.runningPerCell("dotnet", 4)
			return why
		})
		if per["cell-win"] != 4 {
			t.Errorf("windows instances per cell = %v, want all 4 on cell-win", per)
		}
	})
	t.Run("no provider", func(t *testing.T) {
		c.desire("nowhere", "preloaded:solaris", 2)
		eventually(t, 10*time.Second, func() string {
			for _, a := range c.actuals("nowhere") {
				if a.State != models.ActualLRPStateUnclaimed || a.CellID != "" ||
					a.PlacementError != "found no compatible cell for required rootfs" {
					return fmt.Sprintf("nowhere/%d: state %s cell %q placement error %q", a.Index, a.State, a.CellID, a.PlacementError)
				}
			}
			return ""
		})
		// A cell that provides the rootfs appears: the failed instances are placed at once.
		c.startCell("cell-sol", "z1", []string{"preloaded:solaris"}, 10*time.Second, false)
		took := eventually(t, 5*time.Second, func() string { _, why := c.runningPerCell("nowhere", 2); return why })
		report(t, "instances without a provider RUNNING %v after a provider appeared", took.Round(time.Millisecond))
	})
	log.check(t, map[string]int32{"web": 30, "dotnet": 4})

	if got := metricValue(t, b, "trellis_brain_placement_errors_total", "kind", "lrp", "reason", "rootfs"); got < 2 {
		t.Errorf("placement_errors_total{lrp,rootfs} = %v, want at least 2", got)
	}
	if got := metricValue(t, b, "trellis_brain_placements_total", "kind", "lrp"); got != 36 {
		t.Errorf("placements_total{lrp} = %v, want 36", got)
	}
	if got := metricValue(t, b, "trellis_brain_leader"); got != 1 {
		t.Errorf("leader gauge = %v, want 1", got)
	}
	// Placements and placement errors go to the BBS in batches, not one request each.
	if n, batches, batched := writes.singles.Load(), writes.batches.Load(), writes.batched.Load(); n != 0 || batches == 0 || batched < 36 || batches >= batched {
		t.Errorf("instance writes: %d one by one, %d in %d batches; want none one by one and fewer batches than writes", n, batched, batches)
	}
}

// TestCellLoss: a cell stops heartbeating; its instances run on the other cells within the
// presence TTL plus 5 s, and the SUSPECT copies are cleaned up once the replacements run.
func TestCellLoss(t *testing.T) {
	const ttl = 2 * time.Second
	c := newCluster(t, nil)
	writes := &writeCounter{}
	c.startBrain(brainOpts{wrap: func(s store.Interface) store.Interface { writes.Interface = s; return writes }})
	cells := map[string]*testCell{}
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		cells[id] = c.startCell(id, "z1", []string{linux}, ttl, false)
	}
	c.desire("web", linux, 6)
	var per map[string]int
	eventually(t, 10*time.Second, func() (why string) { per, why = c.runningPerCell("web", 6); return why })
	if per["cell-2"] != 2 {
		t.Fatalf("instances per cell = %v, want 2 on cell-2", per)
	}

	start := time.Now()
	cells["cell-2"].stop()
	eventually(t, ttl+5*time.Second, func() (why string) {
		per, why = c.runningPerCell("web", 6)
		if why == "" && per["cell-2"] > 0 {
			why = fmt.Sprintf("instances per cell = %v", per)
		}
		return why
	})
	took := time.Since(start)
	report(t, "cell lost (presence TTL %v): its instances RUNNING elsewhere after %v (target TTL+5s = %v)",
		ttl, took.Round(time.Millisecond), ttl+5*time.Second)
	if per["cell-1"] != 3 || per["cell-3"] != 3 {
		t.Errorf("instances per cell after the loss = %v, want 3 on cell-1 and cell-3", per)
	}
	if n := writes.singles.Load(); n != 0 {
		t.Errorf("%d instance writes one by one; want them all in batches", n)
	}
	eventually(t, 5*time.Second, func() string {
		for _, a := range c.actuals("web") {
			if a.Presence != models.PresenceOrdinary {
				return fmt.Sprintf("web/%d still has a %s record on %s", a.Index, a.Presence, a.CellID)
			}
		}
		return ""
	})
}

// TestCrashBackoff drives Diego's restart schedule with a fake clock shared by the BBS (which
// stamps the crash) and the brain (which schedules the restart): crashes 1 and 2 restart at
// once, the nth from the 3rd on after 30 s × 2^(n−3), capped at 16 min.
func TestCrashBackoff(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clock.Now)
	c.startBrain(brainOpts{clock: clock})
	c.startCell("cell-1", "z1", []string{linux}, 10*time.Second, true)
	c.desire("crashy", linux, 1)

	// crashedWith waits until the instance is CRASHED with crash count n.
	crashedWith := func(t *testing.T, n int32, within time.Duration) {
		t.Helper()
		eventually(t, within, func() string {
			as := c.actuals("crashy")
			if len(as) != 1 || as[0].State != models.ActualLRPStateCrashed || as[0].CrashCount != n {
				if len(as) == 1 {
					return fmt.Sprintf("state %s crash count %d, want CRASHED with %d", as[0].State, as[0].CrashCount, n)
				}
				return fmt.Sprintf("%d records", len(as))
			}
			return ""
		})
	}
	// stillCrashed checks that the instance is not restarted for a while.
	stillCrashed := func(t *testing.T, n int32) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		as := c.actuals("crashy")
		if len(as) != 1 || as[0].State != models.ActualLRPStateCrashed || as[0].CrashCount != n {
			t.Fatalf("restarted early: %+v", as[0])
		}
	}

	// Crashes 1 and 2 restart at once: the instance reaches its 3rd crash with the clock still.
	crashedWith(t, 3, 10*time.Second)
	stillCrashed(t, 3)
	schedule := []struct {
		crash int32
		wait  time.Duration
	}{
		{3, 30 * time.Second},
		{4, time.Minute},
		{5, 2 * time.Minute},
		{6, 4 * time.Minute},
		{7, 8 * time.Minute},
		{8, 16 * time.Minute},
		{9, 16 * time.Minute},
	}
	for _, step := range schedule {
		t.Run(fmt.Sprintf("crash %d waits %v", step.crash, step.wait), func(t *testing.T) {
			crashedWith(t, step.crash, 5*time.Second)
			clock.Advance(step.wait - time.Second)
			stillCrashed(t, step.crash)
			clock.Advance(time.Second)
			crashedWith(t, step.crash+1, 5*time.Second)
		})
		if t.Failed() {
			return
		}
	}
}

// noRelease drops ReleaseLock, as a brain that crashes never releases its lock.
type noRelease struct{ store.Interface }

func (noRelease) ReleaseLock(context.Context, string, string) error { return nil }

// TestFailover: the leader dies without releasing the lock; the standby takes over within the
// lease TTL and places new work, and no instance is placed or claimed twice. A clean shutdown
// then hands over at once.
func TestFailover(t *testing.T) {
	const ttl = 2 * time.Second
	c := newCluster(t, nil)
	log := c.watchPlacements()
	a := c.startBrain(brainOpts{owner: "brain-a", ttl: ttl, wrap: func(s store.Interface) store.Interface { return noRelease{s} }})
	eventually(t, 5*time.Second, func() string {
		if !a.IsLeader() {
			return "brain-a does not lead"
		}
		return ""
	})
	b := c.startBrain(brainOpts{owner: "brain-b", ttl: ttl})
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		c.startCell(id, "z1", []string{linux}, 10*time.Second, false)
	}
	c.desire("before", linux, 9)
	eventually(t, 10*time.Second, func() string { _, why := c.runningPerCell("before", 9); return why })
	if b.IsLeader() {
		t.Fatal("both brains lead")
	}

	// A crash: the context ends and the lock is not released. The brain's lease is shorter
	// than the lock TTL by what a takeover costs after it expires, so the standby must lead
	// within the TTL.
	killed := time.Now()
	a.stop()
	c.desire("after", linux, 9)
	led := eventually(t, ttl+2*time.Second, func() string {
		if !b.IsLeader() {
			return "brain-b does not lead"
		}
		return ""
	})
	if led > ttl {
		t.Errorf("the standby led %v after the leader died, want within the lock TTL %v", led, ttl)
	}
	eventually(t, ttl+2*time.Second, func() string { _, why := c.runningPerCell("after", 9); return why })
	took := time.Since(killed)
	report(t, "leader killed (lock TTL %v): standby led after %v and placed new work after %v", ttl, led.Round(time.Millisecond), took.Round(time.Millisecond))

	// A clean shutdown of brain-b releases the lock: brain-c leads at once.
	cBrain := c.startBrain(brainOpts{owner: "brain-c", ttl: ttl})
	stopped := time.Now()
	b.stop()
	handover := eventually(t, ttl, func() string {
		if !cBrain.IsLeader() {
			return "brain-c does not lead"
		}
		return ""
	})
	report(t, "clean shutdown: standby leads after %v", (time.Since(stopped)).Round(time.Millisecond))
	_ = handover
	c.desire("last", linux, 3)
	eventually(t, 5*time.Second, func() string { _, why := c.runningPerCell("last", 3); return why })
	log.check(t, map[string]int32{"before": 9, "after": 9, "last": 3})
}

// failingRenewals fails AcquireLock once armed, as a BBS that cannot be reached does.
type failingRenewals struct {
	store.Interface
	armed atomic.Bool
}

func (f *failingRenewals) AcquireLock(ctx context.Context, name, owner string, ttl time.Duration) error {
	if f.armed.Load() {
		return fmt.Errorf("acquire lock: %w: connection refused", models.ErrUnavailable)
	}
	return f.Interface.AcquireLock(ctx, name, owner, ttl)
}

// TestLockLossStopsActingBeforeTheLeaseEnds: a leader that cannot renew stops at its next
// renewal, well before the lease could expire, and counts the loss.
func TestLockLossStopsActingBeforeTheLeaseEnds(t *testing.T) {
	const ttl = 3 * time.Second
	c := newCluster(t, nil)
	var f *failingRenewals
	a := c.startBrain(brainOpts{ttl: ttl, wrap: func(s store.Interface) store.Interface {
		f = &failingRenewals{Interface: s}
		return f
	}})
	eventually(t, 5*time.Second, func() string {
		if !a.IsLeader() {
			return "not leading"
		}
		return ""
	})
	armed := time.Now()
	f.armed.Store(true)
	took := eventually(t, ttl, func() string {
		if a.IsLeader() {
			return "still leading"
		}
		return ""
	})
	report(t, "renewals failing: stopped acting after %v (lock TTL %v, renewal every %v)",
		took.Round(time.Millisecond), ttl, ttl/3)
	if time.Since(armed) >= ttl-ttl/5 {
		t.Errorf("stopped acting after %v, not before the lease could expire", time.Since(armed))
	}
	if got := metricValue(t, a, "trellis_brain_lock_losses_total"); got != 1 {
		t.Errorf("lock_losses_total = %v, want 1", got)
	}
	// The BBS is reachable again: the brain leads again (it still holds the lock).
	f.armed.Store(false)
	eventually(t, ttl, func() string {
		if !a.IsLeader() {
			return "not leading again"
		}
		return ""
	})
}

// TestTaskCallback: a task is placed, run and completed by a cell; the brain POSTs its
// completion callback exactly once and deletes it.
func TestTaskCallback(t *testing.T) {
	var mu sync.Mutex
	var posts []models.Task
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var task models.Task
		if err := json.Unmarshal(body, &task); err != nil {
			t.Errorf("callback body: %v", err)
		}
		mu.Lock()
		posts = append(posts, task)
		mu.Unlock()
	}))
	defer srv.Close()

	c := newCluster(t, nil)
	c.startBrain(brainOpts{})
	c.startCell("cell-1", "z1", []string{linux}, 10*time.Second, false)
	task := &models.Task{TaskGuid: "stage-1", Domain: "apps", RootFS: linux, MemoryMB: 64, DiskMB: 64,
		Action:                &models.Action{Run: &models.RunAction{Path: "/bin/stage"}},
		CompletionCallbackURL: srv.URL + "/done?token=secret"}
	if _, err := c.operator.DesireTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() string {
		if _, err := c.operator.Task(context.Background(), "stage-1"); !models.IsNotFound(err) {
			return fmt.Sprintf("task still there (err %v)", err)
		}
		return ""
	})
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 1 {
		t.Fatalf("callback POSTed %d times, want once", len(posts))
	}
	if posts[0].TaskGuid != "stage-1" || posts[0].State != models.TaskStateCompleted && posts[0].State != models.TaskStateResolving || posts[0].Result != "done" {
		t.Errorf("callback body = %+v, want the completed task with its result", posts[0])
	}
}

// TestCellReportedUsageCounts: a cell that reports no memory left (containers the BBS does not
// know of) gets no work, although the records put nothing on it.
func TestCellReportedUsageCounts(t *testing.T) {
	c := newCluster(t, nil)
	c.startBrain(brainOpts{})
	c.startCell("cell-1", "z1", []string{linux}, 10*time.Second, false, func(p *models.CellPresence) {
		p.Available = &models.Resources{MemoryMB: 0, DiskMB: 4096, Containers: 64}
	})
	c.startCell("cell-2", "z1", []string{linux}, 10*time.Second, false)
	c.desire("web", linux, 2)
	var per map[string]int
	eventually(t, 10*time.Second, func() (why string) { per, why = c.runningPerCell("web", 2); return why })
	if per["cell-2"] != 2 {
		t.Errorf("instances per cell = %v, want both on cell-2", per)
	}
}

// TestPartialPlansKeepOtherSchedules: a plan triggered by one process's change covers only
// that process, and leaves what earlier plans scheduled for others in place. A crashing app
// waits 30 s for its restart; an unrelated push meanwhile is planned alone (scope
// "processes"), and the restart still comes when its 30 s are up.
func TestPartialPlansKeepOtherSchedules(t *testing.T) {
	clock := newFakeClock()
	c := newCluster(t, clock.Now)
	b := c.startBrain(brainOpts{clock: clock})
	c.startCell("crashing-cell", "z1", []string{windows}, 10*time.Second, true)
	c.startCell("steady-cell", "z1", []string{linux}, 10*time.Second, false)
	for i := range 8 {
		c.desire(fmt.Sprintf("steady-%d", i), linux, 1)
	}
	c.desire("crashy", windows, 1)
	eventually(t, 10*time.Second, func() string {
		as := c.actuals("crashy")
		if len(as) != 1 || as[0].State != models.ActualLRPStateCrashed || as[0].CrashCount != 3 {
			return fmt.Sprintf("crashy: %d records, want one CRASHED 3 times", len(as))
		}
		return ""
	})

	partial := func() float64 {
		return metricValue(t, b, "trellis_brain_convergence_plan_seconds", "scope", scopeProcesses)
	}
	eventually(t, 5*time.Second, func() string {
		if metricValue(t, b, "trellis_brain_convergence_actions_total", "action", "restart_later") == 0 {
			return "crashy's restart is not scheduled"
		}
		return ""
	})
	before := partial()
	c.desire("late", linux, 1)
	eventually(t, 10*time.Second, func() string {
		if as := c.actuals("late"); len(as) != 1 || as[0].State != models.ActualLRPStateRunning {
			return "late: not RUNNING"
		}
		if partial() == before {
			return "no plan of the changed processes alone since the push"
		}
		return ""
	})

	clock.Advance(30 * time.Second)
	eventually(t, 5*time.Second, func() string {
		if as := c.actuals("crashy"); len(as) != 1 || as[0].CrashCount < 4 {
			return "crashy was not restarted after its 30 s"
		}
		return ""
	})
}
