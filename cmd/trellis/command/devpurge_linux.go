package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// purgeDevCluster removes what the stopped dev cluster id left on the host: each cell's
// containers and container network (agent.DestroyContainers, from the cell's agent.yaml),
// the cells' cgroups, and the cells root. It returns how many containers it destroyed.
// Errors: a cell agent of the cluster still runs, or what could not be removed; the cells root
// stays when a cell could not be cleaned, so that purge can be run again.
func purgeDevCluster(ctx context.Context, id string, logger *slog.Logger) (int, error) {
	root := filepath.Join(devCellsRootBase, id)
	if pids := agentsUnder(root); len(pids) > 0 {
		return 0, fmt.Errorf("cell agents still run (pids %v): stop the cluster first", pids)
	}
	cfgs, _ := filepath.Glob(filepath.Join(root, "*", "agent.yaml"))
	var (
		errs []error
		n    int
	)
	for _, path := range cfgs {
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// A purge maps no ports, and clusters of older versions wrote ranges that no longer
		// validate: the backend's default range stands in.
		cfg.Linux.HostPortRange = [2]uint32{}
		destroyed, err := agent.DestroyContainers(ctx, cfg, logger)
		n += destroyed
		if err != nil {
			errs = append(errs, fmt.Errorf("cell %s: %w", cfg.CellID, err))
		}
	}
	if err := resources.RemoveTree(devCgroupParent(id)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return n, errors.Join(errs...)
	}
	if err := unmountUnder(root); err != nil {
		return n, err
	}
	if err := os.RemoveAll(root); err != nil {
		return n, err
	}
	return n, nil
}

// agentsUnder returns the pids of `trellis agent run` processes whose config lies under root.
func agentsUnder(root string) []int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		i := slices.Index(args, "--config")
		if i < 0 || i+1 >= len(args) || !slices.Contains(args, "agent") {
			continue
		}
		if strings.HasPrefix(args[i+1], root+"/") {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder detaches whatever is still mounted at or below dir (deepest first; dev makes dir
// itself a shared bind mount), so that removing dir never deletes through a mount into what it
// holds.
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return nil
}
