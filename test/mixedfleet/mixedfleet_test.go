//go:build linux

package mixedfleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/models"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
)

// TestMixedFleet: a Windows LRP lands on the Windows cell (trellis.exe under wine, process
// mode) and a Linux LRP on the Linux cell, each answers on its reported address, rootfs
// pinning never puts an instance on the other cell (two instances each, so spreading would
// use both cells if it could), and `trellis cells` and `trellis lrp ls` show both.
func TestMixedFleet(t *testing.T) {
	f := setup(t)
	if os.Geteuid() != 0 {
		t.Skip("the Linux cell needs root (namespaces, cgroups, CNI)")
	}
	run := filepath.Join(f.dir, "fleet")
	linuxCell, winCell := fmt.Sprintf("linux-%d", f.id), fmt.Sprintf("win-%d", f.id)

	stack := filepath.Join(run, "busybox")
	if err := isolationlinux.BuildBusyboxStack(stack, ""); err != nil {
		t.Skipf("no busybox stack for the Linux cell (install busybox-static): %v", err)
	}
	lcfg := f.linuxAgentConfig(t, run, linuxCell, stack)
	linuxAgent := start(t, "linux agent", exec.Command(f.linuxBin, "agent", "run", "--config", lcfg.path))
	t.Cleanup(func() {
		linuxAgent.stop(syscall.SIGTERM, 20*time.Second)
		cleanupLinuxCell(t, lcfg.cfg)
	})

	wcfg := f.windowsAgentConfig(t, run, winCell)
	winAgent := start(t, "windows agent", exec.Command(f.wine, f.winBin, "agent", "run", "--config", winPath(wcfg)))
	t.Cleanup(func() {
		// Under wine a signal ends the Windows process at once (no drain); the instances
		// were removed before this runs, and anything left is killed by pid.
		winAgent.stop(syscall.SIGKILL, 5*time.Second)
		if killed := killProcessesUnder(run); len(killed) > 0 {
			t.Logf("killed leftover wine processes of this run: %q", killed)
		}
	})

	waitFor(t, 60*time.Second, "both cells present", func() (bool, string) {
		cells, _, err := f.store.Cells(context.Background())
		if err != nil {
			return false, err.Error()
		}
		os := map[string]string{}
		for _, c := range cells {
			os[c.CellID] = c.OS
		}
		return os[linuxCell] == "linux" && os[winCell] == "windows",
			fmt.Sprintf("cells %v\nlinux agent:\n%s\nwindows agent:\n%s", os, linuxAgent.output(), winAgent.output())
	})

	winGuid, linuxGuid := fmt.Sprintf("hello-win-%d", f.id), fmt.Sprintf("httpd-linux-%d", f.id)
	f.createLRP(t, run, windowsLRP(winGuid, f.droplet))
	f.createLRP(t, run, linuxLRP(linuxGuid))
	t.Cleanup(func() {
		// Remove the work first, so that each agent destroys its containers itself.
		for _, g := range []string{winGuid, linuxGuid} {
			f.store.RemoveDesiredLRP(context.Background(), g)
		}
		// Each agent logs a destroyed container; wait until all four are gone.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && (destroyed(winAgent) < 2 || destroyed(linuxAgent) < 2) {
			time.Sleep(200 * time.Millisecond)
		}
	})

	for _, tc := range []struct {
		guid, cell, want string
		agent            *process
	}{
		{winGuid, winCell, "hello from a windows cell: instance", winAgent},
		{linuxGuid, linuxCell, "hello from a linux cell", linuxAgent},
	} {
		waitFor(t, 90*time.Second, tc.guid+" running on "+tc.cell, func() (bool, string) {
			insts := f.instances(t, tc.guid)
			running := 0
			var desc []string
			for _, a := range insts {
				desc = append(desc, fmt.Sprintf("%d:%s@%s %s%s", a.Index, a.State, a.CellID, a.CrashReason, a.PlacementError))
				if a.CellID != "" && a.CellID != tc.cell {
					t.Fatalf("%s instance %d was placed on %s: rootfs pinning broken (%s)", tc.guid, a.Index, a.CellID, a.State)
				}
				if a.State == models.ActualLRPStateRunning {
					running++
				}
			}
			return running == 2, strings.Join(desc, ", ") + "\n" + tc.agent.output()
		})
		for _, a := range f.instances(t, tc.guid) {
			if a.CellID != tc.cell || len(a.Ports) != 1 || a.Ports[0].ContainerPort != 8080 {
				t.Fatalf("%s/%d: cell %s, ports %+v; want %s with 8080 mapped", tc.guid, a.Index, a.CellID, a.Ports, tc.cell)
			}
			url := "http://" + net.JoinHostPort(a.Address, strconv.Itoa(int(a.Ports[0].HostPort))) + "/"
			body, err := get(url)
			if err != nil || !strings.Contains(body, tc.want) {
				t.Fatalf("%s/%d at %s answered %q, %v; want %q", tc.guid, a.Index, url, body, err, tc.want)
			}
		}
	}

	// The operator's view, through the real CLI.
	cells := f.cli(t, "cells")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^` + linuxCell + `\s+z1\s+linux\s+preloaded:busybox\s`),
		regexp.MustCompile(`(?m)^` + winCell + `\s+z2\s+windows\s+preloaded:windows2016\s`),
	} {
		if !want.MatchString(cells) {
			t.Errorf("trellis cells does not match %s:\n%s", want, cells)
		}
	}
	lrps := f.cli(t, "lrp", "ls")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^` + winGuid + `\s+\S+\s+preloaded:windows2016\s+2/2\s`),
		regexp.MustCompile(`(?m)^` + linuxGuid + `\s+\S+\s+preloaded:busybox\s+2/2\s`),
	} {
		if !want.MatchString(lrps) {
			t.Errorf("trellis lrp ls does not match %s:\n%s", want, lrps)
		}
	}
}

// destroyed counts the containers an agent has logged as destroyed.
func destroyed(p *process) int { return strings.Count(p.output(), `msg="container destroyed"`) }

// windowsLRP is the hello-app droplet on the windows2016 stack, with a disk limit as real
// LRPs have (process mode enforces it with its disk watchdog).
func windowsLRP(guid, droplet string) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid, Domain: "mixedfleet", RootFS: "preloaded:windows2016", Instances: 2,
		MemoryMB: 64, DiskMB: 128, Ports: []uint32{8080},
		Env:    []models.EnvironmentVariable{{Name: "GREETING", Value: "hello from a windows cell"}},
		Setup:  &models.Action{Download: &models.DownloadAction{From: droplet, To: "/app", CacheKey: "hello-droplet-windows"}},
		Action: &models.Action{Run: &models.RunAction{Path: "/app/hello-app.exe"}},
		CheckDefinition: &models.CheckDefinition{Checks: []models.Check{
			{HTTP: &models.HTTPCheck{Port: 8080, Path: "/healthz", IntervalMs: 200, TimeoutMs: 1000}},
		}},
		StartTimeoutMs: 60000,
	}
}

// linuxLRP is busybox httpd on the busybox stack.
func linuxLRP(guid string) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid, Domain: "mixedfleet", RootFS: "preloaded:busybox", Instances: 2,
		MemoryMB: 64, DiskMB: 64, Ports: []uint32{8080},
		Action: &models.Action{Run: &models.RunAction{Path: "/bin/sh", Args: []string{"-c",
			`mkdir -p /www && echo "hello from a linux cell" > /www/index.html && exec httpd -f -p 8080 -h /www`}}},
		CheckDefinition: &models.CheckDefinition{Checks: []models.Check{
			{HTTP: &models.HTTPCheck{Port: 8080, Path: "/", IntervalMs: 200, TimeoutMs: 1000}},
		}},
		StartTimeoutMs: 30000,
	}
}

// createLRP creates lrp with `trellis lrp create -f`, as an operator would.
func (f *fleet) createLRP(t *testing.T, dir string, lrp *models.DesiredLRP) {
	t.Helper()
	data, err := json.Marshal(lrp)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, lrp.ProcessGuid+".json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f.cli(t, "lrp", "create", "-f", path)
}

type agentConfig struct {
	path string
	cfg  agent.Config
}

// linuxAgentConfig writes the Linux cell's configuration: its own bridge, subnet, cgroup
// parent, host ports and a short state directory (container sockets live in it).
func (f *fleet) linuxAgentConfig(t *testing.T, dir, cellID, stack string) agentConfig {
	t.Helper()
	cert, err := f.pki.IssueCell(cellID)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.CellID, cfg.Zone, cfg.Backend = cellID, "z1", agent.BackendLinux
	cfg.BBS = agent.BBSConfig{URL: f.bbs.URL(), CAFile: f.pki.CAFile, CertFile: cert.CertFile, KeyFile: cert.KeyFile}
	cfg.RootFSProviders = map[string]string{"preloaded:busybox": stack}
	cfg.DataDir = filepath.Join(dir, "linux-data")
	cfg.Capacity = agent.CapacityConfig{MemoryMB: 4096, DiskMB: 8192, Containers: 20}
	cfg.PresenceTTL = agent.Duration(3 * time.Second)
	cfg.GracefulStop = agent.Duration(time.Second)
	cfg.EvacuationTimeout = agent.Duration(2 * time.Second)
	id := f.id
	cfg.Linux = agent.LinuxConfig{
		BridgeName:    fmt.Sprintf("tmf%d", id),
		NetworkName:   fmt.Sprintf("trellis-mixedfleet-%d", id),
		Subnet:        fmt.Sprintf("10.%d.%d.0/24", 200+id%50, id%250),
		CgroupParent:  fmt.Sprintf("trellis-mixedfleet-%d", id),
		HostIP:        "127.0.0.1",
		HostPortRange: [2]uint32{uint32(47000 + id%100*20), uint32(47000 + id%100*20 + 19)},
		StateDir:      filepath.Join(dir, "lc"),
	}
	return agentConfig{path: writeYAML(t, filepath.Join(dir, "linux-agent.yaml"), cfg), cfg: cfg}
}

// windowsAgentConfig writes the Windows cell's configuration, with wine (Z:) paths: the
// windows2016 stack in process mode, its own host ports, the BBS on loopback.
func (f *fleet) windowsAgentConfig(t *testing.T, dir, cellID string) string {
	t.Helper()
	cert, err := f.pki.IssueCell(cellID)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"cell_id": cellID, "zone": "z2", "backend": "windows",
		"data_dir": winPath(filepath.Join(dir, "win-data")),
		"bbs": map[string]any{"url": f.bbs.URL(), "ca_file": winPath(f.pki.CAFile),
			"cert_file": winPath(cert.CertFile), "key_file": winPath(cert.KeyFile)},
		"rootfs_providers": map[string]string{"preloaded:windows2016": ""},
		"capacity":         map[string]int{"memory_mb": 4096, "disk_mb": 8192, "containers": 20},
		"presence_ttl":     "3s",
		"graceful_stop":    "1s",
		"windows": map[string]any{
			"stacks":          map[string]any{"windows2016": map[string]string{"mode": "process"}},
			"host_ip":         "127.0.0.1",
			"host_port_range": []int{48000 + f.id%100*20, 48000 + f.id%100*20 + 19},
		},
	}
	return writeYAML(t, filepath.Join(dir, "win-agent.yaml"), cfg)
}

func writeYAML(t *testing.T, path string, v any) string {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// cleanupLinuxCell destroys the containers the Linux agent left and uninstalls its container
// network (bridge and iptables chains, which otherwise pile up in the host's nat table), then
// removes its cgroup tree.
func cleanupLinuxCell(t *testing.T, cfg agent.Config) {
	if _, err := agent.DestroyContainers(context.Background(), cfg, nil); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	var dirs []string
	for _, root := range append([]string{"/sys/fs/cgroup/" + cfg.Linux.CgroupParent}, globAll("/sys/fs/cgroup/*/"+cfg.Linux.CgroupParent)...) {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children before their parents
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func globAll(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	return m
}
