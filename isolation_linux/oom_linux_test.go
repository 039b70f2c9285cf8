package isolationlinux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// oomAgentEnv, when set in the environment of this test binary, makes it an "agent": a
// long-lived process holding a Backend over the Config in the named file (see TestMain and
// runOOMAgent). A kill or a hang of the agent is then observed by the test that started it
// instead of taking the test binary down.
const oomAgentEnv = "TRELLIS_TEST_OOM_AGENT"

// Parameters of the OOM scenario.
const (
	oomContainers  = 5
	oomLimit       = 16 << 20
	oomAllocate    = "dd if=/dev/zero of=/dev/null bs=96M count=1" // busybox dd fills a 96 MiB buffer
	oomBeatEvery   = 20 * time.Millisecond
	oomMaxBeatGap  = 3 * time.Second // the agent is unresponsive past this
	oomRunDeadline = 100 * time.Second
	// oomBallast is the agent's sparse mapping: 5120 page-table pages (20 MiB), more than
	// oomLimit, for 20 MiB of resident memory.
	oomBallast = 10 << 30
)

// oomReport is one line the agent writes on its stdout.
type oomReport struct {
	Beat       int      `json:"beat,omitempty"`
	Container  string   `json:"container,omitempty"`
	ExitCode   int      `json:"exit_code,omitempty"`
	Events     []string `json:"events,omitempty"`
	Error      string   `json:"error,omitempty"`
	Checkpoint bool     `json:"checkpoint,omitempty"`
	Done       bool     `json:"done,omitempty"`
}

// TestContainerOOMLeavesBackendAlone: containers with a 16 MiB limit that allocate far past
// it, one after the other, in a backend process that keeps working meanwhile. The backend
// process must survive and stay responsive (a heartbeat at least every oomMaxBeatGap), every
// container must be reported "out of memory" with exit 137, and no thread of the backend
// process may ever be seen in a container's cgroup — neither sampled at every heartbeat nor
// once every container has run.
func TestContainerOOMLeavesBackendAlone(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	// The test's own backend only cleans up (destroys what the agent leaves, removes the
	// cgroup parent) after the agent is gone.
	b := newTestBackend(t, cfg)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), oomAgentEnv+"="+cfgPath)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once the agent is reaped, with its exit in waitErr.
	exited := make(chan struct{})
	var waitErr error
	lines := make(chan oomReport)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			var r oomReport
			if err := json.Unmarshal(s.Bytes(), &r); err != nil {
				r = oomReport{Error: fmt.Sprintf("agent wrote %q: %v", s.Text(), err)}
			}
			lines <- r
		}
		close(lines)
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Bounded: a thread stuck in uninterruptible sleep keeps even a killed process from
		// being reaped.
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("the agent (pid %d) could not be reaped 10 s after SIGKILL", cmd.Process.Pid)
		}
		// Including the remains of a create the agent did not finish, which List skips.
		for i := range oomContainers {
			if err := b.Destroy(context.Background(), oomHandle(cmd.Process.Pid, i)); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	pid := cmd.Process.Pid
	fail := func(format string, args ...any) {
		t.Helper()
		t.Logf("agent threads:\n%s", describeThreads(pid))
		t.Fatalf(format, args...)
	}

	deadline := time.After(oomRunDeadline)
	reported := map[string]bool{}
	beats, samples := 0, 0
	for {
		gap := time.NewTimer(oomMaxBeatGap)
		var r oomReport
		var ok bool
		select {
		case r, ok = <-lines:
		case <-gap.C:
			fail("the agent is unresponsive: no heartbeat for %v (%d containers reported)", oomMaxBeatGap, len(reported))
		case <-deadline:
			fail("the agent did not finish within %v (%d containers reported)", oomRunDeadline, len(reported))
		}
		gap.Stop()
		if !ok {
			<-exited
			fail("the agent ended before it was done (%d containers reported): %v", len(reported), waitErr)
		}
		switch {
		case r.Error != "":
			fail("agent: %s", r.Error)
		case r.Beat > 0:
			beats++
			samples++
			if bad := threadsInContainerCgroups(pid, cfg.CgroupParent); len(bad) > 0 {
				fail("agent threads in a container cgroup while it works: %s", strings.Join(bad, "; "))
			}
		case r.Container != "":
			reported[r.Container] = true
			if r.ExitCode != 137 || !contains(r.Events, isolation.EventOutOfMemory) {
				fail("container %s allocating past %d MiB: exit %d, events %q; want 137 and %q", r.Container, oomLimit>>20, r.ExitCode, r.Events, isolation.EventOutOfMemory)
			}
		case r.Checkpoint:
			if len(reported) != oomContainers {
				fail("agent reached the checkpoint with %d containers reported, want %d", len(reported), oomContainers)
			}
			if bad := threadsInContainerCgroups(pid, cfg.CgroupParent); len(bad) > 0 {
				fail("agent threads left in a container cgroup after the run: %s", strings.Join(bad, "; "))
			}
			if _, err := io.WriteString(stdin, "destroy\n"); err != nil {
				fail("telling the agent to finish: %v", err)
			}
		case r.Done:
			for range lines {
			}
			<-exited
			if waitErr != nil {
				t.Fatalf("agent exit: %v", waitErr)
			}
			// How many heartbeats fit depends on how fast the containers run; the gap between
			// two of them is what shows a stalled agent, and it is checked as they arrive.
			if beats < 2 {
				t.Fatalf("only %d heartbeats during the run; the agent was not working", beats)
			}
			t.Logf("%d containers OOM-killed; %d heartbeats, each with the agent's threads checked", len(reported), samples)
			return
		}
	}
}

// threadsInContainerCgroups lists the threads of pid whose cgroup, in any hierarchy, is under
// the containers' cgroup parent.
func threadsInContainerCgroups(pid int, parent string) []string {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/cgroup", pid))
	var bad []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && strings.Contains(parts[2]+"/", "/"+parent+"/") {
				bad = append(bad, fmt.Sprintf("thread %s in %s:%s", filepath.Base(filepath.Dir(f)), parts[1], parts[2]))
			}
		}
	}
	return bad
}

// describeThreads reports every thread of pid: state, memory cgroup and kernel stack.
func describeThreads(pid int) string {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	var b strings.Builder
	for _, d := range dirs {
		stat, _ := os.ReadFile(filepath.Join(d, "stat"))
		state := "?"
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			state = string(stat[i+2])
		}
		var memcg string
		cg, _ := os.ReadFile(filepath.Join(d, "cgroup"))
		for _, line := range strings.Split(string(cg), "\n") {
			if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[1] == "memory" {
				memcg = parts[2]
			}
		}
		stack, _ := os.ReadFile(filepath.Join(d, "stack"))
		fmt.Fprintf(&b, "tid %s state %s memcg %s\n%s", filepath.Base(d), state, memcg, stack)
	}
	return b.String()
}

// runOOMAgent is the agent's side of TestContainerOOMLeavesBackendAlone: it reports a
// heartbeat every oomBeatEvery while allocating and collecting garbage (an agent's steady
// work), runs oomContainers containers into their memory limit one after the other, reports
// each, stops at a checkpoint until a line arrives on stdin, destroys them and reports done.
func runOOMAgent(cfgPath string) int {
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	report := func(r oomReport) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	failed := func(err error) int {
		report(oomReport{Error: err.Error()})
		return 1
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return failed(err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return failed(err)
	}
	ctx := context.Background()
	b, err := New(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return failed(err)
	}
	defer b.Close()

	// A large agent's address space: one touched page in every 2 MiB of a sparse mapping
	// gives the process more page tables than a container's whole memory limit, as an agent
	// with gigabytes of heap has. Forking copies them; they must never be charged to a
	// container's memory cgroup.
	ballast, err := unix.Mmap(-1, 0, oomBallast, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return failed(fmt.Errorf("mapping the ballast: %w", err))
	}
	defer unix.Munmap(ballast)
	for i := 0; i < len(ballast); i += 2 << 20 {
		ballast[i] = 1
	}

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		ring := make([][]byte, 64)
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(oomBeatEvery):
			}
			// Work that makes the runtime fault in heap, start threads and collect.
			buf := make([]byte, 256<<10)
			for i := range buf {
				buf[i] = byte(n + i)
			}
			ring[n%len(ring)] = buf
			if n%25 == 0 {
				runtime.GC()
			}
			report(oomReport{Beat: n})
		}
	}()

	var handles []string
	for i := range oomContainers {
		h := oomHandle(os.Getpid(), i)
		c, err := b.Create(ctx, isolation.ContainerSpec{Handle: h, RootFS: "preloaded:busybox", Network: isolation.NetworkNone,
			Limits: isolation.Limits{MemoryBytes: oomLimit}})
		if err != nil {
			return failed(err)
		}
		handles = append(handles, h)
		code, err := runAndWait(ctx, c, oomAllocate)
		if err != nil {
			return failed(fmt.Errorf("container %s: %w", h, err))
		}
		info, err := c.Info(ctx)
		if err != nil {
			return failed(fmt.Errorf("container %s: %w", h, err))
		}
		report(oomReport{Container: h, ExitCode: code, Events: info.Events})
	}
	report(oomReport{Checkpoint: true})
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return failed(fmt.Errorf("waiting at the checkpoint: %w", err))
	}
	var errs []error
	for _, h := range handles {
		errs = append(errs, b.Destroy(ctx, h))
	}
	if err := errors.Join(errs...); err != nil {
		return failed(err)
	}
	report(oomReport{Done: true})
	return 0
}

// oomHandle is the handle of the agent pid's container i.
func oomHandle(pid, i int) string { return fmt.Sprintf("oom%d-%d", pid, i) }

func runAndWait(ctx context.Context, c isolation.Container, script string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/bin/sh", Args: []string{"-c", script}}, isolation.ProcessIO{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		return 0, err
	}
	return p.Wait(ctx)
}
