package isolationlinux

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	lines := cgroupLines(t, fmt.Sprintf("/proc/%d/cgroup", rec.InitPid))
	joined := 0
	for ctrl, path := range lines {
		if ctrl == "" {
			continue // the v2 line of a hybrid host, where trellis makes no cgroup
		}
		if _, ok := mountOf(b.cgroupV1, strings.Split(ctrl, ",")[0]); !ok {
			continue
		}
		if !strings.HasSuffix(path, want) {
			t.Errorf("init is in %s:%s, want .../%s", ctrl, path, want)
		}
		joined++
	}
	if joined == 0 {
		t.Fatalf("init is in no v1 hierarchy: %v", lines)
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

func TestUnescapeMountPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory"},
		{`/mnt/with\040space`, "/mnt/with space"},
		{`/a\134b`, `/a\b`},
		{`/trailing\04`, `/trailing\04`},
		{`/not\999octal`, `/not\999octal`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := unescapeMountPath(tt.in); got != tt.want {
				t.Errorf("unescapeMountPath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMountOf(t *testing.T) {
	mounts := []cgroupMount{
		{dir: "/sys/fs/cgroup/cpu,cpuacct", root: "/", opts: "rw,cpu,cpuacct"},
		{dir: "/sys/fs/cgroup/systemd", root: "/", opts: "rw,xattr,name=systemd"},
	}
	tests := []struct {
		ctrl, want string
		ok         bool
	}{
		{"cpuacct", "/sys/fs/cgroup/cpu,cpuacct", true},
		{"name=systemd", "/sys/fs/cgroup/systemd", true},
		{"memory", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.ctrl, func(t *testing.T) {
			m, ok := mountOf(mounts, tt.ctrl)
			if ok != tt.ok || m.dir != tt.want {
				t.Errorf("mountOf(%q) = %q, %v; want %q, %v", tt.ctrl, m.dir, ok, tt.want, tt.ok)
			}
		})
	}
}
