package sim

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit lifts the process's open-file limit to want (the agent keeps each
// instance's log open: a quarter of a million instances in one process need as many files).
// Raising the hard limit needs root or CAP_SYS_RESOURCE.
func RaiseFileLimit(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("sim: read the open-file limit: %w", err)
	}
	if lim.Cur >= want {
		return nil
	}
	next := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		return fmt.Errorf("sim: raise the open-file limit from %d to %d: %w", lim.Cur, want, err)
	}
	return nil
}

// FileLimit returns the process's open-file limit (0 when unknown).
func FileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}
