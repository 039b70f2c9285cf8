package models

import (
	"errors"
	"fmt"
)

// Sentinel error classes of the BBS. The store and the server wrap them with %w; the HTTP API
// carries the class as error.type (see ErrorType) and the client maps it back, so IsX works on
// both sides of the wire.
var (
	// ErrInvalidRecord: a record or request failed validation; the message names the field.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a record with that key exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidTransition: the state machine refuses the transition.
	ErrInvalidTransition = errors.New("invalid state transition")
	// ErrConflict: the record changed since it was read (stale revision); read again and retry.
	ErrConflict = errors.New("conflict")
	// ErrForbidden: the caller's identity may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthenticated: the caller presented no valid identity.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrTooLarge: the request body is over the limit.
	ErrTooLarge = errors.New("request too large")
	// ErrCompacted: the requested event revision is no longer kept; resynchronise with a full read.
	ErrCompacted = errors.New("revision compacted")
	// ErrLockHeld: the lock is held by another owner.
	ErrLockHeld = errors.New("lock held by another owner")
	// ErrUnavailable: the store cannot be reached.
	ErrUnavailable = errors.New("unavailable")
)

// FieldError is a validation error naming the offending field. It wraps ErrInvalidRecord.
type FieldError struct {
	Field  string // JSON path of the field, e.g. "action.run.path"
	Reason string // why it is refused, e.g. "must not be empty"
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalidRecord) true.
func (e *FieldError) Unwrap() error { return ErrInvalidRecord }

// TransitionError is a refused state transition. It wraps ErrInvalidTransition.
type TransitionError struct {
	Record string // e.g. "actual_lrp my-guid/0"
	From   string
	To     string
	Reason string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("%s: cannot go from %s to %s", e.Record, e.From, e.To)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// IsInvalidRecord reports whether err is or wraps ErrInvalidRecord.
func IsInvalidRecord(err error) bool { return errors.Is(err, ErrInvalidRecord) }

// IsNotFound reports whether err is or wraps ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is or wraps ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidTransition reports whether err is or wraps ErrInvalidTransition.
func IsInvalidTransition(err error) bool { return errors.Is(err, ErrInvalidTransition) }

// IsConflict reports whether err is or wraps ErrConflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsForbidden reports whether err is or wraps ErrForbidden.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbidden) }

// IsCompacted reports whether err is or wraps ErrCompacted.
func IsCompacted(err error) bool { return errors.Is(err, ErrCompacted) }

// IsLockHeld reports whether err is or wraps ErrLockHeld.
func IsLockHeld(err error) bool { return errors.Is(err, ErrLockHeld) }

// errorTypes maps each class to the error.type string of the HTTP API.
var errorTypes = []struct {
	err  error
	name string
}{
	{ErrInvalidRecord, "InvalidRecord"},
	{ErrNotFound, "NotFound"},
	{ErrAlreadyExists, "AlreadyExists"},
	{ErrInvalidTransition, "InvalidTransition"},
	{ErrConflict, "Conflict"},
	{ErrForbidden, "Forbidden"},
	{ErrUnauthenticated, "Unauthenticated"},
	{ErrTooLarge, "TooLarge"},
	{ErrCompacted, "Compacted"},
	{ErrLockHeld, "LockHeld"},
	{ErrUnavailable, "Unavailable"},
}

// ErrorType returns the API error.type of err ("Internal" when it is of no known class).
func ErrorType(err error) string {
	for _, t := range errorTypes {
		if errors.Is(err, t.err) {
			return t.name
		}
	}
	return "Internal"
}

// ErrorFromType returns the sentinel for an API error.type, or nil for an unknown type.
func ErrorFromType(name string) error {
	for _, t := range errorTypes {
		if t.name == name {
			return t.err
		}
	}
	return nil
}
