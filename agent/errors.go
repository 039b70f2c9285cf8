package agent

import "errors"

// Sentinel error classes of the agent, wrapped with %w and a message saying what and why.
var (
	// ErrInvalidConfig: the configuration is unusable; the message names the field.
	ErrInvalidConfig = errors.New("invalid agent configuration")
	// ErrInsufficientResources: the work does not fit in what the cell has left.
	ErrInsufficientResources = errors.New("insufficient resources")
)

// IsInvalidConfig reports whether err is or wraps ErrInvalidConfig.
func IsInvalidConfig(err error) bool { return errors.Is(err, ErrInvalidConfig) }

// IsInsufficientResources reports whether err is or wraps ErrInsufficientResources.
func IsInsufficientResources(err error) bool { return errors.Is(err, ErrInsufficientResources) }

// Reasons the agent reports to the BBS.
const (
	// ReasonVanished: a record of this cell says CLAIMED/RUNNING but no container exists.
	ReasonVanished = "container vanished while the agent was down"
	// ReasonOutOfMemory: the container reported an out-of-memory event.
	ReasonOutOfMemory = "out of memory"
	// ReasonDiskLimit: the container's disk was at its limit (isolation.EventDiskLimit) when
	// its process failed, or the backend killed it for writing past the limit.
	ReasonDiskLimit = "disk limit exceeded"
	// ReasonDraining: work placed on a draining cell is refused with this reason.
	ReasonDraining = "cell is draining"
	// ReasonSetupInterrupted: a task's setup (downloads before any process ran) was cut short
	// by an agent restart; it is failed rather than run again.
	ReasonSetupInterrupted = "the agent restarted before the task's process started"
)
