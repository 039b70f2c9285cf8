package isolationwindows

import (
	"fmt"
	"path"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

const maxNameLen = 128

// validName reports whether s is a valid container handle or process id: [A-Za-z0-9_.-]{1,128}
// and not "." or "..": handles and ids name directories and files in the state dir.
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

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", isolation.ErrInvalidSpec, fmt.Sprintf(format, args...))
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("isolation_windows: %w: %s", isolation.ErrUnsupported, fmt.Sprintf(format, args...))
}

func validateEnv(field string, env []string) error {
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return invalidf("%s[%d] %q: want KEY=VALUE", field, i, kv)
		}
	}
	return nil
}

// validateContainerSpec checks everything about spec that does not depend on the stack.
func validateContainerSpec(spec isolation.ContainerSpec) error {
	if !validName(spec.Handle) {
		return invalidf("Handle %q: must match [A-Za-z0-9_.-]{1,128} and not be \".\" or \"..\"", spec.Handle)
	}
	if spec.RootFS == "" {
		return invalidf("RootFS: empty; want a URI such as preloaded:<stack>")
	}
	if scheme, _, ok := strings.Cut(spec.RootFS, ":"); !ok || scheme == "" {
		return invalidf("RootFS %q: not a URI (no scheme)", spec.RootFS)
	}
	if err := validateEnv("Env", spec.Env); err != nil {
		return err
	}
	for i, bm := range spec.BindMounts {
		if !isAbsHostPath(bm.SrcPath) {
			return invalidf("BindMounts[%d].SrcPath %q: must be an absolute host path", i, bm.SrcPath)
		}
		if !path.IsAbs(bm.DstPath) || path.Clean(bm.DstPath) == "/" {
			return invalidf("BindMounts[%d].DstPath %q: must be an absolute container path below /", i, bm.DstPath)
		}
	}
	if spec.Limits.CPUWeight > 100 {
		return invalidf("Limits.CPUWeight %d: must be 1-100 (0 for no limit)", spec.Limits.CPUWeight)
	}
	switch spec.Network {
	case isolation.NetworkBridge, isolation.NetworkNone:
	default:
		return invalidf("Network %q: want %q (bridge) or %q", spec.Network, isolation.NetworkBridge, isolation.NetworkNone)
	}
	seen := make(map[uint32]bool, len(spec.NetIn))
	for i, n := range spec.NetIn {
		if spec.Network == isolation.NetworkNone {
			return invalidf("NetIn[%d]: needs the bridge network, Network is %q", i, spec.Network)
		}
		if n.ContainerPort == 0 || n.ContainerPort > 65535 {
			return invalidf("NetIn[%d].ContainerPort %d: must be 1-65535", i, n.ContainerPort)
		}
		if n.HostPort > 65535 {
			return invalidf("NetIn[%d].HostPort %d: must be 1-65535 (0 to allocate)", i, n.HostPort)
		}
		if n.HostPort != 0 {
			if seen[n.HostPort] {
				return invalidf("NetIn[%d].HostPort %d: requested twice", i, n.HostPort)
			}
			seen[n.HostPort] = true
		}
	}
	for k := range spec.Properties {
		if k == "" {
			return invalidf("Properties: empty key")
		}
	}
	return nil
}

// resolveStack maps spec.RootFS to the stack's configuration. Other schemes and unknown
// stacks are ErrUnsupported: this backend runs only preloaded stacks.
func resolveStack(stacks map[string]StackConfig, rootfs string) (string, StackConfig, error) {
	scheme, rest, _ := strings.Cut(rootfs, ":")
	if scheme != "preloaded" {
		return "", StackConfig{}, unsupportedf("RootFS %q: scheme %q (only preloaded:<stack> is supported)", rootfs, scheme)
	}
	st, ok := stacks[rest]
	if !ok {
		return "", StackConfig{}, unsupportedf("RootFS %q: stack %q is not configured on this cell", rootfs, rest)
	}
	return rest, st, nil
}

// checkModeSupport fails with ErrUnsupported for what mode cannot honour (see
// docs/isolation-windows.md for the table).
func checkModeSupport(mode Mode, spec isolation.ContainerSpec) error {
	if spec.Privileged {
		return unsupportedf("%s mode: Privileged: Windows has no privileged containers; processes run as the agent's service account (process mode) or ContainerUser (container mode)", mode)
	}
	switch mode {
	case ModeProcess:
		if spec.Limits.DiskBytes != 0 {
			return unsupportedf("process mode: Limits.DiskBytes: a private directory on the host volume has no per-container quota")
		}
		if spec.Network == isolation.NetworkNone {
			return unsupportedf("process mode: Network %q: processes share the host's network stack", spec.Network)
		}
		for i, bm := range spec.BindMounts {
			if bm.ReadOnly {
				return unsupportedf("process mode: BindMounts[%d].ReadOnly: a directory link cannot be made read-only for processes that share the host's file system", i)
			}
		}
	case ModeContainer:
		if spec.Limits.Pids != 0 {
			return unsupportedf("container mode: Limits.Pids: the HCS container document has no process-count limit")
		}
	}
	return nil
}

// validateProcessSpec checks spec before it is started.
func validateProcessSpec(spec isolation.ProcessSpec) error {
	if spec.ID != "" && !validName(spec.ID) {
		return invalidf("ID %q: must match [A-Za-z0-9_.-]{1,128} and not be \".\" or \"..\"", spec.ID)
	}
	if spec.Path == "" {
		return invalidf("Path: empty")
	}
	if spec.Dir != "" && !path.IsAbs(spec.Dir) {
		return invalidf("Dir %q: must be an absolute container path", spec.Dir)
	}
	if spec.Rlimits.Nofile != nil || spec.Rlimits.Nproc != nil || spec.Rlimits.Core != nil {
		return unsupportedf("Rlimits: Windows has no per-process rlimits (use the container's Limits)")
	}
	if spec.User != "" && spec.User != "root" && spec.User != "vcap" {
		return unsupportedf("User %q: processes run as the container's one user", spec.User)
	}
	return validateEnv("Env", spec.Env)
}

// mergeEnv returns the environment from layers applied in order, later keys replacing
// earlier ones (case-insensitively, as Windows compares names), in first-seen order.
func mergeEnv(layers ...[]string) []string {
	idx := map[string]int{}
	var out []string
	for _, l := range layers {
		for _, kv := range l {
			k, _, _ := strings.Cut(kv, "=")
			key := strings.ToUpper(k)
			if i, ok := idx[key]; ok {
				out[i] = kv
				continue
			}
			idx[key] = len(out)
			out = append(out, kv)
		}
	}
	return out
}
