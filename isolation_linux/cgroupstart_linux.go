package isolationlinux

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// A container's init is born inside its cgroup instead of being moved there once it runs.
// Moving a running process (writing its pid to cgroup.procs) takes the kernel's global
// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period and for every
// thread of the host that is forking or exiting: on cgroup v1, with one write per hierarchy
// while the init's Go runtime is starting threads, that cost 0.2–10 ms per container. Instead:
//
//   - cgroup v2: clone3 with CLONE_INTO_CGROUP (SysProcAttr.UseCgroupFD) places the child in
//     the cgroup atomically at fork.
//   - cgroup v1: a dedicated OS thread moves itself into the cgroup in every hierarchy by
//     writing "0" to each tasks file (the kernel skips the global lock when a thread moves
//     itself), forks the child, which inherits the thread's cgroups, and moves itself back
//     the same way. Its goroutine stays locked to it and ends, so the Go runtime discards the
//     thread rather than let it run backend work again; it is never the main thread, which
//     Go cannot discard.
//
// The forking thread ends right after the fork, so the child must not rely on its parent
// thread: the init has no parent-death signal (it outlives the backend by design), which
// would fire when that thread ends.

// cgroupMount is a cgroup v1 hierarchy's mount.
type cgroupMount struct {
	dir  string // mount point
	root string // the cgroup mounted there, "/" unless in a nested namespace
	opts string // super options: the controllers ("rw,cpu,cpuacct", "rw,name=systemd")
}

// cgroupMounts lists the mounts of the cgroup v1 hierarchies, read from /proc/self/mountinfo
// (fields: id parent dev root mountpoint options ... " - " fstype source superoptions).
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) < 3 || after[0] != "cgroup" {
			continue
		}
		out = append(out, cgroupMount{dir: unescapeMountPath(fields[4]), root: unescapeMountPath(fields[3]), opts: after[2]})
	}
	return out, s.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, and so on).
func unescapeMountPath(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+4 <= len(p) {
			if v, ok := octal3(p[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func octal3(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}

// cgroupBirth says how a container's init is started inside its cgroup.
type cgroupBirth struct {
	mounts []cgroupMount // v1: the hierarchies
	tasks  []string      // v1: the tasks file of the cgroup in every hierarchy it exists in
	dir    *os.File      // v2: the cgroup's directory, for CLONE_INTO_CGROUP
}

// planCgroupBirth finds cg's directories in the hierarchies v1 (ignored on a v2 host).
// Errors: cg has no directory in any hierarchy (it was deleted).
func planCgroupBirth(cg *resources.Cgroup, v1 []cgroupMount) (*cgroupBirth, error) {
	if cg.Version() == 2 {
		dir, err := os.Open(filepath.Join("/sys/fs/cgroup", cg.Path()))
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", cg.Path(), err)
		}
		return &cgroupBirth{dir: dir}, nil
	}
	cb := &cgroupBirth{mounts: v1}
	for _, m := range v1 {
		t := filepath.Join(m.dir, cg.Path(), "tasks")
		if _, err := os.Stat(t); err == nil {
			cb.tasks = append(cb.tasks, t)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if len(cb.tasks) == 0 {
		return nil, fmt.Errorf("cgroup %s has no directory in any cgroup v1 hierarchy", cg.Path())
	}
	return cb, nil
}

func (cb *cgroupBirth) close() {
	if cb.dir != nil {
		cb.dir.Close()
	}
}

// start runs start, which must fork the child from the calling OS thread with attr, so that
// the child is born in the cgroup.
func (cb *cgroupBirth) start(attr *syscall.SysProcAttr, start func() error) error {
	if cb.dir != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cb.dir.Fd())
		err := start()
		runtime.KeepAlive(cb.dir)
		return err
	}
	var err error
	onDisposableThread(func() { err = cb.startV1(start) })
	return err
}

// startV1 runs on a thread of its own (see onDisposableThread).
func (cb *cgroupBirth) startV1(start func() error) error {
	home, err := threadCgroups(cb.mounts)
	if err != nil {
		return fmt.Errorf("finding the backend thread's own cgroups: %w", err)
	}
	var errs []error
	for _, t := range cb.tasks {
		if err := writeSelfTask(t); err != nil {
			errs = append(errs, fmt.Errorf("joining %s before starting the init: %w", filepath.Dir(t), err))
			break
		}
	}
	if len(errs) == 0 {
		errs = append(errs, start())
	}
	// Back home before returning, so that once the init runs no backend thread is in the
	// container's cgroup (where killing the cgroup would kill the backend).
	for _, t := range home {
		if err := writeSelfTask(t); err != nil {
			errs = append(errs, fmt.Errorf("leaving the container's cgroup for %s: %w", filepath.Dir(t), err))
		}
	}
	return errors.Join(errs...)
}

// onDisposableThread runs fn on an OS thread that ends with it, never on the main thread.
func onDisposableThread(fn func()) {
	done := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine ends, the runtime ends its thread.
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			close(done)
			return
		}
		// The main thread is never ended by the runtime; hold it so that the goroutine
		// below, locked in turn, gets another thread.
		inner := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			fn()
			close(inner)
		}()
		<-inner
		runtime.UnlockOSThread()
		close(done)
	}()
	<-done
}

// threadCgroups returns the tasks files of the calling thread's cgroups in the hierarchies
// mounts, from /proc/thread-self/cgroup ("id:controllers:/path"; v2 lines have no
// controllers and are skipped).
func threadCgroups(mounts []cgroupMount) ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		ctrl, _, _ := strings.Cut(parts[1], ",")
		m, ok := mountOf(mounts, ctrl)
		if !ok {
			continue // a hierarchy not mounted here; the thread never leaves it
		}
		rel := parts[2]
		if m.root != "/" {
			r, ok := strings.CutPrefix(rel, m.root)
			if !ok {
				return nil, fmt.Errorf("cgroup %s is outside the mounted %s of %s", rel, m.root, m.dir)
			}
			rel = r
		}
		out = append(out, filepath.Join(m.dir, rel, "tasks"))
	}
	return out, nil
}

// mountOf finds the hierarchy holding controller ctrl ("memory", "name=systemd").
func mountOf(mounts []cgroupMount, ctrl string) (cgroupMount, bool) {
	for _, m := range mounts {
		for _, o := range strings.Split(m.opts, ",") {
			if o == ctrl {
				return m, true
			}
		}
	}
	return cgroupMount{}, false
}

// writeSelfTask moves the calling thread into the v1 cgroup whose tasks file is path.
func writeSelfTask(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("0"))
	return err
}
