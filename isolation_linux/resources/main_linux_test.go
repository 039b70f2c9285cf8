package resources

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

// helperEnv makes the test binary act as a workload instead of running tests. Each helper
// first waits for a line on stdin, so the test can move it into a cgroup before it starts.
const helperEnv = "TRELLIS_RESOURCES_HELPER"

func TestMain(m *testing.M) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		os.Exit(m.Run())
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(3)
	}
	switch mode {
	case "alloc":
		// Touch 200 MiB page by page: a 64 MiB cgroup must OOM-kill us on the way.
		b := make([]byte, 200<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("allocated", len(b))
		os.Exit(0)
	case "work":
		// Hold 16 MiB and burn 50ms of CPU, then wait to be killed.
		b := make([]byte, 16<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		for start := cpuTime(); cpuTime()-start < 50*time.Millisecond; {
		}
		fmt.Println("ready")
		time.Sleep(time.Hour)
		_ = b[0]
	}
	os.Exit(4)
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// helper is a gated workload process; its stdout and stderr go to files.
type helper struct {
	cmd     *exec.Cmd
	gate    io.WriteCloser
	outPath string
	errPath string
	done    chan error // receives cmd.Wait's result once
}

// startHelper starts the test binary in workload mode.
func startHelper(t *testing.T, mode string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return startGated(t, cmd)
}

// startShell runs script with /bin/sh after a gate line on stdin.
func startShell(t *testing.T, script string) *helper {
	t.Helper()
	return startGated(t, exec.Command("/bin/sh", "-c", "read gate; "+script))
}

func startGated(t *testing.T, cmd *exec.Cmd) *helper {
	t.Helper()
	dir := t.TempDir()
	h := &helper{cmd: cmd, outPath: filepath.Join(dir, "stdout"), errPath: filepath.Join(dir, "stderr"), done: make(chan error, 1)}
	out, err := os.Create(h.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(h.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = out, errf
	if h.gate, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	return h
}

// open lets the helper start its work.
func (h *helper) open(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(h.gate, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the helper to exit, at most d.
func (h *helper) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // keep it for Cleanup
		return err
	case <-time.After(d):
		t.Fatalf("helper %v still running after %v", h.cmd.Args, d)
		return nil
	}
}

// waitOutput waits until the helper's stdout contains s, at most d.
func (h *helper) waitOutput(t *testing.T, s string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(h.outPath); strings.Contains(string(b), s) {
			return
		}
	}
	t.Fatalf("helper did not print %q within %v", s, d)
}

func (h *helper) output(t *testing.T) (stdout, stderr string) {
	t.Helper()
	o, _ := os.ReadFile(h.outPath)
	e, _ := os.ReadFile(h.errPath)
	return string(o), string(e)
}

// requireCgroups skips unless this is root on a host with cgroups.
func requireCgroups(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroups")
	}
}

// testParent returns a cgroup parent unique to this test (others run tests on this machine at
// the same time) and removes it from every hierarchy when the test ends.
func testParent(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	parent := fmt.Sprintf("trellis-test-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))
	t.Cleanup(func() {
		for _, dir := range parentDirs(t, parent) {
			if err := removeCgroupDir(dir); err != nil {
				t.Errorf("remove test parent: %v", err)
			}
		}
	})
	return parent
}

func parentDirs(t testing.TB, parent string) []string {
	if cgroups.Mode() == cgroups.Unified {
		return []string{filepath.Join(unifiedRoot, parent)}
	}
	hier, err := cgroup1.Default()
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, d := range v1Dirs(parent, hier) {
		dirs = append(dirs, d)
	}
	return dirs
}
