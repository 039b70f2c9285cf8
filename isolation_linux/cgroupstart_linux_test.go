package isolationlinux

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// TestInitBornInCgroup checks that the init starts inside the container's cgroup in every
// hierarchy, and that no thread of the backend stays there.
func TestInitBornInCgroup(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	want := "/" + cfg.CgroupParent + "/" + c.Handle()
	// The hierarchies the container's cgroup exists in (v1: one directory each).
	dirs, err := filepath.Glob("/sys/fs/cgroup/*" + want)
	if err != nil {
		t.Fatal(err)
	}
	lines := cgroupLines(t, fmt.Sprintf("/proc/%d/cgroup", rec.InitPid))
	var joined []string
	for ctrl, path := range lines {
		if strings.HasSuffix(path, want) {
			joined = append(joined, ctrl)
		}
	}
	if len(dirs) == 0 || len(joined) != len(dirs) || lines["memory"] != want {
		t.Fatalf("init is in the container's cgroup in %q, want the %d hierarchies %q (memory included): %v", joined, len(dirs), dirs, lines)
	}
	tasks, err := filepath.Glob("/proc/self/task/*/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		for ctrl, path := range cgroupLines(t, task) {
			if strings.Contains(path, c.Handle()) {
				t.Errorf("backend thread %s stayed in the container's cgroup %s:%s", task, ctrl, path)
			}
		}
	}
}

// cgroupLines reads a /proc/.../cgroup file into controllers → path.
func cgroupLines(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out
}

// TestInitChargedToContainer: on cgroup v1, where the init is moved into its cgroup after the
// fork, the memory it touched before the move (charged to the backend's memory cgroup, where
// v1 leaves it) is small: its anonymous memory is charged to the container's memory cgroup
// except for less than preMoveBudget.
func TestInitChargedToContainer(t *testing.T) {
	t.Parallel()
	const preMoveBudget = 2 << 20
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Limits.MemoryBytes = 64 << 20 })
	memcg := filepath.Join("/sys/fs/cgroup/memory", cfg.CgroupParent, c.Handle())
	if _, err := os.Stat(memcg); err != nil {
		t.Skipf("no cgroup v1 memory hierarchy: %v", err)
	}
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	// Only the init runs in the container now, so the container's own anonymous charge
	// (memory.stat rss, this cgroup alone) is the init's, minus what was charged before
	// the move. The kernel folds per-CPU stat updates in lazily (at the latest every 2 s),
	// so the figures are read until they agree or 3 s have passed.
	var anon, charged uint64
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		anon = statusKiB(t, rec.InitPid, "RssAnon") << 10
		charged = memStat(t, memcg, "rss")
		if anon <= charged+preMoveBudget || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("init: %d KiB anonymous resident, %d KiB of it charged to the container", anon>>10, charged>>10)
	if anon > charged+preMoveBudget {
		t.Fatalf("%d KiB of the init's %d KiB anonymous memory are charged outside its container (budget %d KiB)", (anon-charged)>>10, anon>>10, preMoveBudget>>10)
	}
}

// statusKiB reads a "<key>: <n> kB" line of /proc/<pid>/status.
func statusKiB(t *testing.T, pid int, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// memStat reads a key of a v1 memory cgroup's memory.stat.
func memStat(t *testing.T, dir, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in %s/memory.stat", key, dir)
	return 0
}
