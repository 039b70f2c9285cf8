package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// Backoff of the event stream after a failure.
const (
	minResyncDelay = 100 * time.Millisecond
	maxResyncDelay = 5 * time.Second
)

// syncLoop keeps the agent in step with its work: a full read (reconcile), then the event
// stream filtered by this cell from the read's revision; when the stream fails (revision
// compacted, or an error the client does not retry) it reads everything again.
func (a *Agent) syncLoop(ctx context.Context) {
	delay := minResyncDelay
	for ctx.Err() == nil {
		rev, err := a.reconcileOnce(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("reading the cell's work failed; retrying", "error", err, "in", delay)
			}
			sleepCtx(ctx, delay)
			delay = min(2*delay, maxResyncDelay)
			continue
		}
		delay = minResyncDelay
		err = a.store.Watch(ctx, rev, store.EventFilter{CellID: a.cfg.CellID}, func(ev store.Event) error {
			a.handleEvent(ev)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if models.IsCompacted(err) {
			a.log.Info("event stream compacted; reading the cell's work again", "revision", rev)
		} else {
			a.log.Warn("event stream ended; reading the cell's work again", "error", err)
			sleepCtx(ctx, delay)
		}
	}
}

// reconcileLoop repeats the full read every ReconcileInterval, as a safety net under the
// event stream.
func (a *Agent) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(a.cfg.ReconcileInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.reconcileOnce(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("periodic reconcile failed", "error", err)
		}
	}
}

// handleEvent acts on one change of the cell's work. It never blocks on the BBS or the
// backend: work starts and stops in goroutines of their own.
func (a *Agent) handleEvent(ev store.Event) {
	switch ev.Type {
	case store.EventActualLRPCreated, store.EventActualLRPChanged:
		if ev.ActualLRP != nil {
			a.observeLRP(ev.ActualLRP)
		}
	case store.EventActualLRPRemoved:
		if ev.ActualLRP != nil {
			a.lrpRecordGone(ev.ActualLRP.ActualLRPKey, ev.ActualLRP.Presence, ev.Revision)
		}
	case store.EventTaskCreated, store.EventTaskChanged:
		if ev.Task != nil {
			a.observeTask(ev.Task)
		}
	case store.EventTaskRemoved:
		if ev.Task != nil {
			a.taskRecordGone(ev.Task.TaskGuid, ev.Revision)
		}
	case store.EventCellAppeared, store.EventCellChanged:
		if ev.Cell != nil && ev.Cell.CellID == a.cfg.CellID && ev.Cell.Draining {
			a.log.Info("the BBS asks this cell to drain")
			a.Drain()
		}
	}
}

// findLRP returns the live (not stopping) container answering for key's record of presence.
// Callers hold a.mu.
func (a *Agent) findLRP(key models.ActualLRPKey, presence string) *container {
	for _, c := range a.containers {
		if c.kind == KindLRP && !c.stopping && c.key.ProcessGuid == key.ProcessGuid && c.key.Index == key.Index && c.presence == presence {
			return c
		}
	}
	return nil
}

// observeLRP acts on the current value of an instance record of (or formerly of) this cell.
func (a *Agent) observeLRP(rec *models.ActualLRP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	local := a.findLRP(rec.ActualLRPKey, rec.Presence)
	if local == nil {
		if rec.Presence == models.PresenceOrdinary && rec.State == models.ActualLRPStateUnclaimed &&
			rec.CellID == a.cfg.CellID {
			a.startLRPLocked(rec)
		}
		return
	}
	if rec.Revision != 0 && rec.Revision <= local.seenRev {
		return // older than what the container already knows
	}
	local.seenRev = rec.Revision
	switch {
	case !local.claimed && rec.State == models.ActualLRPStateUnclaimed && rec.CellID == a.cfg.CellID:
		// Still ours to claim.
	case rec.InstanceGuid != local.handle || rec.CellID != a.cfg.CellID:
		a.stopLocked(local, "the instance record now names another instance ("+rec.State+")")
	}
}

// lrpRecordGone stops the container answering for a removed record, and forgets the app's
// cached DesiredLRP: the removal may be the app's (see desired.go).
func (a *Agent) lrpRecordGone(key models.ActualLRPKey, presence string, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropDesiredLocked(key.ProcessGuid)
	if local := a.findLRP(key, presence); local != nil && (rev == 0 || rev > local.seenRev) {
		a.stopLocked(local, "the instance record was removed")
	}
}

// observeTask acts on the current value of a task of (or formerly of) this cell.
func (a *Agent) observeTask(t *models.Task) {
	a.mu.Lock()
	defer a.mu.Unlock()
	local := a.containers[t.TaskGuid]
	if local == nil || local.kind != KindTask {
		if t.State == models.TaskStatePending && t.CellID == a.cfg.CellID && !a.recentlyFinished(t.TaskGuid) {
			a.startTaskLocked(t)
		}
		return
	}
	if t.Revision != 0 && t.Revision <= local.seenRev {
		return
	}
	local.seenRev = t.Revision
	switch {
	case local.completing:
	case t.State == models.TaskStatePending && t.CellID == a.cfg.CellID && !local.claimed:
	case t.State == models.TaskStateRunning && t.CellID == a.cfg.CellID:
	default:
		a.stopLocked(local, "the task is now "+t.State+" on cell "+t.CellID)
	}
}

// taskRecordGone stops a task whose record was deleted.
func (a *Agent) taskRecordGone(guid string, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if local := a.containers[guid]; local != nil && local.kind == KindTask && !local.completing && (rev == 0 || rev > local.seenRev) {
		a.stopLocked(local, "the task was deleted")
	}
}

// stopLocked asks c's goroutine to stop its work and destroy its container. Callers hold a.mu.
func (a *Agent) stopLocked(c *container, reason string) {
	if c.stopping {
		return
	}
	c.stopping = true
	c.stopOnce.Do(func() {
		c.stopReason = reason
		a.log.Info("stopping container", "handle", c.handle, "kind", c.kind, "reason", reason)
		c.stopWork()
	})
}

// reconcileOnce compares a full read of the cell's instances and tasks with the containers and
// acts on every difference. It returns the revision to follow events from.
func (a *Agent) reconcileOnce(ctx context.Context) (int64, error) {
	a.reconcile.Lock()
	defer a.reconcile.Unlock()
	lrps, lrpRev, err := a.store.ActualLRPs(ctx, store.ActualLRPFilter{CellID: a.cfg.CellID})
	if err != nil {
		return 0, err
	}
	tasks, taskRev, err := a.store.Tasks(ctx, store.TaskFilter{CellID: a.cfg.CellID})
	if err != nil {
		return 0, err
	}
	if cell, err := a.store.Cell(ctx, a.cfg.CellID); err == nil && cell.Draining && !a.Draining() {
		a.log.Info("the cell's presence says draining")
		a.Drain()
	}
	rev := min(lrpRev, taskRev)

	type slot struct {
		guid     string
		presence string
		index    int32
	}
	records := map[slot]string{} // the instance guid of each record
	for _, rec := range lrps {
		records[slot{rec.ProcessGuid, rec.Presence, rec.Index}] = rec.InstanceGuid
	}
	// hasRecord reports whether c's record is among those read. An instance whose evacuation
	// is under way counts as EVACUATING from the moment it asks the BBS; a read taken before the
	// BBS made the change finds its ORDINARY record still holding it, which is its record too.
	hasRecord := func(c *container) bool {
		if _, ok := records[slot{c.key.ProcessGuid, c.presence, c.key.Index}]; ok {
			return true
		}
		return c.evacuating && c.presence == models.PresenceEvacuating &&
			records[slot{c.key.ProcessGuid, models.PresenceOrdinary, c.key.Index}] == c.handle
	}
	// An instance whose record is missing may be missing because its app was removed (and
	// perhaps desired again since): its app's cached DesiredLRP goes before any record is
	// acted on (desired.go).
	a.mu.Lock()
	for _, c := range a.containers {
		if c.kind == KindLRP && !hasRecord(c) {
			a.dropDesiredLocked(c.key.ProcessGuid)
		}
	}
	a.mu.Unlock()
	for _, rec := range lrps {
		a.observeLRP(rec)
		if rec.CellID == a.cfg.CellID && rec.InstanceGuid != "" &&
			(rec.State == models.ActualLRPStateClaimed || rec.State == models.ActualLRPStateRunning) {
			a.mu.Lock()
			_, local := a.containers[rec.InstanceGuid]
			gone := !local && !a.recentlyFinished(rec.InstanceGuid)
			a.mu.Unlock()
			if gone {
				a.reportVanishedLRP(ctx, rec)
			}
		}
	}
	seenTasks := map[string]bool{}
	for _, t := range tasks {
		seenTasks[t.TaskGuid] = true
		a.observeTask(t)
		if t.State == models.TaskStateRunning && t.CellID == a.cfg.CellID {
			a.mu.Lock()
			_, local := a.containers[t.TaskGuid]
			gone := !local && !a.recentlyFinished(t.TaskGuid)
			a.mu.Unlock()
			if gone {
				a.log.Warn("task is RUNNING on this cell but has no container; failing it", "task", t.TaskGuid)
				if _, err := a.store.CompleteTask(ctx, t.TaskGuid, a.cfg.CellID, true, ReasonVanished, ""); err != nil && ctx.Err() == nil {
					a.log.Warn("failing a vanished task", "task", t.TaskGuid, "error", err)
				}
			}
		}
	}

	// Containers whose record is gone.
	a.mu.Lock()
	for _, c := range a.containers {
		if c.stopping || c.seenRev >= rev {
			continue
		}
		switch c.kind {
		case KindLRP:
			if !hasRecord(c) {
				a.stopLocked(c, "the instance has no record")
			}
		case KindTask:
			if !seenTasks[c.taskGuid] && !c.completing {
				a.stopLocked(c, "the task has no record")
			}
		}
	}
	a.mu.Unlock()
	a.pruneLogs()
	return rev, nil
}

// reportVanishedLRP crashes an instance record of this cell whose container does not exist.
func (a *Agent) reportVanishedLRP(ctx context.Context, rec *models.ActualLRP) {
	a.log.Warn("instance is "+rec.State+" on this cell but has no container; reporting it crashed",
		"process_guid", rec.ProcessGuid, "index", rec.Index, "instance", rec.InstanceGuid, "presence", rec.Presence)
	_, err := a.store.CrashActualLRP(ctx, rec.ActualLRPKey, rec.ActualLRPInstanceKey, ReasonVanished)
	if err != nil && !models.IsNotFound(err) && !models.IsInvalidTransition(err) && ctx.Err() == nil {
		a.log.Warn("reporting a vanished instance", "process_guid", rec.ProcessGuid, "index", rec.Index, "error", err)
	}
}

// logRetention is how long the log of work no longer on the cell is kept.
const logRetention = time.Hour

// logIdle is how long an instance's log file stays open after its last line: a cell of quiet
// instances would otherwise hold a file descriptor per instance (the scale simulator's limit on
// how many instances a process can run).
const logIdle = time.Minute

// pruneLogs closes the files of idle logs and removes the logs of work that left the cell more
// than logRetention ago.
func (a *Agent) pruneLogs() {
	a.logs.CloseIdle(logIdle)
	keys, err := a.logs.Keys()
	if err != nil {
		a.log.Warn("listing instance logs", "error", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		if _, live := a.containers[k]; live {
			continue
		}
		if t, ok := a.finished[k]; ok && time.Since(t) < logRetention {
			continue
		}
		if !logOlderThan(a.logs.Dir(), k, logRetention) {
			continue
		}
		if err := a.logs.Remove(k); err != nil {
			a.log.Warn("removing an old instance log", "key", k, "error", err)
			continue
		}
		delete(a.logOwners, k)
	}
}

// logOlderThan reports whether key's log file in dir was last written more than d ago.
func logOlderThan(dir, key string, d time.Duration) bool {
	fi, err := os.Stat(filepath.Join(dir, key+".log"))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return time.Since(fi.ModTime()) > d
}
