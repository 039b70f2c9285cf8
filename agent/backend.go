package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// newBackend builds the backend cfg.Backend names and the function that releases it.
// Errors: the backend's (on systems without it, an error wrapping errors.ErrUnsupported).
func newBackend(ctx context.Context, cfg Config, logger *slog.Logger) (isolation.Backend, func() error, error) {
	switch cfg.Backend {
	case BackendMemory:
		b, err := newMemoryBackend(cfg, logger)
		if err != nil {
			return nil, nil, err
		}
		return b, func() error { return nil }, nil
	case BackendLinux:
		return newLinuxBackend(ctx, cfg, logger)
	case BackendWindows:
		return newWindowsBackend(ctx, cfg, logger)
	}
	return nil, nil, fmt.Errorf("%w: backend: unknown backend %q", ErrInvalidConfig, cfg.Backend)
}

// newMemoryBackend is an in-memory host offering the configured stacks and schemes. Its
// containers live as long as the process: a restarted agent process finds none.
func newMemoryBackend(cfg Config, logger *slog.Logger) (*isolationtest.Memory, error) {
	mc := isolationtest.DefaultMemoryConfig()
	mc.Stacks = nil
	for stack := range cfg.stacks() {
		mc.Stacks = append(mc.Stacks, stack)
	}
	mc.RootFSSchemes = cfg.schemes()
	mc.Logger = logger
	b, err := isolationtest.NewMemory(mc)
	if err != nil {
		return nil, fmt.Errorf("agent: memory backend: %w", err)
	}
	return b, nil
}
