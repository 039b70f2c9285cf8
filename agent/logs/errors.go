package logs

import "errors"

// Sentinel error classes, wrapped with %w and a message saying what and why.
var (
	// ErrNotFound: no log exists for the key.
	ErrNotFound = errors.New("log not found")
	// ErrInvalid: a malformed key, source or argument (the message names it).
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the Writer or Store was closed, or the log was removed under a writer.
	ErrClosed = errors.New("log closed")
)

// IsNotFound reports whether err is or wraps ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsInvalid reports whether err is or wraps ErrInvalid.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }

// IsClosed reports whether err is or wraps ErrClosed.
func IsClosed(err error) bool { return errors.Is(err, ErrClosed) }
