package isolationtest

import (
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", isolation.ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// validateContainerSpec checks everything about spec that does not depend on the host. The
// memory backend stands in for every platform's backend, so it holds specs to the
// platform-neutral rules alone (a bind mount source may be a slash, drive or UNC path); the
// RootFS scheme is checked against the configured schemes at Create.
func validateContainerSpec(spec isolation.ContainerSpec) error {
	return isolation.ValidateContainerSpec(spec)
}

// validateProcessSpec checks spec before it is started; whether Path names a registered
// program is checked at Run. User and Rlimits are accepted as given, as on Linux.
func validateProcessSpec(spec isolation.ProcessSpec) error {
	return isolation.ValidateProcessSpec(spec)
}
