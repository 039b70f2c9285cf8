//go:build windows

package installer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// stopPoll is how often a stop checks whether the service has stopped.
const stopPoll = 500 * time.Millisecond

// stopNative asks the Windows service manager to stop the named service and waits until it
// has stopped or ctx ends. For the agent a stop is a drain, which the service reports as
// STOP_PENDING for as long as it lasts; the MSI runs this before its own StopServices, which
// would wait only 30 seconds. A service already stopped is not an error. Errors:
// ErrNotInstalled, ErrService, ctx's error.
func stopNative(ctx context.Context, n *nativeService) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("%w: connect to the service manager: %v", ErrService, err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(n.o.Name)
	if err != nil {
		return fmt.Errorf("stop %s: %w: %v", n.o.Name, ErrNotInstalled, err)
	}
	defer s.Close()
	st, err := s.Control(svc.Stop)
	switch {
	case errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE):
		return nil
	case errors.Is(err, windows.ERROR_SERVICE_CANNOT_ACCEPT_CTRL):
		// Already stopping (a drain under way) or still starting: wait below.
		if st, err = s.Query(); err != nil {
			return fmt.Errorf("%w: query %s: %v", ErrService, n.o.Name, err)
		}
	case err != nil:
		return fmt.Errorf("%w: stop %s: %v", ErrService, n.o.Name, err)
	}
	t := time.NewTicker(stopPoll)
	defer t.Stop()
	for st.State != svc.Stopped {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop %s: still %s: %w", n.o.Name, stateName(st.State), ctx.Err())
		case <-t.C:
		}
		if st, err = s.Query(); err != nil {
			return fmt.Errorf("%w: query %s: %v", ErrService, n.o.Name, err)
		}
	}
	return nil
}

func stateName(s svc.State) string {
	switch s {
	case svc.StopPending:
		return "stopping"
	case svc.StartPending:
		return "starting"
	case svc.Running:
		return "running"
	}
	return fmt.Sprintf("in state %d", s)
}
