package brain

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
)

// summary collects measured figures, printed after the tests.
var summary struct {
	sync.Mutex
	lines []string
}

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
		fmt.Println("brain measurements:")
		for _, l := range summary.lines {
			fmt.Println("  " + l)
		}
	}
	os.Exit(code)
}

// cluster is a real BBS on embedded etcd with mutual TLS, and clients for its roles.
type cluster struct {
	t        testing.TB
	bbs      *standalone.BBS
	pki      *certs.DevPKI
	operator *client.Client
}

// newCluster starts a BBS. now, when set, stamps the records (a fake clock's Now).
func newCluster(t testing.TB, now func() time.Time) *cluster {
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
	c := &cluster{t: t, bbs: b, pki: pki}
	// Registered first, so it runs last: clients and brains stop before the BBS.
	t.Cleanup(func() { _ = b.Close() })
	c.operator = c.client(pki.Operator)
	if err := c.operator.UpsertDomain(context.Background(), "apps", 0); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) client(f certs.Files) *client.Client {
	c.t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.CAFile, cfg.CertFile, cfg.KeyFile = c.bbs.URL(), c.pki.CAFile, f.CertFile, f.KeyFile
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// brainOpts adjust a test brain's configuration.
type brainOpts struct {
	owner string
	ttl   time.Duration
	clock Clock
	// wrap replaces the BBS the brain talks to (to drop ReleaseLock, fail renewals, ...).
	wrap func(store.Interface) store.Interface
}

// runningBrain is a brain started by a test, with the means to stop it.
type runningBrain struct {
	*Brain
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop ends the brain (a clean shutdown unless its BBS drops ReleaseLock) and waits for it.
func (r *runningBrain) stop() {
	r.cancel()
	<-r.done
	if r.err != nil {
		panic(fmt.Sprintf("brain %s: Run: %v", r.cfg.OwnerID, r.err))
	}
}

func (c *cluster) startBrain(o brainOpts) *runningBrain {
	c.t.Helper()
	cfg := DefaultConfig()
	cfg.OwnerID = o.owner
	if cfg.OwnerID == "" {
		cfg.OwnerID = "brain-a"
	}
	cfg.LockTTL = o.ttl
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 2 * time.Second
	}
	cfg.LockRetryInterval = cfg.LockTTL / 10
	cfg.ResyncDelay = 200 * time.Millisecond
	cfg.Clock = o.clock
	var bbs store.Interface = c.client(c.pki.Brain)
	if o.wrap != nil {
		bbs = o.wrap(bbs)
	}
	reg := prometheus.NewRegistry()
	b, err := New(cfg, bbs, testLogger(c.t, cfg.OwnerID), reg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningBrain{Brain: b, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = b.Run(ctx)
	}()
	c.t.Cleanup(r.stop)
	return r
}

// desire stores a DesiredLRP of n instances with the given rootfs.
func (c *cluster) desire(guid, rootfs string, n int32, mutate ...func(*models.DesiredLRP)) {
	c.t.Helper()
	d := &models.DesiredLRP{
		ProcessGuid: guid, Domain: "apps", RootFS: rootfs, Instances: n,
		MemoryMB: 64, DiskMB: 64,
		Action: &models.Action{Run: &models.RunAction{Path: "/bin/app"}},
	}
	for _, m := range mutate {
		m(d)
	}
	if _, err := c.operator.DesireLRP(context.Background(), d); err != nil {
		c.t.Fatalf("desire %s: %v", guid, err)
	}
}

// actuals returns the records of a process (every presence).
func (c *cluster) actuals(guid string) []*models.ActualLRP {
	c.t.Helper()
	as, _, err := c.operator.ActualLRPs(context.Background(), store.ActualLRPFilter{ProcessGuid: guid})
	if err != nil {
		c.t.Fatalf("list %s: %v", guid, err)
	}
	return as
}

// eventually polls cond every 20 ms until it returns "" or timeout passes, then fails with
// cond's last complaint.
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

// runningPerCell checks that every ORDINARY instance of guid is RUNNING and returns how many
// run on each cell, or a complaint.
func (c *cluster) runningPerCell(guid string, want int) (map[string]int, string) {
	per := map[string]int{}
	n := 0
	for _, a := range c.actuals(guid) {
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

// testCell is a small stand-in for the cell agent: it heartbeats its presence and claims,
// starts (and, if told to, crashes) what is placed on it, and starts and completes tasks,
// all through the BBS client with its own cell certificate.
type testCell struct {
	c        *cluster
	presence models.CellPresence
	ttl      time.Duration
	client   *client.Client
	// crashAfterStart crashes every instance as soon as it is RUNNING.
	crashAfterStart bool

	cancel context.CancelFunc
	done   chan struct{}
}

func (c *cluster) startCell(id, zone string, rootfs []string, ttl time.Duration, crash bool, mutate ...func(*models.CellPresence)) *testCell {
	c.t.Helper()
	files, err := c.pki.IssueCell(id)
	if err != nil {
		c.t.Fatal(err)
	}
	cell := &testCell{
		c: c, ttl: ttl, client: c.client(files), crashAfterStart: crash,
		presence: models.CellPresence{
			CellID: id, Zone: zone, Address: "127.0.0.1:1", OS: "linux",
			Capacity:        models.Resources{MemoryMB: 4096, DiskMB: 4096, Containers: 64},
			RootFSProviders: rootfs,
		},
		done: make(chan struct{}),
	}
	for _, m := range mutate {
		m(&cell.presence)
	}
	ctx := context.Background()
	rev, err := cell.client.Revision(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cell.client.Heartbeat(ctx, &cell.presence, ttl); err != nil {
		c.t.Fatalf("heartbeat %s: %v", id, err)
	}
	ctx, cell.cancel = context.WithCancel(ctx)
	go cell.run(ctx, rev)
	c.t.Cleanup(cell.stop)
	return cell
}

// stop ends the cell's heartbeats and work, as if the machine died: its presence expires
// with its lease.
func (cell *testCell) stop() {
	cell.cancel()
	<-cell.done
}

func (cell *testCell) run(ctx context.Context, rev int64) {
	defer close(cell.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleep(ctx, cell.ttl/3) {
			if err := cell.client.Heartbeat(ctx, &cell.presence, cell.ttl); err != nil && ctx.Err() == nil {
				cell.c.t.Logf("cell %s: heartbeat: %v", cell.presence.CellID, err)
			}
		}
	}()
	id := cell.presence.CellID
	_ = cell.client.Watch(ctx, rev, store.EventFilter{CellID: id}, func(ev store.Event) error {
		switch {
		case ev.ActualLRP != nil && ev.Type != store.EventActualLRPRemoved:
			a := ev.ActualLRP
			if a.State == models.ActualLRPStateUnclaimed && a.CellID == id && a.Presence == models.PresenceOrdinary {
				cell.runInstance(ctx, a)
			}
		case ev.Task != nil && ev.Type != store.EventTaskRemoved:
			t := ev.Task
			if t.State == models.TaskStatePending && t.CellID == id {
				if ok, err := cell.client.StartTask(ctx, t.TaskGuid, id); err == nil && ok {
					_, _ = cell.client.CompleteTask(ctx, t.TaskGuid, id, false, "", "done")
				}
			}
		}
		return nil
	})
	wg.Wait()
}

func (cell *testCell) runInstance(ctx context.Context, a *models.ActualLRP) {
	id := cell.presence.CellID
	ik := models.ActualLRPInstanceKey{InstanceGuid: fmt.Sprintf("%s-%d-%d", a.ProcessGuid, a.Index, a.Revision), CellID: id}
	if _, err := cell.client.ClaimActualLRP(ctx, a.ActualLRPKey, ik); err != nil {
		return // placed elsewhere meanwhile, or gone
	}
	net := models.ActualLRPNetInfo{Address: "127.0.0.1", InstanceAddress: "10.0.0.1",
		Ports: []models.PortMapping{{ContainerPort: 8080, HostPort: 61000}}}
	if _, err := cell.client.StartActualLRP(ctx, a.ActualLRPKey, ik, net); err != nil {
		return
	}
	if cell.crashAfterStart {
		_, _ = cell.client.CrashActualLRP(ctx, a.ActualLRPKey, ik, "exited with status 1")
	}
}

// placementLog watches the whole event stream and records every placement and claim, to
// prove that no instance is ever placed or claimed twice from the same record revision, and
// that each index is placed as often as expected.
type placementLog struct {
	mu sync.Mutex
	// placedFrom maps (guid, index, revision before) to the cells it was placed on.
	placedFrom map[string][]string
	placements map[lrpKey]int
	claims     map[lrpKey][]string
	cancel     context.CancelFunc
	done       chan struct{}
}

func (c *cluster) watchPlacements() *placementLog {
	c.t.Helper()
	l := &placementLog{placedFrom: map[string][]string{}, placements: map[lrpKey]int{},
		claims: map[lrpKey][]string{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	rev, err := c.operator.Revision(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		_ = c.operator.Watch(ctx, rev, store.EventFilter{}, func(ev store.Event) error {
			a, p := ev.ActualLRP, ev.PreviousActualLRP
			if a == nil || ev.Type != store.EventActualLRPChanged || a.Presence != models.PresenceOrdinary {
				return nil
			}
			k := lrpKey{a.ProcessGuid, a.Index}
			l.mu.Lock()
			defer l.mu.Unlock()
			if a.State == models.ActualLRPStateUnclaimed && a.CellID != "" && p != nil && p.CellID != a.CellID {
				from := fmt.Sprintf("%s/%d@%d", a.ProcessGuid, a.Index, p.Revision)
				l.placedFrom[from] = append(l.placedFrom[from], a.CellID)
				l.placements[k]++
			}
			if a.State == models.ActualLRPStateClaimed && (p == nil || p.State != models.ActualLRPStateClaimed) {
				l.claims[k] = append(l.claims[k], a.InstanceGuid)
			}
			return nil
		})
	}()
	c.t.Cleanup(func() { cancel(); <-l.done })
	return l
}

// check fails t if a record revision was placed twice, or if an index of guids was placed or
// claimed other than exactly once.
func (l *placementLog) check(t *testing.T, guids map[string]int32) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for from, cells := range l.placedFrom {
		if len(cells) > 1 {
			t.Errorf("%s placed %d times: %v", from, len(cells), cells)
		}
	}
	var bad []string
	for guid, n := range guids {
		for i := int32(0); i < n; i++ {
			k := lrpKey{guid, i}
			if l.placements[k] != 1 || len(l.claims[k]) != 1 {
				bad = append(bad, fmt.Sprintf("%s/%d placed %d times, claimed by %v", guid, i, l.placements[k], l.claims[k]))
			}
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("instances not placed and claimed exactly once:\n%s", strings.Join(bad, "\n"))
	}
}

// fakeClock is a Clock that moves only when told to.
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

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
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

// Advance moves the clock and runs the timers that came due.
func (c *fakeClock) Advance(d time.Duration) {
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

// testLogger discards logs unless BRAIN_TEST_LOG is set, then writes debug lines to stderr.
func testLogger(t testing.TB, owner string) *slog.Logger {
	if os.Getenv("BRAIN_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).
		With("test", t.Name())
}

// metricValue reads one counter or gauge (or a histogram's sample count) of a test brain's
// registry; labels are name, value pairs that the series must carry.
func metricValue(t testing.TB, b *runningBrain, name string, labels ...string) float64 {
	t.Helper()
	families, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			if m.GetHistogram() != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
