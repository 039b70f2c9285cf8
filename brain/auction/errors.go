package auction

import (
	"errors"
	"strings"
)

// Placement error classes. Their messages are Diego's words and are what the auctioneer writes
// into the placement_error of an UNCLAIMED ActualLRP or a PENDING Task, so they are returned
// as they are (not wrapped with more text); test for them with errors.Is.
var (
	// ErrNoRootFSMatch: no live, non-draining cell lists the work's rootfs (or the rootfs URI
	// cannot be parsed).
	ErrNoRootFSMatch = errors.New("found no compatible cell for required rootfs")
	// ErrNoPlacementTagsMatch: cells list the rootfs, but none of them accepts the work's
	// placement tags.
	ErrNoPlacementTagsMatch = errors.New("found no compatible cell with required placement tags")
	// ErrInsufficientResources: compatible cells exist, but none has room. The error returned
	// is an *InsufficientResourcesError, which names the resources that were short.
	ErrInsufficientResources = errors.New("insufficient resources")
)

// InsufficientResourcesError says which resources were short. A resource is named when at
// least one compatible cell lacked it, so the message lists everything an operator would have to
// add for the work to fit somewhere, always in the order memory, disk, containers:
// "insufficient resources: memory, disk, containers" when all three were short, or for example
// "insufficient resources: disk" when only disk was.
type InsufficientResourcesError struct {
	Memory     bool
	Disk       bool
	Containers bool
}

func (e *InsufficientResourcesError) Error() string {
	names := make([]string, 0, 3)
	if e.Memory {
		names = append(names, "memory")
	}
	if e.Disk {
		names = append(names, "disk")
	}
	if e.Containers {
		names = append(names, "containers")
	}
	if len(names) == 0 {
		return ErrInsufficientResources.Error()
	}
	return ErrInsufficientResources.Error() + ": " + strings.Join(names, ", ")
}

// Unwrap makes errors.Is(err, ErrInsufficientResources) true.
func (e *InsufficientResourcesError) Unwrap() error { return ErrInsufficientResources }

// IsPlacementError reports whether err is one of the placement error classes above.
func IsPlacementError(err error) bool {
	return errors.Is(err, ErrNoRootFSMatch) || errors.Is(err, ErrNoPlacementTagsMatch) ||
		errors.Is(err, ErrInsufficientResources)
}
