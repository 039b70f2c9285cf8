package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/trellis-run/trellis/isolation"
)

// DestroyContainers destroys every container the cell of cfg holds in its backend, then removes
// the backend's container network from the host when the backend has one (its bridge and
// rules; the next container sets it up again), and returns how many containers it destroyed. It
// is for taking a cell out of service by hand (or stopping a dev cluster) while no agent runs:
// unlike a drain it moves nothing elsewhere, and the BBS learns of the loss only when an agent
// of this cell starts again or the cell's presence expires.
func DestroyContainers(ctx context.Context, cfg Config, logger *slog.Logger) (int, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	backend, release, err := newBackend(ctx, cfg, logger)
	if err != nil {
		return 0, err
	}
	defer release()
	conts, err := backend.List(ctx, isolation.Properties{PropCell: cfg.CellID})
	if err != nil {
		return 0, fmt.Errorf("agent: list containers of cell %s: %w", cfg.CellID, err)
	}
	var errs []error
	n := 0
	for _, c := range conts {
		if err := backend.Destroy(ctx, c.Handle()); err != nil {
			errs = append(errs, fmt.Errorf("destroy %s: %w", c.Handle(), err))
			continue
		}
		n++
	}
	if len(errs) == 0 {
		if u, ok := backend.(networkUninstaller); ok {
			if err := u.UninstallNetwork(ctx); err != nil {
				errs = append(errs, fmt.Errorf("uninstall the container network: %w", err))
			}
		}
	}
	return n, errors.Join(errs...)
}

// networkUninstaller is a backend that can remove its container network from the host.
type networkUninstaller interface {
	UninstallNetwork(ctx context.Context) error
}
