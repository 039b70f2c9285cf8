package agent

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// TestRestartReattaches: stopping the agent leaves the app running; a new agent over the same
// host re-attaches to the same process (not started again), keeps the instance guid and keeps
// reporting it.
func TestRestartReattaches(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	cfg := e.testConfig(t, cellID)
	mem := memoryBackend(t)
	first := startAgent(t, e, cfg, mem)
	op := e.operator(t)
	guid := uniq("web")
	desireAndPlace(t, e, webLRP(guid, 1), cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	addr := "http://" + net.JoinHostPort(rec.InstanceAddress, "8080") + "/"

	first.stop(t)
	if body, err := get(t, addr); err != nil || body != "hello from 0" {
		t.Fatalf("app with the agent stopped: %q, %v", body, err)
	}
	reopened := isolationtest.ReopenMemory(mem.State())
	registerPrograms(reopened)
	second := startAgent(t, e, cfg, reopened)
	waitFor(t, 10*time.Second, "the new agent runs the instance again", func() bool {
		cs := second.Containers()
		return len(cs) == 1 && cs[0].State == StateRunning && cs[0].InstanceGuid == rec.InstanceGuid
	})
	if n := starts(rec.InstanceGuid); n != 1 {
		t.Fatalf("the app was started %d times; want 1 (re-attached, not restarted)", n)
	}
	now := ordinary(t, op, guid, 0)
	if now.State != models.ActualLRPStateRunning || now.InstanceGuid != rec.InstanceGuid || now.CrashCount != 0 {
		t.Fatalf("record after the restart = %+v", now)
	}
	if body, err := get(t, addr); err != nil || body != "hello from 0" {
		t.Fatalf("app after the restart: %q, %v", body, err)
	}
	// The re-attached instance is still supervised: its exit is reported.
	c, _ := reopened.Lookup(context.Background(), rec.InstanceGuid)
	info, _ := c.Info(context.Background())
	for _, id := range info.ProcessIDs {
		p, err := c.Attach(context.Background(), id, isolation.ProcessIO{})
		if err == nil {
			p.Signal(context.Background(), isolation.SignalKill)
		}
	}
	crashed := waitState(t, op, guid, 0, models.ActualLRPStateCrashed, 10*time.Second)
	if crashed.CrashReason != "exited with status 137" {
		t.Fatalf("crash after re-attach = %q", crashed.CrashReason)
	}
}

// TestReconcileAfterRestart: a container without a record is destroyed; records of this cell
// whose containers are gone are reported crashed / failed, never run again.
func TestReconcileAfterRestart(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	ctx := context.Background()
	cfg := e.testConfig(t, cellID)
	cell := e.clientFor(t, mustIssue(t, e, cellID))
	op := e.operator(t)

	// An instance the BBS believes RUNNING here, and a RUNNING task.
	guid := uniq("ghost")
	desireAndPlace(t, e, webLRP(guid, 1), cellID)
	key := models.ActualLRPKey{ProcessGuid: guid, Index: 0, Domain: "tests"}
	ik := models.ActualLRPInstanceKey{InstanceGuid: "gone-instance", CellID: cellID}
	if _, err := cell.ClaimActualLRP(ctx, key, ik); err != nil {
		t.Fatal(err)
	}
	if _, err := cell.StartActualLRP(ctx, key, ik, models.ActualLRPNetInfo{Address: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	tg := uniq("ghost-task")
	desireTaskOn(t, e, &models.Task{TaskGuid: tg, Domain: "tests", RootFS: "preloaded:cflinuxfs4",
		Action: &models.Action{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: []string{"sleep"}}}}, cellID)
	if ok, err := cell.StartTask(ctx, tg, cellID); err != nil || !ok {
		t.Fatalf("StartTask = %v, %v", ok, err)
	}

	// A container of this cell that no record knows.
	mem := memoryBackend(t)
	orphan := uniq("orphan")
	props := lrpProperties(cellID, models.ActualLRPKey{ProcessGuid: orphan, Domain: "tests"}, "orphan-instance", models.Resources{MemoryMB: 1})
	props[PropPhase] = phaseAction
	if _, err := mem.Create(ctx, isolation.ContainerSpec{Handle: "orphan-instance", RootFS: "preloaded:cflinuxfs4", Properties: props}); err != nil {
		t.Fatal(err)
	}
	// And one of another cell, which is none of this agent's business.
	other := lrpProperties("another-cell", models.ActualLRPKey{ProcessGuid: orphan, Domain: "tests"}, "other-instance", models.Resources{})
	if _, err := mem.Create(ctx, isolation.ContainerSpec{Handle: "other-instance", RootFS: "preloaded:cflinuxfs4", Properties: other}); err != nil {
		t.Fatal(err)
	}

	startAgent(t, e, cfg, mem)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateCrashed, 10*time.Second)
	if rec.CrashReason != ReasonVanished {
		t.Fatalf("vanished instance crashed with %q", rec.CrashReason)
	}
	task := waitTask(t, op, tg, 10*time.Second)
	if !task.Failed || task.FailureReason != ReasonVanished {
		t.Fatalf("vanished task = %+v", task)
	}
	waitFor(t, 10*time.Second, "the orphan container is destroyed", func() bool {
		_, err := mem.Lookup(ctx, "orphan-instance")
		return isolation.IsNotFound(err)
	})
	if _, err := mem.Lookup(ctx, "other-instance"); err != nil {
		t.Fatalf("the container of another cell was touched: %v", err)
	}
}

func mustIssue(t *testing.T, e *bbsEnv, cellID string) certs.Files {
	t.Helper()
	f, err := e.pki.IssueCell(cellID)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestDrainEvacuates: draining a cell with a RUNNING instance while a second cell is free:
// the old container answers every request until the replacement on the second cell is
// RUNNING, then stops; the drained cell's presence goes and its Run returns. The old
// container stops when the brain retires its EVACUATING record (the test plays the brain's
// converger), or, without that, when the agent looks for the replacement itself.
func TestDrainEvacuates(t *testing.T) {
	for _, tc := range []struct {
		name         string
		brainRetires bool
	}{
		{"the brain retires the evacuating record", true},
		{"the agent looks for its replacement", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.brainRetires {
				look, lookMax := evacuationLook, evacuationLookMax
				evacuationLook, evacuationLookMax = 100*time.Millisecond, 400*time.Millisecond
				t.Cleanup(func() { evacuationLook, evacuationLookMax = look, lookMax })
			}
			testDrainEvacuates(t, tc.brainRetires)
		})
	}
}

func testDrainEvacuates(t *testing.T, brainRetires bool) {
	e := testBBS(t)
	cellA, cellB := uniq("cell-a"), uniq("cell-b")
	memA, memB := memoryBackend(t), memoryBackend(t)
	a := startAgent(t, e, e.testConfig(t, cellA), memA)
	startAgent(t, e, e.testConfig(t, cellB), memB)
	op, brain := e.operator(t), e.brain(t)
	ctx := context.Background()
	guid := uniq("web")
	desireAndPlace(t, e, webLRP(guid, 1), cellA)
	old := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	oldAddr := "http://" + net.JoinHostPort(old.InstanceAddress, "8080") + "/"

	// Poll the old instance until the replacement runs.
	var served, dropped atomic.Int64
	var firstDrop atomic.Value
	replaced := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-replaced:
				return
			default:
			}
			if _, err := get(t, oldAddr); err != nil {
				select {
				case <-replaced:
					return
				default:
				}
				dropped.Add(1)
				firstDrop.CompareAndSwap(nil, err.Error())
			} else {
				served.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	if _, err := op.DrainCell(ctx, cellA); err != nil {
		t.Fatal(err)
	}
	// The brain's part: place the UNCLAIMED replacement on the free cell.
	waitFor(t, 10*time.Second, "an UNCLAIMED replacement and an EVACUATING copy", func() bool {
		r := ordinary(t, op, guid, 0)
		return r.State == models.ActualLRPStateUnclaimed && r.CellID == ""
	})
	if _, err := brain.PlaceActualLRP(ctx, models.ActualLRPKey{ProcessGuid: guid, Domain: "tests"}, cellB, 0); err != nil {
		t.Fatal(err)
	}
	if p, err := op.Cell(ctx, cellA); err == nil && !p.Draining {
		t.Fatalf("drained cell presence = %+v, want draining", p)
	}
	repl := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	close(replaced)
	wg.Wait()
	if repl.CellID != cellB || repl.InstanceGuid == old.InstanceGuid {
		t.Fatalf("replacement = %+v", repl)
	}
	if dropped.Load() != 0 || served.Load() == 0 {
		t.Fatalf("old instance served %d requests and dropped %d (first: %v) before the replacement ran",
			served.Load(), dropped.Load(), firstDrop.Load())
	}
	if brainRetires {
		// The converger's part: the replacement runs, so the EVACUATING copy is retired.
		key := models.ActualLRPKey{ProcessGuid: guid, Domain: "tests"}
		if err := brain.RetireActualLRP(ctx, key, models.PresenceEvacuating, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the old container stops", func() bool { return memA.Len() == 0 })
	waitFor(t, 10*time.Second, "the EVACUATING record is removed", func() bool {
		idx := int32(0)
		recs, _, _ := op.ActualLRPs(ctx, storeFilter(guid, &idx))
		return len(recs) == 1
	})
	select {
	case <-a.Drained():
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not finish")
	}
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if _, err := op.Cell(ctx, cellA); !models.IsNotFound(err) {
		t.Fatalf("drained cell still present: %v", err)
	}
	// Work placed on a draining cell is refused (the cell is gone now; place on B instead).
	if body, err := get(t, "http://"+net.JoinHostPort(repl.InstanceAddress, "8080")+"/"); err != nil || body != "hello from 0" {
		t.Fatalf("replacement answered %q, %v", body, err)
	}
}

// TestDownloads: a droplet downloaded twice with the same cache key is fetched once; a wrong
// checksum fails the work with a clear reason.
func TestDownloads(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	mem := memoryBackend(t)
	startAgent(t, e, e.testConfig(t, cellID), mem)
	op := e.operator(t)

	droplet := tarball(t, map[string]string{"app/start": "#!/bin/sh\n", "app/VERSION": "v1"})
	sum := sha256.Sum256(droplet)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Write(droplet)
	}))
	t.Cleanup(srv.Close)

	task := func(checksum string) *models.Task {
		return &models.Task{TaskGuid: uniq("stage"), Domain: "tests", RootFS: "preloaded:cflinuxfs4",
			Action: &models.Action{Serial: &models.SerialAction{Actions: []*models.Action{
				{Download: &models.DownloadAction{From: srv.URL + "/droplet", To: "/home", CacheKey: "droplet-" + cellID,
					ChecksumAlgorithm: "sha256", ChecksumValue: checksum}},
				{Run: &models.RunAction{Path: isolationtest.TestProgramPath, Args: []string{"read-file", "/home/app/VERSION"}}},
			}}},
			ResultFile: "/home/app/VERSION",
		}
	}
	for i := 0; i < 2; i++ {
		tk := task(hex.EncodeToString(sum[:]))
		desireTaskOn(t, e, tk, cellID)
		done := waitTask(t, op, tk.TaskGuid, 10*time.Second)
		if done.Failed || done.Result != "v1" {
			t.Fatalf("task %d: %+v", i, done)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("the droplet was fetched %d times; want once", n)
	}

	bad := task(strings.Repeat("0", 64))
	bad.Action.Serial.Actions[0].Download.CacheKey = "other-" + cellID
	desireTaskOn(t, e, bad, cellID)
	done := waitTask(t, op, bad.TaskGuid, 10*time.Second)
	if !done.Failed || !strings.Contains(done.FailureReason, "checksum mismatch") {
		t.Fatalf("task with a wrong checksum: failed=%v reason %q", done.Failed, done.FailureReason)
	}

	// The same for an LRP's setup: its instance crashes with the reason.
	guid := uniq("web")
	lrp := webLRP(guid, 1)
	lrp.Setup = &models.Action{Download: &models.DownloadAction{From: srv.URL + "/droplet", To: "/home", CacheKey: "lrp-" + cellID,
		ChecksumAlgorithm: "sha256", ChecksumValue: strings.Repeat("1", 64)}}
	desireAndPlace(t, e, lrp, cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateCrashed, 10*time.Second)
	if !strings.Contains(rec.CrashReason, "checksum mismatch") {
		t.Fatalf("instance with a wrong droplet checksum crashed with %q", rec.CrashReason)
	}
}

func tarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write([]byte(content))
	}
	tw.Close()
	return buf.Bytes()
}

// TestAPI: the agent's HTTPS API serves logs (also followed) and metrics to the operator and
// refuses other identities.
func TestAPI(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	a := startAgent(t, e, e.testConfig(t, cellID), memoryBackend(t))
	op := e.operator(t)
	guid := uniq("web")
	desireAndPlace(t, e, webLRP(guid, 2), cellID)
	waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	waitState(t, op, guid, 1, models.ActualLRPStateRunning, 10*time.Second)

	opHTTP := httpsClient(t, e, e.pki.Operator)
	base := "https://" + a.APIAddress()

	var lines []LogLine
	waitFor(t, 5*time.Second, "both instances' output in the logs", func() bool {
		lines = readLogLines(t, opHTTP, base+"/v1/logs?process_guid="+guid)
		return len(distinct(lines, func(l LogLine) string { return fmt.Sprint(l.Index, l.Source, l.Stream) })) >= 5
	})
	for _, want := range []string{"0 APP OUT", "0 APP ERR", "1 APP OUT", "0 HEALTH OUT"} {
		if !distinct(lines, func(l LogLine) string { return fmt.Sprint(l.Index, " ", l.Source, " ", l.Stream) })[want] {
			t.Errorf("logs lack a %q line: %+v", want, lines)
		}
	}
	one := readLogLines(t, opHTTP, base+"/v1/logs?process_guid="+guid+"&index=1")
	for _, l := range one {
		if l.Index != 1 || l.ProcessGuid != guid {
			t.Fatalf("?index=1 returned %+v", l)
		}
	}

	// follow: a line written after the request arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/logs?process_guid="+guid+"&index=0&follow=true", nil)
	resp, err := opHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	inst := a.Containers()[0]
	for _, c := range a.Containers() {
		if c.Index == 0 {
			inst = c
		}
	}
	w, err := a.Logs().Writer("CELL", logsInstance(inst.InstanceGuid, 0))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w.Stdout(), "marker after the request")
	w.Close()
	sc := bufio.NewScanner(resp.Body)
	found := false
	for sc.Scan() {
		var l LogLine
		json.Unmarshal(sc.Bytes(), &l)
		if l.Text == "marker after the request" {
			found = true
			break
		}
	}
	if !found {
		t.Fatalf("following the log never showed the new line: %v", sc.Err())
	}

	var mr MetricsResponse
	getJSON(t, opHTTP, base+"/v1/metrics", &mr)
	if mr.CellID != cellID || len(mr.Instances) != 2 || mr.Instances[0].ProcessGuid != guid {
		t.Fatalf("metrics = %+v", mr)
	}
	var cr ContainersResponse
	getJSON(t, opHTTP, base+"/v1/containers", &cr)
	if len(cr.Containers) != 2 || cr.Containers[0].State != StateRunning {
		t.Fatalf("containers = %+v", cr)
	}

	for _, tc := range []struct {
		name   string
		files  *certs.Files
		status int
	}{
		{"brain", &e.pki.Brain, http.StatusForbidden},
		{"no certificate", nil, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *http.Client
			if tc.files == nil {
				c = httpsClient(t, e, certs.Files{})
			} else {
				c = httpsClient(t, e, *tc.files)
			}
			resp, err := c.Get(base + "/v1/metrics")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

func httpsClient(t *testing.T, e *bbsEnv, files certs.Files) *http.Client {
	t.Helper()
	tc, err := certs.ClientTLSConfig(e.pki.CAFile, files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func readLogLines(t *testing.T, c *http.Client, url string) []LogLine {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var out []LogLine
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func distinct[T any](xs []T, key func(T) string) map[string]bool {
	out := map[string]bool{}
	for _, x := range xs {
		out[key(x)] = true
	}
	return out
}
