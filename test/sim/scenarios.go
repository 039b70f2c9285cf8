package sim

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Line is one figure of a scenario, with the anchor it is read against.
type Line struct {
	Metric string
	Value  string
	// Anchor is the goal or the peer's published figure, empty when there is none.
	Anchor string
	// Met reports whether the value meets the goal; nil when the line has no goal.
	Met *bool
}

// Result is what one scenario measured.
type Result struct {
	Name  string
	Lines []Line
	// Failures lists the correctness checks that failed (double-running instances, an
	// instance below its desired count); empty when the run was correct.
	Failures []string
}

func (r *Result) add(metric, value, anchor string, met *bool) {
	r.Lines = append(r.Lines, Line{Metric: metric, Value: value, Anchor: anchor, Met: met})
}

func yes(b bool) *bool { return &b }

// FillOptions shape the fill scenario.
type FillOptions struct {
	// Instances is the total to push (rounded up to whole rounds).
	Instances int
	// Each round pushes MultiApps apps of MultiInstances instances and SingleApps apps of
	// one instance: Diego's 20 × 25 per push, with enough single-instance apps that 250,000
	// instances are 200,000 LRPs.
	MultiApps, SingleApps int
	MultiInstances        int32
	// CrashyFraction of the apps crash at Diego's rates once Churn turns crashes on.
	CrashyFraction float64
	// Writers are the operator clients pushing concurrently, each one DesireLRP request at a
	// time. It is a harness parameter, not a property of the fleet: it models how many
	// pushers (Cloud Controllers, CI pipelines) a fleet serves at once. When every request
	// is slow (a loaded machine) few of them pace the fill by their round trips rather than
	// placement; with more, requests queue once the CPU is busy (docs/scale.md).
	Writers int
	// Timeout bounds the wait for every instance to be RUNNING.
	Timeout time.Duration
}

// DefaultFill is the fill: 250,000 instances as 200,000 LRPs.
func DefaultFill() FillOptions {
	return FillOptions{Instances: 250_000, MultiApps: 20, MultiInstances: 25, SingleApps: 1900,
		CrashyFraction: 0.05, Writers: 16, Timeout: 10 * time.Minute}
}

// Fill pushes the mix and waits until every instance is RUNNING.
func (c *Cluster) Fill(ctx context.Context, o FillOptions) (*Result, error) {
	perRound := o.MultiApps*int(o.MultiInstances) + o.SingleApps
	rounds := (o.Instances + perRound - 1) / perRound
	instances, lrps := rounds*perRound, rounds*(o.MultiApps+o.SingleApps)
	c.cfg.Progress("fill: %d instances as %d LRPs in %d rounds of %d×%d + %d×1", instances, lrps, rounds,
		o.MultiApps, o.MultiInstances, o.SingleApps)
	lat := c.latSnapshot(ctx)
	conv := c.convergenceMark()
	c.obs.resetMeasures()
	start := time.Now()

	pushErr := make(chan error, 1)
	go func() {
		for r := 0; r < rounds; r++ {
			for _, batch := range []struct {
				n    int
				inst int32
			}{{o.MultiApps, o.MultiInstances}, {o.SingleApps, 1}} {
				crashy := int(float64(batch.n)*o.CrashyFraction + 0.5)
				if _, err := c.push(ctx, crashy, batch.inst, true, o.Writers); err != nil {
					pushErr <- err
					return
				}
				if _, err := c.push(ctx, batch.n-crashy, batch.inst, false, o.Writers); err != nil {
					pushErr <- err
					return
				}
			}
		}
		pushErr <- nil
	}()
	var pushed time.Duration
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	deadline := time.After(o.Timeout)
	for done := false; !done; {
		select {
		case err := <-pushErr:
			if err != nil {
				return nil, err
			}
			pushed = time.Since(start)
			pushErr = nil
		case <-progress.C:
			s := c.obs.snap()
			c.cfg.Progress("fill: %v: %d of %d RUNNING", time.Since(start).Round(time.Second), s.running, instances)
		case <-deadline:
			s := c.obs.snap()
			return nil, fmt.Errorf("sim: fill: %d of %d RUNNING after %v", s.running, instances, o.Timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
			if pushErr == nil {
				s := c.obs.snap()
				done = s.running >= instances && s.allRunning()
			}
		}
	}
	took := time.Since(start)
	s := c.obs.snap()
	r := &Result{Name: fmt.Sprintf("fill: %d instances (%d LRPs) on %d cells", instances, lrps, c.cfg.Cells)}
	rate := float64(instances) / took.Seconds()
	r.add("all RUNNING after", round(took), "", nil)
	r.add(fmt.Sprintf("desires accepted after (%d operator clients)", o.Writers), round(pushed), "", nil)
	r.add("desires/s accepted", fmt.Sprintf("%.0f", float64(lrps)/pushed.Seconds()), "", nil)
	r.add("placements/s end to end", fmt.Sprintf("%.0f", rate), "goal ≥ 5,000; Nomad ~1,500; Kubernetes 680–810", yes(rate >= 5000))
	r.add("UNCLAIMED→RUNNING p50 / p99", round(s.starts.quantile(0.5))+" / "+round(s.starts.quantile(0.99)), "", nil)
	c.balanceLines(r)
	c.lapseLine(r)
	c.latencyLines(ctx, r, lat, 100*time.Millisecond)
	c.convergenceLines(r, conv)
	c.memoryLines(r, instances)
	return r, nil
}

// balanceLines adds the spread of RUNNING instances among equal cells: cells of one class
// in one zone (the auctioneer balances an app across zones first, so with zones of unequal
// size cells of different zones rightly differ). The worst group is reported.
func (c *Cluster) balanceLines(r *Result) {
	groups := map[string][]*simCell{}
	for _, sc := range c.liveCells() {
		k := c.cfg.Classes[sc.class].Name + " cells in " + c.zoneOf(sc)
		groups[k] = append(groups[k], sc)
	}
	worstPct, worstName := -1.0, ""
	var worstLine string
	for k, cells := range groups {
		counts := c.obs.runningOn(cells)
		lo, hi, sum := math.MaxInt, 0, 0
		for _, n := range counts {
			lo, hi, sum = min(lo, n), max(hi, n), sum+n
		}
		mean := float64(sum) / float64(len(counts))
		var sq float64
		for _, n := range counts {
			sq += (float64(n) - mean) * (float64(n) - mean)
		}
		sd := math.Sqrt(sq / float64(len(counts)))
		pct := 0.0
		if mean > 0 {
			pct = math.Max(float64(hi)-mean, mean-float64(lo)) / mean * 100
		}
		if pct > worstPct || (pct == worstPct && k < worstName) {
			worstPct, worstName = pct, k
			worstLine = fmt.Sprintf("%d (%d–%d, mean %.1f) / %.2f", hi-lo, lo, hi, mean, sd)
		}
	}
	if worstPct < 0 {
		return
	}
	r.add(fmt.Sprintf("balance, worst of %d groups (%s): max−min / stddev", len(groups), worstName), worstLine, "", nil)
	r.add("balance: farthest cell from the mean", fmt.Sprintf("%.1f%%", worstPct), "goal within 2% of the mean", yes(worstPct <= 2))
}

// lapseLine reports how many live cells lost their presence in the scenario and came back:
// heartbeats that did not reach the BBS within the TTL, so the brain took a live cell for
// dead and moved its work.
func (c *Cluster) lapseLine(r *Result) {
	n := c.obs.snap().lapses
	r.add("live cells whose presence lapsed (TTL passed between heartbeats)", fmt.Sprint(n), "should be 0", yes(n == 0))
}

func (c *Cluster) latencyLines(ctx context.Context, r *Result, base window, goal time.Duration) {
	w := c.latSnapshot(ctx).minus(base)
	p99 := w.all.quantile(0.99)
	r.add("BBS requests", fmt.Sprintf("%d", w.all.count()), "", nil)
	r.add("BBS latency p50 / p99", round(w.all.quantile(0.5))+" / "+round(p99),
		fmt.Sprintf("goal p99 < %v; Diego alert 5 s", goal), yes(p99 < goal))
	roles := make([]string, 0, len(w.roles))
	for k := range w.roles {
		roles = append(roles, k)
	}
	sort.Strings(roles)
	for _, k := range roles {
		h := w.roles[k]
		if h.count() == 0 {
			continue
		}
		r.add("  "+k+" calls: n, p50 / p99", fmt.Sprintf("%d, %s / %s", h.count(), round(h.quantile(0.5)), round(h.quantile(0.99))), "", nil)
	}
	if c.cfg.Detail {
		methods := make([]string, 0, len(w.methods))
		for k := range w.methods {
			methods = append(methods, k)
		}
		sort.Strings(methods)
		for _, k := range methods {
			if h := w.methods[k]; h.count() > 0 {
				r.add("    "+k, fmt.Sprintf("%d, %s / %s", h.count(), round(h.quantile(0.5)), round(h.quantile(0.99))), "", nil)
			}
		}
	}
}

// convergence is a mark of the brain's convergence histograms: plans over every process
// (plan, total) and over the processes whose records changed (partial).
type convergence struct {
	plan, total, partial histDelta
	lockLosses, resyncs  float64
}

func (c *Cluster) convergenceMark() convergence {
	return convergence{plan: c.brainHist("trellis_brain_convergence_plan_seconds", "scope", "full"),
		total:      c.brainHist("trellis_brain_convergence_duration_seconds", "scope", "full"),
		partial:    c.brainHist("trellis_brain_convergence_plan_seconds", "scope", "processes"),
		lockLosses: c.brainCounter("trellis_brain_lock_losses_total"),
		resyncs:    c.brainCounter("trellis_brain_resyncs_total")}
}

func (c *Cluster) convergenceLines(r *Result, base convergence) {
	now := c.convergenceMark()
	describe := func(d histDelta) (string, time.Duration) {
		if d.count == 0 {
			return "none", 0
		}
		top := d.maxBound()
		mx := "> 10s"
		if top >= 0 {
			mx = "≤ " + round(top)
		}
		return fmt.Sprintf("%d runs, mean %s, max %s", d.count, round(d.mean()), mx), top
	}
	plan, top := describe(now.plan.minus(base.plan))
	r.add("convergence: planning over every process", plan, "goal < 1 s", yes(top >= 0 && top <= time.Second))
	total, top := describe(now.total.minus(base.total))
	r.add("convergence: that planning + its BBS writes", total, "Diego alert 10 s", yes(top >= 0 && top <= 10*time.Second))
	partial, _ := describe(now.partial.minus(base.partial))
	r.add("convergence: planning of the processes that changed", partial, "", nil)
	losses := c.brainCounter("trellis_brain_lock_losses_total") - base.lockLosses
	resyncs := c.brainCounter("trellis_brain_resyncs_total") - base.resyncs
	r.add("brain: leader lock losses / full re-reads of the BBS", fmt.Sprintf("%.0f / %.0f", losses, resyncs), "", nil)
}

// brainCounter sums a counter of the brain's registry over its labels.
func (c *Cluster) brainCounter(name string) float64 {
	mfs, err := c.reg.Gather()
	if err != nil {
		return 0
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func (c *Cluster) memoryLines(r *Result, instances int) {
	m := heapByComponent()
	per := func(b uint64) string {
		if instances == 0 {
			return mib(b)
		}
		return fmt.Sprintf("%s (%.2f MiB per 1,000 instances)", mib(b), float64(b)/(1<<20)/float64(instances)*1000)
	}
	r.add("heap: BBS + etcd", per(m.BBS), "", nil)
	r.add("heap: brain", per(m.Brain), "", nil)
	// Cells in worker processes are not in this heap: each worker's live heap is theirs.
	cellsLabel := "heap: cells (agents + memory backend)"
	c.mu.Lock()
	hosts := slices.Clone(c.hosts)
	c.mu.Unlock()
	workers := 0
	for _, h := range hosts {
		if b, ok, err := h.heap(context.Background()); err == nil && ok {
			m.Cells += b
			workers++
		}
	}
	if workers > 0 {
		cellsLabel = fmt.Sprintf("heap: cells (agents + memory backend, %d worker processes)", workers)
	}
	r.add(cellsLabel, per(m.Cells), "", nil)
	r.add("heap: the simulator process in all (runtime included)", mib(m.Total), "", nil)
}

// CellLoss kills fraction of the live cells at once and waits until every instance is RUNNING
// elsewhere and no SUSPECT copy is left; then checks that no instance runs twice.
func (c *Cluster) CellLoss(ctx context.Context, fraction float64, timeout time.Duration) (*Result, error) {
	victims := c.pickCells(fraction)
	lost := 0
	for _, n := range c.obs.runningOn(victims) {
		lost += n
	}
	c.cfg.Progress("cell loss: killing %d cells holding %d instances", len(victims), lost)
	lat := c.latSnapshot(ctx)
	conv := c.convergenceMark()
	c.obs.resetMeasures()
	start := time.Now()
	if err := c.kill(ctx, victims); err != nil {
		return nil, err
	}
	killed := time.Since(start)
	want := c.cfg.Cells - c.deadCount()
	var gone time.Duration
	err := waitFor(ctx, timeout, func() bool {
		s := c.obs.snap()
		if gone == 0 && s.cells <= want {
			gone = time.Since(start)
		}
		return gone > 0 && s.allRunning()
	})
	took := time.Since(start)
	if err != nil {
		s := c.obs.snap()
		return nil, fmt.Errorf("sim: cell loss: %d of %d RUNNING, %d suspect, %d cells: %w", s.running, s.expected, s.suspect, s.cells, err)
	}
	s := c.obs.snap()
	r := &Result{Name: fmt.Sprintf("cell loss: %d of %d cells killed at once, %d instances lost", len(victims), len(victims)+len(c.liveCells()), lost)}
	goal := c.cfg.PresenceTTL + 5*time.Second
	r.add("cells gone from the BBS after", round(gone), fmt.Sprintf("presence TTL %v", c.cfg.PresenceTTL), nil)
	r.add("all RUNNING elsewhere after", round(took), "goal ≤ TTL + 5 s = "+goal.String(), yes(took <= goal))
	r.add("re-placed after the cells were gone", fmt.Sprintf("%s (%.0f instances/s)", round(took-gone), float64(lost)/(took-gone).Seconds()), "", nil)
	r.add("UNCLAIMED→RUNNING p50 / p99", round(s.starts.quantile(0.5))+" / "+round(s.starts.quantile(0.99)), "", nil)
	_ = killed
	c.settleChecks(ctx, r)
	c.balanceLines(r)
	c.lapseLine(r)
	c.latencyLines(ctx, r, lat, 100*time.Millisecond)
	c.convergenceLines(r, conv)
	return r, nil
}

// settleChecks waits a moment for stopped containers to go, then counts instances running
// twice.
func (c *Cluster) settleChecks(ctx context.Context, r *Result) {
	var doubles, evac int
	var err error
	_ = waitFor(ctx, 15*time.Second, func() bool {
		doubles, evac, err = c.doubleRunning(ctx)
		return err != nil || doubles == 0 && evac == 0
	})
	if err != nil {
		r.Failures = append(r.Failures, "listing the containers: "+err.Error())
		return
	}
	r.add("instances running twice after settling", fmt.Sprintf("%d (%d evacuating containers left)", doubles, evac), "must be 0", yes(doubles == 0))
	if doubles > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d instances run twice", doubles))
	}
}

func (c *Cluster) deadCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, sc := range c.cells {
		if sc.state != cellAlive {
			n++
		}
	}
	return n
}

// Drain drains fraction of the live cells through the operator's drain call and waits until
// their agents have finished (every instance evacuated) and every instance is RUNNING.
func (c *Cluster) Drain(ctx context.Context, fraction float64, timeout time.Duration) (*Result, error) {
	cells := c.pickCells(fraction)
	moved := 0
	for _, n := range c.obs.runningOn(cells) {
		moved += n
	}
	c.cfg.Progress("drain: draining %d cells holding %d instances", len(cells), moved)
	lat := c.latSnapshot(ctx)
	conv := c.convergenceMark()
	c.obs.resetMeasures()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(cells))
	sem := make(chan struct{}, 16)
	for _, sc := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := c.operator.(drainer).DrainCell(ctx, sc.id); err != nil {
				errs <- fmt.Errorf("sim: drain %s: %w", sc.id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	// A drained agent removes its presence when it is done.
	err := waitFor(ctx, timeout, func() bool {
		return c.obs.presentAmong(cells) == 0 && c.obs.snap().allRunning()
	})
	took := time.Since(start)
	if err != nil {
		s := c.obs.snap()
		return nil, fmt.Errorf("sim: drain: %d of %d RUNNING, %d evacuating: %w", s.running, s.expected, s.evacuating, err)
	}
	c.mu.Lock()
	for _, sc := range cells {
		sc.state = cellDrained
	}
	c.mu.Unlock()
	s := c.obs.snap()
	r := &Result{Name: fmt.Sprintf("drain: %d cells drained, %d instances evacuated", len(cells), moved)}
	r.add("drained and all RUNNING after", round(took), "", nil)
	r.add("replacement UNCLAIMED→RUNNING p50 / p99 / max", round(s.starts.quantile(0.5))+" / "+round(s.starts.quantile(0.99))+" / "+round(s.starts.quantile(1)), "", nil)
	below := s.downs + s.downNow
	r.add("instances without a running copy, longest", fmt.Sprintf("%d, %s", below, round(s.maxDown)),
		"goal: none longer than its replacement's start", yes(s.maxDown <= s.starts.quantile(1)))
	if s.maxDown > s.starts.quantile(1) {
		r.Failures = append(r.Failures, fmt.Sprintf("an instance went %v without a running copy", s.maxDown))
	}
	c.settleChecks(ctx, r)
	c.lapseLine(r)
	c.latencyLines(ctx, r, lat, 100*time.Millisecond)
	c.convergenceLines(r, conv)
	return r, nil
}

// ChurnOptions shape the steady-churn scenario.
type ChurnOptions struct {
	// Duration of the measurement.
	Duration time.Duration
	// Every PushEvery a push of PushApps apps × PushInstances goes in, and the previous
	// churn push is deleted, so the fleet's size stays put.
	PushEvery     time.Duration
	PushApps      int
	PushInstances int32
}

// DefaultChurn pushes 20 × 25 instances every 5 s for 2 minutes.
func DefaultChurn() ChurnOptions {
	return ChurnOptions{Duration: 2 * time.Minute, PushEvery: 5 * time.Second, PushApps: 20, PushInstances: 25}
}

// Churn turns on the crashy apps' crashes (each crashes every 30–360 s, Diego's rates) and
// pushes and deletes apps while measuring BBS latency, convergence and memory.
func (c *Cluster) Churn(ctx context.Context, o ChurnOptions) (*Result, error) {
	if err := c.crashOn(ctx); err != nil {
		return nil, err
	}
	c.cfg.Progress("churn: crashes on; pushing %d×%d every %v for %v", o.PushApps, o.PushInstances, o.PushEvery, o.Duration)
	lat := c.latSnapshot(ctx)
	conv := c.convergenceMark()
	c.obs.resetMeasures()
	start := time.Now()
	tick := time.NewTicker(o.PushEvery)
	defer tick.Stop()
	var prev []*app
	pushes := 0
	for time.Since(start) < o.Duration {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		apps, err := c.push(ctx, o.PushApps, o.PushInstances, false, 8)
		if err != nil {
			return nil, err
		}
		pushes++
		if err := c.remove(ctx, prev); err != nil {
			return nil, err
		}
		prev = apps
	}
	took := time.Since(start)
	s := c.obs.snap()
	r := &Result{Name: fmt.Sprintf("steady churn: %v, crashing apps every 30–360 s, a %d×%d push every %v", round(took), o.PushApps, o.PushInstances, o.PushEvery)}
	r.add("crashes / restarts to RUNNING", fmt.Sprintf("%d crashes (%.1f/s), %d starts", s.crashes, float64(s.crashes)/took.Seconds(), s.starts.count()), "", nil)
	r.add("UNCLAIMED→RUNNING p50 / p99", round(s.starts.quantile(0.5))+" / "+round(s.starts.quantile(0.99)), "", nil)
	r.add("pushes", fmt.Sprintf("%d (%d instances)", pushes, pushes*o.PushApps*int(o.PushInstances)), "", nil)
	c.lapseLine(r)
	c.latencyLines(ctx, r, lat, 100*time.Millisecond)
	c.convergenceLines(r, conv)
	c.memoryLines(r, s.expected)
	return r, nil
}

// remove deletes apps and drops them from the expectations.
func (c *Cluster) remove(ctx context.Context, apps []*app) error {
	guids := make([]string, 0, len(apps))
	for _, a := range apps {
		if err := c.operator.RemoveDesiredLRP(ctx, a.guid); err != nil {
			return fmt.Errorf("sim: remove %s: %w", a.guid, err)
		}
		guids = append(guids, a.guid)
	}
	c.obs.forget(guids)
	c.mu.Lock()
	gone := map[string]bool{}
	for _, g := range guids {
		gone[g] = true
	}
	kept := c.apps[:0]
	for _, a := range c.apps {
		if !gone[a.guid] {
			kept = append(kept, a)
		}
	}
	c.apps = kept
	c.mu.Unlock()
	return nil
}

func round(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
