package resources

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RemoveTree removes the cgroup parent (a path under the hierarchy roots, like a backend's
// CgroupParent) and every cgroup below it, deepest first, in every hierarchy (each v1
// controller and the unified one). Processes just killed may take a moment to leave their
// cgroups, so a busy tree is tried again for about a second; one that still holds processes
// after that is an error naming them. A parent that does not exist is not an error. It is for
// taking a cell's cgroups away (dev purge) and for tests.
// Errors: isolation.ErrInvalidSpec (a bad parent), or what could not be removed.
func RemoveTree(parent string) error {
	path, err := cgroupPath(parent, "x")
	if err != nil {
		return err
	}
	parent = strings.TrimSuffix(path, "/x")
	roots, _ := filepath.Glob(filepath.Join(unifiedRoot, "*", parent))
	if st, err := os.Stat(filepath.Join(unifiedRoot, parent)); err == nil && st.IsDir() {
		roots = append(roots, filepath.Join(unifiedRoot, parent))
	}
	var errs []error
	for _, root := range roots {
		var err error
		for try := 0; try < 5; try++ {
			if err = removeCgroupDir(root); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			procs, _ := os.ReadFile(filepath.Join(root, "cgroup.procs"))
			errs = append(errs, fmt.Errorf("remove cgroup tree %s (processes %v): %w", root, strings.Fields(string(procs)), err))
		}
	}
	return errors.Join(errs...)
}
