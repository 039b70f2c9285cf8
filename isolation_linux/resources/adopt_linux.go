package resources

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containerd/cgroups/v3"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/trellis-run/trellis/isolation"
)

// Adopting a cgroup. A process moved between v1 cgroups (cgroup.procs) takes the kernel's
// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period: under load the
// largest single cost of a container start. A process that is already in a cgroup of its own
// can instead keep its place while the cgroup is renamed to the container's handle: a rename
// within one parent moves no task. cgroup v1 allows it (cgroup1_rename); cgroup v2 does not
// (its kernfs operations have no rename: EPERM, checked on this host's cgroup2 mount), so on
// a unified host Adopt reports ErrUnsupported and callers move the process instead.

// AdoptSupported reports whether Adopt can work on this host: a legacy or hybrid (cgroup v1)
// host.
func AdoptSupported() bool {
	switch cgroups.Mode() {
	case cgroups.Legacy, cgroups.Hybrid:
		return true
	default:
		return false
	}
}

// Adopt renames the cgroup parent/from, made by New without limits, to parent/handle in every
// v1 hierarchy and applies limits (a zero field is no limit) — the container's cgroup, with
// whatever processes were in from, none of them migrated. On failure nothing is renamed: the
// cgroup is still parent/from (limits may be partly written) and the caller discards it.
// Errors: isolation.ErrInvalidSpec (bad name or limit), isolation.ErrNotFound (no cgroup from),
// isolation.ErrAlreadyExists (parent/handle exists), isolation.ErrUnsupported (a unified, v2
// host: cgroup2 refuses renames; or no cgroups).
func Adopt(parent, from, handle string, limits isolation.Limits) (*Cgroup, error) {
	fromPath, err := cgroupPath(parent, from)
	if err != nil {
		return nil, err
	}
	toPath, err := cgroupPath(parent, handle)
	if err != nil {
		return nil, err
	}
	res, err := ToSpec(limits)
	if err != nil {
		return nil, err
	}
	switch mode := cgroups.Mode(); mode {
	case cgroups.Legacy, cgroups.Hybrid:
		d, err := adoptV1(fromPath, toPath, res)
		if err != nil {
			return nil, err
		}
		return &Cgroup{path: toPath, version: 1, drv: d}, nil
	case cgroups.Unified:
		return nil, fmt.Errorf("%w: adopt cgroup %s as %s: cgroup v2 cannot rename a cgroup; move the process instead", isolation.ErrUnsupported, fromPath, toPath)
	default:
		return nil, fmt.Errorf("%w: adopt cgroup %s: no cgroup hierarchy is mounted", isolation.ErrUnsupported, fromPath)
	}
}

func adoptV1(fromPath, toPath string, res *specs.LinuxResources) (*v1, error) {
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, fmt.Errorf("%w: adopt cgroup %s: find v1 hierarchies: %v", isolation.ErrUnsupported, fromPath, err)
	}
	from, to := v1Dirs(fromPath, hier), v1Dirs(toPath, hier)
	for _, need := range v1Required {
		if _, ok := from[need]; !ok {
			return nil, fmt.Errorf("%w: adopt cgroup %s: the %s controller is not mounted", isolation.ErrUnsupported, fromPath, need)
		}
	}
	if _, err := os.Stat(to["memory"]); err == nil {
		return nil, fmt.Errorf("%w: cgroup %s", isolation.ErrAlreadyExists, toPath)
	}
	if _, err := os.Stat(from["memory"]); err != nil {
		return nil, fmt.Errorf("%w: adopt cgroup %s: %v", isolation.ErrNotFound, fromPath, err)
	}
	// Co-mounted controllers (cpu,cpuacct, often also reachable through a symlink) share one
	// directory: once it is renamed through one name, the other finds from gone and to there.
	var done [][2]string
	undo := func() {
		for _, r := range done {
			if err := os.Rename(r[1], r[0]); err != nil {
				slog.Warn("undo a half-done cgroup rename", "from", r[1], "to", r[0], "error", err)
			}
		}
	}
	for name, src := range from {
		if err := os.Rename(src, to[name]); err != nil {
			if _, statErr := os.Stat(to[name]); errors.Is(err, os.ErrNotExist) && len(done) > 0 && statErr == nil {
				continue
			}
			undo()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: adopt cgroup %s: no directory in the %s hierarchy", isolation.ErrNotFound, fromPath, name)
			}
			if errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("%w: cgroup %s (%s hierarchy)", isolation.ErrAlreadyExists, toPath, name)
			}
			return nil, fmt.Errorf("adopt cgroup %s as %s: %w", fromPath, toPath, err)
		}
		done = append(done, [2]string{src, to[name]})
	}
	d, err := loadV1(toPath)
	if err == nil {
		err = writeV1Limits(d, res)
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("adopt cgroup %s as %s: %w", fromPath, toPath, err)
	}
	return d, nil
}

// writeV1Limits writes what V1Settings computes for res into d's directories.
func writeV1Limits(d *v1, res *specs.LinuxResources) error {
	_, memswErr := os.Stat(filepath.Join(d.dirs["memory"], "memory.memsw.limit_in_bytes"))
	for _, s := range V1Settings(res, memswErr == nil) {
		if err := writeFile(filepath.Join(d.dirs[s.Controller], s.File), s.Value); err != nil {
			return fmt.Errorf("set limit: %w", err)
		}
	}
	return nil
}

// Children lists the names of the cgroups directly under parent (in the memory hierarchy on
// v1, where every trellis cgroup has a directory). A missing parent has none.
// Errors: isolation.ErrInvalidSpec (bad parent), isolation.ErrUnsupported (no cgroups).
func Children(parent string) ([]string, error) {
	path, err := cgroupPath(parent, "x")
	if err != nil {
		return nil, err
	}
	path = filepath.Dir(path)
	var dir string
	switch cgroups.Mode() {
	case cgroups.Unified:
		dir = filepath.Join(unifiedRoot, path)
	case cgroups.Legacy, cgroups.Hybrid:
		hier, err := v1Hierarchies()
		if err != nil {
			return nil, fmt.Errorf("%w: list cgroup %s: %v", isolation.ErrUnsupported, path, err)
		}
		dirs := v1Dirs(path, hier)
		if dir = dirs["memory"]; dir == "" {
			return nil, fmt.Errorf("%w: list cgroup %s: the memory controller is not mounted", isolation.ErrUnsupported, path)
		}
	default:
		return nil, fmt.Errorf("%w: list cgroup %s: no cgroup hierarchy is mounted", isolation.ErrUnsupported, path)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list cgroup %s: %w", path, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
