package resources

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"

	"github.com/trellis-run/trellis/isolation"
)

const mib = 1 << 20

func newTestCgroup(t *testing.T, parent, handle string, limits isolation.Limits) *Cgroup {
	t.Helper()
	cg, err := New(parent, handle, limits)
	if err != nil {
		t.Fatalf("New(%q, %q): %v", parent, handle, err)
	}
	t.Cleanup(func() {
		if err := cg.Kill(); err != nil {
			t.Errorf("cleanup Kill: %v", err)
		}
		if err := cg.Delete(); err != nil {
			t.Errorf("cleanup Delete: %v", err)
		}
	})
	return cg
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestOOMKillIsWatchedAndCounted(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	cg := newTestCgroup(t, parent, "oom", isolation.Limits{MemoryBytes: 64 * mib})

	events, err := cg.WatchOOM(t.Context())
	if err != nil {
		t.Fatalf("WatchOOM: %v", err)
	}
	h := startHelper(t, "alloc")
	if err := cg.AddProc(h.cmd.Process.Pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	h.open(t)
	err = h.wait(t, 20*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		out, _ := h.output(t)
		t.Fatalf("allocating 200 MiB in a 64 MiB cgroup: want the process killed, got %v (stdout %q)", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("want SIGKILL, got %v", exit)
	}
	select {
	case _, ok := <-events:
		if !ok {
			t.Fatal("WatchOOM channel closed without an event")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchOOM did not fire within 5s of the OOM kill")
	}
	n, err := cg.OOMKills()
	if err != nil {
		t.Fatalf("OOMKills: %v", err)
	}
	if n < 1 {
		t.Fatalf("OOMKills = %d, want >= 1", n)
	}

	// A fresh handle on the same cgroup (a restarted backend) sees the same count.
	again, err := Load(parent, "oom")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if m, err := again.OOMKills(); err != nil || m != n {
		t.Fatalf("OOMKills after Load = %d, %v; want %d", m, err, n)
	}
}

func TestWatchOOMChannelCloses(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	tests := []struct {
		name string
		end  func(t *testing.T, cg *Cgroup, cancel func())
	}{
		{"context cancelled", func(t *testing.T, cg *Cgroup, cancel func()) { cancel() }},
		{"cgroup deleted", func(t *testing.T, cg *Cgroup, cancel func()) {
			if err := cg.Delete(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, parent, "watch"+string(rune('a'+i)), isolation.Limits{MemoryBytes: 64 * mib})
			ctx, cancel := context.WithCancel(t.Context())
			events, err := cg.WatchOOM(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tt.end(t, cg, cancel)
			select {
			case _, ok := <-events:
				if ok {
					t.Fatal("WatchOOM reported an OOM event where none happened")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("WatchOOM channel not closed")
			}
		})
	}
}

func TestPidsLimitStopsForkBomb(t *testing.T) {
	requireCgroups(t)
	const limit = 16
	cg := newTestCgroup(t, testParent(t), "forkbomb", isolation.Limits{Pids: limit})
	// Bounded: at most 200 sleepers, and Kill below ends them.
	h := startShell(t, `i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; echo spawned-all`)
	if err := cg.AddProc(h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	h.open(t)
	_ = h.wait(t, 20*time.Second)
	stdout, stderr := h.output(t)
	if strings.Contains(stdout, "spawned-all") {
		t.Fatalf("the shell forked 200 processes under pids.max=%d", limit)
	}
	if !strings.Contains(strings.ToLower(stderr), "fork") {
		t.Fatalf("want the shell to report a failed fork, stderr %q", stderr)
	}
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids < limit/2 || st.Pids > limit {
		t.Fatalf("Stats.Pids = %d, want the cgroup nearly full and at most %d", st.Pids, limit)
	}
	if err := cg.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if pids, err := cg.drv.procs(); err != nil || len(pids) != 0 {
		t.Fatalf("after Kill: procs %v, %v", pids, err)
	}
}

func TestLimitsWritten(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	tests := []struct {
		name   string
		limits isolation.Limits
	}{
		{"all", isolation.Limits{MemoryBytes: 128 * mib, CPUWeight: 50, Pids: 100}},
		{"cpu weight 1", isolation.Limits{CPUWeight: 1}},
		{"cpu weight 100", isolation.Limits{CPUWeight: 100}},
		{"memory only", isolation.Limits{MemoryBytes: 32 * mib}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, parent, "limits"+string(rune('a'+i)), tt.limits)
			res, err := ToSpec(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			var want []Setting
			dir := func(s Setting) string { return filepath.Join(unifiedRoot, cg.Path()) }
			if cg.Version() == 1 {
				d := cg.drv.(*v1)
				_, err := os.Stat(filepath.Join(d.dirs["memory"], "memory.memsw.limit_in_bytes"))
				want = V1Settings(res, err == nil)
				dir = func(s Setting) string { return d.dirs[s.Controller] }
			} else {
				want = V2Settings(res)
			}
			if len(want) == 0 {
				t.Fatal("no settings to check")
			}
			for _, s := range want {
				if got := readTrim(t, filepath.Join(dir(s), s.File)); got != s.Value {
					t.Errorf("%s = %q, want %q", s.File, got, s.Value)
				}
			}
			if tt.limits.CPUWeight > 0 && cg.Version() == 1 {
				got := readTrim(t, filepath.Join(cg.drv.(*v1).dirs["cpu"], "cpu.shares"))
				if want := CPUSharesFromWeight(tt.limits.CPUWeight); got != uintString(want) {
					t.Errorf("cpu.shares = %s, want %d", got, want)
				}
			}
			st, err := cg.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.MemoryLimitBytes != tt.limits.MemoryBytes {
				t.Errorf("Stats.MemoryLimitBytes = %d, want %d", st.MemoryLimitBytes, tt.limits.MemoryBytes)
			}
		})
	}
}

func TestStatsKillDelete(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	cg := newTestCgroup(t, parent, "work", isolation.Limits{MemoryBytes: 256 * mib})
	var hs []*helper
	for range 3 {
		h := startHelper(t, "work")
		if err := cg.AddProc(h.cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		h.open(t)
		hs = append(hs, h)
	}
	for _, h := range hs {
		h.waitOutput(t, "ready", 20*time.Second)
	}

	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryBytes < 3*16*mib || st.MemoryBytes > 256*mib {
		t.Errorf("Stats.MemoryBytes = %d, want 48 MiB..256 MiB for three helpers holding 16 MiB", st.MemoryBytes)
	}
	if st.MemoryLimitBytes != 256*mib {
		t.Errorf("Stats.MemoryLimitBytes = %d, want %d", st.MemoryLimitBytes, 256*mib)
	}
	if st.CPUNanos < uint64(3*40*time.Millisecond) {
		t.Errorf("Stats.CPUNanos = %d, want at least 120ms for three helpers burning 50ms each", st.CPUNanos)
	}
	if st.Pids < 3 {
		t.Errorf("Stats.Pids = %d, want >= 3 (three Go processes and their threads)", st.Pids)
	}

	// Delete refuses a populated cgroup, after its bound.
	defer func(d time.Duration) { deleteTimeout = d }(deleteTimeout)
	deleteTimeout = 50 * time.Millisecond
	if err := cg.Delete(); !IsBusy(err) {
		t.Fatalf("Delete of a populated cgroup: want ErrBusy, got %v", err)
	}

	if err := cg.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if pids, err := cg.drv.procs(); err != nil || len(pids) != 0 {
		t.Fatalf("after Kill: procs %v, %v", pids, err)
	}
	for _, h := range hs {
		err := h.wait(t, 5*time.Second)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("helper: want killed by SIGKILL, got %v", err)
		}
	}

	if err := cg.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, dir := range cgroupDirs(t, cg) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Delete (%v)", dir, err)
		}
	}
	if err := cg.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := cg.Kill(); err != nil {
		t.Fatalf("Kill after Delete: %v", err)
	}
	if _, err := cg.Stats(); !isolation.IsNotFound(err) {
		t.Fatalf("Stats after Delete: want ErrNotFound, got %v", err)
	}
	if _, err := Load(parent, "work"); !isolation.IsNotFound(err) {
		t.Fatalf("Load after Delete: want ErrNotFound, got %v", err)
	}
}

func cgroupDirs(t *testing.T, cg *Cgroup) []string {
	if cg.Version() == 2 {
		return []string{filepath.Join(unifiedRoot, cg.Path())}
	}
	var dirs []string
	for _, d := range cg.drv.(*v1).dirs {
		dirs = append(dirs, d)
	}
	if len(dirs) < 5 {
		t.Fatalf("only %d v1 hierarchies: %v", len(dirs), dirs)
	}
	return dirs
}

func TestLoadAfterNew(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	cg := newTestCgroup(t, parent, "loadme", isolation.Limits{MemoryBytes: 96 * mib, Pids: 50})
	h := startHelper(t, "work")
	if err := cg.AddProc(h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}

	got, err := Load(parent, "loadme")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Path() != cg.Path() || got.Version() != cg.Version() {
		t.Fatalf("Load = %s v%d, want %s v%d", got.Path(), got.Version(), cg.Path(), cg.Version())
	}
	st, err := got.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimitBytes != 96*mib || st.Pids == 0 {
		t.Fatalf("Stats after Load = %+v, want the 96 MiB limit and the helper", st)
	}
	if err := got.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := got.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(parent, "missing"); !isolation.IsNotFound(err) {
		t.Fatalf("Load of a missing cgroup: want ErrNotFound, got %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	newTestCgroup(t, parent, "taken", isolation.Limits{})
	tests := []struct {
		name           string
		parent, handle string
		limits         isolation.Limits
		is             func(error) bool
	}{
		{"existing cgroup", parent, "taken", isolation.Limits{}, isolation.IsAlreadyExists},
		{"handle with slash", parent, "a/b", isolation.Limits{}, isolation.IsInvalidSpec},
		{"dot-dot handle", parent, "..", isolation.Limits{}, isolation.IsInvalidSpec},
		{"empty parent", "", "h", isolation.Limits{}, isolation.IsInvalidSpec},
		{"parent escaping", "../etc", "h", isolation.Limits{}, isolation.IsInvalidSpec},
		{"cpu weight too big", parent, "w", isolation.Limits{CPUWeight: 101}, isolation.IsInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg, err := New(tt.parent, tt.handle, tt.limits)
			if err == nil {
				_ = cg.Delete()
				t.Fatal("New succeeded")
			}
			if !tt.is(err) {
				t.Fatalf("wrong error class: %v", err)
			}
		})
	}
	if cgroups.Mode() != cgroups.Unified {
		// A rejected spec leaves nothing behind.
		if _, err := Load(parent, "w"); !isolation.IsNotFound(err) {
			t.Fatalf("Load after a rejected New: %v", err)
		}
	}
}

func uintString(v uint64) string { return strconv.FormatUint(v, 10) }

// On v1 the cpuset directory is made here, not by containerd's cgroup1: under a parent that
// did not exist (two levels of it), the new cgroup has the root's CPUs and memory nodes, a
// process added to it is in it, and Delete removes it.
func TestCpusetFromParent(t *testing.T) {
	requireCgroups(t)
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("cgroup v2: no cpuset directory of its own")
	}
	root := "/sys/fs/cgroup/cpuset"
	if _, err := os.Stat(filepath.Join(root, "cpuset.cpus")); err != nil {
		t.Skip("no cpuset hierarchy")
	}
	parent := testParent(t) + "/nested"
	for round := 0; round < 2; round++ { // the second finds the parent prepared
		handle := "cpuset" + strconv.Itoa(round)
		cg, err := New(parent, handle, isolation.Limits{})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		dir := filepath.Join(root, parent, handle)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if got, want := readTrim(t, filepath.Join(dir, f)), readTrim(t, filepath.Join(root, f)); got != want || got == "" {
				t.Errorf("%s of the new cgroup = %q, the root's %q", f, got, want)
			}
		}
		h := startHelper(t, "work")
		if err := cg.AddProc(h.cmd.Process.Pid); err != nil {
			t.Fatalf("AddProc: %v", err)
		}
		if procs := readTrim(t, filepath.Join(dir, "cgroup.procs")); procs != strconv.Itoa(h.cmd.Process.Pid) {
			t.Errorf("cpuset cgroup.procs = %q, want the helper %d", procs, h.cmd.Process.Pid)
		}
		if err := cg.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := cg.Delete(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cpuset directory after Delete: %v", err)
		}
	}
}
