//go:build !windows

package installer

import (
	"errors"
	"fmt"
)

// SetRecovery sets a Windows service's restart-on-failure actions. Elsewhere the restart
// policy is in the unit (Restart=always), so it returns an error wrapping
// errors.ErrUnsupported.
func SetRecovery(name string) error {
	return fmt.Errorf("recovery actions of %s are Windows service settings (restart after %s there): %w",
		name, formatSeconds(RecoveryDelay), errors.ErrUnsupported)
}
