package actions

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// waitResult is what Process.Wait returned.
type waitResult struct {
	status int
	err    error
}

func (r *Runner) run(ctx context.Context, a *models.RunAction, id string) error {
	stdio, closeOutput := r.processOutput(a)
	defer closeOutput()

	env := make([]string, 0, len(r.cfg.Env)+16+len(a.Env))
	env = append(env, r.cfg.Env...)
	if r.cfg.Instance != nil {
		env = append(env, r.cfg.Instance.Vars()...)
	}
	for _, e := range a.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	spec := isolation.ProcessSpec{
		Path: a.Path,
		Args: slices.Clone(a.Args),
		Env:  env,
		Dir:  a.Dir,
		User: a.User,
	}
	if r.cfg.ProcessIDPrefix != "" {
		spec.ID = r.cfg.ProcessIDPrefix + "-" + id
	}
	if l := a.ResourceLimits; l != nil {
		spec.Rlimits = isolation.Rlimits{Nofile: l.Nofile, Nproc: l.Nproc}
	}

	proc, err := r.startProcess(ctx, spec, stdio)
	if err != nil {
		if ctx.Err() != nil {
			return &cancelledError{what: "run " + a.Path, cause: context.Cause(ctx)}
		}
		return err
	}
	log := r.log.With("process", proc.ID(), "path", a.Path)

	// Wait in the background so that cancellation can be acted on; the goroutine ends when
	// the process exits or when run returns.
	waitCtx, stopWait := context.WithCancel(context.Background())
	defer stopWait()
	waited := make(chan waitResult, 1)
	go func() {
		status, err := proc.Wait(waitCtx)
		waited <- waitResult{status, err}
	}()

	select {
	case res := <-waited:
		return r.exitResult(a.Path, res)
	case <-ctx.Done():
	}

	cancelled := &cancelledError{what: "run " + a.Path, cause: context.Cause(ctx)}
	log.Debug("stopping process", "grace", r.cfg.GracePeriod, "cause", cancelled.cause)
	if err := proc.Signal(context.Background(), isolation.SignalTerminate); err != nil && !isolation.IsNotFound(err) {
		log.Warn("terminating process", "error", err)
	}
	grace := time.NewTimer(r.cfg.GracePeriod)
	defer grace.Stop()
	select {
	case res := <-waited:
		return stopped(cancelled, res)
	case <-grace.C:
	}
	log.Info("process outlived its grace period; killing it", "grace", r.cfg.GracePeriod)
	if err := proc.Signal(context.Background(), isolation.SignalKill); err != nil && !isolation.IsNotFound(err) {
		log.Warn("killing process", "error", err)
	}
	kill := time.NewTimer(killWait)
	defer kill.Stop()
	select {
	case res := <-waited:
		return stopped(cancelled, res)
	case <-kill.C:
		return fmt.Errorf("run %s: process %s did not exit %v after SignalKill: %w", a.Path, proc.ID(), killWait, cancelled)
	}
}

// startProcess starts spec, or with Resume attaches to an earlier process of its id.
func (r *Runner) startProcess(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	c := r.cfg.Container
	if r.cfg.Resume {
		p, err := c.Attach(ctx, spec.ID, stdio)
		if err == nil {
			r.log.Info("resumed process", "process", spec.ID, "path", spec.Path)
			return p, nil
		}
		if !isolation.IsNotFound(err) {
			return nil, fmt.Errorf("run %s: resume process %s: %w", spec.Path, spec.ID, err)
		}
	}
	p, err := c.Run(ctx, spec, stdio)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", spec.Path, err)
	}
	return p, nil
}

// processOutput returns the stdio of a run action and the function that flushes it.
func (r *Runner) processOutput(a *models.RunAction) (isolation.ProcessIO, func()) {
	if a.SuppressLogOutput {
		return isolation.ProcessIO{}, func() {}
	}
	sink := r.output
	done := func() {}
	if f, ok := sink.(logs.Forker); ok {
		fork, err := f.Fork()
		if err != nil {
			r.log.Warn("forking the log sink; output goes unlabelled by process", "error", err)
		} else {
			sink = fork
			done = func() {
				if err := fork.Close(); err != nil {
					r.log.Warn("flushing process output", "error", err)
				}
			}
		}
	}
	return isolation.ProcessIO{Stdout: sink.Stdout(), Stderr: sink.Stderr()}, done
}

// exitResult turns the exit of a process that ran to its end into run's result.
func (r *Runner) exitResult(path string, res waitResult) error {
	if res.err != nil {
		return fmt.Errorf("run %s: wait: %w", path, res.err)
	}
	if res.status == 0 {
		return nil
	}
	e := &ExitError{Path: path, Status: res.status}
	// The container's events tell an OOM kill from another death.
	ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if info, err := r.cfg.Container.Info(ictx); err == nil {
		e.OutOfMemory = slices.Contains(info.Events, isolation.EventOutOfMemory)
	}
	return e
}

// stopped is run's result for a process stopped because its context ended.
func stopped(cancelled *cancelledError, res waitResult) error {
	if res.err != nil {
		return fmt.Errorf("%w (wait: %v)", cancelled, res.err)
	}
	return fmt.Errorf("%w (exited with status %d)", cancelled, res.status)
}
