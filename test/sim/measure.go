package sim

import (
	"context"
	"math"
	"math/bits"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// hist is a lock-free latency histogram: 16 linear sub-buckets per power of two of
// nanoseconds, so a quantile is within 1/16 (6%) of the true value.
type hist struct {
	counts [64 * 16]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64
}

func newHist() *hist { return &hist{} }

func bucketOf(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	e := 63 - bits.LeadingZeros64(uint64(ns)) // ns in [2^e, 2^(e+1))
	sub := (ns >> (e - 4)) & 15
	return (e-3)*16 + int(sub)
}

// bucketValue is the upper bound of bucket b.
func bucketValue(b int) int64 {
	if b < 16 {
		return int64(b)
	}
	e := b/16 + 3
	sub := int64(b % 16)
	return (16 + sub + 1) << (e - 4)
}

func (h *hist) add(d time.Duration) {
	ns := int64(d)
	h.counts[bucketOf(ns)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

func (h *hist) count() int64 { return h.n.Load() }

// quantile returns the q-quantile (0 < q <= 1), 0 for an empty histogram.
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	var seen int64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			return time.Duration(min(bucketValue(b), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *hist) clone() *hist {
	c := newHist()
	for b := range h.counts {
		c.counts[b].Store(h.counts[b].Load())
	}
	c.n.Store(h.n.Load())
	c.max.Store(h.max.Load())
	return c
}

// since returns the observations made after base was cloned from h.
func (h *hist) since(base *hist) *hist {
	c := newHist()
	for b := range h.counts {
		c.counts[b].Store(h.counts[b].Load() - base.counts[b].Load())
	}
	c.n.Store(h.n.Load() - base.n.Load())
	c.max.Store(h.max.Load()) // an upper bound: the maximum of the whole run
	return c
}

// latencies holds one histogram per caller role plus one over all of them.
type latencies struct {
	all     *hist
	mu      sync.Mutex
	roles   map[string]*hist
	methods map[string]*hist
}

func newLatencies() *latencies {
	return &latencies{all: newHist(), roles: map[string]*hist{}, methods: map[string]*hist{}}
}

func (l *latencies) role(name string) *roleHist {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.roles[name]
	if h == nil {
		h = newHist()
		l.roles[name] = h
	}
	return &roleHist{role: h, all: l.all, l: l, name: name}
}

// window is a copy of every histogram, to measure a scenario by difference.
type window struct {
	all     *hist
	roles   map[string]*hist
	methods map[string]*hist
}

func (l *latencies) mark() window {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := window{all: l.all.clone(), roles: map[string]*hist{}, methods: map[string]*hist{}}
	for k, h := range l.roles {
		w.roles[k] = h.clone()
	}
	for k, h := range l.methods {
		w.methods[k] = h.clone()
	}
	return w
}

// minus returns the latencies observed after base.
func (w window) minus(base window) window {
	out := window{all: w.all.since(base.all), roles: map[string]*hist{}, methods: map[string]*hist{}}
	for k, h := range w.roles {
		b := base.roles[k]
		if b == nil {
			b = newHist()
		}
		out.roles[k] = h.since(b)
	}
	for k, h := range w.methods {
		b := base.methods[k]
		if b == nil {
			b = newHist()
		}
		out.methods[k] = h.since(b)
	}
	return out
}

// histDump is a histogram as a worker process sends it: the non-empty buckets.
type histDump struct {
	Buckets map[int]int64 `json:"buckets"`
	N       int64         `json:"n"`
	Max     int64         `json:"max"`
}

// latDump is a worker's latencies.
type latDump struct {
	All     histDump            `json:"all"`
	Roles   map[string]histDump `json:"roles"`
	Methods map[string]histDump `json:"methods"`
}

func (h *hist) dump() histDump {
	d := histDump{Buckets: map[int]int64{}, N: h.n.Load(), Max: h.max.Load()}
	for b := range h.counts {
		if n := h.counts[b].Load(); n != 0 {
			d.Buckets[b] = n
		}
	}
	return d
}

func (h *hist) addDump(d histDump) {
	for b, n := range d.Buckets {
		if b >= 0 && b < len(h.counts) {
			h.counts[b].Add(n)
		}
	}
	h.n.Add(d.N)
	if d.Max > h.max.Load() {
		h.max.Store(d.Max)
	}
}

func (l *latencies) dump() *latDump {
	w := l.mark()
	d := &latDump{All: w.all.dump(), Roles: map[string]histDump{}, Methods: map[string]histDump{}}
	for k, h := range w.roles {
		d.Roles[k] = h.dump()
	}
	for k, h := range w.methods {
		d.Methods[k] = h.dump()
	}
	return d
}

// merge adds a worker's latencies into w.
func (w window) merge(d *latDump) {
	w.all.addDump(d.All)
	for k, hd := range d.Roles {
		if w.roles[k] == nil {
			w.roles[k] = newHist()
		}
		w.roles[k].addDump(hd)
	}
	for k, hd := range d.Methods {
		if w.methods[k] == nil {
			w.methods[k] = newHist()
		}
		w.methods[k].addDump(hd)
	}
}

type roleHist struct {
	role, all *hist
	l         *latencies
	name      string
}

func (r *roleHist) observe(method string, start time.Time) {
	d := time.Since(start)
	r.role.add(d)
	r.all.add(d)
	r.l.method(r.name + " " + method).add(d)
}

// method returns the histogram of one role's method ("cell ClaimActualLRP").
func (l *latencies) method(name string) *hist {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.methods[name]
	if h == nil {
		h = newHist()
		l.methods[name] = h
	}
	return h
}

// timedStore times every request-response call a cell, the brain or the operator makes to
// the BBS (event streams are long-lived and not timed).
type timedStore struct {
	store.Interface
	h *roleHist
}

func (t *timedStore) DesireLRP(ctx context.Context, lrp *models.DesiredLRP) (*models.DesiredLRP, error) {
	defer t.h.observe("DesireLRP", time.Now())
	return t.Interface.DesireLRP(ctx, lrp)
}

func (t *timedStore) DesiredLRP(ctx context.Context, guid string) (*models.DesiredLRP, error) {
	defer t.h.observe("DesiredLRP", time.Now())
	return t.Interface.DesiredLRP(ctx, guid)
}

func (t *timedStore) DesiredLRPs(ctx context.Context, f store.DesiredLRPFilter) ([]*models.DesiredLRP, int64, error) {
	defer t.h.observe("DesiredLRPs", time.Now())
	return t.Interface.DesiredLRPs(ctx, f)
}

func (t *timedStore) RemoveDesiredLRP(ctx context.Context, guid string) error {
	defer t.h.observe("RemoveDesiredLRP", time.Now())
	return t.Interface.RemoveDesiredLRP(ctx, guid)
}

func (t *timedStore) ActualLRPs(ctx context.Context, f store.ActualLRPFilter) ([]*models.ActualLRP, int64, error) {
	defer t.h.observe("ActualLRPs", time.Now())
	return t.Interface.ActualLRPs(ctx, f)
}

func (t *timedStore) CreateUnclaimedActualLRP(ctx context.Context, k models.ActualLRPKey) (*models.ActualLRP, error) {
	defer t.h.observe("CreateUnclaimedActualLRP", time.Now())
	return t.Interface.CreateUnclaimedActualLRP(ctx, k)
}

func (t *timedStore) PlaceActualLRP(ctx context.Context, k models.ActualLRPKey, cell string, rev int64) (*models.ActualLRP, error) {
	defer t.h.observe("PlaceActualLRP", time.Now())
	return t.Interface.PlaceActualLRP(ctx, k, cell, rev)
}

func (t *timedStore) FailActualLRPPlacement(ctx context.Context, k models.ActualLRPKey, reason string, rev int64) (*models.ActualLRP, error) {
	defer t.h.observe("FailActualLRPPlacement", time.Now())
	return t.Interface.FailActualLRPPlacement(ctx, k, reason, rev)
}

func (t *timedStore) RestartActualLRP(ctx context.Context, k models.ActualLRPKey, rev int64) (*models.ActualLRP, error) {
	defer t.h.observe("RestartActualLRP", time.Now())
	return t.Interface.RestartActualLRP(ctx, k, rev)
}

func (t *timedStore) RetireActualLRP(ctx context.Context, k models.ActualLRPKey, presence string, rev int64) error {
	defer t.h.observe("RetireActualLRP", time.Now())
	return t.Interface.RetireActualLRP(ctx, k, presence, rev)
}

func (t *timedStore) MarkActualLRPSuspect(ctx context.Context, k models.ActualLRPKey, rev int64) (*models.ActualLRP, error) {
	defer t.h.observe("MarkActualLRPSuspect", time.Now())
	return t.Interface.MarkActualLRPSuspect(ctx, k, rev)
}

func (t *timedStore) ApplyActualLRPOps(ctx context.Context, ops []store.ActualLRPOp) ([]store.ActualLRPOpResult, error) {
	defer t.h.observe("ApplyActualLRPOps", time.Now())
	return t.Interface.ApplyActualLRPOps(ctx, ops)
}

func (t *timedStore) ClaimActualLRP(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	defer t.h.observe("ClaimActualLRP", time.Now())
	return t.Interface.ClaimActualLRP(ctx, k, ik)
}

func (t *timedStore) ClaimActualLRPWithDesired(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, *models.DesiredLRP, error) {
	defer t.h.observe("ClaimActualLRPWithDesired", time.Now())
	return t.Interface.ClaimActualLRPWithDesired(ctx, k, ik)
}

func (t *timedStore) StartActualLRP(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey, ni models.ActualLRPNetInfo) (*models.ActualLRP, error) {
	defer t.h.observe("StartActualLRP", time.Now())
	return t.Interface.StartActualLRP(ctx, k, ik, ni)
}

func (t *timedStore) CrashActualLRP(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey, reason string) (*models.ActualLRP, error) {
	defer t.h.observe("CrashActualLRP", time.Now())
	return t.Interface.CrashActualLRP(ctx, k, ik, reason)
}

func (t *timedStore) RejectActualLRP(ctx context.Context, k models.ActualLRPKey, cell, reason string) (*models.ActualLRP, error) {
	defer t.h.observe("RejectActualLRP", time.Now())
	return t.Interface.RejectActualLRP(ctx, k, cell, reason)
}

func (t *timedStore) RemoveActualLRP(ctx context.Context, k models.ActualLRPKey, presence string, ik models.ActualLRPInstanceKey) error {
	defer t.h.observe("RemoveActualLRP", time.Now())
	return t.Interface.RemoveActualLRP(ctx, k, presence, ik)
}

func (t *timedStore) EvacuateActualLRP(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	defer t.h.observe("EvacuateActualLRP", time.Now())
	return t.Interface.EvacuateActualLRP(ctx, k, ik)
}

func (t *timedStore) Tasks(ctx context.Context, f store.TaskFilter) ([]*models.Task, int64, error) {
	defer t.h.observe("Tasks", time.Now())
	return t.Interface.Tasks(ctx, f)
}

func (t *timedStore) Heartbeat(ctx context.Context, p *models.CellPresence, ttl time.Duration) error {
	defer t.h.observe("Heartbeat", time.Now())
	return t.Interface.Heartbeat(ctx, p, ttl)
}

func (t *timedStore) Cell(ctx context.Context, id string) (*models.CellPresence, error) {
	defer t.h.observe("Cell", time.Now())
	return t.Interface.Cell(ctx, id)
}

func (t *timedStore) Cells(ctx context.Context) ([]*models.CellPresence, int64, error) {
	defer t.h.observe("Cells", time.Now())
	return t.Interface.Cells(ctx)
}

func (t *timedStore) Domains(ctx context.Context) ([]*models.Domain, error) {
	defer t.h.observe("Domains", time.Now())
	return t.Interface.Domains(ctx)
}

func (t *timedStore) AcquireLock(ctx context.Context, name, owner string, ttl time.Duration) error {
	defer t.h.observe("AcquireLock", time.Now())
	return t.Interface.AcquireLock(ctx, name, owner, ttl)
}

// drainer is the operator's drain call, which store.Interface does not carry; both the store
// and the HTTP client have it.
type drainer interface {
	DrainCell(ctx context.Context, cellID string) (*models.CellPresence, error)
}

func (t *timedStore) DrainCell(ctx context.Context, cellID string) (*models.CellPresence, error) {
	defer t.h.observe("DrainCell", time.Now())
	return t.Interface.(drainer).DrainCell(ctx, cellID)
}

// Memory is the heap in use, attributed to the component whose code allocated it (from a heap
// profile: a sampled estimate), in bytes.
type Memory struct {
	Brain, BBS, Cells, Sim, Other, Total uint64
}

// liveHeap is the heap in use after a GC: in a worker process, all of it is its cells'.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heapByComponent attributes the live heap after a GC to components by the functions on each
// allocation's stack: the brain (package brain), the cells (agent and the in-memory backend),
// the BBS (bbs packages and etcd, server and client), the simulator, and the rest (the
// runtime, net/http connections whose stacks name no component).
func heapByComponent() Memory {
	runtime.GC()
	runtime.GC() // the profile reflects the heap as of the last completed cycle
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	var m Memory
	for _, r := range recs {
		if r.InUseObjects() == 0 {
			continue
		}
		// Undo the sampling: an allocation of size s is sampled with probability 1-e^(-s/rate).
		avg := float64(r.InUseBytes()) / float64(r.InUseObjects())
		scale := 1.0
		if rate > 1 {
			scale = 1 / (1 - math.Exp(-avg/rate))
		}
		bytes := uint64(float64(r.InUseBytes()) * scale)
		m.Total += bytes
		switch classify(r.Stack()) {
		case "brain":
			m.Brain += bytes
		case "cells":
			m.Cells += bytes
		case "bbs":
			m.BBS += bytes
		case "sim":
			m.Sim += bytes
		default:
			m.Other += bytes
		}
	}
	return m
}

func classify(stack []uintptr) string {
	frames := runtime.CallersFrames(stack)
	var brain, cells, bbs, sim bool
	for {
		f, more := frames.Next()
		fn := f.Function
		switch {
		case strings.Contains(fn, "trellis/test/sim"):
			sim = true
		case strings.Contains(fn, "trellis/brain"):
			brain = true
		case strings.Contains(fn, "trellis/agent"), strings.Contains(fn, "isolation/isolationtest"):
			cells = true
		case strings.Contains(fn, "trellis/bbs"), strings.Contains(fn, "go.etcd.io/"):
			bbs = true
		}
		if !more {
			break
		}
	}
	// The caller wins over the BBS code it calls (a client decoding a list it keeps).
	switch {
	case brain:
		return "brain"
	case cells:
		return "cells"
	case sim:
		return "sim"
	case bbs:
		return "bbs"
	}
	return "other"
}

// brainHistogram reads one histogram of the brain's registry, the series whose labels hold
// every pair of labels (name, value, ...): its sum, count and cumulative buckets.
func (c *Cluster) brainHistogram(name string, labels ...string) (sum float64, count uint64, buckets []*dto.Bucket) {
	mfs, err := c.reg.Gather()
	if err != nil {
		return 0, 0, nil
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue series
				}
			}
			h := m.GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount(), h.GetBucket()
		}
	}
	return 0, 0, nil
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// histDelta is a histogram observed between two reads of brainHistogram.
type histDelta struct {
	sum   float64
	count uint64
	upper []float64
	cum   []uint64
}

func (c *Cluster) brainHist(name string, labels ...string) histDelta {
	sum, count, b := c.brainHistogram(name, labels...)
	d := histDelta{sum: sum, count: count}
	for _, x := range b {
		d.upper = append(d.upper, x.GetUpperBound())
		d.cum = append(d.cum, x.GetCumulativeCount())
	}
	return d
}

func (d histDelta) minus(base histDelta) histDelta {
	out := histDelta{sum: d.sum - base.sum, count: d.count - base.count, upper: d.upper}
	for i := range d.cum {
		var b uint64
		if i < len(base.cum) {
			b = base.cum[i]
		}
		out.cum = append(out.cum, d.cum[i]-b)
	}
	return out
}

func (d histDelta) mean() time.Duration {
	if d.count == 0 {
		return 0
	}
	return time.Duration(d.sum / float64(d.count) * float64(time.Second))
}

// maxBound is the upper bound of the highest non-empty bucket (+Inf shown as the mean's
// bucket cannot be known: it returns -1).
func (d histDelta) maxBound() time.Duration {
	prev := uint64(0)
	top := time.Duration(0)
	for i, c := range d.cum {
		if c > prev {
			top = time.Duration(d.upper[i] * float64(time.Second))
		}
		prev = c
	}
	if d.count > prev {
		return -1
	}
	return top
}
