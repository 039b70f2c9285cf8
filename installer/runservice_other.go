//go:build !windows

package installer

import (
	"context"
	"errors"
	"fmt"
)

// RunService runs a program under the Windows service control manager. Elsewhere the init
// system runs the agent as an ordinary process, so it returns an error wrapping
// errors.ErrUnsupported.
func RunService(_ context.Context, name string, _ Program) error {
	return fmt.Errorf("running %s under the Windows service manager: %w", name, errors.ErrUnsupported)
}
