package isolationtest

import (
	"fmt"
	"path"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

const maxNameLen = 128

// validName reports whether s is a valid container handle or process id: [A-Za-z0-9_.-]{1,128},
// and not "." or "..", which backends that name directories after handles cannot use safely.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", isolation.ErrInvalidSpec, fmt.Sprintf(format, args...))
}

func validateEnv(field string, env []string) error {
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return invalid("%s[%d] %q: want KEY=VALUE", field, i, kv)
		}
	}
	return nil
}

// validateContainerSpec checks everything about spec that does not depend on the host.
func validateContainerSpec(spec isolation.ContainerSpec) error {
	if !validName(spec.Handle) {
		return invalid("Handle %q: must match [A-Za-z0-9_.-]{1,128} and not be \".\" or \"..\"", spec.Handle)
	}
	if spec.RootFS == "" {
		return invalid("RootFS: empty; want a URI such as preloaded:<stack> or docker:///<image>")
	}
	if scheme, _, ok := strings.Cut(spec.RootFS, ":"); !ok || scheme == "" {
		return invalid("RootFS %q: not a URI (no scheme)", spec.RootFS)
	}
	if err := validateEnv("Env", spec.Env); err != nil {
		return err
	}
	for i, bm := range spec.BindMounts {
		if !path.IsAbs(bm.SrcPath) && !isWindowsAbs(bm.SrcPath) {
			return invalid("BindMounts[%d].SrcPath %q: must be an absolute host path", i, bm.SrcPath)
		}
		if !path.IsAbs(bm.DstPath) {
			return invalid("BindMounts[%d].DstPath %q: must be an absolute container path", i, bm.DstPath)
		}
	}
	if spec.Limits.CPUWeight > 100 {
		return invalid("Limits.CPUWeight %d: must be 1-100 (0 for the default)", spec.Limits.CPUWeight)
	}
	switch spec.Network {
	case isolation.NetworkBridge, isolation.NetworkNone:
	default:
		return invalid("Network %q: want %q (bridge) or %q", spec.Network, isolation.NetworkBridge, isolation.NetworkNone)
	}
	seen := make(map[uint32]bool, len(spec.NetIn))
	for i, n := range spec.NetIn {
		if spec.Network == isolation.NetworkNone {
			return invalid("NetIn[%d]: needs the bridge network, Network is %q", i, spec.Network)
		}
		if n.ContainerPort == 0 || n.ContainerPort > 65535 {
			return invalid("NetIn[%d].ContainerPort %d: must be 1-65535", i, n.ContainerPort)
		}
		if n.HostPort > 65535 {
			return invalid("NetIn[%d].HostPort %d: must be 1-65535 (0 to allocate)", i, n.HostPort)
		}
		if n.HostPort != 0 {
			if seen[n.HostPort] {
				return invalid("NetIn[%d].HostPort %d: requested twice", i, n.HostPort)
			}
			seen[n.HostPort] = true
		}
	}
	for k := range spec.Properties {
		if k == "" {
			return invalid("Properties: empty key")
		}
	}
	return nil
}

// isWindowsAbs reports whether p is a drive-absolute Windows path such as C:\x or C:/x.
func isWindowsAbs(p string) bool {
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z'))
}

// validateProcessSpec checks spec before it is started.
func validateProcessSpec(spec isolation.ProcessSpec) error {
	if spec.ID != "" && !validName(spec.ID) {
		return invalid("ID %q: must match [A-Za-z0-9_.-]{1,128} and not be \".\" or \"..\"", spec.ID)
	}
	if spec.Path == "" {
		return invalid("Path: empty")
	}
	if spec.Dir != "" && !path.IsAbs(spec.Dir) {
		return invalid("Dir %q: must be an absolute container path", spec.Dir)
	}
	return validateEnv("Env", spec.Env)
}
