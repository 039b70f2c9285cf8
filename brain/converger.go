package brain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain/auction"
	"github.com/trellis-run/trellis/brain/converge"
)

// restartKey names one scheduled restart: the record at the revision it crashed with.
type restartKey struct {
	guid     string
	index    int32
	revision int64
}

// convergeLoop plans after relevant events (debounced), on the periodic sweep and at the
// plan's next deadline, until ctx ends.
func (s *session) convergeLoop(ctx context.Context) {
	sweep := time.NewTicker(s.b.cfg.ConvergeInterval)
	defer sweep.Stop()
	var debounce <-chan time.Time
	// Event-triggered plans are spaced by planSpacing times the last planning time, so that
	// a stream of events (a fill of 250,000 instances creates DesiredLRPs without pause)
	// does not keep the brain planning back to back over a large view.
	var lastPlan time.Duration
	var lastEnd time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
			if debounce == nil {
				wait := max(s.b.cfg.ConvergeDebounce, planSpacing*lastPlan-time.Since(lastEnd))
				debounce = time.After(wait)
			}
			continue
		case <-debounce:
			debounce = nil
			lastPlan = s.converge(ctx, "event")
		case <-sweep.C:
			lastPlan = s.converge(ctx, "sweep")
		case <-s.deadline:
			lastPlan = s.converge(ctx, "deadline")
		}
		lastEnd = time.Now()
	}
}

// planSpacing bounds the share of time the converger spends planning on events: after a plan
// that took d, the next event-triggered one starts no sooner than planSpacing×d later.
const planSpacing = 5

// partialShare: an event-triggered plan covers only the processes whose records changed
// (kickProcesses) while they are at most 1/partialShare of the desired ones; beyond that one
// plan over every process costs about as much.
const partialShare = 4

// Plan scopes, the label of the convergence histograms.
const (
	scopeFull      = "full"
	scopeProcesses = "processes"
)

// snapshot copies the view for Plan: every process when guids is nil, else the records of
// those processes; the tasks and cells always. The records are shared: the view replaces
// records, it never modifies them.
func (s *session) snapshot(guids []string) converge.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := converge.Snapshot{
		Tasks: make([]*models.Task, 0, len(s.tasks)),
		Cells: make([]*models.CellPresence, 0, len(s.cells)),
	}
	if guids == nil {
		snap.DesiredLRPs = make([]*models.DesiredLRP, 0, len(s.desired))
		snap.ActualLRPs = make([]*models.ActualLRP, 0, len(s.actual))
		for _, d := range s.desired {
			snap.DesiredLRPs = append(snap.DesiredLRPs, d)
		}
		for _, a := range s.actual {
			snap.ActualLRPs = append(snap.ActualLRPs, a)
		}
	} else {
		for _, g := range guids {
			if d := s.desired[g]; d != nil {
				snap.DesiredLRPs = append(snap.DesiredLRPs, d)
			}
			snap.ActualLRPs = append(snap.ActualLRPs, s.recordsOfLocked(g)...)
		}
	}
	for _, t := range s.tasks {
		snap.Tasks = append(snap.Tasks, t)
	}
	for _, c := range s.cells {
		snap.Cells = append(snap.Cells, c)
	}
	return snap
}

// converge plans once from the view and applies the plan. An event-triggered plan covers the
// processes whose records changed since the last plan (and the tasks), unless a change
// concerns them all (a cell gone, a new term) or they are many; the sweep and the plan's
// deadlines cover every process. It returns how long planning took.
func (s *session) converge(ctx context.Context, why string) time.Duration {
	start := time.Now()
	guids, all := s.takeDirty()
	s.mu.Lock()
	if why != "event" || all || len(guids)*partialShare > len(s.desired) {
		guids = nil
	}
	s.mu.Unlock()
	scope := scopeFull
	if guids != nil {
		scope = scopeProcesses
	}
	domains, err := s.b.bbs.Domains(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "cannot read domains; convergence postponed", "error", err, "in", s.b.cfg.ResyncDelay)
			s.later(s.b.cfg.ResyncDelay, func(context.Context) { s.kickConverger() })
		}
		return 0
	}
	planStart := time.Now()
	snap := s.snapshot(guids)
	snap.Domains = domains
	now := s.b.clock.Now()
	acts := converge.Plan(snap, now, s.b.cfg.Converge)
	planned := time.Since(planStart)
	s.b.metrics.convergePlan.WithLabelValues(scope).Observe(planned.Seconds())

	if guids == nil {
		extra := 0
		for _, r := range acts.Retire {
			if r.Reason == converge.RetireExtraIndex || r.Reason == converge.RetireOrphan {
				extra++
			}
		}
		s.b.metrics.lrpsMissing.Set(float64(len(acts.Create)))
		s.b.metrics.lrpsExtra.Set(float64(extra))
	}

	parallel(ctx, s.b.cfg.ApplyConcurrency, s.jobs(acts))
	s.schedule(ctx, acts, now, guids)

	took := time.Since(start)
	s.b.metrics.convergeDuration.WithLabelValues(scope).Observe(took.Seconds())
	level := slog.LevelDebug
	if !acts.Empty() {
		level = slog.LevelInfo
	}
	s.log.Log(ctx, level, "converged", "trigger", why, "scope", scope, "desired_lrps", len(snap.DesiredLRPs),
		"actual_lrps", len(snap.ActualLRPs), "tasks", len(snap.Tasks), "cells", len(snap.Cells),
		"create", len(acts.Create), "retire", len(acts.Retire), "mark_suspect", len(acts.MarkSuspect),
		"auction", len(acts.Auction), "restart_now", len(acts.RestartNow), "restart_later", len(acts.RestartLater),
		"fail_tasks", len(acts.FailTasks), "auction_tasks", len(acts.AuctionTasks),
		"unresolve_tasks", len(acts.UnresolveTasks), "delete_tasks", len(acts.DeleteTasks),
		"callbacks", len(acts.Callbacks), "planned_in", planned, "took", took)
	return planned
}

// jobs turns a plan's immediate actions into BBS writes, the instance writes in batches
// (batchJobs). Each write that returns the new record puts it in the view, so instances that
// now need a home go to the auction at once.
func (s *session) jobs(acts converge.Actions) []func(context.Context) {
	var writes []lrpWrite
	for _, c := range acts.Create {
		writes = append(writes, lrpWrite{
			op: store.ActualLRPOp{Action: store.ActionCreateUnclaimed, ProcessGuid: c.Key.ProcessGuid, Index: c.Key.Index},
			done: func(ctx context.Context, a *models.ActualLRP, err error) {
				if s.done(ctx, "create", err, "process_guid", c.Key.ProcessGuid, "index", c.Key.Index) {
					s.putActual(a)
				}
			},
		})
	}
	for _, r := range acts.Retire {
		writes = append(writes, lrpWrite{
			op: store.ActualLRPOp{Action: store.ActionRetire, ProcessGuid: r.Key.ProcessGuid, Index: r.Key.Index,
				Presence: r.Presence, Revision: r.Revision},
			done: func(ctx context.Context, _ *models.ActualLRP, err error) {
				s.done(ctx, "retire", err, "process_guid", r.Key.ProcessGuid, "index", r.Key.Index,
					"presence", r.Presence, "reason", string(r.Reason))
			},
		})
	}
	for _, r := range acts.MarkSuspect {
		writes = append(writes, lrpWrite{
			op: store.ActualLRPOp{Action: store.ActionMarkSuspect, ProcessGuid: r.Key.ProcessGuid, Index: r.Key.Index,
				Revision: r.Revision},
			done: func(ctx context.Context, a *models.ActualLRP, err error) {
				if s.done(ctx, "mark_suspect", err, "process_guid", r.Key.ProcessGuid, "index", r.Key.Index) {
					s.putActual(a)
				}
			},
		})
	}
	for _, r := range acts.RestartNow {
		writes = append(writes, lrpWrite{
			op: store.ActualLRPOp{Action: store.ActionRestart, ProcessGuid: r.Key.ProcessGuid, Index: r.Key.Index,
				Revision: r.Revision},
			done: func(ctx context.Context, a *models.ActualLRP, err error) {
				if s.done(ctx, "restart", err, "process_guid", r.Key.ProcessGuid, "index", r.Key.Index, "due", r.At) {
					s.putActual(a)
				}
			},
		})
	}
	jobs := s.batchJobs(writes)
	for _, a := range acts.Auction {
		s.b.metrics.actions.WithLabelValues("auction", "ok").Inc()
		s.log.Info("auctioning instance again", "process_guid", a.Key.ProcessGuid, "index", a.Key.Index,
			"reason", string(a.Reason))
		s.mu.Lock()
		if cur := s.actual[actualKey{a.Key.ProcessGuid, a.Key.Index, a.Presence}]; cur != nil && cur.Revision == a.Revision {
			s.queuedLRP[lrpKey{a.Key.ProcessGuid, a.Key.Index}] = a.Revision
			s.batch.AddLRPs(auction.LRPWorkFor(a.Desired, a.Key.Index))
		}
		s.mu.Unlock()
	}
	for _, a := range acts.AuctionTasks {
		s.b.metrics.actions.WithLabelValues("auction_task", "ok").Inc()
		s.log.Info("auctioning task again", "task_guid", a.Task.TaskGuid, "reason", string(a.Reason))
		s.mu.Lock()
		if cur := s.tasks[a.Task.TaskGuid]; cur != nil && cur.Revision == a.Task.Revision {
			s.queueTaskLocked(cur)
		}
		s.mu.Unlock()
	}
	for _, f := range acts.FailTasks {
		jobs = append(jobs, func(ctx context.Context) {
			t, err := s.b.bbs.FailTask(ctx, f.TaskGuid, f.Reason)
			if s.done(ctx, "fail_task", err, "task_guid", f.TaskGuid, "reason", f.Reason) {
				s.putTask(t)
			}
		})
	}
	for _, r := range acts.UnresolveTasks {
		jobs = append(jobs, func(ctx context.Context) {
			t, err := s.b.bbs.UnresolveTask(ctx, r.TaskGuid)
			if s.done(ctx, "unresolve_task", err, "task_guid", r.TaskGuid) {
				s.putTask(t)
			}
		})
	}
	for _, r := range acts.DeleteTasks {
		jobs = append(jobs, func(ctx context.Context) {
			err := s.b.bbs.DeleteTask(ctx, r.TaskGuid, true)
			s.done(ctx, "delete_task", err, "task_guid", r.TaskGuid)
		})
	}
	for _, t := range acts.Callbacks {
		s.startCallback(t)
	}
	return jobs
}

// done counts and logs one applied action and reports whether it succeeded.
func (s *session) done(ctx context.Context, action string, err error, attrs ...any) bool {
	switch {
	case err == nil:
		s.b.metrics.actions.WithLabelValues(action, "ok").Inc()
		s.log.InfoContext(ctx, "converger: "+action, attrs...)
		return true
	case ctx.Err() != nil:
		return false
	case movedOn(err):
		s.b.metrics.actions.WithLabelValues(action, "conflict").Inc()
		s.log.DebugContext(ctx, "converger: record changed before "+action, append(attrs, "error", err)...)
	default:
		s.b.metrics.actions.WithLabelValues(action, "error").Inc()
		s.log.WarnContext(ctx, "converger: "+action+" failed", append(attrs, "error", err)...)
	}
	return false
}

func (s *session) putActual(a *models.ActualLRP) {
	s.mu.Lock()
	s.putActualLocked(a)
	s.mu.Unlock()
}

func (s *session) putTask(t *models.Task) {
	s.mu.Lock()
	s.putTaskLocked(t)
	s.mu.Unlock()
}

// restart brings a CRASHED instance back to UNCLAIMED; the view then queues it for auction.
func (s *session) restart(ctx context.Context, r converge.Restart) {
	a, err := s.b.bbs.RestartActualLRP(ctx, r.Key, r.Revision)
	if s.done(ctx, "restart", err, "process_guid", r.Key.ProcessGuid, "index", r.Key.Index, "due", r.At) {
		s.putActual(a)
	}
}

// schedule arms a timer (on the Clock) for each restart due later and for the plan's next
// deadline, and disarms restarts the plan no longer lists (their record changed). A plan of
// some processes (guids not nil) disarms only their restarts, and moves the deadline only
// earlier: the last full plan's deadline may belong to another process.
func (s *session) schedule(ctx context.Context, acts converge.Actions, now time.Time, guids []string) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.closed {
		return
	}
	var planned map[string]bool
	if guids != nil {
		planned = make(map[string]bool, len(guids))
		for _, g := range guids {
			planned[g] = true
		}
	}
	want := make(map[restartKey]bool, len(acts.RestartLater))
	for _, r := range acts.RestartLater {
		k := restartKey{r.Key.ProcessGuid, r.Key.Index, r.Revision}
		want[k] = true
		if _, ok := s.restarts[k]; ok {
			continue
		}
		s.b.metrics.actions.WithLabelValues("restart_later", "ok").Inc()
		s.log.InfoContext(ctx, "converger: restart scheduled", "process_guid", r.Key.ProcessGuid,
			"index", r.Key.Index, "at", r.At, "in", r.At.Sub(now))
		s.restarts[k] = s.b.clock.AfterFunc(r.At.Sub(now), func() {
			s.tmu.Lock()
			if s.closed || s.restarts[k] == nil {
				s.tmu.Unlock()
				return
			}
			delete(s.restarts, k)
			s.bg.Add(1)
			s.tmu.Unlock()
			defer s.bg.Done()
			s.restart(s.ctxForBackground(), r)
		})
	}
	for k, t := range s.restarts {
		if !want[k] && (planned == nil || planned[k.guid]) {
			t.Stop()
			delete(s.restarts, k)
		}
	}
	if planned != nil && s.deadlineTimer != nil && s.deadlineAt.After(now) &&
		(acts.NextDeadline.IsZero() || !acts.NextDeadline.Before(s.deadlineAt)) {
		return // the armed deadline comes first
	}
	if s.deadlineTimer != nil {
		s.deadlineTimer.Stop()
		s.deadlineTimer, s.deadlineAt = nil, time.Time{}
	}
	if !acts.NextDeadline.IsZero() {
		s.deadlineAt = acts.NextDeadline
		s.deadlineTimer = s.b.clock.AfterFunc(acts.NextDeadline.Sub(now), func() {
			select {
			case s.deadline <- struct{}{}:
			default:
			}
		})
	}
}

// later runs f after d (system time) in the background of the term, unless the term ended.
func (s *session) later(d time.Duration, f func(context.Context)) {
	time.AfterFunc(d, func() {
		s.tmu.Lock()
		if s.closed {
			s.tmu.Unlock()
			return
		}
		s.bg.Add(1)
		s.tmu.Unlock()
		defer s.bg.Done()
		f(s.ctxForBackground())
	})
}

// startCallback POSTs t's completion callback in the background unless one is in flight or
// the last one failed recently.
func (s *session) startCallback(t *models.Task) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.closed || s.callbacks[t.TaskGuid] {
		return
	}
	if until, ok := s.callbackBackoff[t.TaskGuid]; ok && s.b.clock.Now().Before(until) {
		return
	}
	delete(s.callbackBackoff, t.TaskGuid)
	s.callbacks[t.TaskGuid] = true
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ok := s.callback(s.ctxForBackground(), t)
		s.tmu.Lock()
		delete(s.callbacks, t.TaskGuid)
		if !ok {
			s.callbackBackoff[t.TaskGuid] = s.b.clock.Now().Add(s.callbackRetryAfter())
		}
		s.tmu.Unlock()
	}()
}

func (s *session) callbackRetryAfter() time.Duration {
	if d := s.b.cfg.Converge.ResolvingTaskTimeout; d > 0 {
		return d
	}
	return converge.DefaultOptions().ResolvingTaskTimeout
}

// callback resolves t (when the BBS lets the brain), POSTs it to its completion callback URL
// and deletes it. A receiver answering 2xx or a client error (other than 408 and 429) has had
// its answer: the task is deleted. Network errors and other statuses are retried
// CallbackAttempts times; then the task is left for a later convergence (a resolved task goes
// back to COMPLETED after the converger's resolving timeout).
func (s *session) callback(ctx context.Context, t *models.Task) bool {
	force := true
	if !s.cannotResolve.Load() {
		rt, err := s.b.bbs.ResolvingTask(ctx, t.TaskGuid)
		switch {
		case err == nil:
			force, t = false, rt
		case models.IsForbidden(err):
			// The BBS reserves resolving for operators: post from COMPLETED and purge after.
			s.cannotResolve.Store(true)
		default:
			s.done(ctx, "callback", err, "task_guid", t.TaskGuid, "step", "resolve")
			return movedOn(err)
		}
	}
	body, err := json.Marshal(t)
	if err != nil {
		s.done(ctx, "callback", fmt.Errorf("encode task: %w", err), "task_guid", t.TaskGuid)
		return false
	}
	var lastErr error
	for attempt := 1; attempt <= s.b.cfg.CallbackAttempts; attempt++ {
		if attempt > 1 && !sleep(ctx, time.Duration(attempt-1)*250*time.Millisecond) {
			return false
		}
		var status int
		status, lastErr = s.post(ctx, t.CompletionCallbackURL, body)
		if lastErr == nil {
			if status >= 200 && status < 300 || status >= 400 && status < 500 &&
				status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
				if status >= 300 {
					s.log.WarnContext(ctx, "completion callback refused; deleting the task anyway",
						"task_guid", t.TaskGuid, "status", status)
				}
				err := s.b.bbs.DeleteTask(ctx, t.TaskGuid, force)
				return s.done(ctx, "callback", err, "task_guid", t.TaskGuid, "status", status) || movedOn(err)
			}
			lastErr = fmt.Errorf("status %d", status)
		}
	}
	s.done(ctx, "callback", fmt.Errorf("POST %s: %w", redactURL(t.CompletionCallbackURL), lastErr),
		"task_guid", t.TaskGuid, "attempts", s.b.cfg.CallbackAttempts)
	return false
}

func (s *session) post(ctx context.Context, target string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.b.cfg.CallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("bad callback URL: %w", errors.Unwrap(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.b.http.Do(req)
	if err != nil {
		// *url.Error repeats the URL, whose query may hold a credential: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stop ends the term's background work: timers are disarmed and running callbacks and
// restarts are waited for (their context has ended, so they return promptly).
func (s *session) stop() {
	s.tmu.Lock()
	s.closed = true
	for k, t := range s.restarts {
		t.Stop()
		delete(s.restarts, k)
	}
	if s.deadlineTimer != nil {
		s.deadlineTimer.Stop()
	}
	s.tmu.Unlock()
	s.bg.Wait()
}

// redactURL drops the user info and query of a callback URL for logs: either may carry a
// credential.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// ctxForBackground is the term's context, for work started by timers.
func (s *session) ctxForBackground() context.Context { return s.ctx }
