//go:build windows

package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/trellis-run/trellis/isolation"
	isolationwindows "github.com/trellis-run/trellis/isolation_windows"
)

// newWindowsBackend builds the Windows backend from the agent's configuration (see
// windowsBackendConfig). Process-mode containers outlive the agent process: a restarted
// agent reopens their job objects by name.
func newWindowsBackend(ctx context.Context, cfg Config, logger *slog.Logger) (isolation.Backend, func() error, error) {
	b, err := isolationwindows.New(ctx, windowsBackendConfig(cfg), logger)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: windows backend: %w", err)
	}
	return b, b.Close, nil
}
