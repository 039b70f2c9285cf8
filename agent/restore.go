package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// restore rebuilds the agent's view from the containers an earlier agent of this cell left on
// the backend (found by PropCell) and takes each up again: an LRP instance past its setup is
// re-attached (its action resumed, its health checked, RUNNING reported again with the same
// instance guid); a task waits for its process, or reports the outcome its container holds;
// work caught in its setup is ended rather than repeated. The first reconcile then settles the
// differences with the BBS (containers without records stop, records without containers are
// reported vanished).
func (a *Agent) restore(ctx context.Context) error {
	conts, err := a.backend.List(ctx, isolation.Properties{PropCell: a.cfg.CellID})
	if err != nil {
		return fmt.Errorf("agent: list the backend's containers: %w", err)
	}
	for _, cont := range conts {
		props, err := cont.Properties(ctx)
		if err != nil {
			a.log.Warn("reading the properties of a container; skipping it", "handle", cont.Handle(), "error", err)
			continue
		}
		c := newContainer(cont.Handle(), props[PropKind])
		c.res = resourcesOf(props)
		c.claimed = true
		c.state = StateCreated
		log := a.log.With("handle", c.handle)
		switch c.kind {
		case KindLRP:
			idx, err := strconv.ParseInt(props[PropIndex], 10, 32)
			if err != nil || props[PropProcessGuid] == "" {
				log.Warn("container has no valid instance key; destroying it", "properties", props)
				a.backend.Destroy(ctx, c.handle)
				continue
			}
			c.key = models.ActualLRPKey{ProcessGuid: props[PropProcessGuid], Index: int32(idx), Domain: props[PropDomain]}
			if p := props[PropPresence]; p != "" {
				c.presence = p
			}
			log = log.With("process_guid", c.key.ProcessGuid, "index", c.key.Index)
			a.adopt(c)
			if props[PropPhase] != phaseAction {
				a.work.Go(func() { a.abandonSetup(c, cont, log) })
			} else {
				a.work.Go(func() { a.resumeLRP(c, cont, log) })
			}
		case KindTask:
			c.taskGuid = props[PropTaskGuid]
			log = log.With("task", c.taskGuid)
			a.adopt(c)
			switch out, ok := decodeOutcome(props[PropOutcome]); {
			case ok:
				a.work.Go(func() {
					defer close(c.done)
					a.completeTask(c, cont, out, log)
				})
			case props[PropPhase] == phaseAction:
				a.work.Go(func() { a.resumeTask(c, cont, log) })
			default:
				a.work.Go(func() {
					defer close(c.done)
					a.completeTask(c, cont, taskOutcome{Failed: true, Reason: ReasonSetupInterrupted}, log)
				})
			}
		default:
			log.Warn("container of unknown kind; destroying it", "kind", c.kind)
			a.backend.Destroy(ctx, c.handle)
		}
	}
	if len(conts) > 0 {
		a.log.Info("re-attached to the containers of the previous agent", "containers", len(conts))
	}
	return nil
}

// adopt enters a restored container into the table with its reservation.
func (a *Agent) adopt(c *container) {
	a.ledger.force(c.handle, c.res)
	a.mu.Lock()
	a.addLocked(c)
	a.mu.Unlock()
}

// abandonSetup ends an instance the previous agent left in its setup: setup steps are not
// idempotent, so the instance is reported crashed and its container destroyed.
func (a *Agent) abandonSetup(c *container, cont isolation.Container, log *slog.Logger) {
	defer close(c.done)
	a.crashLRP(c, log, "the agent restarted during the instance's setup")
	a.mu.Lock()
	a.stopLocked(c, "setup interrupted by an agent restart")
	a.mu.Unlock()
	a.destroy(c, cont, log)
}

// resumeLRP re-attaches to an instance that was past its setup when the previous agent
// stopped.
func (a *Agent) resumeLRP(c *container, cont isolation.Container, log *slog.Logger) {
	defer close(c.done)
	var desired *models.DesiredLRP
	for attempt := 0; ; attempt++ {
		ctx, cancel := a.bbsCtx()
		d, err := a.store.DesiredLRP(ctx, c.key.ProcessGuid)
		cancel()
		if err == nil {
			desired = d
			break
		}
		if models.IsNotFound(err) {
			a.mu.Lock()
			a.stopLocked(c, "its desired LRP no longer exists")
			a.mu.Unlock()
			a.destroy(c, cont, log)
			return
		}
		if a.isClosed() || !sleepCtx(a.runCtx, min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)) {
			return
		}
	}
	log.Info("resuming instance")
	a.superviseLRP(c, cont, desired, true, log)
}

// resumeTask waits for a task whose process the previous agent started.
func (a *Agent) resumeTask(c *container, cont isolation.Container, log *slog.Logger) {
	defer close(c.done)
	var task *models.Task
	for attempt := 0; ; attempt++ {
		ctx, cancel := a.bbsCtx()
		t, err := a.store.Task(ctx, c.taskGuid)
		cancel()
		if err == nil {
			task = t
			break
		}
		if models.IsNotFound(err) {
			a.mu.Lock()
			a.stopLocked(c, "the task no longer exists")
			a.mu.Unlock()
			a.destroy(c, cont, log)
			return
		}
		if a.isClosed() || !sleepCtx(a.runCtx, min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)) {
			return
		}
	}
	if task.State != models.TaskStateRunning || task.CellID != a.cfg.CellID {
		a.mu.Lock()
		a.stopLocked(c, "the task is now "+task.State)
		a.mu.Unlock()
		a.destroy(c, cont, log)
		return
	}
	a.mu.Lock()
	c.seenRev = max(c.seenRev, task.Revision)
	a.mu.Unlock()
	log.Info("resuming task")
	a.superviseTask(c, cont, task, true, log)
}
