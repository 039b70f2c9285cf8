package agent

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/trellis-run/trellis/agent/actions"
	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// MaxResultBytes is how much of a task's result_file is returned (Diego's 10 KiB).
const MaxResultBytes = 10 << 10

// startTaskLocked accepts a PENDING task placed on this cell. Callers hold a.mu.
func (a *Agent) startTaskLocked(t *models.Task) {
	c := newContainer(t.TaskGuid, KindTask)
	c.taskGuid = t.TaskGuid
	c.seenRev = t.Revision
	a.addLocked(c)
	task := *t
	a.work.Go(func() { a.runTask(c, &task) })
}

// runTask takes a task from reserved to COMPLETED: reserve, StartTask, create, run, report
// the outcome, destroy. A task runs at most once: once StartTask said so, a failure anywhere
// completes it as failed and nothing starts it again.
func (a *Agent) runTask(c *container, t *models.Task) {
	defer close(c.done)
	log := a.log.With("task", t.TaskGuid)
	if a.Draining() {
		a.rejectTask(t, log, ReasonDraining)
		a.forget(c)
		return
	}
	c.res = reservation(t.MemoryMB, t.DiskMB)
	if err := a.ledger.reserve(c.handle, c.res); err != nil {
		a.rejectTask(t, log, err.Error())
		a.forget(c)
		return
	}
	// No early heartbeat for the reservation: the task's record names this cell, and the
	// auctioneer counts a cell's usage from the records (see presenceLoop).
	ctx, cancel := a.bbsCtx()
	shouldStart, err := a.store.StartTask(ctx, t.TaskGuid, a.cfg.CellID)
	cancel()
	if err != nil || !shouldStart {
		// Already RUNNING here without a container is the reconcile's to fail; anything else
		// means the task is no longer ours.
		log.Info("not starting the task", "should_start", shouldStart, "error", err)
		a.forget(c)
		return
	}
	a.mu.Lock()
	c.claimed = true
	a.mu.Unlock()
	log.Info("task started")

	a.setState(c, StateInitializing)
	auth, err := a.taskImageAuth(t)
	if err != nil {
		a.completeTask(c, nil, taskOutcome{Failed: true, Reason: "reading the task's registry credentials: " + err.Error()}, log)
		a.forget(c)
		return
	}
	pull := a.newPullProgress(c, logs.NoIndex)
	cont, err := a.createContainer(c.stopCtx, isolation.ContainerSpec{
		Handle:     c.handle,
		RootFS:     t.RootFS,
		Limits:     limits(t.MemoryMB, t.DiskMB, t.CPUWeight, t.MaxPids),
		Network:    isolation.NetworkBridge,
		Properties: taskProperties(a.cfg.CellID, t.TaskGuid, c.res),
		Privileged: t.Privileged,
		ImageAuth:  auth,
		Progress:   pull,
	})
	pull.done()
	if err != nil {
		a.backend.Destroy(context.Background(), c.handle)
		if c.stopCtx.Err() == nil {
			a.completeTask(c, nil, taskOutcome{Failed: true, Reason: "failed to create container: " + err.Error()}, log)
		}
		a.forget(c)
		return
	}
	a.superviseTask(c, cont, t, false, log)
}

// superviseTask runs a task's action in its container (or, after a restart, waits for what
// the previous agent started), reports the outcome and destroys the container.
func (a *Agent) superviseTask(c *container, cont isolation.Container, t *models.Task, resume bool, log *slog.Logger) {
	a.setState(c, StateCreated)
	sk, err := a.openSinks(c.handle, logs.NoIndex)
	if err != nil {
		a.completeTask(c, cont, taskOutcome{Failed: true, Reason: "failed to open the task log: " + err.Error()}, log)
		return
	}
	defer sk.close()
	info, err := cont.Info(c.stopCtx)
	if err == nil {
		t, err = withImageTask(t, info.Image)
	}
	if err != nil {
		a.completeTask(c, cont, taskOutcome{Failed: true, Reason: "image: " + err.Error()}, log)
		return
	}

	if err := cont.SetProperty(c.stopCtx, PropPhase, phaseAction); err != nil {
		a.completeTask(c, cont, taskOutcome{Failed: true, Reason: "failed to record the task's phase: " + err.Error()}, log)
		return
	}
	a.setState(c, StateRunning)
	done := make(chan error, 1)
	if resume && !resumable(t.Action) {
		go func() { done <- waitRecorded(c.stopCtx, cont, false) }()
	} else {
		r, err := actions.NewRunner(actions.Config{
			Container: &recordingContainer{Container: cont}, Cache: a.cache, HTTPClient: a.http,
			Env: envList(t.Env), Output: sk.app, Progress: sk.cell, Logger: log,
			GracePeriod: time.Duration(a.cfg.GracefulStop), ProcessIDPrefix: phaseAction, Resume: resume,
		})
		if err != nil {
			a.completeTask(c, cont, taskOutcome{Failed: true, Reason: "invalid action: " + err.Error()}, log)
			return
		}
		go func() { done <- r.Run(c.stopCtx, t.Action) }()
	}
	var runErr error
	select {
	case runErr = <-done:
	case <-a.closed:
		return // the next agent picks the task up from its container
	}
	if c.stopCtx.Err() != nil {
		// Cancelled or deleted: the BBS already has the last word.
		a.destroy(c, cont, log)
		return
	}
	out := taskOutcome{}
	if runErr != nil {
		out = taskOutcome{Failed: true, Reason: a.failureReason(cont, runErr)}
	} else if t.ResultFile != "" {
		res, err := readResult(c.stopCtx, cont, t.ResultFile)
		if err != nil {
			out = taskOutcome{Failed: true, Reason: "failed to read result file " + t.ResultFile + ": " + err.Error()}
		} else {
			out.Result = res
		}
	}
	a.completeTask(c, cont, out, log)
}

// completeTask records the outcome in the container (so a restart before the BBS has it does
// not lose it), reports it with CompleteTask, and destroys the container (cont may be nil).
func (a *Agent) completeTask(c *container, cont isolation.Container, out taskOutcome, log *slog.Logger) {
	if a.isClosed() {
		return
	}
	a.mu.Lock()
	c.completing = true
	a.mu.Unlock()
	if cont != nil {
		if err := cont.SetProperty(context.Background(), PropOutcome, encodeOutcome(out)); err != nil {
			log.Warn("recording the task outcome in its container", "error", err)
		}
	}
	log.Info("task completed", "failed", out.Failed, "reason", out.Reason, "result_bytes", len(out.Result))
	for attempt := 0; ; attempt++ {
		ctx, cancel := a.bbsCtx()
		_, err := a.store.CompleteTask(ctx, c.taskGuid, a.cfg.CellID, out.Failed, out.Reason, out.Result)
		cancel()
		if err == nil || models.IsNotFound(err) || models.IsInvalidTransition(err) || models.IsForbidden(err) || models.IsInvalidRecord(err) {
			if err != nil {
				log.Info("the BBS did not take the task outcome; the task is no longer ours", "error", err)
			}
			break
		}
		if a.isClosed() {
			return // the outcome stays in the container for the next agent
		}
		log.Warn("reporting the task outcome failed; retrying", "error", err)
		if !sleepCtx(a.runCtx, min(time.Duration(attempt+1)*time.Second, 10*time.Second)) {
			return
		}
	}
	if cont != nil {
		a.destroy(c, cont, log)
	} else {
		a.forget(c)
	}
}

// rejectTask hands a task placed here back with reason.
func (a *Agent) rejectTask(t *models.Task, log *slog.Logger, reason string) {
	log.Info("rejecting task", "reason", reason)
	ctx, cancel := a.bbsCtx()
	defer cancel()
	if _, err := a.store.RejectTask(ctx, t.TaskGuid, a.cfg.CellID, reason); err != nil {
		log.Warn("rejecting the task", "reason", reason, "error", err)
	}
}

// readResult returns the first MaxResultBytes of the file path in the container.
func readResult(ctx context.Context, cont isolation.Container, path string) (string, error) {
	rc, err := cont.StreamOut(ctx, path)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("the archive of %s holds no regular file", path)
		}
		if err != nil {
			return "", err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, MaxResultBytes))
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
}

// decodeOutcome parses PropOutcome.
func decodeOutcome(s string) (taskOutcome, bool) {
	var o taskOutcome
	if s == "" || json.Unmarshal([]byte(s), &o) != nil {
		return o, false
	}
	return o, true
}
