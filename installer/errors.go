package installer

import "errors"

// Error classes of this package; each error returned wraps one of them (or a class of
// package systemd or agent), with the detail.
var (
	// ErrInvalidOptions is returned for unusable Options or Settings.
	ErrInvalidOptions = errors.New("invalid installer options")
	// ErrInvalidConfig is returned when the configuration configure would write does not
	// validate; the file on disk is then left as it was.
	ErrInvalidConfig = errors.New("invalid agent configuration")
	// ErrNotInstalled is returned when controlling a service that is not installed.
	ErrNotInstalled = errors.New("service not installed")
	// ErrStillInstalled is returned by purge while the service is installed.
	ErrStillInstalled = errors.New("service still installed")
	// ErrService wraps a failure of the platform's service manager.
	ErrService = errors.New("service manager failed")
)
