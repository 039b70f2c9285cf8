package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

const (
	linux   = "preloaded:cflinuxfs4"
	windows = "preloaded:windows2019"
)

// TestPlacementWithAgents: 30 instances over 3 equal cells land 10/10/10; an LRP whose rootfs
// only one cell provides lands only there; without a provider every instance shows "found no
// compatible cell for required rootfs".
func TestPlacementWithAgents(t *testing.T) {
	e := newEnv(t, nil)
	log := e.watchPlacements()
	e.startBrain("brain-a", 2*time.Second, nil, false)
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		e.startAgent(id, []string{"cflinuxfs4"}, 10*time.Second)
	}
	e.startAgent("cell-win", []string{"windows2019"}, 10*time.Second)

	start := time.Now()
	e.desire("web", linux, progServe, 30)
	var per map[string]int
	eventually(t, 30*time.Second, func() (why string) { per, why = e.runningPerCell("web", 30); return why })
	report(t, "30 instances over 3 agents: %v, all RUNNING after %v", per, time.Since(start).Round(time.Millisecond))
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		if per[id] != 10 {
			t.Errorf("instances per cell = %v, want 10 on each linux cell", per)
			break
		}
	}

	e.desire("dotnet", windows, progServe, 3)
	eventually(t, 15*time.Second, func() (why string) { per, why = e.runningPerCell("dotnet", 3); return why })
	if per["cell-win"] != 3 {
		t.Errorf("windows instances per cell = %v, want all on cell-win", per)
	}

	e.desire("nowhere", "preloaded:solaris", progServe, 2)
	eventually(t, 10*time.Second, func() string {
		for _, a := range e.actuals("nowhere") {
			if a.State != models.ActualLRPStateUnclaimed || a.PlacementError != "found no compatible cell for required rootfs" {
				return fmt.Sprintf("nowhere/%d: %s, placement error %q", a.Index, a.State, a.PlacementError)
			}
		}
		return ""
	})
	log.check(t, map[string]int32{"web": 30, "dotnet": 3})
}

// TestCellLossWithAgents: an agent stops (its heartbeats end); its instances are RUNNING on the
// other agents within the presence TTL plus 5 s.
func TestCellLossWithAgents(t *testing.T) {
	const ttl = 2 * time.Second
	e := newEnv(t, nil)
	e.startBrain("brain-a", 2*time.Second, nil, false)
	agents := map[string]*testAgent{}
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		agents[id] = e.startAgent(id, []string{"cflinuxfs4"}, ttl)
	}
	e.desire("web", linux, progServe, 6)
	var per map[string]int
	eventually(t, 15*time.Second, func() (why string) { per, why = e.runningPerCell("web", 6); return why })
	if per["cell-2"] == 0 {
		t.Fatalf("instances per cell = %v, want some on cell-2", per)
	}

	start := time.Now()
	agents["cell-2"].stop()
	eventually(t, ttl+5*time.Second, func() (why string) {
		per, why = e.runningPerCell("web", 6)
		if why == "" && per["cell-2"] > 0 {
			why = fmt.Sprintf("instances per cell = %v", per)
		}
		return why
	})
	report(t, "agent stopped (presence TTL %v): its instances RUNNING on other agents after %v (target %v)",
		ttl, time.Since(start).Round(time.Millisecond), ttl+5*time.Second)
}

// TestCrashBackoffWithAgents: an app that exits at once is restarted on Diego's schedule, driven
// by a fake clock shared by the BBS and the brain.
func TestCrashBackoffWithAgents(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := newEnv(t, clock.Now)
	e.startBrain("brain-a", 2*time.Second, clock, false)
	e.startAgent("cell-1", []string{"cflinuxfs4"}, 10*time.Second)
	e.desire("crashy", linux, progCrash, 1)

	crashed := func(t *testing.T, n int32) {
		t.Helper()
		eventually(t, 10*time.Second, func() string {
			for _, a := range e.actuals("crashy") {
				if a.Presence == models.PresenceOrdinary && a.State == models.ActualLRPStateCrashed && a.CrashCount == n {
					return ""
				}
			}
			return fmt.Sprintf("crashy is not CRASHED with crash count %d: %+v", n, e.actuals("crashy"))
		})
	}
	unchanged := func(t *testing.T, n int32) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		for _, a := range e.actuals("crashy") {
			if a.Presence == models.PresenceOrdinary && (a.State != models.ActualLRPStateCrashed || a.CrashCount != n) {
				t.Fatalf("restarted before its time: %s with crash count %d", a.State, a.CrashCount)
			}
		}
	}
	crashed(t, 3) // crashes 1 and 2 restart at once
	unchanged(t, 3)
	for _, step := range []struct {
		crash int32
		wait  time.Duration
	}{{3, 30 * time.Second}, {4, time.Minute}, {5, 2 * time.Minute}, {6, 4 * time.Minute}, {7, 8 * time.Minute}, {8, 16 * time.Minute}, {9, 16 * time.Minute}} {
		t.Run(fmt.Sprintf("crash %d waits %v", step.crash, step.wait), func(t *testing.T) {
			crashed(t, step.crash)
			clock.advance(step.wait - time.Second)
			unchanged(t, step.crash)
			clock.advance(time.Second)
			crashed(t, step.crash+1)
		})
		if t.Failed() {
			return
		}
	}
}

// TestFailoverWithAgents: the leader dies without releasing the lock; the standby places new
// work within about the lock TTL, and no instance is placed or claimed twice.
func TestFailoverWithAgents(t *testing.T) {
	const ttl = 2 * time.Second
	e := newEnv(t, nil)
	log := e.watchPlacements()
	a := e.startBrain("brain-a", ttl, nil, true)
	eventually(t, 5*time.Second, func() string {
		if !a.IsLeader() {
			return "brain-a does not lead"
		}
		return ""
	})
	b := e.startBrain("brain-b", ttl, nil, false)
	for _, id := range []string{"cell-1", "cell-2", "cell-3"} {
		e.startAgent(id, []string{"cflinuxfs4"}, 10*time.Second)
	}
	e.desire("before", linux, progServe, 6)
	eventually(t, 15*time.Second, func() string { _, why := e.runningPerCell("before", 6); return why })

	killed := time.Now()
	a.stop()
	e.desire("after", linux, progServe, 6)
	eventually(t, ttl+3*time.Second, func() string { _, why := e.runningPerCell("after", 6); return why })
	took := time.Since(killed)
	report(t, "leader killed (lock TTL %v): standby's placements RUNNING on agents after %v", ttl, took.Round(time.Millisecond))
	if !b.IsLeader() {
		t.Error("brain-b does not lead")
	}
	log.check(t, map[string]int32{"before": 6, "after": 6})
}
