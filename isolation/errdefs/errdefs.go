// Package errdefs holds the values of package isolation's sentinel error classes, which
// isolation re-exports (isolation.ErrNotFound is errdefs.NotFound, and so on). It exists so
// that the Linux container init can use them without importing package isolation, whose
// dependencies (log/slog) would have the init wait, at every container start, for the
// initialisation of most of the program's packages (see isolation_linux/containerinit). It
// imports nothing but errors; callers outside the init use package isolation.
package errdefs

import "errors"

// The sentinel error classes; package isolation documents them.
var (
	NotFound                    = errors.New("not found")
	AlreadyExists               = errors.New("already exists")
	InvalidSpec                 = errors.New("invalid spec")
	Unsupported           error = unsupported{}
	InsufficientResources       = errors.New("insufficient resources")
	Stopped                     = errors.New("container stopped")
)

type unsupported struct{}

func (unsupported) Error() string        { return "unsupported" }
func (unsupported) Is(target error) bool { return target == errors.ErrUnsupported }
