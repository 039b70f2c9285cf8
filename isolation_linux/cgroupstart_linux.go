package isolationlinux

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// How a container's init gets into its cgroup. No thread of the backend ever enters a
// container's cgroup, not even for the instant of a fork:
//
//   - cgroup v2: clone3 with CLONE_INTO_CGROUP (SysProcAttr.UseCgroupFD) makes the kernel
//     create the child directly in the container's cgroup; the forking thread stays where it
//     is, and the child never runs anywhere else.
//   - cgroup v1 has no such flag: the init is forked in the backend's cgroups, held before it
//     does anything of its own (it blocks on containerinit.FdStart), moved with its threads
//     into the container's cgroup in every hierarchy (resources.Cgroup.AddProc, i.e.
//     cgroup.procs), and only then released.
//   - a pooled init on v1 was moved into a cgroup of its own by the pool's refill, ahead of
//     Create; Create renames that cgroup to the handle and writes the container's limits
//     (resources.Adopt, initpool_linux.go), so nothing is migrated during Create. v2 cannot
//     rename a cgroup: there a pooled init is moved like a v1 one.
//
// An earlier scheme on v1 moved a disposable backend thread into the container's cgroups to
// fork the init there, avoiding the migration's cost (cgroup.procs takes the kernel's
// cgroup_threadgroup_rwsem for writing). It was wrong: on v1, kernel memory a thread
// allocates — page tables, including the copy of the whole backend's page tables that a fork
// makes, VMAs, pipes — is charged to the thread's memory cgroup and stays charged there after
// the thread leaves. A backend with a large address space could not start a container with a
// small memory limit at all (the fork itself ran the container's cgroup out of memory), the
// backend's memory was billed to containers, and for the duration of the fork a backend
// thread was exposed to the container's OOM handling, freezer and kill. The migration costs
// about one RCU grace period per container start; correctness wins.
//
// What v1 cannot avoid: memory the init touched before the move (the Go runtime's start:
// 0.3–1 MiB of anonymous memory measured here, plus its page tables) stays charged to the
// backend's memory cgroup until the init exits. v1 does not move charges with a task, and
// current kernels refuse memory.move_charge_at_immigrate (EINVAL).

// cgroupBirth places one container's init in its cgroup.
type cgroupBirth struct {
	cg *resources.Cgroup
	// dir (v2) is the cgroup's directory, which the spawner clones the init into
	// (CLONE_INTO_CGROUP); the caller keeps it open until the init is started.
	dir     *os.File
	adopted bool // the init's own cgroup was renamed to cg (resources.Adopt): it is there
}

// planCgroupBirth prepares to place an init in cg.
// Errors: cg's directory cannot be opened (v2; e.g. it was deleted).
func planCgroupBirth(cg *resources.Cgroup) (*cgroupBirth, error) {
	cb := &cgroupBirth{cg: cg}
	if cg.Version() == 2 {
		dir, err := os.Open(filepath.Join("/sys/fs/cgroup", cg.Path()))
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", cg.Path(), err)
		}
		cb.dir = dir
	}
	return cb, nil
}

// place moves the started, still held init pid into the cgroup where it was not born in it
// (v1); on v2, or for a pooled init whose cgroup was adopted, it has nothing to do.
// Errors: the cgroup is gone (isolation.ErrNotFound) or the kernel refused the move.
func (cb *cgroupBirth) place(pid int) error {
	if cb.dir != nil || cb.adopted {
		return nil
	}
	return cb.cg.AddProc(pid)
}

func (cb *cgroupBirth) close() {
	if cb.dir != nil {
		cb.dir.Close()
	}
}
