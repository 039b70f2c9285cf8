package isolationwindows

import (
	"fmt"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

// validName reports whether s is a valid container handle or process id (see
// isolation.ValidateHandle): handles and ids name directories and files in the state dir.
func validName(s string) bool {
	return isolation.ValidateHandle(s) == nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", isolation.ErrInvalidSpec, fmt.Sprintf(format, args...))
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("isolation_windows: %w: %s", isolation.ErrUnsupported, fmt.Sprintf(format, args...))
}

// validateContainerSpec checks everything about spec that does not depend on the stack: the
// platform-neutral rules of isolation.ValidateContainerSpec, and bind mount sources in a form
// this host resolves (isAbsHostPath).
func validateContainerSpec(spec isolation.ContainerSpec) error {
	if err := isolation.ValidateContainerSpec(spec); err != nil {
		return err
	}
	for i, bm := range spec.BindMounts {
		if !isAbsHostPath(bm.SrcPath) {
			return invalidf("BindMounts[%d].SrcPath %q: must be an absolute host path", i, bm.SrcPath)
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

// validateProcessSpec checks spec before it is started: the platform-neutral rules of
// isolation.ValidateProcessSpec, then what Windows cannot honour (rlimits, a user of its own).
func validateProcessSpec(spec isolation.ProcessSpec) error {
	if err := isolation.ValidateProcessSpec(spec); err != nil {
		return err
	}
	if spec.Rlimits.Nofile != nil || spec.Rlimits.Nproc != nil || spec.Rlimits.Core != nil {
		return unsupportedf("Rlimits: Windows has no per-process rlimits (use the container's Limits)")
	}
	if spec.User != "" && spec.User != "root" && spec.User != "vcap" {
		return unsupportedf("User %q: processes run as the container's one user", spec.User)
	}
	return nil
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
