package resources

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/containerd/cgroups/v3"

	"github.com/trellis-run/trellis/isolation"
)

// BenchmarkCgroupLifecycle is what a container start does to cgroups on this host: make one
// (a pooled init's), move a process into it, and remove one, with the process moved on to the
// next cgroup first. Run with -benchtime to compare changes to cgroup creation side by side.
func BenchmarkCgroupLifecycle(b *testing.B) {
	if os.Geteuid() != 0 || cgroups.Mode() == cgroups.Unavailable {
		b.Skip("needs root and cgroups")
	}
	parent := fmt.Sprintf("trellis-bench-%d", os.Getpid())
	defer func() {
		for _, dir := range parentDirs(b, parent) {
			_ = removeCgroupDir(dir)
		}
	}()
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	var prev *Cgroup
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cg, err := New(parent, fmt.Sprintf("c%d", i), isolation.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if err := cg.AddProc(sleeper.Process.Pid); err != nil {
			b.Fatal(err)
		}
		if prev != nil {
			if err := prev.Delete(); err != nil {
				b.Fatal(err)
			}
		}
		prev = cg
	}
	b.StopTimer()
	sleeper.Process.Kill()
	sleeper.Wait()
	if prev != nil {
		_ = prev.Delete()
	}
}
