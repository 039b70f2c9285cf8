package isolation

import (
	"errors"

	"github.com/trellis-run/trellis/isolation/errdefs"
)

// Sentinel error classes. Backends wrap them with %w and a message saying what and why;
// callers test with the IsX helpers. Their values live in package errdefs, which the Linux
// container init uses instead of this package.
var (
	// ErrNotFound: no container (or process) with that handle (or id).
	ErrNotFound = errdefs.NotFound
	// ErrAlreadyExists: a container with that handle exists.
	ErrAlreadyExists = errdefs.AlreadyExists
	// ErrInvalidSpec: the spec is malformed (the message names the field).
	ErrInvalidSpec = errdefs.InvalidSpec
	// ErrUnsupported: the backend cannot honour the request on this host; it wraps
	// errors.ErrUnsupported too.
	ErrUnsupported = errdefs.Unsupported
	// ErrInsufficientResources: the host cannot fit the container.
	ErrInsufficientResources = errdefs.InsufficientResources
	// ErrStopped: the container is stopped and cannot run new processes.
	ErrStopped = errdefs.Stopped
)

// IsNotFound reports whether err is or wraps ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is or wraps ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidSpec reports whether err is or wraps ErrInvalidSpec.
func IsInvalidSpec(err error) bool { return errors.Is(err, ErrInvalidSpec) }

// IsUnsupported reports whether err is or wraps ErrUnsupported (or errors.ErrUnsupported).
func IsUnsupported(err error) bool {
	return errors.Is(err, ErrUnsupported) || errors.Is(err, errors.ErrUnsupported)
}

// IsInsufficientResources reports whether err is or wraps ErrInsufficientResources.
func IsInsufficientResources(err error) bool { return errors.Is(err, ErrInsufficientResources) }

// IsStopped reports whether err is or wraps ErrStopped.
func IsStopped(err error) bool { return errors.Is(err, ErrStopped) }
