package brain

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain/auction"
)

// lrpKey names one index of a process.
type lrpKey struct {
	guid  string
	index int32
}

// actualKey names one ActualLRP record.
type actualKey struct {
	guid     string
	index    int32
	presence string
}

func keyOf(a *models.ActualLRP) actualKey {
	return actualKey{a.ProcessGuid, a.Index, a.Presence}
}

// rejectedRetryDelay is how long an instance its cell rejected waits before it is auctioned
// again.
const rejectedRetryDelay = time.Second

// listRevisions are the revisions the full read of each kind was taken at: events at or before
// them are already in the view.
type listRevisions struct {
	desired, actual, tasks, cells int64
}

func (r listRevisions) min() int64 {
	return min(r.desired, r.actual, r.tasks, r.cells)
}

// session is one term as leader: the in-memory view of the BBS built from a full read and the
// event stream, the auction batcher fed from it, and the converger. It ends with its context.
type session struct {
	b     *Brain
	log   *slog.Logger
	batch *auction.Batcher
	// ctx is the term's context, set by run before any background work starts.
	ctx context.Context

	mu      sync.Mutex
	desired map[string]*models.DesiredLRP
	actual  map[actualKey]*models.ActualLRP
	tasks   map[string]*models.Task
	cells   map[string]*models.CellPresence
	listRev listRevisions
	// queuedLRP and queuedTask hold the revision each piece of work had when it was queued:
	// a placement is written only while the record still has it, as a compare-and-swap on it.
	queuedLRP  map[lrpKey]int64
	queuedTask map[string]int64
	// retryLRP and retryTask mark work whose placement lost a compare-and-swap: the next
	// version of the record that still needs a home is queued again.
	retryLRP  map[lrpKey]bool
	retryTask map[string]bool
	// usage is what the instance records hold per cell, contrib each record's share of it
	// (see tally.go); both change with actual.
	usage   map[string]*cellUsage
	contrib map[actualKey]contribution
	// byGuid counts actual's records by process guid (see recordsOfLocked).
	byGuid map[string]guidRecords

	// Set by cellStates and read by deliver, both on the batcher's goroutine.
	auctionCells map[string]*auction.CellState
	auctionStart time.Time

	kick     chan struct{}
	deadline chan struct{}
	// What the next event-triggered plan covers (see kickProcesses), under kmu: every process
	// (dirtyAll) or those in dirty; every plan covers the tasks.
	kmu      sync.Mutex
	dirty    map[string]struct{}
	dirtyAll bool

	// Converger bookkeeping (see converger.go), under tmu.
	tmu             sync.Mutex
	closed          bool
	restarts        map[restartKey]Timer
	deadlineTimer   Timer
	deadlineAt      time.Time // when deadlineTimer fires
	callbacks       map[string]bool
	callbackBackoff map[string]time.Time
	bg              sync.WaitGroup
	cannotResolve   atomic.Bool

	// batches bounds the batch requests in flight (Config.BatchConcurrency).
	batches chan struct{}
}

func newSession(b *Brain) *session {
	s := &session{
		b:               b,
		log:             b.log,
		kick:            make(chan struct{}, 1),
		dirty:           map[string]struct{}{},
		deadline:        make(chan struct{}, 1),
		restarts:        map[restartKey]Timer{},
		callbacks:       map[string]bool{},
		callbackBackoff: map[string]time.Time{},
		batches:         make(chan struct{}, cmp.Or(b.cfg.BatchConcurrency, DefaultBatchConcurrency)),
	}
	s.reset()
	cfg := auction.DefaultBatcherConfig()
	cfg.Options = b.cfg.Auction
	cfg.RetryDelay = b.cfg.ResyncDelay
	cfg.Logger = b.log
	cfg.Cells = s.cellStates
	cfg.Deliver = s.deliver
	batch, err := auction.NewBatcher(cfg)
	if err != nil {
		// The configuration was validated with the Brain's; this is a programming error.
		panic(fmt.Sprintf("brain: auction batcher: %v", err))
	}
	s.batch = batch
	return s
}

// reset empties the view; callers hold mu or own s exclusively.
func (s *session) reset() {
	s.desired = map[string]*models.DesiredLRP{}
	s.actual = map[actualKey]*models.ActualLRP{}
	s.tasks = map[string]*models.Task{}
	s.cells = map[string]*models.CellPresence{}
	s.queuedLRP = map[lrpKey]int64{}
	s.queuedTask = map[string]int64{}
	s.retryLRP = map[lrpKey]bool{}
	s.retryTask = map[string]bool{}
	s.usage = map[string]*cellUsage{}
	s.contrib = map[actualKey]contribution{}
	s.byGuid = map[string]guidRecords{}
}

// run is the leader's work until ctx ends.
func (s *session) run(ctx context.Context) {
	s.ctx = ctx
	defer s.stop()
	from, ok := s.syncRetrying(ctx, "leader")
	if !ok {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = s.batch.Run(ctx) // returns ctx's error once the term ends
	}()
	go func() {
		defer wg.Done()
		s.convergeLoop(ctx)
	}()
	s.kickConverger()
	s.watch(ctx, from)
	wg.Wait()
}

// watch follows the event stream from the revision of the last full read, reading everything
// again when the stream fails (on Compacted, at once).
func (s *session) watch(ctx context.Context, from int64) {
	for {
		err := s.b.bbs.Watch(ctx, from, store.EventFilter{}, s.apply)
		if ctx.Err() != nil {
			return
		}
		cause := "stream-error"
		if models.IsCompacted(err) {
			cause = "compacted"
			s.log.WarnContext(ctx, "event stream fell behind compaction; reading the BBS again", "error", err)
		} else {
			s.log.WarnContext(ctx, "event stream failed; reading the BBS again", "error", err, "in", s.b.cfg.ResyncDelay)
			if !sleep(ctx, s.b.cfg.ResyncDelay) {
				return
			}
		}
		var ok bool
		if from, ok = s.syncRetrying(ctx, cause); !ok {
			return
		}
		s.kickConverger()
	}
}

// syncRetrying reads the BBS until it succeeds or ctx ends, and returns the revision to watch
// from.
func (s *session) syncRetrying(ctx context.Context, cause string) (int64, bool) {
	for {
		from, err := s.sync(ctx, cause)
		if err == nil {
			return from, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		s.log.WarnContext(ctx, "cannot read the BBS; retrying", "error", err, "in", s.b.cfg.ResyncDelay)
		if !sleep(ctx, s.b.cfg.ResyncDelay) {
			return 0, false
		}
	}
}

// sync replaces the view with a full read of the BBS and queues every instance and task that
// needs a home. It returns the revision to watch from: the earliest of the reads, since events
// after it that a later read already holds are recognised and skipped.
func (s *session) sync(ctx context.Context, cause string) (int64, error) {
	start := time.Now()
	s.b.metrics.resyncs.WithLabelValues(cause).Inc()
	var rev listRevisions
	desired, r, err := s.b.bbs.DesiredLRPs(ctx, store.DesiredLRPFilter{})
	if err != nil {
		return 0, fmt.Errorf("brain: read desired LRPs: %w", err)
	}
	rev.desired = r
	actual, r, err := s.b.bbs.ActualLRPs(ctx, store.ActualLRPFilter{})
	if err != nil {
		return 0, fmt.Errorf("brain: read actual LRPs: %w", err)
	}
	rev.actual = r
	tasks, r, err := s.b.bbs.Tasks(ctx, store.TaskFilter{})
	if err != nil {
		return 0, fmt.Errorf("brain: read tasks: %w", err)
	}
	rev.tasks = r
	cells, r, err := s.b.bbs.Cells(ctx)
	if err != nil {
		return 0, fmt.Errorf("brain: read cells: %w", err)
	}
	rev.cells = r

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
	s.listRev = rev
	for _, d := range desired {
		s.desired[d.ProcessGuid] = d
	}
	for _, a := range actual {
		s.setActualLocked(keyOf(a), a)
	}
	for _, t := range tasks {
		s.tasks[t.TaskGuid] = t
	}
	for _, c := range cells {
		s.cells[c.CellID] = c
	}
	lrps, ntasks := 0, 0
	for _, a := range s.actual {
		if needsHome(a) {
			lrps += s.queueLRPLocked(a)
		}
	}
	for _, t := range s.tasks {
		if taskNeedsHome(t) {
			s.queueTaskLocked(t)
			ntasks++
		}
	}
	s.log.InfoContext(ctx, "read the BBS", "cause", cause, "desired_lrps", len(desired),
		"actual_lrps", len(actual), "tasks", len(tasks), "cells", len(cells),
		"queued_lrps", lrps, "queued_tasks", ntasks, "revision", rev.min(), "took", time.Since(start))
	return rev.min(), nil
}

// needsHome reports whether an ActualLRP record waits for the auctioneer: ORDINARY, UNCLAIMED
// and not placed.
func needsHome(a *models.ActualLRP) bool {
	return a != nil && a.Presence == models.PresenceOrdinary && a.State == models.ActualLRPStateUnclaimed && a.CellID == ""
}

// taskNeedsHome reports whether a task waits for the auctioneer: PENDING and not placed.
func taskNeedsHome(t *models.Task) bool {
	return t != nil && t.State == models.TaskStatePending && t.CellID == ""
}

// apply applies one event to the view and reacts to it. It never fails: the stream goes on.
func (s *session) apply(ev store.Event) error {
	s.b.metrics.events.Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Type {
	case store.EventDesiredLRPCreated, store.EventDesiredLRPChanged:
		if ev.Revision > s.listRev.desired && ev.DesiredLRP != nil {
			s.putDesiredLocked(ev.DesiredLRP)
		}
	case store.EventDesiredLRPRemoved:
		if ev.Revision > s.listRev.desired && ev.DesiredLRP != nil {
			if cur := s.desired[ev.DesiredLRP.ProcessGuid]; cur != nil && cur.Revision < ev.Revision {
				delete(s.desired, ev.DesiredLRP.ProcessGuid)
				s.kickProcesses(ev.DesiredLRP.ProcessGuid)
			}
		}
	case store.EventActualLRPCreated, store.EventActualLRPChanged:
		if ev.Revision > s.listRev.actual && ev.ActualLRP != nil {
			s.putActualLocked(ev.ActualLRP)
		}
	case store.EventActualLRPRemoved:
		if ev.Revision > s.listRev.actual && ev.ActualLRP != nil {
			k := keyOf(ev.ActualLRP)
			if cur := s.actual[k]; cur != nil && cur.Revision < ev.Revision {
				s.deleteActualLocked(k)
				if k.presence == models.PresenceOrdinary {
					s.kickProcesses(k.guid) // a missing index
				}
			}
		}
	case store.EventTaskCreated, store.EventTaskChanged:
		if ev.Revision > s.listRev.tasks && ev.Task != nil {
			s.putTaskLocked(ev.Task)
		}
	case store.EventTaskRemoved:
		if ev.Revision > s.listRev.tasks && ev.Task != nil {
			if cur := s.tasks[ev.Task.TaskGuid]; cur != nil && cur.Revision < ev.Revision {
				delete(s.tasks, ev.Task.TaskGuid)
			}
		}
	case store.EventCellAppeared, store.EventCellChanged:
		if ev.Revision > s.listRev.cells && ev.Cell != nil {
			prev := s.cells[ev.Cell.CellID]
			s.cells[ev.Cell.CellID] = ev.Cell
			if prev == nil || offersMore(prev, ev.Cell) {
				s.log.Info("cell present", "cell", ev.Cell.CellID, "zone", ev.Cell.Zone,
					"rootfs", ev.Cell.RootFSProviders, "draining", ev.Cell.Draining)
				s.requeueFailedLocked()
			}
			if ev.Cell.Draining && (prev == nil || !prev.Draining) {
				s.log.Info("cell draining", "cell", ev.Cell.CellID)
			}
		}
	case store.EventCellDisappeared:
		if ev.Revision > s.listRev.cells && ev.Cell != nil {
			if _, ok := s.cells[ev.Cell.CellID]; ok {
				delete(s.cells, ev.Cell.CellID)
				s.log.Warn("cell disappeared", "cell", ev.Cell.CellID, "zone", ev.Cell.Zone)
				s.kickConverger()
			}
		}
	}
	return nil
}

// offersMore reports whether a cell's new presence could take work its old one could not.
func offersMore(prev, next *models.CellPresence) bool {
	return prev.Draining && !next.Draining ||
		next.Capacity.MemoryMB > prev.Capacity.MemoryMB ||
		next.Capacity.DiskMB > prev.Capacity.DiskMB ||
		next.Capacity.Containers > prev.Capacity.Containers ||
		!sameStrings(prev.RootFSProviders, next.RootFSProviders) ||
		!sameStrings(prev.PlacementTags, next.PlacementTags) ||
		!sameStrings(prev.OptionalPlacementTags, next.OptionalPlacementTags)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// putDesiredLocked stores d unless the view holds a newer version, and queues its instances
// that wait for a home (their events may have come before the DesiredLRP's).
func (s *session) putDesiredLocked(d *models.DesiredLRP) {
	cur := s.desired[d.ProcessGuid]
	if cur != nil && cur.Revision > d.Revision {
		return
	}
	s.desired[d.ProcessGuid] = d
	if cur == nil {
		s.retallyLocked(d)
	}
	for i := int32(0); i < d.Instances; i++ {
		k := lrpKey{d.ProcessGuid, i}
		if a := s.actual[actualKey{d.ProcessGuid, i, models.PresenceOrdinary}]; needsHome(a) && a.PlacementError == "" {
			if _, queued := s.queuedLRP[k]; !queued {
				s.queueLRPLocked(a)
			}
		}
	}
	s.kickProcesses(d.ProcessGuid)
}

// putActualLocked stores a unless the view holds a newer version, and reacts to the change:
// an instance that newly needs a home goes to the auction; a crash, or a replacement becoming
// RUNNING while an EVACUATING or SUSPECT copy exists, wakes the converger.
func (s *session) putActualLocked(a *models.ActualLRP) {
	k := keyOf(a)
	prev := s.actual[k]
	if prev != nil && prev.Revision > a.Revision {
		return
	}
	s.setActualLocked(k, a)
	if prev != nil && prev.Revision == a.Revision {
		return // already applied (a write's result, then its event)
	}
	ik := lrpKey{a.ProcessGuid, a.Index}
	switch {
	case needsHome(a) && prev != nil && prev.CellID != "" && prev.State == models.ActualLRPStateUnclaimed && a.PlacementError != "":
		// The cell it was placed on rejected it. Our view of that cell disagreed with the
		// cell's own; auction it again after a pause, so a disagreement that persists cannot
		// turn into a place-and-reject loop at network speed.
		delete(s.retryLRP, ik)
		s.log.Info("instance rejected by its cell; auctioning it again", "process_guid", a.ProcessGuid,
			"index", a.Index, "cell", prev.CellID, "reason", a.PlacementError, "in", rejectedRetryDelay)
		s.later(rejectedRetryDelay, func(context.Context) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if cur := s.actual[k]; cur != nil && cur.Revision == a.Revision {
				s.queueLRPLocked(cur)
			}
		})
	case needsHome(a) && (!needsHome(prev) || s.retryLRP[ik]):
		delete(s.retryLRP, ik)
		s.queueLRPLocked(a)
	}
	switch {
	case a.State == models.ActualLRPStateCrashed && (prev == nil || prev.State != models.ActualLRPStateCrashed):
		s.kickProcesses(a.ProcessGuid)
	case a.Presence == models.PresenceOrdinary && a.State == models.ActualLRPStateRunning &&
		(prev == nil || prev.State != models.ActualLRPStateRunning):
		if s.actual[actualKey{a.ProcessGuid, a.Index, models.PresenceEvacuating}] != nil ||
			s.actual[actualKey{a.ProcessGuid, a.Index, models.PresenceSuspect}] != nil {
			s.kickProcesses(a.ProcessGuid)
		}
	}
}

// putTaskLocked stores t unless the view holds a newer version, queues it when it newly needs
// a home and wakes the converger when it completes (callbacks, clean-up).
func (s *session) putTaskLocked(t *models.Task) {
	prev := s.tasks[t.TaskGuid]
	if prev != nil && prev.Revision > t.Revision {
		return
	}
	s.tasks[t.TaskGuid] = t
	if prev != nil && prev.Revision == t.Revision {
		return
	}
	if taskNeedsHome(t) && (!taskNeedsHome(prev) || s.retryTask[t.TaskGuid]) {
		delete(s.retryTask, t.TaskGuid)
		s.queueTaskLocked(t)
	}
	if t.State == models.TaskStateCompleted && (prev == nil || prev.State != models.TaskStateCompleted) {
		s.kickProcesses() // every plan covers the tasks
	}
}

// queueLRPLocked sends a's instance to the auction, remembering a's revision. It returns 0
// when the DesiredLRP is unknown (the converger deals with orphans), else 1.
func (s *session) queueLRPLocked(a *models.ActualLRP) int {
	d := s.desired[a.ProcessGuid]
	if d == nil {
		return 0
	}
	s.queuedLRP[lrpKey{a.ProcessGuid, a.Index}] = a.Revision
	s.batch.AddLRPs(auction.LRPWorkFor(d, a.Index))
	return 1
}

func (s *session) queueTaskLocked(t *models.Task) {
	s.queuedTask[t.TaskGuid] = t.Revision
	s.batch.AddTasks(auction.TaskWorkFor(t))
}

// requeueFailedLocked sends every instance and task whose last auction failed to the auction
// again: a cell appeared or now offers more.
func (s *session) requeueFailedLocked() {
	for _, a := range s.actual {
		if needsHome(a) && a.PlacementError != "" {
			s.queueLRPLocked(a)
		}
	}
	for _, t := range s.tasks {
		if taskNeedsHome(t) && t.PlacementError != "" {
			s.queueTaskLocked(t)
		}
	}
}

// kickConverger asks the converger to plan soon over every process.
func (s *session) kickConverger() {
	s.kmu.Lock()
	s.dirtyAll = true
	clear(s.dirty)
	s.kmu.Unlock()
	s.wake()
}

// kickProcesses asks the converger to plan soon over the processes named (a change of their
// records can need an action of theirs, not of others) and the tasks. With no guid it plans
// the tasks alone.
func (s *session) kickProcesses(guids ...string) {
	s.kmu.Lock()
	if !s.dirtyAll {
		for _, g := range guids {
			s.dirty[g] = struct{}{}
		}
	}
	s.kmu.Unlock()
	s.wake()
}

func (s *session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// takeDirty returns what the next plan must cover and starts a new set: every process (all),
// or the processes in guids.
func (s *session) takeDirty() (guids []string, all bool) {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	all = s.dirtyAll
	if !all {
		guids = make([]string, 0, len(s.dirty))
		for g := range s.dirty {
			guids = append(guids, g)
		}
	}
	s.dirtyAll = false
	clear(s.dirty)
	return guids, all
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// parallel runs jobs with at most n at a time and waits for them all. Jobs not yet started
// when ctx ends are skipped.
func parallel(ctx context.Context, n int, jobs []func(context.Context)) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, job := range jobs {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			job(ctx)
		}()
	}
	wg.Wait()
}
