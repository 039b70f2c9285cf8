package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// Programs of the in-memory backend.
const (
	progServe = "/bin/serve" // runs until stopped
	progCrash = "/bin/crash" // exits 1 at once
)

var (
	summary struct {
		sync.Mutex
		lines []string
	}
	subnetSeq atomic.Int32
)

func report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	summary.Lock()
	summary.lines = append(summary.lines, t.Name()+": "+line)
	summary.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if len(summary.lines) > 0 {
		fmt.Println("brain with real agents, measurements:")
		for _, l := range summary.lines {
			fmt.Println("  " + l)
		}
	}
	os.Exit(code)
}

type env struct {
	t        *testing.T
	dir      string
	bbs      *standalone.BBS
	pki      *certs.DevPKI
	operator *client.Client
}

// newEnv starts a BBS; now, when set, stamps its records (a fake clock's Now).
func newEnv(t *testing.T, now func() time.Time) *env {
	t.Helper()
	dir := t.TempDir()
	pki, err := certs.EnsureDevPKI(filepath.Join(dir, "pki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := standalone.DefaultConfig()
	cfg.DataDir = dir
	cfg.Server.ListenAddress = "127.0.0.1:0"
	cfg.Server.TLS.CAFile = pki.CAFile
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = pki.Server.CertFile, pki.Server.KeyFile
	cfg.Store.Now = now
	b, err := standalone.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	e := &env{t: t, dir: dir, bbs: b, pki: pki}
	e.operator = e.client(pki.Operator)
	if err := e.operator.UpsertDomain(context.Background(), "apps", 0); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) client(f certs.Files) *client.Client {
	e.t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.CAFile, cfg.CertFile, cfg.KeyFile = e.bbs.URL(), e.pki.CAFile, f.CertFile, f.KeyFile
	c, err := client.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// stopper ends something a test started and waits for it; calling it again does nothing.
type stopper struct {
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *stopper) stop() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
	})
}

// noRelease drops ReleaseLock, as a brain that crashes never releases its lock.
type noRelease struct{ store.Interface }

func (noRelease) ReleaseLock(context.Context, string, string) error { return nil }

type testBrain struct {
	*brain.Brain
	stopper
}

// startBrain runs a brain with the brain certificate. crashy brains do not release the lock
// when stopped, as a crashed process would not.
func (e *env) startBrain(owner string, ttl time.Duration, clock brain.Clock, crashy bool) *testBrain {
	e.t.Helper()
	cfg := brain.DefaultConfig()
	cfg.OwnerID = owner
	cfg.LockTTL = ttl
	cfg.LockRetryInterval = ttl / 10
	cfg.ResyncDelay = 200 * time.Millisecond
	cfg.Clock = clock
	var bbs store.Interface = e.client(e.pki.Brain)
	if crashy {
		bbs = noRelease{bbs}
	}
	b, err := brain.New(cfg, bbs, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBrain{Brain: b, stopper: stopper{cancel: cancel, done: make(chan struct{})}}
	go func() {
		defer close(tb.done)
		if err := b.Run(ctx); err != nil {
			e.t.Errorf("brain %s: %v", owner, err)
		}
	}()
	e.t.Cleanup(tb.stop)
	return tb
}

type testAgent struct {
	*agent.Agent
	stopper
}

// startAgent runs a real cell agent on the in-memory backend; stacks are its preloaded
// rootfs stacks.
func (e *env) startAgent(cellID string, stacks []string, ttl time.Duration) *testAgent {
	e.t.Helper()
	files, err := e.pki.IssueCell(cellID)
	if err != nil {
		e.t.Fatal(err)
	}
	mc := isolationtest.DefaultMemoryConfig()
	mc.Stacks = stacks
	n := subnetSeq.Add(1)
	mc.ContainerSubnet = fmt.Sprintf("127.%d.%d.0/24", 100+(os.Getpid()+int(n))/250%100, (os.Getpid()+int(n))%250)
	mem, err := isolationtest.NewMemory(mc)
	if err != nil {
		e.t.Fatal(err)
	}
	mem.RegisterProgram(progServe, func(ctx context.Context, _ *isolationtest.ProcContext) int {
		<-ctx.Done()
		return 0
	})
	mem.RegisterProgram(progCrash, func(context.Context, *isolationtest.ProcContext) int { return 1 })

	cfg := agent.DefaultConfig()
	cfg.CellID = cellID
	cfg.BBS = agent.BBSConfig{URL: e.bbs.URL(), CAFile: e.pki.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}
	cfg.Backend = agent.BackendMemory
	cfg.RootFSProviders = map[string]string{}
	for _, s := range stacks {
		cfg.RootFSProviders["preloaded:"+s] = ""
	}
	cfg.DataDir = filepath.Join(e.dir, "cells", cellID)
	cfg.Capacity = agent.CapacityConfig{MemoryMB: 4096, DiskMB: 4096, Containers: 64}
	cfg.PresenceTTL = agent.Duration(ttl)
	cfg.ReconcileInterval = agent.Duration(time.Second)
	cfg.GracefulStop = agent.Duration(200 * time.Millisecond)
	cfg.LogBytesPerInstance = 1 << 20
	cfg.CacheBytes = 16 << 20
	a, err := agent.New(context.Background(), cfg, agent.Options{Store: e.client(files), Backend: mem})
	if err != nil {
		e.t.Fatalf("agent %s: %v", cellID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, stopper: stopper{cancel: cancel, done: make(chan struct{})}}
	go func() {
		defer close(ta.done)
		_ = a.Run(ctx)
	}()
	e.t.Cleanup(func() {
		ta.stop()
		_ = a.Close()
	})
	eventually(e.t, 10*time.Second, func() string {
		if _, err := e.operator.Cell(context.Background(), cellID); err != nil {
			return fmt.Sprintf("cell %s not present: %v", cellID, err)
		}
		return ""
	})
	return ta
}

func (e *env) desire(guid, rootfs, program string, n int32) {
	e.t.Helper()
	d := &models.DesiredLRP{
		ProcessGuid: guid, Domain: "apps", RootFS: rootfs, Instances: n, MemoryMB: 64, DiskMB: 64,
		Action: &models.Action{Run: &models.RunAction{Path: program}},
	}
	if _, err := e.operator.DesireLRP(context.Background(), d); err != nil {
		e.t.Fatalf("desire %s: %v", guid, err)
	}
}

func (e *env) actuals(guid string) []*models.ActualLRP {
	e.t.Helper()
	as, _, err := e.operator.ActualLRPs(context.Background(), store.ActualLRPFilter{ProcessGuid: guid})
	if err != nil {
		e.t.Fatalf("list %s: %v", guid, err)
	}
	return as
}

// runningPerCell returns how many ORDINARY instances of guid run on each cell once all want
// of them are RUNNING, or a complaint.
func (e *env) runningPerCell(guid string, want int) (map[string]int, string) {
	per := map[string]int{}
	n := 0
	for _, a := range e.actuals(guid) {
		if a.Presence != models.PresenceOrdinary {
			continue
		}
		if a.State != models.ActualLRPStateRunning {
			return nil, fmt.Sprintf("%s/%d is %s (cell %q, placement error %q)", guid, a.Index, a.State, a.CellID, a.PlacementError)
		}
		per[a.CellID]++
		n++
	}
	if n != want {
		return nil, fmt.Sprintf("%d of %d instances of %s RUNNING", n, want, guid)
	}
	return per, ""
}

func eventually(t *testing.T, timeout time.Duration, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < timeout {
		if why = cond(); why == "" {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("after %v: %s", timeout, why)
	return 0
}

// placementLog records, from the event stream, every placement and claim of an instance.
type placementLog struct {
	mu         sync.Mutex
	placedFrom map[string][]string // "guid/index@revision before" → cells placed on
	placements map[string]int      // "guid/index" → placements
	claims     map[string]int      // "guid/index" → claims
}

func (e *env) watchPlacements() *placementLog {
	e.t.Helper()
	l := &placementLog{placedFrom: map[string][]string{}, placements: map[string]int{}, claims: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	rev, err := e.operator.Revision(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.operator.Watch(ctx, rev, store.EventFilter{}, func(ev store.Event) error {
			a, p := ev.ActualLRP, ev.PreviousActualLRP
			if a == nil || p == nil || ev.Type != store.EventActualLRPChanged || a.Presence != models.PresenceOrdinary {
				return nil
			}
			k := fmt.Sprintf("%s/%d", a.ProcessGuid, a.Index)
			l.mu.Lock()
			defer l.mu.Unlock()
			if a.State == models.ActualLRPStateUnclaimed && a.CellID != "" && p.CellID != a.CellID {
				from := fmt.Sprintf("%s@%d", k, p.Revision)
				l.placedFrom[from] = append(l.placedFrom[from], a.CellID)
				l.placements[k]++
			}
			if a.State == models.ActualLRPStateClaimed && p.State != models.ActualLRPStateClaimed {
				l.claims[k]++
			}
			return nil
		})
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	return l
}

// check fails t unless every index of guids was placed and claimed exactly once and no record
// revision was placed twice.
func (l *placementLog) check(t *testing.T, guids map[string]int32) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for from, cells := range l.placedFrom {
		if len(cells) > 1 {
			t.Errorf("%s placed %d times: %v", from, len(cells), cells)
		}
	}
	for guid, n := range guids {
		for i := int32(0); i < n; i++ {
			k := fmt.Sprintf("%s/%d", guid, i)
			if l.placements[k] != 1 || l.claims[k] != 1 {
				t.Errorf("%s placed %d and claimed %d times, want once each", k, l.placements[k], l.claims[k])
			}
		}
	}
}

// fakeClock is a brain.Clock that moves only when told to.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) brain.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		t.stopped = true
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// advance moves the clock and runs the timers that came due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t.f)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
}
