package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
)

// Runner executes action trees in one container. It holds no per-run state: without a
// ProcessIDPrefix one Runner may run any number of trees, one after another or at once; with
// one, each tree runs once per container (see Config.ProcessIDPrefix).
type Runner struct {
	cfg      Config
	log      *slog.Logger
	output   logs.Sink
	progress logs.Sink
}

// NewRunner returns a Runner for cfg.
// Errors: ErrInvalidAction (cfg.Validate).
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = DefaultGracePeriod
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, output: cfg.Output, progress: cfg.Progress}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.output == nil {
		r.output = logs.Discard
	}
	if r.progress == nil {
		r.progress = r.output
	}
	return r, nil
}

// Run validates the action tree and executes it (see the package doc for each node). It
// returns once every process it started has exited.
// Errors: ErrInvalidAction (the tree fails models validation, or a download without a
// Cache), *ExitError (ErrExited), *TimeoutError (ErrTimedOut), ErrCodependentExited,
// ErrDownload, ErrUpload, isolation errors (ErrUnsupported for a download or upload user),
// and ErrCancelled when ctx ends. Reason(err) gives the failure reason.
func (r *Runner) Run(ctx context.Context, a *models.Action) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidAction, err)
	}
	return r.exec(ctx, a, "r")
}

// exec runs one node; id is its position in the tree ("r.0.2").
func (r *Runner) exec(ctx context.Context, a *models.Action, id string) error {
	if err := ctx.Err(); err != nil {
		return &cancelledError{what: "action " + id + " not started", cause: context.Cause(ctx)}
	}
	switch {
	case a.Run != nil:
		return r.run(ctx, a.Run, id)
	case a.Download != nil:
		return r.download(ctx, a.Download)
	case a.Upload != nil:
		return r.upload(ctx, a.Upload)
	case a.Timeout != nil:
		return r.timeout(ctx, a.Timeout, id)
	case a.Try != nil:
		return r.try(ctx, a.Try, id)
	case a.EmitProgress != nil:
		return r.emitProgress(ctx, a.EmitProgress, id)
	case a.Serial != nil:
		return r.serial(ctx, a.Serial.Actions, id)
	case a.Parallel != nil:
		return r.parallel(ctx, a.Parallel.Actions, id)
	case a.Codependent != nil:
		return r.codependent(ctx, a.Codependent.Actions, id)
	}
	return fmt.Errorf("action %s sets no action type: %w", id, ErrInvalidAction)
}

func childID(id string, i int) string { return id + "." + strconv.Itoa(i) }

// errTimeoutCause is the cancellation cause of a timeout action's child context.
var errTimeoutCause = errors.New("timeout action expired")

func (r *Runner) timeout(ctx context.Context, t *models.TimeoutAction, id string) error {
	d := time.Duration(t.TimeoutMs) * time.Millisecond
	tctx, cancel := context.WithTimeoutCause(ctx, d, errTimeoutCause)
	defer cancel()
	err := r.exec(tctx, t.Action, childID(id, 0))
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), errTimeoutCause) {
		return &TimeoutError{Timeout: d, Err: err}
	}
	return err
}

func (r *Runner) try(ctx context.Context, t *models.TryAction, id string) error {
	err := r.exec(ctx, t.Action, childID(id, 0))
	if err == nil || ctx.Err() != nil {
		return err
	}
	r.log.Info("try action failed; continuing", "action", id, "reason", Reason(err), "error", err)
	return nil
}

func (r *Runner) emitProgress(ctx context.Context, e *models.EmitProgressAction, id string) error {
	if e.StartMessage != "" {
		r.message(r.progress.Stdout(), e.StartMessage)
	}
	err := r.exec(ctx, e.Action, childID(id, 0))
	switch {
	case err == nil:
		if e.SuccessMessage != "" {
			r.message(r.progress.Stdout(), e.SuccessMessage)
		}
	case errors.Is(err, ErrCancelled):
	case e.FailureMessagePrefix != "":
		r.message(r.progress.Stderr(), e.FailureMessagePrefix+": "+Reason(err))
	}
	return err
}

// message writes one line to w; a failing log sink must not fail the action.
func (r *Runner) message(w io.Writer, text string) {
	if _, err := io.WriteString(w, text+"\n"); err != nil {
		r.log.Warn("writing progress message", "message", text, "error", err)
	}
}

func (r *Runner) serial(ctx context.Context, children []*models.Action, id string) error {
	for i, child := range children {
		if err := r.exec(ctx, child, childID(id, i)); err != nil {
			return err
		}
	}
	return nil
}

// result is a child's outcome.
type result struct {
	i   int
	err error
}

// start runs every child in its own goroutine and returns the channel of their results, in
// finishing order.
func (r *Runner) start(ctx context.Context, children []*models.Action, id string) <-chan result {
	results := make(chan result, len(children))
	for i, child := range children {
		go func() {
			results <- result{i: i, err: r.exec(ctx, child, childID(id, i))}
		}()
	}
	return results
}

func (r *Runner) parallel(ctx context.Context, children []*models.Action, id string) error {
	results := r.start(ctx, children, id)
	var first error
	for range children {
		if res := <-results; res.err != nil && first == nil {
			first = res.err
		}
	}
	return first
}

// errSiblingExited is the cancellation cause of codependent children after one finished.
var errSiblingExited = errors.New("a codependent sibling exited")

func (r *Runner) codependent(ctx context.Context, children []*models.Action, id string) error {
	if len(children) == 0 {
		return nil
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := r.start(cctx, children, id)
	first := <-results
	cancel(errSiblingExited)
	othersSucceeded := true
	for range len(children) - 1 {
		if res := <-results; res.err != nil {
			othersSucceeded = false
		}
	}
	switch {
	case first.err != nil:
		return first.err
	case ctx.Err() != nil:
		return &cancelledError{what: "codependent action " + id, cause: context.Cause(ctx)}
	case !othersSucceeded:
		// The others were still running and were stopped because this one exited.
		return fmt.Errorf("codependent action %s: child %d exited: %w", id, first.i, ErrCodependentExited)
	}
	return nil // every child finished successfully on its own
}
