package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.CellID = "cell-1"
		c.BBS = BBSConfig{URL: "https://bbs:8889", CAFile: "/ca", CertFile: "/c", KeyFile: "/k"}
		c.RootFSProviders = map[string]string{"preloaded:busybox": "/stacks/busybox", "docker": ""}
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"cell_id", func(c *Config) { c.CellID = "" }},
		{"cell_id", func(c *Config) { c.CellID = "a/b" }},
		{"zone", func(c *Config) { c.Zone = "" }},
		{"bbs.url", func(c *Config) { c.BBS.URL = "" }},
		{"bbs.url", func(c *Config) { c.BBS.URL = "http://bbs:8889" }},
		{"bbs.cert_file", func(c *Config) { c.BBS.CertFile = "" }},
		{"capacity.memory_mb", func(c *Config) { c.Capacity.MemoryMB = -1 }},
		{"max_concurrent_creates", func(c *Config) { c.MaxConcurrentCreates = -1 }},
		{"rootfs_providers", func(c *Config) { c.RootFSProviders = nil }},
		{`rootfs_providers["preloaded:busybox"]`, func(c *Config) { c.RootFSProviders["preloaded:busybox"] = "" }},
		{`rootfs_providers["preloaded:busybox"]`, func(c *Config) { c.RootFSProviders["preloaded:busybox"] = "relative" }},
		{`rootfs_providers["docker"]`, func(c *Config) { c.RootFSProviders["docker"] = "/x" }},
		{`rootfs_providers["ftp"]`, func(c *Config) { c.RootFSProviders["ftp"] = "" }},
		{"data_dir", func(c *Config) { c.DataDir = "rel" }},
		{"backend", func(c *Config) { c.Backend = "solaris" }},
		{"presence_ttl", func(c *Config) { c.PresenceTTL = Duration(100 * time.Millisecond) }},
		{"reconcile_interval", func(c *Config) { c.ReconcileInterval = 0 }},
		{"graceful_stop", func(c *Config) { c.GracefulStop = -1 }},
		{"log_bytes_per_instance", func(c *Config) { c.LogBytesPerInstance = 10 }},
		{"api.listen", func(c *Config) { c.API.Listen = "nohostport" }},
		{"api.cert_file", func(c *Config) { c.API.Listen = "127.0.0.1:7443" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if !IsInvalidConfig(err) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %s", err, tc.field)
			}
		})
	}
	t.Run("memory backend needs no stack paths", func(t *testing.T) {
		c := valid()
		c.Backend = BackendMemory
		c.RootFSProviders["preloaded:busybox"] = ""
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	yaml := `cell_id: cell-7
zone: z2
bbs:
  url: https://127.0.0.1:8889
  ca_file: pki/ca.crt
  cert_file: pki/cell-cell-7.crt
  key_file: pki/cell-cell-7.key
capacity: {memory_mb: 2048}
rootfs_providers:
  preloaded:busybox: stacks/busybox
  docker: ""
placement_tags: [gpu]
data_dir: /var/lib/trellis/agent-7
backend: linux
presence_ttl: 6s
evacuation_timeout: 2m
graceful_stop: 3
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.CellID != "cell-7" || c.Zone != "z2" || c.Capacity.MemoryMB != 2048 || c.Capacity.DiskMB != 0 ||
		time.Duration(c.PresenceTTL) != 6*time.Second || time.Duration(c.EvacuationTimeout) != 2*time.Minute ||
		time.Duration(c.GracefulStop) != 3*time.Second || time.Duration(c.ReconcileInterval) != DefaultReconcileInterval ||
		!slices.Equal(c.PlacementTags, []string{"gpu"}) {
		t.Fatalf("LoadConfig = %+v", c)
	}
	if c.BBS.CAFile != filepath.Join(dir, "pki/ca.crt") || c.RootFSProviders["preloaded:busybox"] != filepath.Join(dir, "stacks/busybox") {
		t.Fatalf("relative paths not resolved against the file: %+v", c)
	}
	if got := c.providers(); !slices.Equal(got, []string{"docker", "preloaded:busybox"}) {
		t.Fatalf("providers = %v", got)
	}
	os.WriteFile(path, []byte(yaml+"surprise: 1\n"), 0o600)
	if _, err := LoadConfig(path); !IsInvalidConfig(err) || !strings.Contains(err.Error(), "surprise") {
		t.Fatalf("unknown field: %v, want ErrInvalidConfig naming it", err)
	}
}

// webLRP is an LRP of progWeb on port 8080 with an HTTP health check.
func webLRP(guid string, instances int32) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid, Domain: "tests", RootFS: "preloaded:cflinuxfs4", Instances: instances,
		MemoryMB: 64, DiskMB: 64, Ports: []uint32{8080},
		Action: &models.Action{Run: &models.RunAction{Path: progWeb}},
		CheckDefinition: &models.CheckDefinition{Checks: []models.Check{
			{HTTP: &models.HTTPCheck{Port: 8080, Path: "/", IntervalMs: 50, TimeoutMs: 500}},
		}},
		StartTimeoutMs: 10000,
	}
}

func get(t *testing.T, url string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestPresenceAndLRPLifecycle: the cell announces itself; an instance placed on it is
// claimed, runs, passes its HTTP check and is reported RUNNING with its addresses; its app
// answers there; retiring it stops and destroys its container.
func TestPresenceAndLRPLifecycle(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	cfg := e.testConfig(t, cellID)
	cfg.PlacementTags = []string{"blue"}
	cfg.Capacity = CapacityConfig{MemoryMB: 1024}
	mem := memoryBackend(t)
	a := startAgent(t, e, cfg, mem)
	op := e.operator(t)
	ctx := context.Background()

	p, err := op.Cell(ctx, cellID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Zone != "z1" || p.OS != "linux" || p.Capacity.MemoryMB != 1024 || p.Capacity.DiskMB != 64<<10 ||
		p.Capacity.Containers != 250 || !slices.Equal(p.RootFSProviders, []string{"docker", "preloaded:cflinuxfs4"}) ||
		!slices.Equal(p.PlacementTags, []string{"blue"}) || p.Draining || p.Available == nil || p.Address != a.APIAddress() {
		t.Fatalf("presence = %+v (api %s)", p, a.APIAddress())
	}

	guid := uniq("web")
	desireAndPlace(t, e, webLRP(guid, 2), cellID)
	for i := int32(0); i < 2; i++ {
		rec := waitState(t, op, guid, i, models.ActualLRPStateRunning, 10*time.Second)
		if rec.CellID != cellID || rec.InstanceGuid == "" || rec.Address != "127.0.0.1" || rec.InstanceAddress == "" ||
			len(rec.Ports) != 1 || rec.Ports[0].ContainerPort != 8080 || rec.Ports[0].HostPort == 0 {
			t.Fatalf("RUNNING record = %+v", rec)
		}
		body, err := get(t, "http://"+net.JoinHostPort(rec.InstanceAddress, "8080")+"/")
		if err != nil || body != "hello from "+strconv.Itoa(int(i)) {
			t.Fatalf("app of index %d answered %q, %v", i, body, err)
		}
		c, err := mem.Lookup(ctx, rec.InstanceGuid)
		if err != nil {
			t.Fatalf("container of the instance: %v", err)
		}
		props, _ := c.Properties(ctx)
		if props[PropProcessGuid] != guid || props[PropIndex] != strconv.Itoa(int(i)) || props[PropInstanceGuid] != rec.InstanceGuid {
			t.Fatalf("container properties = %v", props)
		}
		spec, _ := mem.Spec(rec.InstanceGuid)
		if spec.Limits.MemoryBytes != 64<<20 || spec.Limits.DiskBytes != 64<<20 {
			t.Fatalf("container limits = %+v", spec.Limits)
		}
	}
	waitFor(t, 5*time.Second, "available memory reflects two instances", func() bool {
		p, err := op.Cell(ctx, cellID)
		return err == nil && p.Available.MemoryMB == 1024-128 && p.Available.Containers == 248
	})
	for _, s := range a.Containers() {
		if s.State != StateRunning || s.ProcessGuid != guid {
			t.Fatalf("container status = %+v, want running", s)
		}
	}

	if err := op.RemoveDesiredLRP(ctx, guid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "containers destroyed after retirement", func() bool { return mem.Len() == 0 })
	waitFor(t, 5*time.Second, "the agent forgets them", func() bool { return len(a.Containers()) == 0 })
}

// TestCrashReasons: an app that exits, one that exceeds its memory and one whose health check
// fails are reported CRASHED with the reason, and their containers are destroyed.
func TestCrashReasons(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	mem := memoryBackend(t)
	startAgent(t, e, e.testConfig(t, cellID), mem)
	op := e.operator(t)
	for _, tc := range []struct {
		name   string
		mutate func(*models.DesiredLRP)
		reason string
	}{
		{"exit", func(d *models.DesiredLRP) {
			d.Action = &models.Action{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: []string{"exit", "3"}}}
			d.CheckDefinition = nil
		}, "exited with status 3"},
		{"out of memory", func(d *models.DesiredLRP) {
			d.Action = &models.Action{Run: &models.RunAction{Path: progHog, Args: []string{"100"}}}
		}, ReasonOutOfMemory},
		{"disk limit", func(d *models.DesiredLRP) {
			d.Action = &models.Action{Run: &models.RunAction{Path: progFill, Args: []string{"100"}}}
		}, ReasonDiskLimit + " (exited with status 1)"},
		{"health check", func(d *models.DesiredLRP) {
			d.CheckDefinition.Checks[0] = models.Check{TCP: &models.TCPCheck{Port: 9999, IntervalMs: 50, TimeoutMs: 200}}
			d.StartTimeoutMs = 500
		}, "health check failed"},
		{"setup", func(d *models.DesiredLRP) {
			d.Setup = &models.Action{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: []string{"exit", "7"}}}
		}, "setup failed: exited with status 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guid := uniq("crash")
			lrp := webLRP(guid, 1)
			tc.mutate(lrp)
			desireAndPlace(t, e, lrp, cellID)
			rec := waitState(t, op, guid, 0, models.ActualLRPStateCrashed, 15*time.Second)
			if !strings.HasPrefix(rec.CrashReason, tc.reason) || rec.CrashCount != 1 {
				t.Fatalf("crashed record = %+v, want reason starting %q", rec, tc.reason)
			}
			waitFor(t, 10*time.Second, "the crashed container is destroyed", func() bool {
				cs, _ := mem.List(context.Background(), isolation.Properties{PropProcessGuid: guid})
				return len(cs) == 0
			})
		})
	}
}

// TestRejectsWhatDoesNotFit: an instance or task larger than what is left is handed back with
// Diego's reason.
func TestRejectsWhatDoesNotFit(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	cfg := e.testConfig(t, cellID)
	cfg.Capacity = CapacityConfig{MemoryMB: 100, DiskMB: 1000}
	startAgent(t, e, cfg, memoryBackend(t))
	op := e.operator(t)
	guid := uniq("big")
	lrp := webLRP(guid, 1)
	lrp.MemoryMB, lrp.DiskMB = 200, 2000
	desireAndPlace(t, e, lrp, cellID)
	waitFor(t, 10*time.Second, "the instance is rejected", func() bool {
		r := ordinary(t, op, guid, 0)
		return r.State == models.ActualLRPStateUnclaimed && r.PlacementError != ""
	})
	if r := ordinary(t, op, guid, 0); r.PlacementError != "insufficient resources: memory, disk" || r.CellID != "" {
		t.Fatalf("rejected record = %+v", r)
	}

	tg := uniq("bigtask")
	desireTaskOn(t, e, &models.Task{TaskGuid: tg, Domain: "tests", RootFS: "preloaded:cflinuxfs4", MemoryMB: 500,
		Action: &models.Action{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: []string{"exit", "0"}}}}, cellID)
	waitFor(t, 10*time.Second, "the task is rejected", func() bool {
		task, err := op.Task(context.Background(), tg)
		return err == nil && task.RejectionCount == 1
	})
	if task, _ := op.Task(context.Background(), tg); task.State != models.TaskStatePending || task.RejectionReason != "insufficient resources: memory" {
		t.Fatalf("rejected task = %+v", task)
	}
}

// TestTasks: a task's result comes back; a failing task completes failed with its reason; a
// cancelled task's container is destroyed.
func TestTasks(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	mem := memoryBackend(t)
	startAgent(t, e, e.testConfig(t, cellID), mem)
	op := e.operator(t)
	run := func(args ...string) *models.Action {
		return &models.Action{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: args}}
	}
	big := strings.Repeat("x", MaxResultBytes+100)
	for _, tc := range []struct {
		name       string
		action     *models.Action
		resultFile string
		failed     bool
		reason     string
		result     string
	}{
		{"result", &models.Action{Serial: &models.SerialAction{Actions: []*models.Action{
			run("write-file", "/result.json", `{"answer":42}`), run("echo", "done", ""),
		}}}, "/result.json", false, "", `{"answer":42}`},
		{"result truncated to 10 KiB", run("write-file", "/r", big), "/r", false, "", big[:MaxResultBytes]},
		{"exit status", run("exit", "2"), "", true, "exited with status 2", ""},
		{"missing result file", run("exit", "0"), "/nope", true, "failed to read result file /nope", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guid := uniq("task")
			desireTaskOn(t, e, &models.Task{TaskGuid: guid, Domain: "tests", RootFS: "preloaded:cflinuxfs4",
				MemoryMB: 32, Action: tc.action, ResultFile: tc.resultFile}, cellID)
			task := waitTask(t, op, guid, 10*time.Second)
			if task.Failed != tc.failed || !strings.HasPrefix(task.FailureReason, tc.reason) || task.Result != tc.result {
				t.Fatalf("completed task: failed=%v reason=%q result=%d bytes; want failed=%v reason %q result %d bytes",
					task.Failed, task.FailureReason, len(task.Result), tc.failed, tc.reason, len(tc.result))
			}
			waitFor(t, 5*time.Second, "the task's container is destroyed", func() bool {
				_, err := mem.Lookup(context.Background(), guid)
				return isolation.IsNotFound(err)
			})
		})
	}
	t.Run("cancel", func(t *testing.T) {
		guid := uniq("task")
		desireTaskOn(t, e, &models.Task{TaskGuid: guid, Domain: "tests", RootFS: "preloaded:cflinuxfs4",
			Action: run("sleep")}, cellID)
		waitFor(t, 10*time.Second, "the task's container exists", func() bool {
			_, err := mem.Lookup(context.Background(), guid)
			return err == nil
		})
		if _, err := op.CancelTask(context.Background(), guid); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the cancelled task's container is destroyed", func() bool {
			_, err := mem.Lookup(context.Background(), guid)
			return isolation.IsNotFound(err)
		})
		if task, _ := op.Task(context.Background(), guid); task.FailureReason != "task was cancelled" {
			t.Fatalf("cancelled task = %+v", task)
		}
	})
}
