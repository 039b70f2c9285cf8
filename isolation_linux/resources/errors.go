package resources

import "errors"

// ErrBusy: a cgroup still holds processes, or a disk volume is still in use, after the bounded
// wait. Errors wrap it with %w and say which cgroup or volume; callers test with IsBusy.
//
// Other failures wrap the isolation package's classes: isolation.ErrNotFound (Load of a cgroup
// that does not exist, Usage of an unknown handle), isolation.ErrInvalidSpec (a bad name or
// limit), isolation.ErrUnsupported (the host lacks cgroups, a controller or a tool).
var ErrBusy = errors.New("resource busy")

// IsBusy reports whether err is or wraps ErrBusy.
func IsBusy(err error) bool { return errors.Is(err, ErrBusy) }
