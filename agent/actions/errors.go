package actions

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel error classes, wrapped with %w and a message saying what and why.
var (
	// ErrInvalidAction: the action tree or the Runner's configuration is malformed.
	ErrInvalidAction = errors.New("invalid action")
	// ErrExited: a run action's process exited with a non-zero status (see ExitError).
	ErrExited = errors.New("process exited with a non-zero status")
	// ErrTimedOut: a timeout action's child did not finish in time (see TimeoutError).
	ErrTimedOut = errors.New("timed out")
	// ErrCodependentExited: a codependent child finished successfully while others ran.
	ErrCodependentExited = reasonError("codependent action exited")
	// ErrCancelled: the Run's context ended.
	ErrCancelled = reasonError("cancelled")
	// ErrDownload: a download action failed (the cause is wrapped too).
	ErrDownload = errors.New("download failed")
	// ErrUpload: an upload action failed (the cause is wrapped too).
	ErrUpload = errors.New("upload failed")
)

// reasonError is a sentinel whose reason is its text.
type reasonError string

func (e reasonError) Error() string  { return string(e) }
func (e reasonError) Reason() string { return string(e) }

// Reason returns the failure reason of an error returned by Runner.Run, as reported in crash
// reports and task failure reasons: the Reason of the outermost error in the chain that has
// one ("exited with status 1", "timed out after 5s", "codependent action exited",
// "cancelled"), else the error's text. It returns "" for nil.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var r interface{ Reason() string }
	if errors.As(err, &r) {
		return r.Reason()
	}
	return err.Error()
}

// ExitError reports a process that exited with a non-zero status.
type ExitError struct {
	// Path is the run action's path.
	Path string
	// Status is the exit status (128+signal for a signalled process).
	Status int
	// OutOfMemory is set when the container reported an out-of-memory event.
	OutOfMemory bool
}

// Reason is "exited with status N", with " (out of memory)" appended after an OOM event.
func (e *ExitError) Reason() string {
	if e.OutOfMemory {
		return fmt.Sprintf("exited with status %d (out of memory)", e.Status)
	}
	return fmt.Sprintf("exited with status %d", e.Status)
}

func (e *ExitError) Error() string { return fmt.Sprintf("run %s: %s", e.Path, e.Reason()) }

// Is makes errors.Is(err, ErrExited) true.
func (e *ExitError) Is(target error) bool { return target == ErrExited }

// TimeoutError reports a timeout action whose child did not finish in time.
type TimeoutError struct {
	Timeout time.Duration
	// Err is the child's error after it was cancelled.
	Err error
}

// Reason is "timed out after <duration>", e.g. "timed out after 5s".
func (e *TimeoutError) Reason() string { return "timed out after " + e.Timeout.String() }

func (e *TimeoutError) Error() string {
	if e.Err == nil {
		return e.Reason()
	}
	return fmt.Sprintf("%s (%v)", e.Reason(), e.Err)
}

// Is makes errors.Is(err, ErrTimedOut) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimedOut }

// Unwrap returns the child's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// cancelledError is a process or node stopped because its context ended; cause is
// context.Cause of that context.
type cancelledError struct {
	what  string
	cause error
}

func (e *cancelledError) Error() string {
	return fmt.Sprintf("%s: cancelled: %v", e.what, e.cause)
}

func (e *cancelledError) Reason() string { return ErrCancelled.Reason() }

func (e *cancelledError) Is(target error) bool { return target == ErrCancelled }

func (e *cancelledError) Unwrap() error { return e.cause }
