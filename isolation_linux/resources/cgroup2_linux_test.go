package resources

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// The v2 tests run the v2 code against a plain directory laid out like cgroupfs, playing the
// kernel's part by hand: this host's cgroup2 mount has no controllers, so it cannot enforce
// anything (PLATFORM-NOTES), but the files written and read are the whole v2 interface.

// fakeUnified makes a unified hierarchy root with the given controllers available and an
// existing parent cgroup "trellis".
func fakeUnified(t *testing.T, controllers string) string {
	t.Helper()
	root := t.TempDir()
	for path, content := range map[string]string{
		"cgroup.controllers":             controllers,
		"cgroup.subtree_control":         "",
		"trellis/cgroup.controllers":     controllers,
		"trellis/cgroup.subtree_control": "",
	} {
		writeTestFile(t, filepath.Join(root, path), content)
	}
	return root
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestV2WritesLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits isolation.Limits
		want   map[string]string // file → exact content; "" means the file must not be written
	}{
		{
			name:   "all limits",
			limits: isolation.Limits{MemoryBytes: 64 * mib, CPUWeight: 50, Pids: 100},
			want: map[string]string{
				"memory.max":      "67108864",
				"memory.swap.max": "0",
				"cpu.weight":      "20",
				"pids.max":        "100",
			},
		},
		{
			name:   "cpu weight 100",
			limits: isolation.Limits{CPUWeight: 100},
			want:   map[string]string{"cpu.weight": "39", "memory.max": "", "memory.swap.max": "", "pids.max": ""},
		},
		{
			name:   "unlimited",
			limits: isolation.Limits{},
			want:   map[string]string{"cpu.weight": "", "memory.max": "", "memory.swap.max": "", "pids.max": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeUnified(t, "cpuset cpu io memory hugetlb pids rdma misc")
			res, err := ToSpec(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			cg, err := newCgroup2(root, "trellis/h", res)
			if err != nil {
				t.Fatalf("newCgroup2: %v", err)
			}
			if cg.Version() != 2 || cg.Path() != "trellis/h" {
				t.Fatalf("got %s v%d", cg.Path(), cg.Version())
			}
			// Controllers are enabled from the root down to the container's parent.
			for _, dir := range []string{root, filepath.Join(root, "trellis")} {
				if got := readTrim(t, filepath.Join(dir, "cgroup.subtree_control")); got != "+cpu +memory +pids" {
					t.Errorf("%s/cgroup.subtree_control = %q, want %q", dir, got, "+cpu +memory +pids")
				}
			}
			for file, want := range tt.want {
				p := filepath.Join(root, "trellis/h", file)
				b, err := os.ReadFile(p)
				switch {
				case want == "" && err == nil:
					t.Errorf("%s written (%q), want it left alone", file, b)
				case want != "" && err != nil:
					t.Errorf("%s: %v", file, err)
				case want != "" && string(b) != want:
					t.Errorf("%s = %q, want exactly %q", file, b, want)
				}
			}
		})
	}
}

func TestV2Rejects(t *testing.T) {
	t.Run("missing controller", func(t *testing.T) {
		root := fakeUnified(t, "cpu memory io")
		_, err := newCgroup2(root, "trellis/h", nil)
		if !isolation.IsUnsupported(err) {
			t.Fatalf("want ErrUnsupported, got %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, "trellis/h")); !os.IsNotExist(err) {
			t.Fatalf("cgroup directory created anyway: %v", err)
		}
	})
	t.Run("existing cgroup", func(t *testing.T) {
		root := fakeUnified(t, "cpu memory pids")
		writeTestFile(t, filepath.Join(root, "trellis/h/cgroup.procs"), "")
		if _, err := newCgroup2(root, "trellis/h", nil); !isolation.IsAlreadyExists(err) {
			t.Fatalf("want ErrAlreadyExists, got %v", err)
		}
	})
	t.Run("this host's controller-less cgroup2 mount", func(t *testing.T) {
		const hybrid = "/sys/fs/cgroup/unified"
		if _, err := os.Stat(filepath.Join(hybrid, "cgroup.controllers")); err != nil {
			t.Skip("no hybrid cgroup2 mount here")
		}
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		path := testParent(t) + "/h"
		if _, err := newCgroup2(hybrid, path, nil); !isolation.IsUnsupported(err) {
			t.Fatalf("want ErrUnsupported on a cgroup2 mount without controllers, got %v", err)
		}
	})
}

func TestV2Lifecycle(t *testing.T) {
	root := fakeUnified(t, "cpu memory pids")
	res, _ := ToSpec(isolation.Limits{MemoryBytes: 64 * mib})
	cg, err := newCgroup2(root, "trellis/h", res)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "trellis/h")
	kernel := func(file, content string) { t.Helper(); writeTestFile(t, filepath.Join(dir, file), content) }

	if err := cg.AddProc(4242); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Fatalf("cgroup.procs = %q, want 4242", got)
	}

	kernel("memory.current", "50331648\n")
	kernel("memory.stat", "anon 40000000\nfile 10331648\ninactive_file 8388608\nactive_file 1943040\n")
	kernel("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
	kernel("pids.current", "7\n")
	kernel("memory.events", "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{MemoryBytes: 50331648 - 8388608, MemoryLimitBytes: 64 * mib, CPUNanos: 1500000, Pids: 7}
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	kernel("memory.max", "max\n")
	if st, _ := cg.Stats(); st.MemoryLimitBytes != 0 {
		t.Fatalf("memory.max \"max\": MemoryLimitBytes = %d, want 0", st.MemoryLimitBytes)
	}

	events, err := cg.WatchOOM(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	kernel("memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 0\n")
	select {
	case <-events:
		t.Fatal("WatchOOM fired without an OOM kill")
	case <-time.After(100 * time.Millisecond):
	}
	kernel("memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
	select {
	case _, ok := <-events:
		if !ok {
			t.Fatal("WatchOOM closed instead of reporting")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchOOM did not report oom_kill 0 → 1")
	}
	if n, err := cg.OOMKills(); err != nil || n != 1 {
		t.Fatalf("OOMKills = %d, %v; want 1", n, err)
	}

	loaded, err := loadCgroup2(root, "trellis/h")
	if err != nil {
		t.Fatalf("loadCgroup2: %v", err)
	}
	if n, err := loaded.OOMKills(); err != nil || n != 1 {
		t.Fatalf("OOMKills after load = %d, %v; want 1", n, err)
	}

	// Kill writes cgroup.kill; the fake kernel does not act on it, so Kill reports ErrBusy
	// after its bound, and Delete refuses the populated cgroup.
	defer func(k, d time.Duration) { killTimeout, deleteTimeout = k, d }(killTimeout, deleteTimeout)
	killTimeout, deleteTimeout = 30*time.Millisecond, 30*time.Millisecond
	if err := cg.Kill(); !IsBusy(err) {
		t.Fatalf("Kill with a process that does not die: want ErrBusy, got %v", err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.kill")); got != "1" {
		t.Fatalf("cgroup.kill = %q, want 1", got)
	}
	if err := cg.Delete(); !IsBusy(err) {
		t.Fatalf("Delete of a populated cgroup: want ErrBusy, got %v", err)
	}

	kernel("cgroup.procs", "") // the process died
	if err := cg.Kill(); err != nil {
		t.Fatalf("Kill of an empty cgroup: %v", err)
	}
	if err := cg.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("cgroup directory left after Delete: %v", err)
	}
	select {
	case _, ok := <-events:
		if ok {
			t.Fatal("WatchOOM reported instead of closing on delete")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchOOM channel not closed after Delete")
	}
	if err := cg.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := cg.Stats(); !isolation.IsNotFound(err) {
		t.Fatalf("Stats after Delete: want ErrNotFound, got %v", err)
	}
	if _, err := loadCgroup2(root, "trellis/h"); !isolation.IsNotFound(err) {
		t.Fatalf("load after Delete: want ErrNotFound, got %v", err)
	}
}
