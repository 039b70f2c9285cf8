package isolation

import (
	"fmt"
	"path"
	"strings"
)

// The checks in this file are the rules of ContainerSpec and ProcessSpec that hold for every
// backend on every host, so that a spec one cell refuses as ErrInvalidSpec is refused the same
// way, with the same field named, by every other. What a backend can or cannot honour (RootFS
// schemes, limits its platform lacks, per-platform host path forms) is not checked here: a
// backend calls these first and then adds its own checks, which fail with ErrUnsupported for
// a well-formed request it cannot serve, or ErrInvalidSpec for one malformed on its platform.

// maxNameLen is the longest container handle or process id.
const maxNameLen = 128

// nameRule describes a valid handle or process id in error messages.
const nameRule = `must match [A-Za-z0-9_.-]{1,128} and not be "." or ".."`

// ValidateHandle checks that handle can name a container: [A-Za-z0-9_.-]{1,128}, and not "."
// or "..", which backends that name directories after handles cannot use safely.
// Errors: ErrInvalidSpec naming the Handle field.
func ValidateHandle(handle string) error {
	if !validName(handle) {
		return invalidSpec("Handle %q: %s", handle, nameRule)
	}
	return nil
}

// ValidateContainerSpec checks the platform-neutral rules of spec: a valid Handle; a RootFS
// that is a URI (it says nothing about whether the scheme is supported); KEY=VALUE Env entries;
// absolute bind mount paths, the destination below "/"; a CPUWeight of 0-100; a known Network;
// NetIn ports in range, only with the bridge network, and no host port asked for twice; and no
// empty property key.
// Errors: ErrInvalidSpec, the message naming the first offending field.
func ValidateContainerSpec(spec ContainerSpec) error {
	if err := ValidateHandle(spec.Handle); err != nil {
		return err
	}
	if spec.RootFS == "" {
		return invalidSpec("RootFS: empty; want a URI such as preloaded:<stack> or docker:///<image>")
	}
	if scheme, _, ok := strings.Cut(spec.RootFS, ":"); !ok || scheme == "" {
		return invalidSpec("RootFS %q: not a URI (no scheme)", spec.RootFS)
	}
	if err := validateEnv(spec.Env); err != nil {
		return err
	}
	for i, bm := range spec.BindMounts {
		if !isAbsHostPath(bm.SrcPath) {
			return invalidSpec("BindMounts[%d].SrcPath %q: must be an absolute host path", i, bm.SrcPath)
		}
		if !path.IsAbs(bm.DstPath) || path.Clean(bm.DstPath) == "/" {
			return invalidSpec("BindMounts[%d].DstPath %q: must be an absolute container path below /", i, bm.DstPath)
		}
	}
	if spec.Limits.CPUWeight > 100 {
		return invalidSpec("Limits.CPUWeight %d: must be 1-100 (0 for the default)", spec.Limits.CPUWeight)
	}
	switch spec.Network {
	case NetworkBridge, NetworkNone:
	default:
		return invalidSpec("Network %q: want %q (bridge) or %q", spec.Network, NetworkBridge, NetworkNone)
	}
	seen := make(map[uint32]bool, len(spec.NetIn))
	for i, n := range spec.NetIn {
		if spec.Network == NetworkNone {
			return invalidSpec("NetIn[%d]: needs the bridge network, Network is %q", i, spec.Network)
		}
		if n.ContainerPort == 0 || n.ContainerPort > 65535 {
			return invalidSpec("NetIn[%d].ContainerPort %d: must be 1-65535", i, n.ContainerPort)
		}
		if n.HostPort > 65535 {
			return invalidSpec("NetIn[%d].HostPort %d: must be 1-65535 (0 to allocate)", i, n.HostPort)
		}
		if n.HostPort != 0 {
			if seen[n.HostPort] {
				return invalidSpec("NetIn[%d].HostPort %d: requested twice", i, n.HostPort)
			}
			seen[n.HostPort] = true
		}
	}
	if _, ok := spec.Properties[""]; ok {
		return invalidSpec("Properties: empty key")
	}
	return nil
}

// ValidateProcessSpec checks the platform-neutral rules of spec: an ID that is empty (the
// backend assigns one) or follows the handle rule, a non-empty Path, an absolute Dir if one is
// given, and KEY=VALUE Env entries. It does not check User or Rlimits, whose support differs
// between platforms.
// Errors: ErrInvalidSpec, the message naming the first offending field.
func ValidateProcessSpec(spec ProcessSpec) error {
	if spec.ID != "" && !validName(spec.ID) {
		return invalidSpec("ID %q: %s", spec.ID, nameRule)
	}
	if spec.Path == "" {
		return invalidSpec("Path: empty")
	}
	if spec.Dir != "" && !path.IsAbs(spec.Dir) {
		return invalidSpec("Dir %q: must be an absolute container path", spec.Dir)
	}
	return validateEnv(spec.Env)
}

// validName reports whether s is a valid container handle or process id.
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

// validateEnv checks that every entry is KEY=VALUE with a non-empty key and no NUL byte, which
// neither a Unix environment nor a Windows environment block can carry.
func validateEnv(env []string) error {
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return invalidSpec("Env[%d] %q: want KEY=VALUE", i, kv)
		}
		if strings.IndexByte(kv, 0) >= 0 {
			return invalidSpec("Env[%d] %q: contains a NUL byte", i, kv)
		}
	}
	return nil
}

// isAbsHostPath reports whether p is absolute on some host, whichever host runs the check: a
// slash path (/x), a drive path (C:\x or C:/x) or a UNC path (\\server\share\x). Backends
// narrow this to the forms their platform accepts.
func isAbsHostPath(p string) bool {
	switch {
	case path.IsAbs(p):
		return true
	case len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/'):
		c := p[0]
		return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	default:
		return strings.HasPrefix(p, `\\`) && len(p) > 2
	}
}

func invalidSpec(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}
