package brain

import (
	"context"
	"log/slog"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain/auction"
)

// cellStates is the batcher's Cells: every present cell with what the view says it holds
// (kept per cell as records change, see tally.go). A record counts on its cell from placement (UNCLAIMED with a cell, or a PENDING task with
// one) until it stops running; it is "starting" until RUNNING. Where the cell reports using
// more than that, its report is taken.
func (s *session) cellStates(context.Context) ([]*auction.CellState, error) {
	s.mu.Lock()
	states := make(map[string]*auction.CellState, len(s.cells))
	for id, p := range s.cells {
		cs := auction.NewCellState(p)
		if u := s.usage[id]; u != nil {
			// The auction only reads Instances; the session copies it before its next change.
			cs.Reserved, cs.StartingContainers, cs.Instances = u.reserved, u.starting, u.instances
			u.shared = true
		}
		states[id] = cs
	}
	for _, t := range s.tasks {
		if t.CellID == "" || t.State != models.TaskStatePending && t.State != models.TaskStateRunning {
			continue
		}
		if cs := states[t.CellID]; cs != nil {
			cs.AddTask(t.MemoryMB, t.DiskMB, t.State == models.TaskStatePending)
		}
	}
	for id, p := range s.cells {
		// What the cell says it uses (its reported Available) wins where it exceeds what the
		// records account for: containers the BBS does not know of, or a reservation the
		// cell made before our view caught up. Without it a cell that rejects work for lack
		// of room would be offered the same work again.
		if av := p.Available; av != nil {
			cs := states[id]
			cs.Reserved.MemoryMB = max(cs.Reserved.MemoryMB, p.Capacity.MemoryMB-av.MemoryMB)
			cs.Reserved.DiskMB = max(cs.Reserved.DiskMB, p.Capacity.DiskMB-av.DiskMB)
			cs.Reserved.Containers = max(cs.Reserved.Containers, p.Capacity.Containers-av.Containers)
		}
	}
	s.mu.Unlock()

	out := make([]*auction.CellState, 0, len(states))
	for _, cs := range states {
		out = append(out, cs)
	}
	s.auctionCells = states
	s.auctionStart = time.Now()
	return out, nil
}

// deliver writes one auction's decisions to the BBS, each as a compare-and-swap on the
// revision the work was queued with, and records the results in the view before returning so
// the next auction sees them. Instance decisions go in batches (batchJobs).
func (s *session) deliver(ctx context.Context, res auction.Results) {
	m := s.b.metrics
	m.auctionDuration.Observe(time.Since(s.auctionStart).Seconds())
	m.auctionBatch.Observe(float64(res.Len()))

	var writes []lrpWrite
	for _, p := range res.PlacedLRPs {
		if rec := s.takeQueuedLRP(p.Work); rec != nil {
			writes = append(writes, s.placeLRP(rec, p.CellID))
		}
	}
	for _, f := range res.FailedLRPs {
		if rec := s.takeQueuedLRP(f.Work); rec != nil {
			if w, ok := s.failLRP(rec, f.Err); ok {
				writes = append(writes, w)
			}
		}
	}
	jobs := s.batchJobs(writes)
	for _, p := range res.PlacedTasks {
		if rec := s.takeQueuedTask(p.Work); rec != nil {
			jobs = append(jobs, func(ctx context.Context) { s.placeTask(ctx, rec, p.CellID) })
		}
	}
	for _, f := range res.FailedTasks {
		if rec := s.takeQueuedTask(f.Work); rec != nil {
			jobs = append(jobs, func(ctx context.Context) { s.failTask(ctx, rec, f.Err) })
		}
	}
	parallel(ctx, s.b.cfg.ApplyConcurrency, jobs)
	s.auctionCells = nil
}

// takeQueuedLRP returns the record w was queued for, if the view still holds it at the queued
// revision and it still needs a home; otherwise the work is stale and nil is returned.
func (s *session) takeQueuedLRP(w auction.LRPWork) *models.ActualLRP {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := lrpKey{w.ProcessGuid, w.Index}
	rev, ok := s.queuedLRP[k]
	if !ok {
		return nil
	}
	delete(s.queuedLRP, k)
	a := s.actual[actualKey{w.ProcessGuid, w.Index, models.PresenceOrdinary}]
	if a == nil || a.Revision != rev || a.State != models.ActualLRPStateUnclaimed {
		return nil
	}
	return a
}

func (s *session) takeQueuedTask(w auction.TaskWork) *models.Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, ok := s.queuedTask[w.TaskGuid]
	if !ok {
		return nil
	}
	delete(s.queuedTask, w.TaskGuid)
	t := s.tasks[w.TaskGuid]
	if t == nil || t.Revision != rev || t.State != models.TaskStatePending {
		return nil
	}
	return t
}

// placeLRP is the write of an instance's placement on cellID.
func (s *session) placeLRP(a *models.ActualLRP, cellID string) lrpWrite {
	return lrpWrite{
		op: store.ActualLRPOp{Action: store.ActionPlace, ProcessGuid: a.ProcessGuid, Index: a.Index,
			CellID: cellID, Revision: a.Revision},
		done: func(ctx context.Context, next *models.ActualLRP, err error) {
			if err != nil {
				s.lostLRPPlacement(ctx, a, "place", err)
				return
			}
			s.b.metrics.placements.WithLabelValues("lrp").Inc()
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.DebugContext(ctx, "placed instance", append([]any{"process_guid", a.ProcessGuid,
					"index", a.Index, "cell", cellID, "revision", next.Revision}, s.scoreInputs(cellID, a.ProcessGuid)...)...)
			}
			s.mu.Lock()
			s.putActualLocked(next)
			s.mu.Unlock()
		},
	}
}

// failLRP counts and logs an instance the auction could not place and returns the write of
// the reason, unless the record already carries it.
func (s *session) failLRP(a *models.ActualLRP, perr error) (lrpWrite, bool) {
	s.b.metrics.placementErrors.WithLabelValues("lrp", placementReason(perr)).Inc()
	s.log.Warn("cannot place instance", "process_guid", a.ProcessGuid, "index", a.Index,
		"error", perr.Error())
	if a.CellID == "" && a.PlacementError == perr.Error() {
		return lrpWrite{}, false // already recorded
	}
	return lrpWrite{
		op: store.ActualLRPOp{Action: store.ActionFailPlacement, ProcessGuid: a.ProcessGuid, Index: a.Index,
			Reason: perr.Error(), Revision: a.Revision},
		done: func(ctx context.Context, next *models.ActualLRP, err error) {
			if err != nil {
				s.lostLRPPlacement(ctx, a, "record placement error", err)
				return
			}
			s.mu.Lock()
			s.putActualLocked(next)
			s.mu.Unlock()
		},
	}, true
}

// lostLRPPlacement handles a refused placement write. A record that changed meanwhile
// (Conflict, InvalidTransition, NotFound) is left to its newer version, which is queued again
// if it still needs a home; anything else is retried by queueing the view's record again.
func (s *session) lostLRPPlacement(ctx context.Context, a *models.ActualLRP, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	k := lrpKey{a.ProcessGuid, a.Index}
	s.mu.Lock()
	defer s.mu.Unlock()
	if movedOn(err) {
		s.log.DebugContext(ctx, "instance changed before its placement was written", "action", what,
			"process_guid", a.ProcessGuid, "index", a.Index, "revision", a.Revision, "error", err)
		if cur := s.actual[keyOf(a)]; cur != nil && cur.Revision != a.Revision && needsHome(cur) {
			s.queueLRPLocked(cur)
		} else {
			s.retryLRP[k] = true
		}
		return
	}
	s.log.WarnContext(ctx, "cannot write placement; the instance is auctioned again", "action", what,
		"process_guid", a.ProcessGuid, "index", a.Index, "error", err, "in", s.b.cfg.ResyncDelay)
	s.later(s.b.cfg.ResyncDelay, func(context.Context) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if cur := s.actual[keyOf(a)]; cur != nil && (needsHome(cur) || cur.Revision == a.Revision) {
			s.queueLRPLocked(cur)
		}
	})
}

func (s *session) placeTask(ctx context.Context, t *models.Task, cellID string) {
	next, err := s.b.bbs.PlaceTask(ctx, t.TaskGuid, cellID, t.Revision)
	if err != nil {
		s.lostTaskPlacement(ctx, t, "place", err)
		return
	}
	s.b.metrics.placements.WithLabelValues("task").Inc()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "placed task", append([]any{"task_guid", t.TaskGuid, "cell", cellID,
			"revision", next.Revision}, s.scoreInputs(cellID, "")...)...)
	}
	s.mu.Lock()
	s.putTaskLocked(next)
	s.mu.Unlock()
}

func (s *session) failTask(ctx context.Context, t *models.Task, perr error) {
	s.b.metrics.placementErrors.WithLabelValues("task", placementReason(perr)).Inc()
	s.log.WarnContext(ctx, "cannot place task", "task_guid", t.TaskGuid, "error", perr.Error())
	if t.CellID == "" && t.PlacementError == perr.Error() {
		return
	}
	next, err := s.b.bbs.FailTaskPlacement(ctx, t.TaskGuid, perr.Error(), t.Revision)
	if err != nil {
		s.lostTaskPlacement(ctx, t, "record placement error", err)
		return
	}
	s.mu.Lock()
	s.putTaskLocked(next)
	s.mu.Unlock()
}

func (s *session) lostTaskPlacement(ctx context.Context, t *models.Task, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if movedOn(err) {
		s.log.DebugContext(ctx, "task changed before its placement was written", "action", what,
			"task_guid", t.TaskGuid, "revision", t.Revision, "error", err)
		if cur := s.tasks[t.TaskGuid]; cur != nil && cur.Revision != t.Revision && taskNeedsHome(cur) {
			s.queueTaskLocked(cur)
		} else {
			s.retryTask[t.TaskGuid] = true
		}
		return
	}
	s.log.WarnContext(ctx, "cannot write task placement; the task is auctioned again", "action", what,
		"task_guid", t.TaskGuid, "error", err, "in", s.b.cfg.ResyncDelay)
	s.later(s.b.cfg.ResyncDelay, func(context.Context) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if cur := s.tasks[t.TaskGuid]; cur != nil && (taskNeedsHome(cur) || cur.Revision == t.Revision) {
			s.queueTaskLocked(cur)
		}
	})
}

// movedOn reports whether err says the record changed since it was read, so the write no
// longer applies.
func movedOn(err error) bool {
	return models.IsConflict(err) || models.IsInvalidTransition(err) || models.IsNotFound(err) ||
		models.IsAlreadyExists(err)
}

// scoreInputs describes a cell as the auction saw it, for the debug line of a placement.
func (s *session) scoreInputs(cellID, processGuid string) []any {
	cs := s.auctionCells[cellID]
	if cs == nil {
		return nil
	}
	return []any{"zone", cs.Zone,
		"memory_mb_reserved", cs.Reserved.MemoryMB, "memory_mb_capacity", cs.Capacity.MemoryMB,
		"disk_mb_reserved", cs.Reserved.DiskMB, "disk_mb_capacity", cs.Capacity.DiskMB,
		"containers", cs.Reserved.Containers, "containers_capacity", cs.Capacity.Containers,
		"starting", cs.StartingContainers, "same_process", cs.Instances[processGuid]}
}
