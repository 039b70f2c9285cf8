//go:build !windows

package isolationwindows

import (
	"fmt"
	"log/slog"

	"github.com/trellis-run/trellis/isolation"
)

// platformDeps on systems other than Windows: neither mode has a driver, so New succeeds
// (the state dir is readable anywhere) but Create fails with an error wrapping
// errors.ErrUnsupported. The container-mode logic runs here in tests over the HCS fake.
func platformDeps() deps {
	unsupported := func(Config, *slog.Logger) (driver, error) {
		return nil, fmt.Errorf("isolation_windows: %w: job objects and HCS need Windows", isolation.ErrUnsupported)
	}
	return deps{
		process:   unsupported,
		container: unsupported,
		portFree:  portFree,
		capacity: func(Config) (isolation.Capacity, error) {
			return isolation.Capacity{}, fmt.Errorf("isolation_windows: %w: measuring the host needs Windows; set Config.MemoryBytes and DiskBytes", isolation.ErrUnsupported)
		},
	}
}
