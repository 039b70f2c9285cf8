package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

type lrpKey struct {
	guid  string
	index int32
}

// obsLRP is what the observer knows of one index.
type obsLRP struct {
	state      string // of the ORDINARY record; "" when there is none
	cell       string
	evacuating bool
	suspect    bool
	// unclaimedAt is when the ORDINARY record last became UNCLAIMED (created, replaced or
	// restarted); zero once RUNNING.
	unclaimedAt time.Time
	// downSince is when the index last stopped having a routable copy (zero while it has one).
	downSince time.Time
}

func (o *obsLRP) routable() bool {
	return o.state == models.ActualLRPStateRunning || o.evacuating || o.suspect
}

// observer follows the BBS event stream and keeps the counts the scenarios wait on and
// measure: instances RUNNING overall and per cell, EVACUATING and SUSPECT copies, how long an
// index went without a routable copy and how long instances took from UNCLAIMED to RUNNING.
type observer struct {
	mu       sync.Mutex
	expected map[string]int32 // instances per pushed app
	total    int              // the sum of expected
	lrps     map[lrpKey]*obsLRP
	running  int
	perCell  map[string]int
	evac     int
	suspect  int
	cells    map[string]bool
	err      error

	// Measurements since the last reset.
	starts   *hist // UNCLAIMED → RUNNING of ORDINARY records
	maxDown  time.Duration
	downs    int
	downNow  int
	crashes  int
	lastSeen time.Time
	// gone holds the cells whose presence disappeared in this window; lapses counts those
	// that came back: a live cell whose heartbeats did not reach the BBS within the TTL.
	gone   map[string]bool
	lapses int
}

func newObserver() *observer {
	return &observer{expected: map[string]int32{}, lrps: map[lrpKey]*obsLRP{}, perCell: map[string]int{},
		cells: map[string]bool{}, starts: newHist(), gone: map[string]bool{}}
}

// load reads the current records and returns the revision to follow events from.
func (o *observer) load(ctx context.Context, s store.Interface) (int64, error) {
	actual, rev, err := s.ActualLRPs(ctx, store.ActualLRPFilter{})
	if err != nil {
		return 0, fmt.Errorf("sim: observer: %w", err)
	}
	cells, crev, err := s.Cells(ctx)
	if err != nil {
		return 0, fmt.Errorf("sim: observer: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range actual {
		o.putLocked(a, time.Now())
	}
	for _, c := range cells {
		o.cells[c.CellID] = true
	}
	return min(rev, crev), nil
}

// follow applies the event stream until ctx ends, reading everything again after a failure.
func (o *observer) follow(ctx context.Context, s store.Interface, rev int64) {
	for ctx.Err() == nil {
		err := s.Watch(ctx, rev, store.EventFilter{}, func(ev store.Event) error {
			o.apply(ev)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		o.mu.Lock()
		o.err = err
		o.lrps, o.perCell, o.cells = map[lrpKey]*obsLRP{}, map[string]int{}, map[string]bool{}
		o.running, o.evac, o.suspect = 0, 0, 0
		o.mu.Unlock()
		var lerr error
		if rev, lerr = o.load(ctx, s); lerr != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (o *observer) apply(ev store.Event) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastSeen = now
	switch ev.Type {
	case store.EventActualLRPCreated, store.EventActualLRPChanged:
		if ev.ActualLRP != nil {
			o.putLocked(ev.ActualLRP, now)
		}
	case store.EventActualLRPRemoved:
		if ev.ActualLRP != nil {
			o.removeLocked(ev.ActualLRP, now)
		}
	case store.EventCellAppeared, store.EventCellChanged:
		if ev.Cell != nil {
			o.cells[ev.Cell.CellID] = true
			if o.gone[ev.Cell.CellID] {
				delete(o.gone, ev.Cell.CellID)
				o.lapses++
			}
		}
	case store.EventCellDisappeared:
		if ev.Cell != nil {
			delete(o.cells, ev.Cell.CellID)
			o.gone[ev.Cell.CellID] = true
		}
	}
}

func (o *observer) entry(a *models.ActualLRP) *obsLRP {
	k := lrpKey{a.ProcessGuid, a.Index}
	e := o.lrps[k]
	if e == nil {
		e = &obsLRP{}
		o.lrps[k] = e
	}
	return e
}

func (o *observer) putLocked(a *models.ActualLRP, now time.Time) {
	e := o.entry(a)
	was := e.routable()
	switch a.Presence {
	case models.PresenceEvacuating:
		if !e.evacuating {
			o.evac++
		}
		e.evacuating = true
	case models.PresenceSuspect:
		if !e.suspect {
			o.suspect++
		}
		e.suspect = true
	default:
		if e.state == models.ActualLRPStateRunning {
			o.running--
			o.perCell[e.cell]--
		}
		if a.State == models.ActualLRPStateCrashed && e.state != models.ActualLRPStateCrashed {
			o.crashes++
		}
		if a.State == models.ActualLRPStateUnclaimed && e.unclaimedAt.IsZero() {
			e.unclaimedAt = now
		}
		e.state, e.cell = a.State, a.CellID
		if a.State == models.ActualLRPStateRunning {
			o.running++
			o.perCell[a.CellID]++
			if !e.unclaimedAt.IsZero() {
				o.starts.add(now.Sub(e.unclaimedAt))
				e.unclaimedAt = time.Time{}
			}
		}
	}
	o.updateDownLocked(e, was, now)
}

func (o *observer) removeLocked(a *models.ActualLRP, now time.Time) {
	k := lrpKey{a.ProcessGuid, a.Index}
	e := o.lrps[k]
	if e == nil {
		return
	}
	was := e.routable()
	switch a.Presence {
	case models.PresenceEvacuating:
		if e.evacuating {
			o.evac--
		}
		e.evacuating = false
	case models.PresenceSuspect:
		if e.suspect {
			o.suspect--
		}
		e.suspect = false
	default:
		if e.state == models.ActualLRPStateRunning {
			o.running--
			o.perCell[e.cell]--
		}
		e.state, e.cell, e.unclaimedAt = "", "", time.Time{}
	}
	o.updateDownLocked(e, was, now)
	if e.state == "" && !e.evacuating && !e.suspect {
		if !e.downSince.IsZero() {
			o.downNow--
		}
		delete(o.lrps, k)
	}
}

// updateDownLocked tracks how long an index has no routable copy, for indices that had one.
func (o *observer) updateDownLocked(e *obsLRP, was bool, now time.Time) {
	is := e.routable()
	switch {
	case was && !is:
		e.downSince = now
		o.downNow++
	case !was && is && !e.downSince.IsZero():
		d := now.Sub(e.downSince)
		e.downSince = time.Time{}
		o.downNow--
		o.downs++
		o.maxDown = max(o.maxDown, d)
	}
}

// expect records a pushed app's instances.
func (o *observer) expect(guid string, instances int32) {
	o.mu.Lock()
	o.total += int(instances) - int(o.expected[guid])
	o.expected[guid] = instances
	o.mu.Unlock()
}

// resetMeasures starts a new measurement window and returns the previous one's figures.
func (o *observer) resetMeasures() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.starts = newHist()
	o.maxDown, o.downs, o.crashes, o.lapses = 0, 0, 0, 0
	clear(o.gone)
	now := time.Now()
	for _, e := range o.lrps {
		if !e.downSince.IsZero() {
			e.downSince = now
		}
	}
}

// snapshot is the observer's counts at one moment.
type snapshot struct {
	expected, running, evacuating, suspect, cells, crashes int
	downNow, downs, lapses                                 int
	maxDown                                                time.Duration
	starts                                                 *hist
	err                                                    error
}

func (o *observer) snap() snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.total
	// Instances on cells whose presence is gone are not running as far as anyone can route.
	running := o.running
	for cell, k := range o.perCell {
		if !o.cells[cell] {
			running -= k
		}
	}
	return snapshot{expected: n, running: running, evacuating: o.evac, suspect: o.suspect, cells: len(o.cells),
		crashes: o.crashes, downNow: o.downNow, downs: o.downs, lapses: o.lapses, maxDown: o.maxDown, starts: o.starts.clone(), err: o.err}
}

// allRunning reports whether every expected instance is RUNNING with no EVACUATING or SUSPECT
// copy left.
func (s snapshot) allRunning() bool {
	return s.running == s.expected && s.evacuating == 0 && s.suspect == 0
}

func (o *observer) cellCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.cells)
}

// runningOn returns the ORDINARY RUNNING count of each of cells.
func (o *observer) runningOn(cells []*simCell) []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, len(cells))
	for i, sc := range cells {
		out[i] = o.perCell[sc.id]
	}
	return out
}

// forget drops pushed apps from the expectations (they were deleted).
func (o *observer) forget(guids []string) {
	o.mu.Lock()
	for _, g := range guids {
		o.total -= int(o.expected[g])
		delete(o.expected, g)
	}
	o.mu.Unlock()
}

// presentAmong counts the cells whose presence is in the BBS.
func (o *observer) presentAmong(cells []*simCell) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, sc := range cells {
		if o.cells[sc.id] {
			n++
		}
	}
	return n
}
