package resources

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// TestAdopt renames a populated cgroup on this host's v1 hierarchies: the process stays in it
// (it is never migrated), the cgroup answers to its new name in every hierarchy and not to its
// old one, and the limits are the container's.
func TestAdopt(t *testing.T) {
	requireCgroups(t)
	if !AdoptSupported() {
		t.Skip("a unified (v2) host: cgroup2 cannot rename")
	}
	parent := testParent(t)
	pool, err := New(parent, "@pool-1", isolation.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	if err := pool.AddProc(pid); err != nil {
		t.Fatal(err)
	}
	limits := isolation.Limits{MemoryBytes: 64 * mib, CPUWeight: 50, Pids: 100}
	cg, err := Adopt(parent, "@pool-1", "app", limits)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.Kill(); err != nil {
			t.Errorf("Kill: %v", err)
		}
		if err := cg.Delete(); err != nil {
			t.Errorf("Delete: %v", err)
		}
	})
	if cg.Path() != parent+"/app" {
		t.Fatalf("Path = %q, want %q", cg.Path(), parent+"/app")
	}
	if _, err := Load(parent, "@pool-1"); !isolation.IsNotFound(err) {
		t.Errorf("Load of the old name: want ErrNotFound, got %v", err)
	}
	d := cg.drv.(*v1)
	for name, dir := range d.dirs {
		pids, err := readProcs(dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Contains(pids, pid) {
			t.Errorf("%s hierarchy: pid %d not in %s (has %v)", name, pid, dir, pids)
		}
	}
	res, _ := ToSpec(limits)
	_, memswErr := os.Stat(filepath.Join(d.dirs["memory"], "memory.memsw.limit_in_bytes"))
	for _, s := range V1Settings(res, memswErr == nil) {
		if got := readTrim(t, filepath.Join(d.dirs[s.Controller], s.File)); got != s.Value {
			t.Errorf("%s = %q, want %q", s.File, got, s.Value)
		}
	}
	names, err := Children(parent)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"app"}) {
		t.Errorf("Children = %v, want [app]", names)
	}
	// /proc/<pid>/cgroup names the new path: the process followed the rename.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(splitLines(string(b)), func(l string) bool { return filepath.Base(l) == "app" }) {
		t.Errorf("/proc/%d/cgroup does not name the adopted cgroup:\n%s", pid, b)
	}
}

func splitLines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}

func TestAdoptRejects(t *testing.T) {
	requireCgroups(t)
	if !AdoptSupported() {
		t.Skip("a unified (v2) host: cgroup2 cannot rename")
	}
	parent := testParent(t)
	newTestCgroup(t, parent, "@pool-a", isolation.Limits{})
	newTestCgroup(t, parent, "taken", isolation.Limits{})
	tests := []struct {
		name, from, handle string
		limits             isolation.Limits
		is                 func(error) bool
	}{
		{"missing from", "@pool-none", "x", isolation.Limits{}, isolation.IsNotFound},
		{"handle exists", "@pool-a", "taken", isolation.Limits{}, isolation.IsAlreadyExists},
		{"bad handle", "@pool-a", "a/b", isolation.Limits{}, isolation.IsInvalidSpec},
		{"bad from", "../x", "y", isolation.Limits{}, isolation.IsInvalidSpec},
		{"bad limit", "@pool-a", "y", isolation.Limits{CPUWeight: 101}, isolation.IsInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Adopt(parent, tt.from, tt.handle, tt.limits); !tt.is(err) {
				t.Fatalf("Adopt(%q, %q): got %v", tt.from, tt.handle, err)
			}
			// Nothing was renamed: the pool's cgroup is still where it was.
			if _, err := Load(parent, "@pool-a"); err != nil {
				t.Fatalf("@pool-a after a refused Adopt: %v", err)
			}
		})
	}
}

// TestCgroup2RefusesRename pins the kernel fact Adopt relies on for v2: cgroup2 has no
// rename, so Adopt must not be used there. It runs on this host's hybrid cgroup2 mount.
func TestCgroup2RefusesRename(t *testing.T) {
	const hybrid = "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(hybrid, "cgroup.controllers")); err != nil {
		t.Skip("no hybrid cgroup2 mount here")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	parent := testParent(t)
	a := filepath.Join(hybrid, parent, "a")
	if err := os.MkdirAll(a, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeCgroupDir(filepath.Join(hybrid, parent)) })
	err := os.Rename(a, filepath.Join(hybrid, parent, "b"))
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rename on cgroup2: want EPERM, got %v (if the kernel now allows it, Adopt can support v2)", err)
	}
}

func TestPoolNames(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"@pool-1-2", true}, {"@", false}, {"@@x", false}, {"a@b", false}, {"@.", true}} {
		if err := validName("handle", tt.name); (err == nil) != tt.ok {
			t.Errorf("validName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
