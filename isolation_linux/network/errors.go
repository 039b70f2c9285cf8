package network

import (
	"errors"
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

// Sentinel error classes. Errors returned by this package wrap one of them with %w and a
// message saying what failed and why. Where a class has a meaning in package isolation it
// wraps that class too, so the Linux backend can pass errors through unchanged and its callers
// can test them with isolation.IsInvalidSpec, isolation.IsInsufficientResources and so on.
var (
	// ErrInvalidConfig: a Config field is out of range; the message names the field.
	// It wraps isolation.ErrInvalidSpec.
	ErrInvalidConfig = fmt.Errorf("invalid network config: %w", isolation.ErrInvalidSpec)

	// ErrPluginNotFound: a CNI plugin binary is missing from every plugin directory.
	// It wraps isolation.ErrUnsupported (this host cannot give containers a network).
	ErrPluginNotFound = fmt.Errorf("cni plugin not found: %w", isolation.ErrUnsupported)

	// ErrPlugin: a CNI plugin ran and failed; the message carries the plugin's own error.
	ErrPlugin = errors.New("cni plugin failed")

	// ErrPortsExhausted: every host port of Config.HostPortRange is held by a container or
	// bound by a host process. It wraps isolation.ErrInsufficientResources.
	ErrPortsExhausted = fmt.Errorf("host port range exhausted: %w", isolation.ErrInsufficientResources)

	// ErrPortInUse: an explicitly requested host port is held by another container or bound by
	// a host process. It wraps isolation.ErrInsufficientResources: another cell may have it free.
	ErrPortInUse = fmt.Errorf("host port in use: %w", isolation.ErrInsufficientResources)

	// ErrState: the state directory cannot be read or written, or holds a corrupt record.
	ErrState = errors.New("network state")
)

// IsPortsExhausted reports whether err is or wraps ErrPortsExhausted.
func IsPortsExhausted(err error) bool { return errors.Is(err, ErrPortsExhausted) }

// IsPortInUse reports whether err is or wraps ErrPortInUse.
func IsPortInUse(err error) bool { return errors.Is(err, ErrPortInUse) }

// IsPluginNotFound reports whether err is or wraps ErrPluginNotFound.
func IsPluginNotFound(err error) bool { return errors.Is(err, ErrPluginNotFound) }
