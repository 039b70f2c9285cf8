package resources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/trellis-run/trellis/isolation"
)

// Bounds on waiting for the kernel. A process killed with SIGKILL leaves its cgroup within
// milliseconds unless it is stuck in uninterruptible sleep (D state, e.g. on a hung NFS
// server); the bounds keep Kill and Delete from hanging the agent in that case.
var (
	// killTimeout bounds Kill: signalling and waiting for the cgroup to empty.
	killTimeout = 10 * time.Second
	// deleteTimeout bounds how long Delete waits for the processes to leave.
	deleteTimeout = 5 * time.Second
	// freezeTimeout bounds how long a v1 Kill waits for the freezer before it signals anyway.
	freezeTimeout = 2 * time.Second
)

// unifiedRoot is where the cgroup v2 hierarchy is mounted on a unified host.
const unifiedRoot = "/sys/fs/cgroup"

// Cgroup is one container's control group: in every v1 hierarchy, or one v2 directory. Its
// methods are safe for concurrent use.
type Cgroup struct {
	path    string // "parent/handle", relative to each hierarchy's root
	version int
	drv     driver
}

// driver is what differs between cgroup v1 and v2.
type driver interface {
	addProc(pid int) error
	stats() (Stats, error)
	oomKills() (uint64, error)
	watchOOM(ctx context.Context) (<-chan struct{}, error)
	// signalAll sends SIGKILL to every process once; it does not wait.
	signalAll() error
	// procs lists the processes in the cgroup and its descendants; a missing cgroup has none.
	procs() ([]int, error)
	exists() bool
	// remove deletes the cgroup's directories; it fails while processes remain.
	remove() error
	// removeEmpty deletes the cgroup's directories with one rmdir each, all it takes for a
	// cgroup without processes or children; it stops at the first that does not go.
	removeEmpty() error
}

// New creates the cgroup parent/handle and applies limits (a zero field is no limit). On a
// unified (v2) host it is one directory under /sys/fs/cgroup with the cpu, memory and pids
// controllers enabled down to it; on a legacy or hybrid host it is a directory in every v1
// hierarchy. parent is one or more names joined by "/" (shared by a backend's containers and
// never removed here); handle is the container's handle.
// Errors: isolation.ErrInvalidSpec (bad name or limit), isolation.ErrAlreadyExists (the
// cgroup exists, e.g. left by a crashed backend: Load it and Delete it first),
// isolation.ErrUnsupported (no cgroups, or a controller missing on this host).
func New(parent, handle string, limits isolation.Limits) (*Cgroup, error) {
	path, err := cgroupPath(parent, handle)
	if err != nil {
		return nil, err
	}
	res, err := ToSpec(limits)
	if err != nil {
		return nil, err
	}
	switch mode := cgroups.Mode(); mode {
	case cgroups.Unified:
		return newCgroup2(unifiedRoot, path, res)
	case cgroups.Legacy, cgroups.Hybrid:
		d, err := newV1(path, res)
		if err != nil {
			return nil, err
		}
		return &Cgroup{path: path, version: 1, drv: d}, nil
	default:
		return nil, fmt.Errorf("%w: create cgroup %s: no cgroup hierarchy is mounted", isolation.ErrUnsupported, path)
	}
}

// Load finds the cgroup parent/handle made by an earlier New, typically by a backend that has
// since restarted. Limits are not re-read: the kernel keeps enforcing what New wrote.
// Errors: isolation.ErrInvalidSpec (bad name), isolation.ErrNotFound (no such cgroup),
// isolation.ErrUnsupported (no cgroups).
func Load(parent, handle string) (*Cgroup, error) {
	path, err := cgroupPath(parent, handle)
	if err != nil {
		return nil, err
	}
	switch mode := cgroups.Mode(); mode {
	case cgroups.Unified:
		return loadCgroup2(unifiedRoot, path)
	case cgroups.Legacy, cgroups.Hybrid:
		d, err := loadV1(path)
		if err != nil {
			return nil, err
		}
		return &Cgroup{path: path, version: 1, drv: d}, nil
	default:
		return nil, fmt.Errorf("%w: load cgroup %s: no cgroup hierarchy is mounted", isolation.ErrUnsupported, path)
	}
}

// newCgroup2 and loadCgroup2 take the unified hierarchy's mount point, so that tests can point
// them at a directory standing in for cgroupfs.
func newCgroup2(root, path string, res *specs.LinuxResources) (*Cgroup, error) {
	d, err := newV2(root, path, V2Settings(res))
	if err != nil {
		return nil, err
	}
	return &Cgroup{path: path, version: 2, drv: d}, nil
}

func loadCgroup2(root, path string) (*Cgroup, error) {
	d, err := loadV2(root, path)
	if err != nil {
		return nil, err
	}
	return &Cgroup{path: path, version: 2, drv: d}, nil
}

// Path is the cgroup's path relative to a hierarchy root: "parent/handle".
func (c *Cgroup) Path() string { return c.path }

// Version is 1 (legacy or hybrid host) or 2 (unified host).
func (c *Cgroup) Version() int { return c.version }

// AddProc moves the process pid (with its threads) into the cgroup, in every hierarchy.
// Errors: isolation.ErrNotFound (the cgroup was deleted); the kernel's error for a pid that does
// not exist (ESRCH).
func (c *Cgroup) AddProc(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("%w: add pid %d to cgroup %s: not a process id", isolation.ErrInvalidSpec, pid, c.path)
	}
	if err := c.drv.addProc(pid); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: add pid %d to cgroup %s: cgroup is gone", isolation.ErrNotFound, pid, c.path)
		}
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.path, err)
	}
	return nil
}

// Stats reports the cgroup's current usage.
// Errors: isolation.ErrNotFound (the cgroup was deleted).
func (c *Cgroup) Stats() (Stats, error) {
	st, err := c.drv.stats()
	if err != nil {
		return Stats{}, c.wrap("read stats of", err)
	}
	return st, nil
}

// OOMKills reports how many processes the kernel's OOM killer has killed in this cgroup since it
// was created: the kernel's own counter (v1 memory.oom_control oom_kill, v2 memory.events
// oom_kill), so it survives a backend restart.
// Errors: isolation.ErrNotFound (the cgroup was deleted), isolation.ErrUnsupported (a kernel
// older than 4.13 does not count OOM kills on v1).
func (c *Cgroup) OOMKills() (uint64, error) {
	n, err := c.drv.oomKills()
	if err != nil {
		return 0, c.wrap("read OOM kills of", err)
	}
	return n, nil
}

// WatchOOM reports out-of-memory events in the cgroup: the returned channel receives a value
// (coalesced: at most one pending) when the kernel signals an OOM condition (v1, through an
// eventfd registered in cgroup.event_control on memory.oom_control) or when the oom_kill count
// in memory.events grows (v2, through inotify). The channel is closed when ctx ends or the cgroup
// is deleted. Use OOMKills to count kills; an event and a kill are not always one-to-one.
// Errors: isolation.ErrNotFound (the cgroup was deleted).
func (c *Cgroup) WatchOOM(ctx context.Context) (<-chan struct{}, error) {
	ch, err := c.drv.watchOOM(ctx)
	if err != nil {
		return nil, c.wrap("watch OOM events of", err)
	}
	return ch, nil
}

// Kill sends SIGKILL to every process in the cgroup and waits, bounded, until none is left. On
// v2 it writes cgroup.kill (the kernel kills atomically, forks included); on v1 it freezes the
// cgroup so no process can fork meanwhile, signals every process and thaws it, repeating until
// the cgroup is empty. Killing a deleted or empty cgroup is not an error.
// Errors: ErrBusy (processes remain after the bound, e.g. stuck in uninterruptible sleep).
func (c *Cgroup) Kill() error {
	deadline := time.Now().Add(killTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		pids, err := c.drv.procs()
		if err != nil {
			return fmt.Errorf("kill cgroup %s: list processes: %w", c.path, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: kill cgroup %s: %d processes remain after %v (first pid %d)", ErrBusy, c.path, len(pids), killTimeout, pids[0])
		}
		if err := c.drv.signalAll(); err != nil && c.drv.exists() {
			return fmt.Errorf("kill cgroup %s: %w", c.path, err)
		}
		time.Sleep(wait)
	}
}

// Delete removes the cgroup from every hierarchy. It waits, bounded, for the processes to leave
// (call Kill first to make them); deleting a cgroup that does not exist is not an error.
// Errors: ErrBusy (processes remain after the bound).
func (c *Cgroup) Delete() error {
	// Most cgroups are empty by the time they are deleted (their container's init has been
	// seen to exit): they go without reading their process lists.
	if c.drv.removeEmpty() == nil {
		return nil
	}
	if !c.drv.exists() {
		return nil
	}
	deadline := time.Now().Add(deleteTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		pids, err := c.drv.procs()
		if err != nil {
			return fmt.Errorf("delete cgroup %s: list processes: %w", c.path, err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: delete cgroup %s: %d processes remain after %v (first pid %d)", ErrBusy, c.path, len(pids), deleteTimeout, pids[0])
		}
		time.Sleep(wait)
	}
	if err := c.drv.remove(); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *Cgroup) wrap(what string, err error) error {
	if errors.Is(err, os.ErrNotExist) || !c.drv.exists() {
		return fmt.Errorf("%w: %s cgroup %s: %v", isolation.ErrNotFound, what, c.path, err)
	}
	return fmt.Errorf("%s cgroup %s: %w", what, c.path, err)
}
