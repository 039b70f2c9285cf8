package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

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
	// A few at a time: destroying is mostly waiting (processes to die, unmounts, network
	// teardown), and a cell may hold hundreds of containers.
	var (
		mu   sync.Mutex
		errs []error
		n    int
		wg   sync.WaitGroup
		sem  = make(chan struct{}, cfg.maxConcurrentCreates())
	)
	for _, c := range conts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := backend.Destroy(ctx, c.Handle())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("destroy %s: %w", c.Handle(), err))
				return
			}
			n++
		}()
	}
	wg.Wait()
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
