package isolationlinux

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// The pool of container inits. Starting an init costs an execve of the (large) trellis
// binary, the Go runtime's start and its package initialisation, and the clone into fresh
// namespaces: a few milliseconds that do not depend on the container. The pool keeps
// Config.InitPoolSize inits per flavour (unprivileged, with the backend's uid map;
// privileged) that have done exactly that and wait on their start socket, having done
// nothing of their own. Create takes one, moves it into the container's cgroup, and sends it
// the StartMessage; from there it is an init like any other (docs/isolation-linux.md). A
// pooled init serves one container and dies with it. Pooled inits start at the lowest CPU
// priority (nice 19), so that refilling the pool uses the CPU creates leave idle instead of
// competing with them; Create gives the one it takes the backend's priority back.
//
// What a pooled init holds while it waits: its own new namespaces, nothing of a container.
// On cgroup v1 it waits in an empty cgroup of its own, <CgroupParent>/@pool-<pool id>-<n>,
// with no limits, into which the refill moved it (the one cgroup.procs migration, off the
// start path); Create renames that cgroup to the container's handle and writes the
// container's limits into it (resources.Adopt), so that the init joins its container without
// the migration's global lock and RCU wait. cgroup v2 cannot rename a cgroup: there a pooled
// init lives in the backend's cgroups and Create moves it. Either way its runtime's start ran
// before any move and is charged to the backend. Its mount namespace is a copy of the
// host's taken at its birth; so that it sees the mounts the backend makes later (a container's
// disk volume under DiskDir, the netns bind mounts under StateDir) and lets go of those the
// backend unmounts, the pool is used only when StateDir and DiskDir are on shared mounts
// (mount propagation, the default on systemd hosts), and Create checks that every host path
// the init will mount by name is, in the pooled init's view, the same inode as in the
// backend's, falling back to a freshly started init otherwise.
//
// Lifetime: a pooled init exits when its start socket reads end of file, i.e. when the
// backend retires it, closes, or dies; Close also kills and reaps them. Each pool records its
// inits (pid and start time) in <StateDir>/@pool/<id>/, a directory the backend holds a lock
// on; New kills what a dead backend's pool left and removes its directory. "@" is not allowed
// in handles, so the pool is never taken for a container (List, Lookup, Capacity).

const dirPool = "@pool"

// dirStage, <StateDir>/@stage, is the empty directory pooled inits build a container's
// standard file system layout on, each on a tmpfs of its own in its own mount namespace.
const dirStage = "@stage"

// startedInit is an init that was executed and waits for its StartMessage.
type startedInit struct {
	pid    int
	start  uint64        // /proc/<pid>/stat starttime
	ctl    *os.File      // the backend's end of the start socket
	exited chan struct{} // closed once the init is reaped
	record string        // the pool's record of it; "" once it is no longer pooled
	// cgroup is the pooled init's own cgroup (v1), nil once Create adopted it or where the
	// pool keeps none (v2).
	cgroup *resources.Cgroup
}

// spawnInit executes the sealed init binary in new namespaces (user namespace with the
// backend's uid map unless privileged), with log as its stdout and stderr until started,
// through the backend's init spawner (spawner_linux.go), so that the backend itself never
// forks. birth, when set, makes the kernel create it in a container's cgroup (cgroup v2).
func (b *Backend) spawnInit(privileged bool, birth *cgroupBirth, log *os.File, label, stage string) (*startedInit, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: start socket: %v", ErrInit, err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "init-start"), os.NewFile(uintptr(pair[1]), "init-start")
	defer theirs.Close()
	req := containerinit.SpawnRequest{Label: label, Idle: label == poolLabel, Stage: stage}
	if !privileged {
		req.UIDMapStart, req.UIDMapSize = int(b.cfg.UIDMapStart), int(b.cfg.UIDMapSize)
	}
	files := []*os.File{log, theirs}
	if birth != nil && birth.dir != nil {
		req.CgroupDir = true
		files = append(files, birth.dir)
	}
	pid, pidfd, err := b.spawner.spawn(req, files...)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("%w: starting init: %v", ErrInit, err)
	}
	// The spawner, not this process, reaps the init, so its pid could be reused once it has
	// ended: its start time read from /proc is its own only if the pidfd still finds it alive
	// afterwards. An init that is already gone is killed through its pidfd, never by pid.
	start, err := processStartTime(pid)
	if err == nil {
		err = unix.PidfdSendSignal(int(pidfd.Fd()), 0, nil, 0)
	}
	if err != nil {
		_ = unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGKILL, nil, 0)
		pidfd.Close()
		ours.Close()
		return nil, fmt.Errorf("%w: the init ended as it started: %v", ErrInit, err)
	}
	si := &startedInit{pid: pid, start: start, ctl: ours, exited: make(chan struct{})}
	// Its pidfd says when it has ended.
	go watchExit(pidfd, si.exited)
	return si, nil
}

// poolLabel is the label of pooled inits (their argv[1] until started), which makes them
// warm up while they wait.
const poolLabel = containerinit.PoolLabel

// normalPriority gives every thread of a pooled init the backend's own nice value, before it
// becomes a container's. Threads inherit the value of the thread that creates them, so passes
// repeat until one finds no thread left to change.
func (si *startedInit) normalPriority() error {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return err
	}
	own := 20 - prio
	dir := "/proc/" + strconv.Itoa(si.pid) + "/task"
	for pass := 0; pass < 8; pass++ {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		changed := 0
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil || 20-p == own {
				continue // gone, or already there
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, own); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return fmt.Errorf("threads of init %d kept appearing at idle priority", si.pid)
}

// kill ends an init that was not started (or whose start failed) and waits until it is
// reaped, bounded.
func (si *startedInit) kill() {
	si.ctl.Close()
	if si.start != 0 {
		killAndWait(si.pid, si.start, 5*time.Second)
	} else {
		_ = syscall.Kill(si.pid, syscall.SIGKILL)
	}
	select {
	case <-si.exited:
	case <-time.After(5 * time.Second):
	}
}

func (si *startedInit) alive() bool {
	select {
	case <-si.exited:
		return false
	default:
		return true
	}
}

// handOver sends the init its StartMessage with the descriptors it needs (see
// containerinit.StartFiles for the order).
func (si *startedInit) handOver(msg containerinit.StartMessage, files ...*os.File) error {
	if len(files) != containerinit.StartFiles {
		panic("isolation_linux: start descriptors out of sync")
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err = unix.Sendmsg(int(si.ctl.Fd()), b, unix.UnixRights(fds...), nil, 0)
	for _, f := range files {
		runtime.KeepAlive(f)
	}
	if err != nil {
		return fmt.Errorf("%w: starting init: %v", ErrInit, err)
	}
	return nil
}

// initPool keeps started inits per flavour; see the comment at the top of this file.
type initPool struct {
	b    *Backend
	log  *slog.Logger
	size int
	dir  string   // <StateDir>/@pool/<id>
	lock *os.File // dir, flock'ed while this backend lives
	out  *os.File // the pooled inits' log until they are started: dir/init.log
	// stage is <StateDir>/@stage, an empty directory each pooled init mounts a tmpfs of its
	// own on, in its own mount namespace, to build the standard layout of a container's file
	// system while it waits (containerinit.SpawnRequest.Stage).
	stage string
	// cgroups tells whether each pooled init gets a cgroup of its own (v1 hosts), named
	// @pool-<id>-<seq> under the backend's CgroupParent; seq is the refill's counter.
	cgroups bool
	seq     uint64

	mu     sync.Mutex
	idle   map[bool][]*startedInit // by privileged
	wanted map[bool]bool           // flavours Create asked for
	closed bool

	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// newInitPool removes what pools of dead backends left and starts this backend's pool.
// It returns nil (no pool) when size is 0 or when the backend's directories are not on
// shared mounts, saying why in the log.
func newInitPool(ctx context.Context, b *Backend, size int) (*initPool, error) {
	base := filepath.Join(b.cfg.StateDir, dirPool)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("isolation_linux: pool dir: %w", err)
	}
	reapStalePools(ctx, base, b.cfg.CgroupParent, b.log)
	if size == 0 {
		return nil, nil
	}
	for _, d := range []string{b.cfg.StateDir, b.cfg.DiskDir} {
		shared, err := onSharedMount(d)
		if err != nil {
			return nil, fmt.Errorf("isolation_linux: checking mount propagation of %s: %w", d, err)
		}
		if !shared {
			b.log.WarnContext(ctx, "container init pool disabled: a pooled init would not see mounts the backend makes later, nor let go of those it removes; make the mount shared (mount --make-rshared) to enable it", "dir", d)
			return nil, nil
		}
	}
	// Unprivileged inits mount on it by path: searchable by others, like the state dir.
	stage := filepath.Join(b.cfg.StateDir, dirStage)
	if err := os.Mkdir(stage, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("isolation_linux: pool stage dir: %w", err)
	}
	dir, err := os.MkdirTemp(base, fmt.Sprintf("%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("isolation_linux: pool dir: %w", err)
	}
	lock, err := os.Open(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("isolation_linux: pool dir: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("isolation_linux: locking pool dir %s: %w", dir, err)
	}
	out, err := os.OpenFile(filepath.Join(dir, fileInitLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		lock.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("isolation_linux: pool log: %w", err)
	}
	p := &initPool{
		b: b, log: b.log, size: size, dir: dir, lock: lock, out: out, stage: stage,
		cgroups: resources.AdoptSupported(),
		idle:    map[bool][]*startedInit{},
		wanted:  map[bool]bool{false: true},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.refill()
	return p, nil
}

// take returns a pooled init of the flavour whose view of every path in paths is the
// backend's, or nil. It no longer belongs to the pool: the caller starts or kills it. A
// pooled init whose view differs is retired, since the inits started after it see more.
func (p *initPool) take(privileged bool, paths []string) (taken *startedInit) {
	if p == nil {
		return nil
	}
	var retire []*startedInit
	defer func() {
		for _, si := range retire {
			p.retire(si)
		}
		// The replacement of a taken init is started once its container is (refilled): on
		// two cores, a refill started now competed with the create that took the init.
		if taken == nil || len(retire) > 0 {
			p.kick()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wanted[privileged] = true
	for len(p.idle[privileged]) > 0 {
		q := p.idle[privileged]
		si := q[0]
		p.idle[privileged] = q[1:]
		if !si.alive() {
			retire = append(retire, si)
			continue
		}
		if err := sameView(si.pid, paths); err != nil {
			p.log.Info("pooled container init does not see the host paths of this container; starting a fresh one", "err", err)
			retire = append(retire, si)
			continue
		}
		if err := si.normalPriority(); err != nil {
			p.log.Warn("raising a pooled container init to normal CPU priority failed; starting a fresh one", "pid", si.pid, "err", err)
			retire = append(retire, si)
			continue
		}
		return si
	}
	return nil
}

// claimed drops the pool's record of an init that is now a container's (its pid and start
// time are in state.json).
func (p *initPool) claimed(si *startedInit) {
	if p == nil || si.record == "" {
		return
	}
	if err := os.Remove(si.record); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.Warn("removing a pooled init's record", "path", si.record, "err", err)
	}
	si.record = ""
}

// retire kills a pooled init and removes its cgroup.
func (p *initPool) retire(si *startedInit) {
	si.kill()
	if si.cgroup != nil {
		removePoolCgroup(si.cgroup, p.log)
		si.cgroup = nil
	}
	p.claimed(si)
}

// adopt turns si's own cgroup into the container handle's, with limits: si is in its
// container's cgroup without a migration. On failure si keeps its cgroup; the caller retires
// it.
func (p *initPool) adopt(si *startedInit, handle string, limits isolation.Limits) (*resources.Cgroup, error) {
	cg, err := resources.Adopt(p.b.cfg.CgroupParent, path.Base(si.cgroup.Path()), handle, limits)
	if err != nil {
		return nil, err
	}
	si.cgroup = nil
	return cg, nil
}

// removePoolCgroup kills whatever is left in a pooled init's cgroup and removes it.
func removePoolCgroup(cg *resources.Cgroup, log *slog.Logger) {
	if err := cg.Kill(); err != nil {
		log.Warn("killing a pooled init's cgroup", "cgroup", cg.Path(), "err", err)
	}
	if err := cg.Delete(); err != nil {
		log.Warn("removing a pooled init's cgroup", "cgroup", cg.Path(), "err", err)
	}
}

// poolCgroupPrefix starts the names of the cgroups of the pool whose directory is named id.
func poolCgroupPrefix(id string) string { return "@pool-" + id + "-" }

// refilled tells the refill that an init was taken, once its container started.
func (p *initPool) refilled() {
	if p != nil {
		p.kick()
	}
}

func (p *initPool) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// refill keeps size inits of every wanted flavour, until close.
func (p *initPool) refill() {
	defer close(p.done)
	for {
		p.mu.Lock()
		closed, privileged, need := p.closed, false, false
		for _, priv := range []bool{false, true} {
			if p.wanted[priv] && len(p.idle[priv]) < p.size {
				privileged, need = priv, true
				break
			}
		}
		p.mu.Unlock()
		if closed {
			return
		}
		if !need {
			select {
			case <-p.wake:
			case <-p.stop:
				return
			}
			continue
		}
		si, err := p.add(privileged)
		if err != nil {
			p.log.Warn("starting a pooled container init", "privileged", privileged, "err", err)
			select {
			case <-time.After(time.Second):
			case <-p.stop:
				return
			}
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			p.retire(si)
			return
		}
		p.idle[privileged] = append(p.idle[privileged], si)
		p.mu.Unlock()
	}
}

// add starts a pooled init. Where pooled inits get cgroups of their own (v1), the cgroup is
// made first (so that a crash leaves it under a name the next New finds) and the init, held
// on its start socket, is moved into it before it joins the pool.
func (p *initPool) add(privileged bool) (*startedInit, error) {
	var cg *resources.Cgroup
	if p.cgroups {
		p.seq++
		var err error
		name := poolCgroupPrefix(filepath.Base(p.dir)) + strconv.FormatUint(p.seq, 10)
		if cg, err = resources.New(p.b.cfg.CgroupParent, name, isolation.Limits{}); err != nil {
			return nil, fmt.Errorf("a pooled init's cgroup: %w", err)
		}
	}
	si, err := p.b.spawnInit(privileged, nil, p.out, poolLabel, p.stage)
	if err != nil {
		if cg != nil {
			removePoolCgroup(cg, p.log)
		}
		return nil, err
	}
	si.cgroup = cg
	si.record = filepath.Join(p.dir, fmt.Sprintf("%d-%d", si.pid, si.start))
	if err := os.WriteFile(si.record, nil, 0o600); err != nil {
		si.record = ""
		p.retire(si)
		return nil, fmt.Errorf("recording a pooled init: %w", err)
	}
	if cg != nil {
		if err := cg.AddProc(si.pid); err != nil {
			p.retire(si)
			return nil, fmt.Errorf("moving a pooled init into its cgroup: %w", err)
		}
	}
	return si, nil
}

// close retires every pooled init and removes the pool's directory. Idempotent.
func (p *initPool) close() error {
	if p == nil {
		return nil
	}
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		var all []*startedInit
		for _, q := range p.idle {
			all = append(all, q...)
		}
		p.idle = nil
		p.mu.Unlock()
		close(p.stop)
		<-p.done
		for _, si := range all {
			p.retire(si)
		}
		p.out.Close()
		err = os.RemoveAll(p.dir)
		p.lock.Close()
	})
	return err
}

// reapStalePools kills the inits recorded by pools whose backend is gone (their directory's
// lock is free) and removes those directories and the pools' cgroups under parent. Such inits
// normally exited already, when their start socket closed with the backend.
func reapStalePools(ctx context.Context, base, parent string, log *slog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close() // a live backend's pool
			continue
		}
		records, _ := os.ReadDir(dir)
		for _, r := range records {
			pidStr, startStr, ok := strings.Cut(r.Name(), "-")
			if !ok {
				continue
			}
			pid, err1 := strconv.Atoi(pidStr)
			start, err2 := strconv.ParseUint(startStr, 10, 64)
			if err1 != nil || err2 != nil || pid <= 0 {
				continue
			}
			killAndWait(pid, start, 5*time.Second)
		}
		removeStalePoolCgroups(ctx, parent, e.Name(), log)
		if err := os.RemoveAll(dir); err != nil {
			log.WarnContext(ctx, "removing a dead backend's init pool", "dir", dir, "err", err)
		}
		f.Close()
	}
}

// removeStalePoolCgroups removes the cgroups of the dead pool whose directory is named id,
// killing what they hold (an init started after its record was lost, say).
func removeStalePoolCgroups(ctx context.Context, parent, id string, log *slog.Logger) {
	names, err := resources.Children(parent)
	if err != nil {
		log.DebugContext(ctx, "listing cgroups of a dead backend's init pool", "parent", parent, "err", err)
		return
	}
	for _, name := range names {
		if !strings.HasPrefix(name, poolCgroupPrefix(id)) {
			continue
		}
		cg, err := resources.Load(parent, name)
		if err != nil {
			log.WarnContext(ctx, "loading a dead backend's pooled init cgroup", "cgroup", name, "err", err)
			continue
		}
		removePoolCgroup(cg, log)
	}
}

// onSharedMount reports whether the mount holding path propagates mount events (it is in a
// shared peer group), from /proc/self/mountinfo.
func onSharedMount(path string) (bool, error) {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	best, shared := "", false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional fields...] - fstype ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if !(target == mp || mp == "/" || strings.HasPrefix(target, mp+"/")) || len(mp) < len(best) {
			continue
		}
		best, shared = mp, false
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				shared = true
			}
		}
	}
	return shared, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space and the like).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hostPaths lists the host paths the init resolves by name in its own mount namespace: the
// overlay's layers, upper and work directories, the rootfs mount point and bind sources.
func hostPaths(spec *specs.Spec) []string {
	var out []string
	for _, opt := range strings.Split(spec.Annotations[annotationOverlay], ",") {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "lowerdir":
			out = append(out, strings.Split(v, ":")...)
		case "upperdir", "workdir":
			out = append(out, v)
		}
	}
	if spec.Root != nil {
		out = append(out, spec.Root.Path)
	}
	for _, m := range spec.Mounts {
		if m.Type == "bind" && filepath.IsAbs(m.Source) {
			out = append(out, m.Source)
		}
	}
	return out
}

// sameView checks that each path is the same file (device and inode) for the process pid, in
// its mount namespace and from its root — resolved as its own lookups resolve it, symlinks
// included — as for the backend.
func sameView(pid int, paths []string) error {
	root, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the init's root: %w", err)
	}
	defer unix.Close(root)
	for _, p := range paths {
		var host, theirs unix.Stat_t
		if err := unix.Stat(p, &host); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		fd, err := containerinit.Openat2(root, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err != nil {
			return fmt.Errorf("%s in the init's mount namespace: %w", p, err)
		}
		err = unix.Fstat(fd, &theirs)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s in the init's mount namespace: %w", p, err)
		}
		if host.Dev != theirs.Dev || host.Ino != theirs.Ino {
			return fmt.Errorf("%s is another file in the init's mount namespace", p)
		}
	}
	return nil
}

// EnsureSharedMount makes dir a shared mount (ShareMount) unless the mount holding it already
// propagates, so that a backend whose StateDir and DiskDir lie below dir keeps an init pool. It
// reports whether it mounted; the mount stays (a second call finds it shared and does
// nothing). Errors: as ShareMount's, or mountinfo could not be read.
func EnsureSharedMount(dir string) (bool, error) {
	shared, err := onSharedMount(dir)
	if err != nil {
		return false, fmt.Errorf("checking mount propagation of %s: %w", dir, err)
	}
	if shared {
		return false, nil
	}
	if _, err := ShareMount(dir); err != nil {
		return false, err
	}
	return true, nil
}

// ShareMount bind-mounts dir on itself and makes the mount shared, so that mounts made under
// it propagate into mount namespaces copied from the host, as they do on a host whose root is
// shared (systemd's default). It is for hosts, tests and benchmarks whose root mount is
// private; undo detaches the bind mount again.
// Errors: dir does not exist, or the kernel refused a mount.
func ShareMount(dir string) (undo func() error, err error) {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("bind-mounting %s on itself: %w", dir, err)
	}
	undo = func() error {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
		return nil
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		_ = undo()
		return nil, fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	return undo, nil
}
