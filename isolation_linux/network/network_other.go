//go:build !linux

package network

import (
	"context"
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

// errNotLinux is returned by everything that touches the host's network: CNI bridges and
// network namespaces exist only on Linux.
var errNotLinux = fmt.Errorf("container networking needs Linux: %w", isolation.ErrUnsupported)

// Network is only functional on Linux.
type Network struct{}

// New fails on this platform with an error for which isolation.IsUnsupported is true.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errNotLinux
}

// Setup fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Setup(context.Context, string, string, []isolation.NetIn) (Result, error) {
	return Result{}, errNotLinux
}

// Teardown fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Teardown(context.Context, string, string) error { return errNotLinux }

// Check fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Check(context.Context, string, string) error { return errNotLinux }

// Lookup fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Lookup(context.Context, string) (Result, error) { return Result{}, errNotLinux }

// Handles fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Handles(context.Context) ([]string, error) { return nil, errNotLinux }

// Uninstall fails on this platform with an error for which isolation.IsUnsupported is true.
func (*Network) Uninstall(context.Context) error { return errNotLinux }

// CreateNetNS fails on this platform with an error for which isolation.IsUnsupported is true.
func CreateNetNS(string) error { return errNotLinux }

// DeleteNetNS fails on this platform with an error for which isolation.IsUnsupported is true.
func DeleteNetNS(string) error { return errNotLinux }

// RunInNetNS fails on this platform with an error for which isolation.IsUnsupported is true.
func RunInNetNS(string, func() error) error { return errNotLinux }
