package resources

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// v1 is a cgroup in every mounted cgroup v1 hierarchy. containerd's cgroup1 creates and joins
// the directories but the cpuset one (v1Cpuset); the limit values are the ones V1Settings
// computes, written here so that what is tested is what is enforced.
type v1 struct {
	path string            // "parent/handle"
	dirs map[string]string // hierarchy name ("memory", "cpu", "name=systemd"...) → directory

	cgOnce sync.Once
	cg     cgroup1.Cgroup // for addProc; nil until then, unless newV1 made it
	cgErr  error
}

// v1Required are the hierarchies every trellis cgroup has a directory in; the code below may
// index dirs by these names without checking.
var v1Required = []string{"memory", "cpu", "cpuacct", "pids", "freezer"}

type pather interface{ Path(string) string }

func v1Dirs(path string, subsystems []cgroup1.Subsystem) map[string]string {
	dirs := make(map[string]string, len(subsystems))
	for _, s := range subsystems {
		if p, ok := s.(pather); ok {
			dirs[string(s.Name())] = p.Path("/" + path)
		}
	}
	return dirs
}

// v1Hierarchies returns the mounted cgroup v1 hierarchies. Finding them parses
// /proc/self/mountinfo, which holds a line per container mount on a busy cell, so the answer
// is kept once found: hierarchies are mounted at boot and stay. A failure is not kept.
func v1Hierarchies() ([]cgroup1.Subsystem, error) {
	v1HierMu.Lock()
	defer v1HierMu.Unlock()
	if v1Hier != nil {
		return v1Hier, nil
	}
	hier, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	v1Hier = hier
	return hier, nil
}

var (
	v1HierMu sync.Mutex
	v1Hier   []cgroup1.Subsystem
)

// withV1Hierarchies gives containerd's cgroup1 every mounted hierarchy but cpuset, which this
// package makes and joins itself (v1Cpuset).
var withV1Hierarchies = cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(hier), func(s cgroup1.Subsystem) bool { return s.Name() == cgroup1.Cpuset }), nil
})

// v1Cpuset makes the cpuset directories of trellis cgroups. A new cpuset cgroup has no CPUs
// and no memory nodes until they are written; containerd's cgroup1 copies them from the parent
// on every create, reading each ancestor's values twice (twelve reads and two writes). Here
// the parent gets cgroup.clone_children once, and the kernel copies its values into every
// directory made below it: one mkdir.
var v1Cpuset struct {
	mu       sync.Mutex
	prepared map[string]bool // parent directories with clone_children set
}

// mkdirCpuset makes the cpuset cgroup dir, preparing its parent first.
func mkdirCpuset(dir string) error {
	parent := filepath.Dir(dir)
	v1Cpuset.mu.Lock()
	ready := v1Cpuset.prepared[parent]
	v1Cpuset.mu.Unlock()
	if ready {
		err := os.Mkdir(dir, 0o755)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// The parent was removed since (an operator, a test): prepare it again.
	}
	if err := prepareCpusetParent(parent); err != nil {
		return fmt.Errorf("cpuset parent %s: %w", parent, err)
	}
	v1Cpuset.mu.Lock()
	if v1Cpuset.prepared == nil {
		v1Cpuset.prepared = map[string]bool{}
	}
	v1Cpuset.prepared[parent] = true
	v1Cpuset.mu.Unlock()
	return os.Mkdir(dir, 0o755)
}

// prepareCpusetParent makes dir and its missing ancestors below the hierarchy's root, each
// with its parent's cpus and mems where it has none, and sets their clone_children.
func prepareCpusetParent(dir string) error {
	up := filepath.Dir(dir)
	if up == dir {
		return errors.New("not in a cpuset hierarchy")
	}
	if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(up, "cpuset.cpus")); errors.Is(err, fs.ErrNotExist) {
			if err := prepareCpusetParent(up); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		own, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if len(strings.TrimSpace(string(own))) > 0 {
			continue
		}
		theirs, err := os.ReadFile(filepath.Join(up, f))
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, f), strings.TrimSpace(string(theirs))); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(dir, "cgroup.clone_children"), "1")
}

func newV1(path string, res *specs.LinuxResources) (*v1, error) {
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, fmt.Errorf("%w: create cgroup %s: find v1 hierarchies: %v", isolation.ErrUnsupported, path, err)
	}
	dirs := v1Dirs(path, hier)
	for _, need := range v1Required {
		if _, ok := dirs[need]; !ok {
			return nil, fmt.Errorf("%w: create cgroup %s: the %s controller is not mounted", isolation.ErrUnsupported, path, need)
		}
	}
	if _, err := os.Stat(dirs["memory"]); err == nil {
		return nil, fmt.Errorf("%w: cgroup %s", isolation.ErrAlreadyExists, path)
	}
	cg, err := cgroup1.New(cgroup1.StaticPath("/"+path), &specs.LinuxResources{}, withV1Hierarchies)
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	d := &v1{path: path, cg: cg, dirs: v1Dirs(path, cg.Subsystems())}
	d.cgOnce.Do(func() {}) // cg is loaded
	if dir, ok := dirs["cpuset"]; ok {
		err = mkdirCpuset(dir)
		if err == nil {
			d.dirs["cpuset"] = dir
		}
	}
	if err == nil {
		err = writeV1Limits(d, res)
	}
	if err != nil {
		if rmErr := d.remove(); rmErr != nil {
			slog.Warn("remove half-made cgroup", "cgroup", path, "error", rmErr)
		}
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return d, nil
}

// loadV1 finds the cgroup's directories; containerd's cgroup1 is loaded only to add a
// process (addProc), the one thing here it does.
func loadV1(path string) (*v1, error) {
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, fmt.Errorf("%w: load cgroup %s: find v1 hierarchies: %v", isolation.ErrUnsupported, path, err)
	}
	dirs := map[string]string{}
	for name, dir := range v1Dirs(path, hier) {
		if _, err := os.Lstat(dir); err == nil {
			dirs[name] = dir
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load cgroup %s: %w", path, err)
		}
	}
	for _, need := range v1Required {
		if _, ok := dirs[need]; !ok {
			return nil, fmt.Errorf("%w: cgroup %s has no directory in the %s hierarchy", isolation.ErrNotFound, path, need)
		}
	}
	return &v1{path: path, dirs: dirs}, nil
}

func (d *v1) addProc(pid int) error {
	d.cgOnce.Do(func() {
		d.cg, d.cgErr = cgroup1.Load(cgroup1.StaticPath("/"+d.path), withV1Hierarchies)
	})
	if d.cgErr != nil {
		return fmt.Errorf("load cgroup %s: %w", d.path, d.cgErr)
	}
	if err := d.cg.Add(cgroup1.Process{Pid: pid}); err != nil {
		return err
	}
	if dir, ok := d.dirs["cpuset"]; ok {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup %s: cpuset: %w", d.path, err)
		}
	}
	return nil
}

func (d *v1) stats() (Stats, error) {
	mem := d.dirs["memory"]
	usage, err := readUint(filepath.Join(mem, "memory.usage_in_bytes"))
	if err != nil {
		return Stats{}, err
	}
	inactive, _, err := readKeyed(filepath.Join(mem, "memory.stat"), "total_inactive_file")
	if err != nil {
		return Stats{}, err
	}
	limit, err := readUint(filepath.Join(mem, "memory.limit_in_bytes"))
	if err != nil {
		return Stats{}, err
	}
	if noLimit(limit) {
		limit = 0
	}
	cpu, err := readUint(filepath.Join(d.dirs["cpuacct"], "cpuacct.usage"))
	if err != nil {
		return Stats{}, err
	}
	pids, err := readUint(filepath.Join(d.dirs["pids"], "pids.current"))
	if err != nil {
		return Stats{}, err
	}
	ws := usage
	if inactive < ws {
		ws -= inactive
	}
	return Stats{MemoryBytes: ws, MemoryLimitBytes: limit, CPUNanos: cpu, Pids: pids}, nil
}

func (d *v1) oomKills() (uint64, error) {
	p := filepath.Join(d.dirs["memory"], "memory.oom_control")
	n, found, err := readKeyed(p, "oom_kill")
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: %s has no oom_kill counter (kernel older than 4.13)", isolation.ErrUnsupported, p)
	}
	return n, nil
}

// watchOOM registers an eventfd for memory.oom_control in cgroup.event_control. The kernel
// signals it on every OOM condition and once more when the cgroup is removed; the latter is told
// apart by the directory being gone.
func (d *v1) watchOOM(ctx context.Context) (<-chan struct{}, error) {
	mem := d.dirs["memory"]
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := os.NewFile(uintptr(efd), "oom-eventfd")
	oc, err := os.Open(filepath.Join(mem, "memory.oom_control"))
	if err != nil {
		ev.Close()
		return nil, err
	}
	// The kernel takes its own references during registration; oc may be closed afterwards.
	err = writeFile(filepath.Join(mem, "cgroup.event_control"), strconv.Itoa(efd)+" "+strconv.Itoa(int(oc.Fd())))
	oc.Close()
	if err != nil {
		ev.Close()
		return nil, err
	}
	ch := make(chan struct{}, 1)
	stop := context.AfterFunc(ctx, func() { ev.Close() })
	go func() {
		defer close(ch)
		defer stop()
		defer ev.Close()
		buf := make([]byte, 8)
		for {
			if _, err := ev.Read(buf); err != nil {
				return // closed by ctx, or a broken fd
			}
			if _, err := os.Stat(mem); err != nil {
				return // the cgroup was removed
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, nil
}

// signalAll freezes the cgroup (bounded), sends SIGKILL to every process and thaws it, so no
// process can fork between the listing and the signal.
func (d *v1) signalAll() error {
	state := filepath.Join(d.dirs["freezer"], "freezer.state")
	frozen := freezeV1(state)
	pids, err := d.procs()
	if err == nil {
		for _, pid := range pids {
			if kerr := unix.Kill(pid, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
				err = errors.Join(err, fmt.Errorf("kill pid %d: %w", pid, kerr))
			}
		}
	}
	if frozen {
		if terr := writeFile(state, "THAWED"); terr != nil && !errors.Is(terr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("thaw: %w", terr))
		}
	}
	return err
}

// freezeV1 asks the freezer to freeze and waits, bounded, until it reports FROZEN. It reports
// whether it wrote FROZEN (and so must thaw). A freezer that does not settle in time (a task in
// uninterruptible sleep) is not an error: the tasks are killed anyway.
func freezeV1(state string) bool {
	if err := writeFile(state, "FROZEN"); err != nil {
		return false
	}
	deadline := time.Now().Add(freezeTimeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(state)
		if err != nil || strings.TrimSpace(string(b)) == "FROZEN" {
			return true
		}
		time.Sleep(time.Millisecond)
		// Writing again retries tasks that were mid-fork when freezing started.
		_ = writeFile(state, "FROZEN")
	}
	slog.Warn("cgroup freezer did not settle; killing anyway", "freezer", state, "timeout", freezeTimeout)
	return true
}

func (d *v1) procs() ([]int, error) {
	var all []int
	seen := map[int]bool{}
	// A process is normally in every hierarchy; checking each catches one that was added
	// to some only (an interrupted AddProc).
	for _, name := range []string{"freezer", "memory", "pids", "cpu"} {
		pids, err := readProcs(d.dirs[name])
		if err != nil {
			return nil, err
		}
		for _, p := range pids {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	return all, nil
}

func (d *v1) exists() bool {
	for _, dir := range d.dirs {
		if _, err := os.Stat(dir); err == nil {
			return true
		}
	}
	return false
}

func (d *v1) remove() error {
	var errs []error
	for name, dir := range d.dirs {
		if err := removeCgroupDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (d *v1) removeEmpty() error {
	for _, dir := range d.dirs {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// removeCgroupDir removes a cgroup directory and any child cgroups below it, deepest first
// (rmdir, not unlink: a cgroup's interface files go with its directory). A cgroup whose last
// process just exited can report EBUSY for a moment, so each rmdir is retried briefly.
func removeCgroupDir(dir string) error {
	// The common case, a cgroup without child cgroups whose processes are gone, needs no
	// walk through its interface files.
	if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range slices.Backward(dirs) {
		if err := rmdirRetry(p); err != nil {
			return err
		}
	}
	return nil
}

func rmdirRetry(dir string) error {
	var err error
	for wait := time.Millisecond; wait < 200*time.Millisecond; wait *= 2 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(wait)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}
