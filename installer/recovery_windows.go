//go:build windows

package installer

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

// SetRecovery makes the service manager restart the named service whenever it fails: after
// RecoveryDelay for the first two failures and after 30 s from the third, with the count
// reset after RecoveryResetPeriod, and also when the service stops itself with a non-zero
// exit code. The MSI calls it through `trellis agent recovery`, since wixl cannot write
// ServiceConfig. Errors: ErrNotInstalled, ErrService.
func SetRecovery(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("%w: connect to the service manager: %v", ErrService, err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("recovery of %s: %w: %v", name, ErrNotInstalled, err)
	}
	defer s.Close()
	actions := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: RecoveryDelay},
		{Type: mgr.ServiceRestart, Delay: RecoveryDelay},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
	}
	if err := s.SetRecoveryActions(actions, uint32(RecoveryResetPeriod/time.Second)); err != nil {
		return fmt.Errorf("%w: set recovery actions of %s (restart after %s): %v", ErrService, name, formatSeconds(RecoveryDelay), err)
	}
	// Wine does not implement this setting (ERROR_INVALID_LEVEL); there the actions apply to
	// crashes only, which is all wine tests need.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil && !errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		return fmt.Errorf("%w: set recovery on non-crash failures of %s: %v", ErrService, name, err)
	}
	return nil
}
