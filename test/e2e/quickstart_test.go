package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// quickstartCells is a three-cell fleet: one cell per zone; cell-1 alone also provides the
// "pinned" stack.
const quickstartCells = `cells:
- {id: cell-1, zone: z1, stacks: [busybox, pinned]}
- {id: cell-2, zone: z2}
- {id: cell-3, zone: z3}
`

// startFleet starts a dev cluster with the three quickstart cells, serving the example
// droplets on the README's blob address, with a short presence TTL so cell loss shows quickly.
func startFleet(t *testing.T) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the dev cluster's Linux cells need root")
	}
	dir := t.TempDir()
	cellsFile := filepath.Join(dir, "cells.yaml")
	if err := os.WriteFile(cellsFile, []byte(quickstartCells), 0o644); err != nil {
		t.Fatal(err)
	}
	return startCluster(t, dir, "", "--cells-file", cellsFile, "--blobs-listen", "127.0.0.1:8890", "--presence-ttl", "3s")
}

// lrpView is `trellis lrp get --json`.
type lrpView struct {
	DesiredLRP models.DesiredLRP   `json:"desired_lrp"`
	ActualLRPs []*models.ActualLRP `json:"actual_lrps"`
}

func (c *cluster) lrp(guid string) lrpView {
	c.t.Helper()
	var v lrpView
	if err := json.Unmarshal([]byte(c.must("lrp", "get", guid, "--json")), &v); err != nil {
		c.t.Fatalf("lrp get %s --json: %v", guid, err)
	}
	return v
}

// running returns the ORDINARY RUNNING instances of guid.
func (v lrpView) running() []*models.ActualLRP {
	var out []*models.ActualLRP
	for _, a := range v.ActualLRPs {
		if a.Presence == models.PresenceOrdinary && a.State == models.ActualLRPStateRunning {
			out = append(out, a)
		}
	}
	return out
}

// waitFor polls cond every 250 ms until it holds or timeout passes, and returns how long it took.
// On a timeout it fails the test with what the cluster shows.
func (c *cluster) waitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			c.t.Fatalf("%s: not within %s\n%s\n%s\ntrellis dev:\n%s", what, timeout,
				c.run("lrp", "ls").stdout, c.run("visualize", "--once").stdout, c.output)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start)
}

// get fetches url and returns the body.
func get(t *testing.T, url string) string {
	t.Helper()
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return string(body)
}

func instanceURL(a *models.ActualLRP) string {
	return fmt.Sprintf("http://%s:%d/", a.Address, a.Ports[0].HostPort)
}

// TestQuickstart follows the README's quickstart step by step, with the same commands.
func TestQuickstart(t *testing.T) {
	c := startFleet(t)

	// 1. Desire the example app and curl it.
	c.must("lrp", "create", "-f", "examples/lrp-hello.json")
	c.waitFor(90*time.Second, "hello/0 RUNNING", func() bool { return len(c.lrp("hello").running()) == 1 })
	first := c.lrp("hello").running()[0]
	if body := get(t, instanceURL(first)); !strings.Contains(body, "hello from trellis: instance 0") {
		t.Fatalf("the app answered %q", body)
	}

	// 2. Scale it to 20: every instance runs, spread over the three cells.
	c.must("lrp", "scale", "hello", "20")
	took := c.waitFor(120*time.Second, "20 instances RUNNING", func() bool { return len(c.lrp("hello").running()) == 20 })
	t.Logf("scaled 1 -> 20 RUNNING in %s", took.Round(100*time.Millisecond))
	perCell := map[string]int{}
	for _, a := range c.lrp("hello").running() {
		perCell[a.CellID]++
		if body := get(t, instanceURL(a)); !strings.Contains(body, fmt.Sprintf("instance %d ", a.Index)) {
			t.Errorf("instance %d answered %q", a.Index, body)
		}
	}
	for _, cell := range []string{"cell-1", "cell-2", "cell-3"} {
		if perCell[cell] < 6 {
			t.Errorf("instances per cell = %v; want them spread (at least 6 on each)", perCell)
		}
	}
	if out := c.must("lrp", "ls"); !strings.Contains(out, "20/20") {
		t.Errorf("lrp ls:\n%s", out)
	}
	// 20 running marks, plus the legend's.
	if out := c.must("visualize", "--once"); strings.Count(out, "●") != 21 || !strings.Contains(out, "cell-3") {
		t.Errorf("visualize --once:\n%s", out)
	}

	// 3. Crash an instance: it comes back, with its crash counted.
	victim := c.lrp("hello").running()[3]
	resp, err := http.Post(instanceURL(victim)+"exit", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST /exit: %v", err)
	}
	resp.Body.Close()
	c.waitFor(60*time.Second, "the crashed instance RUNNING again", func() bool {
		for _, a := range c.lrp("hello").running() {
			if a.Index == victim.Index && a.CrashCount == 1 && a.InstanceGuid != victim.InstanceGuid {
				return true
			}
		}
		return false
	})

	// 4. A task runs and its result comes back.
	c.must("task", "create", "-f", "examples/task-hello.json")
	c.waitFor(60*time.Second, "the task COMPLETED", func() bool {
		return strings.Contains(c.must("task", "get", "hello-task"), "COMPLETED")
	})
	if out := c.must("task", "get", "hello-task"); !strings.Contains(out, "result      42") {
		t.Errorf("task get:\n%s", out)
	}
	if out := c.must("task", "resolve", "hello-task"); !strings.Contains(out, "result: 42") {
		t.Errorf("task resolve:\n%s", out)
	}

	// 5. Logs: the app's own lines, prefixed with its instance.
	if out := c.must("logs", "hello", "--index", "0"); !strings.Contains(out, "[APP/0]") || !strings.Contains(out, "hello-app listening") {
		t.Errorf("logs hello --index 0:\n%s", out)
	}

	// 6. Drain a cell: its instances move, and the cell leaves.
	c.must("cells", "drain", "cell-3", "--wait")
	v := c.lrp("hello")
	if n := len(v.running()); n != 20 {
		t.Errorf("%d instances RUNNING after the drain, want 20", n)
	}
	for _, a := range v.ActualLRPs {
		if a.CellID == "cell-3" {
			t.Errorf("instance %d still on the drained cell: %s %s", a.Index, a.State, a.Presence)
		}
	}
	if out := c.must("cells"); strings.Contains(out, "cell-3") {
		t.Errorf("the drained cell is still present:\n%s", out)
	}

	// 7. Work no cell can run shows Diego's placement error.
	c.must("lrp", "create", "-f", "examples/lrp-windows.json")
	c.waitFor(30*time.Second, "the placement error", func() bool {
		return strings.Contains(c.must("lrp", "get", "hello-windows"), "found no compatible cell for required rootfs")
	})
}

// TestFleetBehaviour: rootfs pinning, crash backoff, a task that runs exactly once, and cell
// loss, on a three-cell dev cluster driven through the CLI.
func TestFleetBehaviour(t *testing.T) {
	c := startFleet(t)

	// Pinned to a stack only cell-1 provides: lands only there.
	pinned := `{"process_guid":"pinned","domain":"e2e","rootfs":"preloaded:pinned","instances":3,"memory_mb":16,
		"action":{"run":{"path":"/bin/sh","args":["-c","exec sleep 3600"]}}}`
	c.must("lrp", "create", "-f", writeDoc(t, pinned))
	// An app that exits at once: crashes, restarts twice at once, then backs off.
	crasher := `{"process_guid":"crasher","domain":"e2e","rootfs":"preloaded:busybox","instances":1,"memory_mb":16,
		"action":{"run":{"path":"/bin/sh","args":["-c","echo bye; exit 3"]}}}`
	c.must("lrp", "create", "-f", writeDoc(t, crasher))
	// Spread over the fleet, to lose some with a cell.
	spread := `{"process_guid":"spread","domain":"e2e","rootfs":"preloaded:busybox","instances":6,"memory_mb":16,
		"action":{"run":{"path":"/bin/sh","args":["-c","exec sleep 3600"]}}}`
	c.must("lrp", "create", "-f", writeDoc(t, spread))

	c.waitFor(60*time.Second, "pinned and spread RUNNING", func() bool {
		return len(c.lrp("pinned").running()) == 3 && len(c.lrp("spread").running()) == 6
	})
	for _, a := range c.lrp("pinned").ActualLRPs {
		if a.CellID != "cell-1" {
			t.Errorf("pinned/%d on %s, want cell-1 (the only cell with the stack)", a.Index, a.CellID)
		}
	}

	backoff := regexp.MustCompile(`CRASHED .*exited with status 3; restarts in \d+s`)
	c.waitFor(60*time.Second, "the crasher backing off", func() bool {
		return backoff.MatchString(c.must("lrp", "get", "crasher"))
	})
	if v := c.lrp("crasher"); v.ActualLRPs[0].CrashCount != 3 {
		t.Errorf("crash count %d when backing off, want 3 (two immediate restarts, then a wait)", v.ActualLRPs[0].CrashCount)
	}

	// A task runs exactly once: it counts its runs in a file of a bind-free place — its result —
	// and the BBS must show one completion, one cell, no rejection.
	task := `{"task_guid":"once","domain":"e2e","rootfs":"preloaded:busybox","memory_mb":16,
		"action":{"run":{"path":"/bin/sh","args":["-c","date +%s%N > /tmp/ran; cat /tmp/ran > /tmp/result"]}},
		"result_file":"/tmp/result"}`
	c.must("task", "create", "-f", writeDoc(t, task))
	var done models.Task
	c.waitFor(60*time.Second, "the task COMPLETED", func() bool {
		if err := json.Unmarshal([]byte(c.must("task", "get", "once", "--json")), &done); err != nil {
			t.Fatal(err)
		}
		return done.State == models.TaskStateCompleted
	})
	if done.Failed || done.RejectionCount != 0 || strings.TrimSpace(done.Result) == "" {
		t.Errorf("task = failed %v (%s), rejections %d, result %q", done.Failed, done.FailureReason, done.RejectionCount, done.Result)
	}
	time.Sleep(2 * time.Second)
	var again models.Task
	json.Unmarshal([]byte(c.must("task", "get", "once", "--json")), &again)
	if again.Result != done.Result || again.State != models.TaskStateCompleted {
		t.Errorf("the task changed after completing (ran again?): %+v", again)
	}

	// Cell loss: kill cell-2's agent. Its heartbeat stops; its instances come back elsewhere.
	lost := 0
	for _, a := range c.lrp("spread").running() {
		if a.CellID == "cell-2" {
			lost++
		}
	}
	if lost == 0 {
		t.Fatalf("no spread instance on cell-2 to lose: %v", c.lrp("spread").ActualLRPs)
	}
	c.killCell(t, "cell-2")
	took := c.waitFor(30*time.Second, "every spread instance RUNNING off cell-2", func() bool {
		n := 0
		for _, a := range c.lrp("spread").running() {
			if a.CellID != "cell-2" {
				n++
			}
		}
		return n == 6
	})
	t.Logf("cell loss: %d instances RUNNING on other cells %s after the agent was killed (presence TTL 3s)", lost, took.Round(100*time.Millisecond))
	if took > 3*time.Second+5*time.Second {
		t.Errorf("recovery took %s, want within the presence TTL + 5s", took)
	}
}

// killCell kills the agent process of cellID with SIGKILL, as a machine failure would.
func (c *cluster) killCell(t *testing.T, cellID string) {
	t.Helper()
	re := regexp.MustCompile(`cell +` + regexp.QuoteMeta(cellID) + ` .*log (\S+)/agent\.log`)
	m := re.FindStringSubmatch(c.output.String())
	if m == nil {
		t.Fatalf("no log path for %s in the dev output:\n%s", cellID, c.output)
	}
	config := filepath.Join(m[1], "agent.yaml")
	pids, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(data), config) || !strings.Contains(string(data), "agent\x00run") {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
		proc, err := os.FindProcess(pid)
		if err == nil && proc.Kill() == nil {
			return
		}
	}
	t.Fatalf("no agent process of %s found", cellID)
}

// writeDoc writes a JSON document to a temporary file and returns its path.
func writeDoc(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
