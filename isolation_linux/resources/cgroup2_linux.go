package resources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// v2Controllers are enabled down to every container cgroup, limited or not, so that usage is
// accounted (memory.current, pids.current) for every container.
var v2Controllers = []string{"cpu", "memory", "pids"}

// v2 is a cgroup in the unified hierarchy mounted at root (/sys/fs/cgroup on a host; a fake
// tree in tests). containerd's cgroup2 enables controllers down the path, joins, kills and
// removes; the limit values are the ones V2Settings computes, written here.
type v2 struct {
	root string
	dir  string
	mgr  *cgroup2.Manager
}

func newV2(root, path string, settings []Setting) (*v2, error) {
	dir := filepath.Join(root, path)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("%w: cgroup %s", isolation.ErrAlreadyExists, path)
	}
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("%w: create cgroup %s: read available controllers: %v", isolation.ErrUnsupported, path, err)
	}
	have := strings.Fields(string(b))
	for _, c := range v2Controllers {
		if !slices.Contains(have, c) {
			return nil, fmt.Errorf("%w: create cgroup %s: the %s controller is not available in %s (have %q)", isolation.ErrUnsupported, path, c, root, have)
		}
	}
	mgr, err := cgroup2.NewManager(root, "/"+path, &cgroup2.Resources{CPU: &cgroup2.CPU{}, Memory: &cgroup2.Memory{}, Pids: &cgroup2.Pids{}})
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	d := &v2{root: root, dir: dir, mgr: mgr}
	for _, s := range settings {
		if err := writeFile(filepath.Join(dir, s.File), s.Value); err != nil {
			if rmErr := d.remove(); rmErr != nil {
				slog.Warn("remove half-made cgroup", "cgroup", path, "error", rmErr)
			}
			return nil, fmt.Errorf("create cgroup %s: set limit: %w", path, err)
		}
	}
	return d, nil
}

func loadV2(root, path string) (*v2, error) {
	dir := filepath.Join(root, path)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: cgroup %s", isolation.ErrNotFound, path)
		}
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	mgr, err := cgroup2.Load("/"+path, cgroup2.WithMountpoint(root))
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	return &v2{root: root, dir: dir, mgr: mgr}, nil
}

func (d *v2) addProc(pid int) error {
	return d.mgr.AddProc(uint64(pid))
}

func (d *v2) stats() (Stats, error) {
	usage, err := readUint(filepath.Join(d.dir, "memory.current"))
	if err != nil {
		return Stats{}, err
	}
	inactive, _, err := readKeyed(filepath.Join(d.dir, "memory.stat"), "inactive_file")
	if err != nil {
		return Stats{}, err
	}
	limit, err := readUint(filepath.Join(d.dir, "memory.max"))
	if err != nil {
		return Stats{}, err
	}
	usec, _, err := readKeyed(filepath.Join(d.dir, "cpu.stat"), "usage_usec")
	if err != nil {
		return Stats{}, err
	}
	pids, err := readUint(filepath.Join(d.dir, "pids.current"))
	if err != nil {
		return Stats{}, err
	}
	ws := usage
	if inactive < ws {
		ws -= inactive
	}
	return Stats{MemoryBytes: ws, MemoryLimitBytes: limit, CPUNanos: usec * 1000, Pids: pids}, nil
}

func (d *v2) oomKills() (uint64, error) {
	n, _, err := readKeyed(filepath.Join(d.dir, "memory.events"), "oom_kill")
	return n, err
}

// watchOOM watches memory.events with inotify and reports each growth of its oom_kill count.
// The kernel removes the watch (IN_IGNORED) when the cgroup is removed.
func (d *v2) watchOOM(ctx context.Context) (<-chan struct{}, error) {
	events := filepath.Join(d.dir, "memory.events")
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	in := os.NewFile(uintptr(ifd), "oom-inotify")
	if _, err := unix.InotifyAddWatch(ifd, events, unix.IN_MODIFY|unix.IN_DELETE_SELF); err != nil {
		in.Close()
		return nil, fmt.Errorf("watch %s: %w", events, err)
	}
	// Read the baseline after the watch is in place, so no kill falls between the two.
	last, err := d.oomKills()
	if err != nil {
		in.Close()
		return nil, err
	}
	ch := make(chan struct{}, 1)
	stop := context.AfterFunc(ctx, func() { in.Close() })
	go func() {
		defer close(ch)
		defer stop()
		defer in.Close()
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			n, err := in.Read(buf)
			if err != nil {
				return // closed by ctx, or a broken fd
			}
			gone := false
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				if ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF) != 0 {
					gone = true
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
			if now, err := d.oomKills(); err == nil && now > last {
				last = now
				select {
				case ch <- struct{}{}:
				default:
				}
			} else if err != nil {
				gone = true
			}
			if gone {
				return
			}
		}
	}()
	return ch, nil
}

// signalAll writes cgroup.kill (kernel 5.14+), which kills every process of the subtree at
// once; containerd falls back to freeze, SIGKILL, thaw on older kernels.
func (d *v2) signalAll() error {
	return d.mgr.Kill()
}

func (d *v2) procs() ([]int, error) {
	return readProcs(d.dir)
}

func (d *v2) exists() bool {
	_, err := os.Stat(d.dir)
	return err == nil
}

func (d *v2) removeEmpty() error {
	if err := unix.Rmdir(d.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func (d *v2) remove() error {
	if err := d.mgr.Delete(); err != nil && d.exists() {
		return err
	}
	return nil
}
