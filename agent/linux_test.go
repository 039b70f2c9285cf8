//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-run/trellis/bbs/models"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

var (
	stackOnce sync.Once
	stackDir  string
	stackErr  error
)

// linuxConfig is a Linux-backend agent configuration with a bridge, subnet, network name and
// cgroup parent of its own, so that parallel test runs on the machine do not collide. It skips
// the test without root.
func linuxConfig(t *testing.T, e *bbsEnv, cellID string) Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Linux backend needs root")
	}
	stackOnce.Do(func() {
		stackDir = filepath.Join(e.dir, "busybox")
		stackErr = isolationlinux.BuildBusyboxStack(stackDir, "")
	})
	if stackErr != nil {
		t.Skipf("no busybox stack: %v", stackErr)
	}
	cfg := e.testConfig(t, cellID)
	cfg.Backend = BackendLinux
	cfg.RootFSProviders = map[string]string{"preloaded:busybox": stackDir}
	cfg.GracefulStop = Duration(time.Second)
	n := int(backendSeq.Add(1))
	id := (os.Getpid()*7 + n) % 10000
	cfg.Linux = LinuxConfig{
		BridgeName:   fmt.Sprintf("tra%d", id),
		NetworkName:  fmt.Sprintf("trellis-agent-test-%d", id),
		Subnet:       fmt.Sprintf("10.%d.%d.0/24", 150+id%50, id%250),
		CgroupParent: fmt.Sprintf("trellis-agent-test-%d", id),
		HostIP:       "127.0.0.1",
		// Host ports of its own too: another run's leftover DNAT rules must not shadow ours.
		HostPortRange: [2]uint32{uint32(62000 + id%100*20), uint32(62000 + id%100*20 + 19)},
		// Short: a container's init socket lives in its state dir (sun_path has 108 bytes).
		StateDir: fmt.Sprintf("/tmp/tra%d", id),
	}
	t.Cleanup(func() {
		cleanupLinux(t, cfg)
		os.RemoveAll(cfg.Linux.StateDir)
	})
	return cfg
}

// cleanupLinux removes what the test's agents left on the host: their containers, the
// container network (bridge and iptables chains, which otherwise pile up in the host's nat
// table), volumes still mounted under the cell's disk dir, and the cgroup parent.
func cleanupLinux(t *testing.T, cfg Config) {
	t.Helper()
	ctx := context.Background()
	lc := linuxBackendConfig(cfg)
	b, err := isolationlinux.New(ctx, lc, testLogger(t))
	if err != nil {
		t.Errorf("cleanup: open the backend: %v", err)
	} else {
		cs, err := b.List(ctx, nil)
		if err != nil {
			t.Errorf("cleanup: list containers: %v", err)
		}
		for _, c := range cs {
			if err := b.Destroy(ctx, c.Handle()); err != nil {
				t.Errorf("cleanup: destroy %s: %v", c.Handle(), err)
			}
		}
		if err := b.UninstallNetwork(ctx); err != nil {
			t.Errorf("cleanup: uninstall network %s: %v", cfg.Linux.NetworkName, err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("cleanup: close the backend: %v", err)
		}
	}
	releaseVolumes(t, lc.DiskDir)
	if err := resources.RemoveTree(cfg.Linux.CgroupParent); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// releaseVolumes unmounts and removes the disk volumes still mounted under diskDir. An
// in-process agent's work goroutines outlive Run: one that inspects its container (Info, which
// reads the disk usage) while the cleanup's backend destroys it can mount the volume again
// from the image file about to be removed, and the mount then outlives the test. Once the
// image is gone nothing can mount it again, so a second pass after the stragglers have run
// finds nothing.
func releaseVolumes(t *testing.T, diskDir string) {
	t.Helper()
	volumes := filepath.Join(diskDir, "volumes") + "/"
	for pass := 0; pass < 2; pass++ {
		if pass > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		mounts, err := mountsUnder(volumes)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if len(mounts) == 0 {
			continue
		}
		q, err := resources.NewDiskQuota(diskDir)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, m := range mounts {
			handle := strings.SplitN(strings.TrimPrefix(m, volumes), "/", 2)[0]
			t.Logf("cleanup: volume %s was still mounted after its container was destroyed; releasing it", handle)
			if err := q.Release(handle); err != nil {
				t.Errorf("cleanup: release volume %s: %v", handle, err)
			}
		}
	}
}

// mountsUnder lists the mount points of this mount namespace below prefix.
func mountsUnder(prefix string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], prefix) {
			out = append(out, f[4])
		}
	}
	return out, nil
}

// httpdLRP serves /www with busybox httpd on 8080; the page "pid" holds httpd's pid and
// "starts" gets a line per start.
func httpdLRP(guid string) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid, Domain: "tests", RootFS: "preloaded:busybox", Instances: 1,
		MemoryMB: 64, DiskMB: 64, Ports: []uint32{8080},
		Action: &models.Action{Run: &models.RunAction{Path: "/bin/sh", Args: []string{"-c",
			`mkdir -p /www && echo hello > /www/index.html && echo x >> /www/starts && echo $$ > /www/pid && exec httpd -f -p 8080 -h /www`}}},
		CheckDefinition: &models.CheckDefinition{Checks: []models.Check{
			{HTTP: &models.HTTPCheck{Port: 8080, Path: "/index.html", IntervalMs: 100, TimeoutMs: 1000}},
		}},
		StartTimeoutMs: 20000,
	}
}

// TestLinuxLRPWithHealthCheck: on the real Linux backend an httpd instance with an HTTP check
// reaches RUNNING and answers on the reported host port.
func TestLinuxLRPWithHealthCheck(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("linux")
	cfg := linuxConfig(t, e, cellID)
	startAgent(t, e, cfg, nil)
	op := e.operator(t)

	guid := uniq("httpd")
	desireAndPlace(t, e, httpdLRP(guid), cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 60*time.Second)
	if rec.Address != "127.0.0.1" || len(rec.Ports) != 1 || rec.Ports[0].HostPort == 0 {
		t.Fatalf("RUNNING record = %+v", rec)
	}
	url := fmt.Sprintf("http://%s/index.html", net.JoinHostPort(rec.Address, strconv.Itoa(int(rec.Ports[0].HostPort))))
	if body, err := get(t, url); err != nil || body != "hello\n" {
		t.Fatalf("GET %s = %q, %v", url, body, err)
	}
}

// TestLinuxLRPOutOfMemory: on the real Linux backend an instance whose app allocates past its
// memory_mb is OOM-killed in its container and reported CRASHED with the reason "out of
// memory", while the agent (this test process) carries on.
func TestLinuxLRPOutOfMemory(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("linux")
	cfg := linuxConfig(t, e, cellID)
	startAgent(t, e, cfg, nil)
	op := e.operator(t)

	guid := uniq("hog")
	lrp := httpdLRP(guid)
	lrp.MemoryMB = 16
	// busybox dd fills a 96 MiB buffer: the kernel kills it at the 16 MiB limit.
	lrp.Action = &models.Action{Run: &models.RunAction{Path: "/bin/sh", Args: []string{"-c",
		`dd if=/dev/zero of=/dev/null bs=96M count=1`}}}
	lrp.CheckDefinition = nil
	desireAndPlace(t, e, lrp, cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateCrashed, 60*time.Second)
	if !strings.Contains(rec.CrashReason, "out of memory") {
		t.Fatalf("crashed record = %+v, want a crash reason containing %q", rec, "out of memory")
	}
}

// agentProcess is a real agent process (this test binary in child mode).
type agentProcess struct {
	cmd *exec.Cmd
}

// startChild runs an agent process over cfg.
func startChild(t *testing.T, cfg Config) *agentProcess {
	t.Helper()
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+path)
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProcess{cmd: cmd}
	t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL and reaps the process.
func (p *agentProcess) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// TestLinuxAgentKilledMidTask: SIGKILL to the agent process while a task runs, then a new
// agent: the task's process kept running, its exit and result are collected by the new agent,
// and it never ran a second time (its download happened once, its script started once).
func TestLinuxAgentKilledMidTask(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("linux")
	cfg := linuxConfig(t, e, cellID)
	var downloads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.Add(1)
		w.Write([]byte("input data\n"))
	}))
	t.Cleanup(srv.Close)
	op := e.operator(t)

	first := startChild(t, cfg)
	waitFor(t, 30*time.Second, "the agent process is present", func() bool {
		_, err := op.Cell(context.Background(), cellID)
		return err == nil
	})
	guid := uniq("task")
	desireTaskOn(t, e, &models.Task{TaskGuid: guid, Domain: "tests", RootFS: "preloaded:busybox", MemoryMB: 32, DiskMB: 64,
		Action: &models.Action{Serial: &models.SerialAction{Actions: []*models.Action{
			{Download: &models.DownloadAction{From: srv.URL + "/input", To: "/in"}},
			{Run: &models.RunAction{Path: "/bin/sh", Args: []string{"-c",
				`echo started; echo started >> /starts; sleep 3; cat /in/input /starts > /result`}}},
		}}},
		ResultFile: "/result",
	}, cellID)
	logFile := filepath.Join(cfg.DataDir, "logs", guid+".log")
	waitFor(t, 30*time.Second, "the task's process has started", func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Contains(string(b), "started")
	})
	first.kill()

	startChild(t, cfg)
	task := waitTask(t, op, guid, 60*time.Second)
	if task.Failed || task.Result != "input data\nstarted\n" {
		t.Fatalf("task after the agent was killed: failed=%v reason=%q result=%q", task.Failed, task.FailureReason, task.Result)
	}
	if n := downloads.Load(); n != 1 {
		t.Fatalf("the task's download ran %d times; want once", n)
	}
}

// TestLinuxAgentKilledKeepsApp: SIGKILL to the agent leaves the app serving; the next agent
// re-attaches to the same process (same pid, started once) and reports the same instance.
func TestLinuxAgentKilledKeepsApp(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("linux")
	cfg := linuxConfig(t, e, cellID)
	op := e.operator(t)
	first := startChild(t, cfg)
	waitFor(t, 30*time.Second, "the agent process is present", func() bool {
		_, err := op.Cell(context.Background(), cellID)
		return err == nil
	})
	guid := uniq("httpd")
	desireAndPlace(t, e, httpdLRP(guid), cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 60*time.Second)
	base := fmt.Sprintf("http://%s/", net.JoinHostPort(rec.Address, strconv.Itoa(int(rec.Ports[0].HostPort))))
	pid, err := get(t, base+"pid")
	if err != nil {
		t.Fatal(err)
	}

	first.kill()
	if body, err := get(t, base+"index.html"); err != nil || body != "hello\n" {
		t.Fatalf("app with the agent killed: %q, %v", body, err)
	}
	startChild(t, cfg)
	opHTTP := httpsClient(t, e, e.pki.Operator)
	var cr ContainersResponse
	waitFor(t, 30*time.Second, "the new agent reports the instance running", func() bool {
		p, err := op.Cell(context.Background(), cellID)
		if err != nil || p.Address == "" {
			return false
		}
		resp, err := opHTTP.Get("https://" + p.Address + "/v1/containers")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&cr) != nil || len(cr.Containers) != 1 {
			return false
		}
		return cr.Containers[0].State == StateRunning
	})
	if c := cr.Containers[0]; c.InstanceGuid != rec.InstanceGuid {
		t.Fatalf("the new agent runs %+v; want instance %s", c, rec.InstanceGuid)
	}
	now := ordinary(t, op, guid, 0)
	if now.State != models.ActualLRPStateRunning || now.InstanceGuid != rec.InstanceGuid || now.CrashCount != 0 {
		t.Fatalf("record after the restart = %+v", now)
	}
	if again, err := get(t, base+"pid"); err != nil || again != pid {
		t.Fatalf("pid after the restart = %q (%v), before %q", again, err, pid)
	}
	if s, err := get(t, base+"starts"); err != nil || s != "x\n" {
		t.Fatalf("the app started %q times (%v); want once", s, err)
	}
}
