package isolationlinux

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// poolCgroups lists the pooled inits' cgroups under parent.
func poolCgroups(t *testing.T, parent string) []string {
	t.Helper()
	names, err := resources.Children(parent)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "@pool-") {
			out = append(out, n)
		}
	}
	return out
}

// memoryCgroup is the memory cgroup of pid, from /proc/<pid>/cgroup.
func memoryCgroup(t *testing.T, pid int) string {
	t.Helper()
	return cgroupLines(t, "/proc/"+strconv.Itoa(pid)+"/cgroup")["memory"]
}

// idlePids waits until the pool holds n idle inits of the flavour and returns their pids.
func idlePids(t *testing.T, p *initPool, privileged bool, n int) []int {
	t.Helper()
	if p == nil {
		t.Fatal("the backend has no init pool")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		var pids []int
		for _, si := range p.idle[privileged] {
			pids = append(pids, si.pid)
		}
		p.mu.Unlock()
		if len(pids) >= n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool holds %d idle inits (privileged %v) after 10s, want %d", len(pids), privileged, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// threadNices lists the distinct nice values of pid's threads, from /proc/<pid>/task/*/stat.
func threadNices(t *testing.T, pid int) []int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// pid (comm) state ppid ...: nice is the 19th field, the 17th after the comm's ")".
		rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		n, err := strconv.Atoi(rest[16])
		if err != nil {
			t.Fatalf("%s/%s/stat: %v", dir, e.Name(), err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func processGone(pid int, start uint64) bool {
	st, err := processStartTime(pid)
	return err != nil || st != start
}

func waitGone(t *testing.T, pid int, start uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !processGone(pid, start); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("init %d still runs", pid)
		}
	}
}

// TestInitPool: containers get their init from the pool, each pooled init serves one
// container, the pool refills, its inits are no containers, and Close ends them.
func TestInitPool(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	ctx := context.Background()
	idle := idlePids(t, b.pool, false, cfg.InitPoolSize)
	starts := map[int]uint64{}
	for _, pid := range idle {
		st, err := processStartTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		starts[pid] = st
	}
	// Pooled inits wait at idle CPU priority, every thread of them.
	for _, pid := range idle {
		if nices := threadNices(t, pid); len(nices) != 1 || nices[0] != containerinit.IdleNice {
			t.Fatalf("pooled init %d has threads at nice %v, want all at %d", pid, nices, containerinit.IdleNice)
		}
	}
	// On v1 each pooled init waits in a cgroup of its own under the backend's parent.
	if b.pool.cgroups {
		own := poolCgroups(t, cfg.CgroupParent)
		if len(own) != len(idle) {
			t.Fatalf("pool cgroups %v, want one per idle init %v", own, idle)
		}
		for _, pid := range idle {
			if cg := memoryCgroup(t, pid); !slices.Contains(own, filepath.Base(cg)) || filepath.Dir(cg) != "/"+cfg.CgroupParent {
				t.Fatalf("pooled init %d is in memory cgroup %s, want one of %v under %s", pid, cg, own, cfg.CgroupParent)
			}
		}
	}

	// Pooled inits are not containers.
	if all, err := b.List(ctx, nil); err != nil || len(all) != 0 {
		t.Fatalf("List = %v, %v; want no containers", all, err)
	}
	if n, err := b.count(); err != nil || n != 0 {
		t.Fatalf("count = %d, %v; want 0", n, err)
	}
	if _, err := b.Lookup(ctx, dirPool); !isolation.IsNotFound(err) {
		t.Fatalf("Lookup(%q) = %v, want not found", dirPool, err)
	}
	if err := b.Destroy(ctx, dirPool); err != nil {
		t.Fatalf("Destroy(%q) = %v", dirPool, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, dirPool)); err != nil {
		t.Fatalf("Destroy(%q) touched the pool: %v", dirPool, err)
	}

	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(idle, rec.InitPid) {
		t.Fatalf("container init %d is not one of the pooled inits %v", rec.InitPid, idle)
	}
	// Its cgroup became the container's (adopted, v1) or it was moved there (v2).
	if cg, want := memoryCgroup(t, rec.InitPid), "/"+cfg.CgroupParent+"/"+c.Handle(); cg != want {
		t.Fatalf("pooled init %d is in memory cgroup %s after Create, want %s", rec.InitPid, cg, want)
	}
	// It is the container's, hardened like any: its hostname, its seccomp filter; and it and
	// its processes run at the backend's priority, not the pool's.
	r := sh(t, c, "", "hostname; grep ^Seccomp: /proc/self/status; cut -d' ' -f19 /proc/self/stat")
	if r.code != 0 || !strings.HasPrefix(r.stdout, c.Handle()+"\n") || !strings.Contains(r.stdout, "Seccomp:\t2") || !strings.HasSuffix(r.stdout, "\n0\n") {
		t.Fatalf("in a container from the pool: %+v", r)
	}
	if nices := threadNices(t, rec.InitPid); len(nices) != 1 || nices[0] != 0 {
		t.Fatalf("the container's init %d has threads at nice %v, want all at 0", rec.InitPid, nices)
	}
	if err := b.Destroy(ctx, c.Handle()); err != nil {
		t.Fatal(err)
	}
	waitGone(t, rec.InitPid, rec.InitStart)

	// The pool refilled with new inits; the used one is not among them.
	again := idlePids(t, b.pool, false, cfg.InitPoolSize)
	if slices.Contains(again, rec.InitPid) {
		t.Fatalf("used init %d is back in the pool %v", rec.InitPid, again)
	}
	for _, pid := range again {
		if _, ok := starts[pid]; !ok {
			st, err := processStartTime(pid)
			if err != nil {
				t.Fatal(err)
			}
			starts[pid] = st
		}
	}

	// A privileged container fills the privileged pool from then on.
	pc := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Privileged = true })
	if r := sh(t, pc, "", "hostname"); r.code != 0 || r.stdout != pc.Handle()+"\n" {
		t.Fatalf("privileged container: %+v", r)
	}
	privIdle := idlePids(t, b.pool, true, cfg.InitPoolSize)
	for _, pid := range privIdle {
		st, err := processStartTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		starts[pid] = st
	}
	if err := b.Destroy(ctx, pc.Handle()); err != nil {
		t.Fatal(err)
	}

	// Close ends every pooled init and removes the pool's directory.
	poolDir := b.pool.dir
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for pid, st := range starts {
		if pid != rec.InitPid {
			waitGone(t, pid, st)
		}
	}
	if _, err := os.Stat(poolDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pool dir after Close: %v", err)
	}
	if left := poolCgroups(t, cfg.CgroupParent); len(left) > 0 {
		t.Fatalf("pool cgroups after Close: %v", left)
	}
}

// TestInitPoolRetiredInitExits: a pooled init whose start socket closes (the backend retired
// it, or died) exits by itself.
func TestInitPoolRetiredInitExits(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	idlePids(t, b.pool, false, 1)
	si := b.pool.take(false, nil)
	if si == nil {
		t.Fatal("take returned no init")
	}
	defer b.pool.claimed(si)
	si.ctl.Close()
	select {
	case <-si.exited:
	case <-time.After(5 * time.Second):
		si.kill()
		t.Fatal("a pooled init whose start socket closed still runs after 5s")
	}
}

// TestInitPoolStaleReaped: a new Backend over the state dir of a backend that died without
// closing its pool kills the inits that pool recorded and removes its directory.
func TestInitPoolStaleReaped(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := newTestBackend(t, cfg)
	idle := idlePids(t, a.pool, false, cfg.InitPoolSize)
	starts := map[int]uint64{}
	for _, pid := range idle {
		st, err := processStartTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		starts[pid] = st
	}
	// A dead backend's lock is free, and its inits may still run (here they do: this
	// process still holds their start sockets, as a leaked descriptor would).
	staleDir := a.pool.dir
	stale := poolCgroups(t, cfg.CgroupParent)
	if a.pool.cgroups && len(stale) == 0 {
		t.Fatal("the first backend's pooled inits have no cgroups")
	}
	if err := unix.Flock(int(a.pool.lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, cfg)
	for pid, st := range starts {
		waitGone(t, pid, st)
	}
	if _, err := os.Stat(staleDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale pool dir: %v", err)
	}
	for _, name := range poolCgroups(t, cfg.CgroupParent) {
		if slices.Contains(stale, name) {
			t.Fatalf("the dead pool's cgroup %s is still there", name)
		}
	}
	// The new backend's own pool is untouched by the old one's Close.
	own := idlePids(t, b.pool, false, cfg.InitPoolSize)
	a.Close()
	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(own, rec.InitPid) {
		t.Fatalf("container init %d is not one of the new backend's pooled inits %v", rec.InitPid, own)
	}
}

// TestInitPoolViewCheck: a pooled init that cannot see a host path the container needs (a
// mount made later under a private mount) is not used; the container gets a fresh init that
// sees it.
func TestInitPoolViewCheck(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	idle := idlePids(t, b.pool, false, cfg.InitPoolSize)

	private := filepath.Join(filepath.Dir(cfg.StateDir), "private")
	src := filepath.Join(private, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(private, private, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(private, unix.MNT_DETACH) })
	if err := unix.Mount("", private, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if shared, err := onSharedMount(src); err != nil || shared {
		t.Fatalf("onSharedMount(%s) = %v, %v; want false", src, shared, err)
	}
	if shared, err := onSharedMount(cfg.StateDir); err != nil || !shared {
		t.Fatalf("onSharedMount(%s) = %v, %v; want true", cfg.StateDir, shared, err)
	}
	if err := unix.Mount("tmpfs", src, "tmpfs", 0, "mode=755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(src, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(src, "marker"), []byte("seen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := createContainer(t, b, func(s *isolation.ContainerSpec) {
		s.BindMounts = []isolation.BindMount{{SrcPath: src, DstPath: "/mnt/src", ReadOnly: true}}
	})
	if r := sh(t, c, "", "cat /mnt/src/marker"); r.code != 0 || r.stdout != "seen\n" {
		t.Fatalf("the bind mount's content in the container: %+v", r)
	}
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(idle, rec.InitPid) {
		t.Fatalf("container got pooled init %d, which cannot see %s", rec.InitPid, src)
	}
}

// TestInitPoolOff: InitPoolSize 0 starts every init on demand.
func TestInitPoolOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.InitPoolSize = 0
	b := newTestBackend(t, cfg)
	if b.pool != nil {
		t.Fatal("a pool with InitPoolSize 0")
	}
	c := createContainer(t, b, nil)
	if r := sh(t, c, "", "echo ok"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("without the pool: %+v", r)
	}
}

func TestInitPoolSizeValidate(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{{-1, false}, {0, true}, {2, true}, {maxInitPoolSize, true}, {maxInitPoolSize + 1, false}} {
		cfg := DefaultConfig()
		cfg.InitPoolSize = tc.size
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("InitPoolSize %d: Validate = %v, want ok %v", tc.size, err, tc.ok)
		}
	}
}

func TestHostPathsAndMountinfo(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/plain", "/plain"},
		{`/with\040space`, "/with space"},
		{`/tab\011x`, "/tab\tx"},
		{`/not\x`, `/not\x`},
	} {
		if got := unescapeMountinfo(tc.in); got != tc.want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	spec, err := BuildSpec(isolation.ContainerSpec{
		Handle: "h", RootFS: "preloaded:busybox",
		BindMounts: []isolation.BindMount{{SrcPath: "/srv/data", DstPath: "/data"}},
	}, SpecOptions{RootfsPath: "/s/h/rootfs", LowerDir: "/l/a", UpperDir: "/d/u", WorkDir: "/d/w", UIDMapStart: 1 << 20, UIDMapSize: 65536, CgroupsPath: "/t/h"})
	if err != nil {
		t.Fatal(err)
	}
	got := hostPaths(spec)
	for _, want := range []string{"/l/a", "/d/u", "/d/w", "/s/h/rootfs", "/srv/data"} {
		if !slices.Contains(got, want) {
			t.Errorf("hostPaths = %q, missing %s", got, want)
		}
	}
}

// TestInitPoolDiskVolume: a disk-limited container's volume, mounted after the pool filled,
// reaches a pooled init through mount propagation, so the container gets one; once the
// container is destroyed, no pooled init holds the volume's mount.
func TestInitPoolDiskVolume(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	idle := idlePids(t, b.pool, false, cfg.InitPoolSize)
	c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Limits.DiskBytes = 8 << 20 })
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(idle, rec.InitPid) {
		t.Fatalf("disk-limited container got a fresh init %d, not one of the pooled %v", rec.InitPid, idle)
	}
	if r := sh(t, c, "", "head -c 12582912 /dev/zero > /big 2>/dev/null && echo wrote || echo full"); r.stdout != "full\n" {
		t.Fatalf("writing past the disk limit in a container from the pool: %+v", r)
	}
	// The pool now holds inits born while the volume was mounted.
	waiting := idlePids(t, b.pool, false, cfg.InitPoolSize)
	if err := b.Destroy(context.Background(), c.Handle()); err != nil {
		t.Fatal(err)
	}
	for _, pid := range waiting {
		mi, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(mi), c.Handle()) {
			t.Fatalf("pooled init %d still holds a mount of destroyed container %s:\n%s", pid, c.Handle(), mi)
		}
	}
}

// TestPooledInitStagesLayout: a pooled init builds the standard layout (proc, dev, sys, masks)
// while it waits and moves it under the container's root at start, so those mounts are older
// than the container's root mount (the kernel's unique mount ids only grow; the mount ids of
// mountinfo are reused); the container sees the same hardened layout either way (the
// hardening tests run on pooled inits), and the stage never shows on the host.
func TestPooledInitStagesLayout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	idlePids(t, b.pool, false, cfg.InitPoolSize)
	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	root := fmt.Sprintf("/proc/%d/root", rec.InitPid)
	mountID := func(p string) uint64 {
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, root+p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID_UNIQUE, &st); err != nil {
			t.Fatalf("statx %s: %v", p, err)
		}
		if st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
			t.Skip("this kernel has no unique mount ids (Linux 6.8+)")
		}
		return st.Mnt_id
	}
	rootID := mountID("/")
	check := []string{"/proc", "/dev", "/dev/null", "/dev/pts", "/sys", "/proc/sys"}
	for _, p := range containerinit.MaskedPaths {
		if _, err := os.Lstat(root + p); err == nil { // paths this kernel lacks are not masked
			check = append(check, p)
		}
	}
	for _, p := range check {
		if id := mountID(p); id == rootID {
			t.Errorf("%s is no mount of its own in the container", p)
		} else if id > rootID {
			t.Errorf("%s (mount %d) was mounted after the container's root (mount %d): not staged", p, id, rootID)
		}
	}
	if r := sh(t, c, "", "cat /proc/keys | wc -c; touch /proc/sys/kernel/x 2>/dev/null && echo writable; ls /dev/null /dev/pts/ptmx >/dev/null && echo devices"); r.code != 0 || r.stdout != "0\ndevices\n" {
		t.Fatalf("layout inside the container: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	host, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(host), filepath.Join(cfg.StateDir, dirStage)) {
		t.Errorf("the stage shows in the host's mounts:\n%s", host)
	}
}
