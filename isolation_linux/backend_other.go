//go:build !linux

package isolationlinux

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/trellis-run/trellis/isolation"
)

// Backend is the Linux isolation backend; on other systems New always fails.
type Backend struct{ isolation.Backend }

// New fails: the backend needs Linux namespaces and cgroups.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Backend, error) {
	return nil, fmt.Errorf("isolation_linux: %w: needs Linux", isolation.ErrUnsupported)
}

// Close does nothing.
func (b *Backend) Close() error { return nil }

// UninstallNetwork does nothing: there is no container network on this system.
func (b *Backend) UninstallNetwork(ctx context.Context) error { return nil }

// MaybeRunInit returns at once: containers' inits exist only on Linux.
func MaybeRunInit() {}

// BuildBusyboxStack fails: busybox stacks are made for Linux containers on Linux.
func BuildBusyboxStack(dir, busybox string) error {
	return fmt.Errorf("isolation_linux: %w: needs Linux", isolation.ErrUnsupported)
}

// EnsureSharedMount does nothing: mount propagation is a Linux matter.
func EnsureSharedMount(dir string) (bool, error) { return false, nil }
