//go:build !windows

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/trellis-run/trellis/isolation"
)

// newWindowsBackend fails: job objects and HCS need Windows. (isolation_windows builds
// everywhere, but elsewhere every Create would fail; refusing at start says so at once.)
func newWindowsBackend(ctx context.Context, cfg Config, logger *slog.Logger) (isolation.Backend, func() error, error) {
	return nil, nil, fmt.Errorf("agent: backend %q: %w on %s", BackendWindows, isolation.ErrUnsupported, runtime.GOOS)
}
