package isolation

import "errors"

// Sentinel error classes. Backends wrap them with %w and a message saying what and why;
// callers test with the IsX helpers.
var (
	// ErrNotFound: no container (or process) with that handle (or id).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a container with that handle exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidSpec: the spec is malformed (the message names the field).
	ErrInvalidSpec = errors.New("invalid spec")
	// ErrUnsupported: the backend cannot honour the request on this host; it wraps
	// errors.ErrUnsupported too.
	ErrUnsupported = unsupported{}
	// ErrInsufficientResources: the host cannot fit the container.
	ErrInsufficientResources = errors.New("insufficient resources")
	// ErrStopped: the container is stopped and cannot run new processes.
	ErrStopped = errors.New("container stopped")
)

type unsupported struct{}

func (unsupported) Error() string        { return "unsupported" }
func (unsupported) Is(target error) bool { return target == errors.ErrUnsupported }

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
