package isolationlinux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

func TestNamespacesAndRootfs(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	tests := []struct {
		name, script, want string
	}{
		// argv[1] names the init in its log: the handle, or "@pool" when it was started
		// ahead of its container.
		{"pid 1 is the init", `tr '\0' ' ' </proc/1/cmdline | cut -d' ' -f1`, containerinit.Argv0 + "\n"},
		{"host processes are invisible", `n=$(ls -d /proc/[0-9]* | wc -l); [ "$n" -le 5 ] && echo few || echo "$n"`, "few\n"}, // init, sh, ls, wc
		{"hostname is the handle", `hostname`, c.Handle() + "\n"},
		{"root is the stack", `test -x /bin/busybox && test ! -e /etc/debian_version && echo ok`, "ok\n"},
		{"root maps to root", `id -u`, "0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sh(t, c, "", tt.script)
			if r.code != 0 || r.stdout != tt.want {
				t.Fatalf("%s: exit %d, stdout %q (want %q), stderr %q", tt.script, r.code, r.stdout, tt.want, r.stderr)
			}
		})
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Fatal(err)
	}
	_ = strings.TrimSpace
	_ = context.Background
}

// The state directory and the disk volumes ask ext4 to spread the containers' directories
// over block groups.
func TestContainerDirsSpreadOverTheFileSystem(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	newTestBackend(t, cfg)
	for _, dir := range []string{cfg.StateDir, filepath.Join(cfg.DiskDir, "volumes")} {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil {
			t.Skipf("the file system of %s has no inode flags: %v", dir, err)
		}
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Type != unix.EXT4_SUPER_MAGIC {
			t.Skipf("%s is not on ext4", dir)
		}
		const topdir = 0x00020000 // FS_TOPDIR_FL
		if flags&topdir == 0 {
			t.Errorf("flags of %s = %#x, want FS_TOPDIR_FL (%#x)", dir, flags, topdir)
		}
	}
}

// Run keeps its connection for the exit code (containerinit.Request.Watch); without it — an
// init that predates it, or a dropped connection — Wait asks the init again.
func TestWaitWithoutTheRunConnection(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, drop := range []bool{false, true} {
		p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/bin/sh", Args: []string{"-c", "sleep 0.2; exit 7"}}, isolation.ProcessIO{})
		if err != nil {
			t.Fatal(err)
		}
		if p.(*process).watch == nil {
			t.Fatal("Run kept no connection for the exit code")
		}
		if drop {
			p.(*process).watch.Close()
		}
		if code, err := p.Wait(ctx); err != nil || code != 7 {
			t.Fatalf("dropped connection %v: Wait = %d, %v; want 7", drop, code, err)
		}
	}
}

// The init ignores the signals a container process (or the host, short of SIGKILL) sends it.
func TestInitOutlivesSignals(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	if r := sh(t, c, "", "for s in TERM INT HUP QUIT USR1 USR2 PIPE ALRM; do kill -s $s 1; done; echo sent"); r.code != 0 || r.stdout != "sent\n" {
		t.Fatalf("signalling pid 1: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT} {
		if err := unix.Kill(rec.InitPid, sig); err != nil {
			t.Fatalf("host %v to the init: %v", sig, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if r := sh(t, c, "", "echo alive"); r.code != 0 || r.stdout != "alive\n" {
		t.Fatalf("after the signals: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// Create takes a state dir and a disk directory made ahead (spare_linux.go): the container's
// directories are the spares, renamed; Close removes the spares left.
func TestCreateTakesSpareDirectories(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	owner := b.rootUID(false)
	var state, disk string
	for deadline := time.Now().Add(10 * time.Second); state == "" || disk == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no spare directories after 10 s")
		}
		b.spares.mu.Lock()
		if s, d := b.spares.states[owner], b.spares.disks[owner]; len(s) > 0 && len(d) > 0 {
			state, disk = s[0], filepath.Join(cfg.DiskDir, "volumes", d[0])
		}
		b.spares.mu.Unlock()
	}
	inode := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	wantState, wantDisk := inode(state), inode(disk)
	c := createContainer(t, b, nil)
	if got := inode(b.dir(c.Handle())); got != wantState {
		t.Errorf("state dir inode %d, the spare's was %d", got, wantState)
	}
	if got := inode(filepath.Join(cfg.DiskDir, "volumes", c.Handle())); got != wantDisk {
		t.Errorf("disk directory inode %d, the spare's was %d", got, wantDisk)
	}
	if r := sh(t, c, "", "echo ok > /written && cat /written"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("writing in a container made from spares: %+v", r)
	}
	if err := b.Destroy(context.Background(), c.Handle()); err != nil {
		t.Fatal(err)
	}
	b.Close()
	for _, pattern := range []string{filepath.Join(cfg.StateDir, spareStatePrefix+"*"), filepath.Join(cfg.DiskDir, "volumes", "@spare-*")} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			t.Errorf("spares left after Close: %v", left)
		}
	}
}

// Once Wait has returned, Info no longer lists the process: the init records the exit before
// it tells the waiter.
func TestInfoAfterWait(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 200 {
		id := fmt.Sprintf("short-%d", i)
		p, err := c.Run(ctx, isolation.ProcessSpec{ID: id, Path: "/bin/true"}, isolation.ProcessIO{})
		if err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(ctx); err != nil || code != 0 {
			t.Fatalf("Wait: %d, %v", code, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(info.ProcessIDs, id) {
			t.Fatalf("run %d: Info lists %s as running after its Wait returned", i, id)
		}
	}
}
