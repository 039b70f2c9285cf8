package sim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// envWorker makes the test binary a simulator worker process (see TestMain).
const envWorker = "TRELLIS_SIM_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(envWorker) == "1" {
		if err := RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// smallConfig is a fleet of cells cells of 100 containers each, with a 2 s presence TTL.
func smallConfig(t *testing.T, cells int) Config {
	cfg := DefaultConfig()
	cfg.Cells = cells
	cfg.Classes = []CellClass{{Name: "small", Fraction: 1, MemoryMB: 16 << 10, DiskMB: 32 << 10, Containers: 100,
		Stacks: []string{"cflinuxfs4"}, Schemes: []string{"docker"}}}
	cfg.PresenceTTL = 2 * time.Second
	cfg.DataDir = t.TempDir()
	cfg.Progress = t.Logf
	return cfg
}

func smallFill(instances int) FillOptions {
	return FillOptions{Instances: instances, MultiApps: 4, MultiInstances: 25, SingleApps: 20, CrashyFraction: 0.2,
		Writers: 4, Timeout: time.Minute}
}

// check fails the test on a scenario's correctness failures and logs its figures.
func check(t *testing.T, r *Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range r.Lines {
		fmt.Fprintf(&b, "\n  %-50s %s", l.Metric, l.Value)
	}
	t.Logf("%s%s", r.Name, b.String())
	if len(r.Failures) > 0 {
		t.Errorf("%s: %v", r.Name, r.Failures)
	}
}

// metric returns the value of the line named metric.
func metric(r *Result, name string) string {
	for _, l := range r.Lines {
		if strings.HasPrefix(l.Metric, name) {
			return l.Value
		}
	}
	return ""
}

func TestScenariosInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := smallConfig(t, 12)
	cfg.Transport = TransportInProcess
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	fill, err := c.Fill(ctx, smallFill(480))
	check(t, fill, err)
	if got := c.obs.snap(); got.running != 480 || got.expected != 480 {
		t.Fatalf("after the fill: %d of %d RUNNING, want 480", got.running, got.expected)
	}
	loss, err := c.CellLoss(ctx, 0.25, time.Minute)
	check(t, loss, err)
	if got := metric(loss, "instances running twice"); !strings.HasPrefix(got, "0 ") {
		t.Errorf("after the cell loss, instances running twice: %s", got)
	}
	drain, err := c.Drain(ctx, 0.2, time.Minute)
	check(t, drain, err)
	if got := metric(drain, "instances without a running copy"); !strings.HasPrefix(got, "0,") {
		t.Errorf("during the drain, instances without a running copy: %s", got)
	}
	churn, err := c.Churn(ctx, ChurnOptions{Duration: 2 * time.Second, PushEvery: 500 * time.Millisecond, PushApps: 2, PushInstances: 5})
	check(t, churn, err)
	if live := len(c.liveCells()); live != 12-3-3 {
		t.Errorf("%d cells live after losing 3 and draining 3 of 12 (one per zone each time)", live)
	}
}

func TestScenariosInWorkerProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envWorker, "1") // inherited by the workers only: this process already runs tests
	cfg := smallConfig(t, 6)
	cfg.CellsPerWorker = 3
	cfg.WorkerCommand = []string{exe}
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.hosts) != 2 {
		t.Fatalf("%d hosts, want 2 workers of 3 cells", len(c.hosts))
	}
	fill, err := c.Fill(ctx, smallFill(240))
	check(t, fill, err)
	// The workers' cells report their BBS calls.
	if got := metric(fill, "  cell calls"); got == "" {
		t.Errorf("no latencies from the workers' cells: %v", fill.Lines)
	}
	loss, err := c.CellLoss(ctx, 0.34, time.Minute)
	check(t, loss, err)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"no cells", func(c *Config) { c.Cells = 0 }, false},
		{"short ttl", func(c *Config) { c.PresenceTTL = 100 * time.Millisecond }, false},
		{"unknown transport", func(c *Config) { c.Transport = "carrier-pigeon" }, false},
		{"fractions", func(c *Config) { c.Classes = append(c.Classes, DefaultClass()) }, false},
		{"workers without a command", func(c *Config) { c.CellsPerWorker = 10 }, false},
		{"workers in process", func(c *Config) {
			c.CellsPerWorker, c.WorkerCommand, c.Transport = 10, []string{"x"}, TransportInProcess
		}, false},
		{"class without rootfs", func(c *Config) { c.Classes[0].Stacks, c.Classes[0].Schemes = nil, nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.change(&cfg)
			if err := cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestHistQuantiles(t *testing.T) {
	h := newHist()
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got) > float64(tc.want)*1.07 {
			t.Errorf("quantile(%v) = %v, want within 7%% above %v", tc.q, got, tc.want)
		}
	}
	// A window: what came after a mark.
	base := h.clone()
	h.add(5 * time.Second)
	if d := h.since(base); d.count() != 1 || d.quantile(0.5) < 5*time.Second {
		t.Errorf("since: %d observations, p50 %v; want 1 of 5s", d.count(), d.quantile(0.5))
	}
	// Through a worker's dump.
	m := newHist()
	m.addDump(h.dump())
	if m.count() != h.count() || m.quantile(0.99) != h.quantile(0.99) {
		t.Errorf("dumped and merged: n=%d p99=%v, want n=%d p99=%v", m.count(), m.quantile(0.99), h.count(), h.quantile(0.99))
	}
}

// TestObserverCountsPresenceLapses: a cell whose presence disappears and comes back lapsed; a
// cell that disappears for good (killed, or drained and gone) did not; a new window starts
// from none.
func TestObserverCountsPresenceLapses(t *testing.T) {
	o := newObserver()
	cell := func(typ store.EventType, id string) store.Event {
		return store.Event{Type: typ, Cell: &models.CellPresence{CellID: id}}
	}
	for _, ev := range []store.Event{
		cell(store.EventCellAppeared, "a"), cell(store.EventCellAppeared, "b"),
		cell(store.EventCellDisappeared, "a"), cell(store.EventCellChanged, "b"),
		cell(store.EventCellDisappeared, "b"), cell(store.EventCellAppeared, "b"),
	} {
		o.apply(ev)
	}
	if n := o.snap().lapses; n != 1 {
		t.Fatalf("%d lapses, want 1 (b came back, a did not)", n)
	}
	o.resetMeasures()
	o.apply(cell(store.EventCellAppeared, "a"))
	if n := o.snap().lapses; n != 0 {
		t.Fatalf("%d lapses after a reset, want 0 (a went before the window)", n)
	}
}
