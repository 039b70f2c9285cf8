//go:build !linux

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/trellis-run/trellis/isolation"
)

// newLinuxBackend fails: the Linux backend needs Linux namespaces and cgroups.
func newLinuxBackend(ctx context.Context, cfg Config, logger *slog.Logger) (isolation.Backend, func() error, error) {
	return nil, nil, fmt.Errorf("agent: backend %q: %w on %s", BackendLinux, isolation.ErrUnsupported, runtime.GOOS)
}
