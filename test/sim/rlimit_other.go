//go:build !linux

package sim

import (
	"errors"
	"fmt"
)

// RaiseFileLimit is only implemented on Linux.
func RaiseFileLimit(want uint64) error {
	return fmt.Errorf("sim: raise the open-file limit to %d: %w", want, errors.ErrUnsupported)
}

// FileLimit is unknown outside Linux: 0.
func FileLimit() uint64 { return 0 }
