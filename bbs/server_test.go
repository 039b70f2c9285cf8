package bbs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func testLRP(guid string, instances int32) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid,
		Domain:      "tests",
		RootFS:      "preloaded:busybox",
		Instances:   instances,
		MemoryMB:    64,
		DiskMB:      64,
		Action:      &models.Action{Run: &models.RunAction{Path: "/bin/sh", Args: []string{"-c", "sleep 1000"}, User: "vcap"}},
	}
}

func testTask(guid string) *models.Task {
	return &models.Task{
		TaskGuid: guid,
		Domain:   "tests",
		RootFS:   "preloaded:busybox",
		MemoryMB: 32,
		DiskMB:   32,
		Action:   &models.Action{Run: &models.RunAction{Path: "/bin/true", User: "vcap"}},
	}
}

func testCell(id string) *models.CellPresence {
	return &models.CellPresence{
		CellID: id, Zone: "z1", OS: "linux",
		Capacity:        models.Resources{MemoryMB: 4096, DiskMB: 8192, Containers: 100},
		RootFSProviders: []string{"preloaded:busybox", "docker"},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDesiredLRPLifecycle drives a DesiredLRP and one instance through the operator, brain and
// cell roles over real mTLS and a real store.
func TestDesiredLRPLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cellA := e.client("operator"), e.client("brain"), e.client("cell:cell-a")

	created, err := op.DesireLRP(ctx, testLRP("web", 2))
	if err != nil {
		t.Fatal(err)
	}
	if created.Revision == 0 || created.CreatedAt == 0 {
		t.Fatalf("created record lacks revision or created_at: %+v", created)
	}
	if _, err := op.DesireLRP(ctx, testLRP("web", 2)); !models.IsAlreadyExists(err) {
		t.Fatalf("second DesireLRP = %v, want AlreadyExists", err)
	}
	got, err := cellA.DesiredLRP(ctx, "web") // reads are open to every role
	if err != nil || got.Instances != 2 || got.RootFS != "preloaded:busybox" {
		t.Fatalf("DesiredLRP = %+v, %v", got, err)
	}
	list, rev, err := brain.DesiredLRPs(ctx, store.DesiredLRPFilter{Domain: "tests"})
	if err != nil || len(list) != 1 || rev < created.Revision {
		t.Fatalf("DesiredLRPs = %d records at %d, %v", len(list), rev, err)
	}
	if list, _, err := brain.DesiredLRPs(ctx, store.DesiredLRPFilter{ProcessGuids: []string{"nope", "web"}}); err != nil || len(list) != 1 {
		t.Fatalf("DesiredLRPs by guid = %d, %v", len(list), err)
	}

	actuals, _, err := op.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: "web"})
	if err != nil || len(actuals) != 2 {
		t.Fatalf("ActualLRPs = %d, %v; want the 2 UNCLAIMED instances", len(actuals), err)
	}

	// Update with a stale If-Match is refused; with the current one it applies.
	three := int32(3)
	if _, err := op.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &three}, created.Revision-1); !models.IsConflict(err) {
		t.Fatalf("stale update = %v, want Conflict", err)
	}
	updated, err := op.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &three}, created.Revision)
	if err != nil || updated.Instances != 3 {
		t.Fatalf("UpdateDesiredLRP = %+v, %v", updated, err)
	}

	// brain places index 0 on cell-a; the cell claims, starts, crashes; the brain restarts it.
	key := models.ActualLRPKey{ProcessGuid: "web", Index: 0}
	placed, err := brain.PlaceActualLRP(ctx, key, "cell-a", 0)
	if err != nil || placed.CellID != "cell-a" || placed.State != models.ActualLRPStateUnclaimed {
		t.Fatalf("PlaceActualLRP = %+v, %v", placed, err)
	}
	ik := models.ActualLRPInstanceKey{InstanceGuid: "inst-1", CellID: "cell-a"}
	if lrp, err := cellA.ClaimActualLRP(ctx, key, ik); err != nil || lrp.State != models.ActualLRPStateClaimed {
		t.Fatalf("ClaimActualLRP = %+v, %v", lrp, err)
	}
	net := models.ActualLRPNetInfo{Address: "10.0.0.5", Ports: []models.PortMapping{{ContainerPort: 8080, HostPort: 61001}}}
	if lrp, err := cellA.StartActualLRP(ctx, key, ik, net); err != nil || lrp.State != models.ActualLRPStateRunning || lrp.Address != "10.0.0.5" {
		t.Fatalf("StartActualLRP = %+v, %v", lrp, err)
	}
	group, err := op.ActualLRP(ctx, "web", 0)
	if err != nil || len(group) != 1 || group[0].InstanceGuid != "inst-1" {
		t.Fatalf("ActualLRP group = %+v, %v", group, err)
	}
	crashed, err := cellA.CrashActualLRP(ctx, key, ik, "exit status 2")
	if err != nil || crashed.State != models.ActualLRPStateCrashed || crashed.CrashCount != 1 {
		t.Fatalf("CrashActualLRP = %+v, %v", crashed, err)
	}
	if lrp, err := brain.RestartActualLRP(ctx, key, crashed.Revision); err != nil || lrp.State != models.ActualLRPStateUnclaimed {
		t.Fatalf("RestartActualLRP = %+v, %v", lrp, err)
	}
	if _, err := brain.RestartActualLRP(ctx, key, 0); !models.IsInvalidTransition(err) {
		t.Fatalf("restart of an UNCLAIMED instance = %v, want InvalidTransition", err)
	}

	// The operator's instance restart retires index 1 and creates it UNCLAIMED again.
	fresh, err := op.RestartActualLRPInstance(ctx, "web", 1)
	if err != nil || fresh.State != models.ActualLRPStateUnclaimed || fresh.Index != 1 {
		t.Fatalf("RestartActualLRPInstance = %+v, %v", fresh, err)
	}

	if err := op.RemoveDesiredLRP(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.DesiredLRP(ctx, "web"); !models.IsNotFound(err) {
		t.Fatalf("DesiredLRP after removal = %v, want NotFound", err)
	}
	if _, err := op.ActualLRP(ctx, "web", 0); !models.IsNotFound(err) {
		t.Fatalf("ActualLRP after removal = %v, want NotFound", err)
	}
	if err := op.RemoveDesiredLRP(ctx, "web"); !models.IsNotFound(err) {
		t.Fatalf("second removal = %v, want NotFound", err)
	}
}

func TestTaskLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cellA := e.client("operator"), e.client("brain"), e.client("cell:cell-a")

	if _, err := op.DesireTask(ctx, testTask("t1")); err != nil {
		t.Fatal(err)
	}
	if _, err := brain.PlaceTask(ctx, "t1", "cell-a", 0); err != nil {
		t.Fatal(err)
	}
	should, err := cellA.StartTask(ctx, "t1", "cell-a")
	if err != nil || !should {
		t.Fatalf("StartTask = %v, %v", should, err)
	}
	if should, err = cellA.StartTask(ctx, "t1", ""); err != nil || should {
		t.Fatalf("repeated StartTask = %v, %v; want false (cell_id filled from the certificate)", should, err)
	}
	done, err := cellA.CompleteTask(ctx, "t1", "cell-a", false, "", "42")
	if err != nil || done.State != models.TaskStateCompleted || done.Result != "42" {
		t.Fatalf("CompleteTask = %+v, %v", done, err)
	}
	if err := brain.DeleteTask(ctx, "t1", false); !models.IsInvalidTransition(err) {
		t.Fatalf("brain DeleteTask of a COMPLETED task without force = %v, want InvalidTransition", err)
	}
	// The brain resolves and deletes the tasks whose completion callback it delivers.
	if _, err := brain.ResolvingTask(ctx, "t1"); err != nil {
		t.Fatalf("brain ResolvingTask: %v", err)
	}
	if err := brain.DeleteTask(ctx, "t1", false); err != nil {
		t.Fatalf("brain DeleteTask of a RESOLVING task: %v", err)
	}
	if _, err := op.Task(ctx, "t1"); !models.IsNotFound(err) {
		t.Fatalf("Task after delete = %v, want NotFound", err)
	}

	if _, err := op.DesireTask(ctx, testTask("t2")); err != nil {
		t.Fatal(err)
	}
	cancelled, err := op.CancelTask(ctx, "t2")
	if err != nil || !cancelled.Failed {
		t.Fatalf("CancelTask = %+v, %v", cancelled, err)
	}
	if err := brain.DeleteTask(ctx, "t2", true); err != nil {
		t.Fatalf("brain forced delete of a COMPLETED task: %v", err)
	}
	tasks, _, err := op.Tasks(ctx, store.TaskFilter{})
	if err != nil || len(tasks) != 0 {
		t.Fatalf("Tasks = %d, %v", len(tasks), err)
	}
}

func TestCellsDomainsLocksInfo(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cellA := e.client("operator"), e.client("brain"), e.client("cell:cell-a")

	if err := cellA.Heartbeat(ctx, testCell("cell-a"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cells, _, err := brain.Cells(ctx)
	if err != nil || len(cells) != 1 || cells[0].CellID != "cell-a" {
		t.Fatalf("Cells = %+v, %v", cells, err)
	}
	if c, err := op.Cell(ctx, "cell-a"); err != nil || c.Capacity.MemoryMB != 4096 {
		t.Fatalf("Cell = %+v, %v", c, err)
	}
	if err := cellA.RemoveCell(ctx, "cell-a"); err != nil {
		t.Fatalf("a cell removing itself: %v", err)
	}
	if _, err := op.Cell(ctx, "cell-a"); !models.IsNotFound(err) {
		t.Fatalf("Cell after removal = %v, want NotFound", err)
	}

	if err := op.UpsertDomain(ctx, "tests", time.Minute); err != nil {
		t.Fatal(err)
	}
	if ds, err := brain.Domains(ctx); err != nil || len(ds) != 1 || ds[0].Name != "tests" {
		t.Fatalf("Domains = %+v, %v", ds, err)
	}

	if err := brain.AcquireLock(ctx, "brain", "b1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := brain.AcquireLock(ctx, "brain", "b2", 5*time.Second); !models.IsLockHeld(err) || !strings.Contains(err.Error(), "b1") {
		t.Fatalf("AcquireLock by another owner = %v, want LockHeld naming b1", err)
	}
	if owner, err := cellA.LockOwner(ctx, "brain"); err != nil || owner != "b1" {
		t.Fatalf("LockOwner = %q, %v", owner, err)
	}
	if err := brain.ReleaseLock(ctx, "brain", "b1"); err != nil {
		t.Fatal(err)
	}
	if owner, err := brain.LockOwner(ctx, "brain"); err != nil || owner != "" {
		t.Fatalf("LockOwner after release = %q, %v", owner, err)
	}

	info, err := cellA.Info(ctx)
	if err != nil || info.Identity != (certs.Identity{Role: certs.RoleCell, CellID: "cell-a"}) || info.Version != "dev" || info.Revision == 0 {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	if err := op.Health(ctx); err != nil {
		t.Fatal(err)
	}
}

// rawCall sends a raw request with the operator's certificate (or none) and returns the status
// and the decoded error body.
func rawCall(t *testing.T, e *env, certFiles *certs.Files, method, path string, body []byte, hdr http.Header) (int, client.ErrorBody, []byte) {
	t.Helper()
	var cf, kf string
	if certFiles != nil {
		cf, kf = certFiles.CertFile, certFiles.KeyFile
	}
	tc, err := certs.ClientTLSConfig(e.pki.CAFile, cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var er client.ErrorResponse
	_ = json.Unmarshal(data, &er)
	return resp.StatusCode, er.Error, data
}

// TestErrorStatuses checks each error status and type and that refused writes store nothing.
func TestErrorStatuses(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op := e.client("operator")
	opFiles := e.pki.Operator

	lrpJSON := func(mod func(map[string]any)) []byte {
		var m map[string]any
		b, _ := json.Marshal(testLRP("bad", 1))
		_ = json.Unmarshal(b, &m)
		mod(m)
		out, _ := json.Marshal(m)
		return out
	}
	tests := []struct {
		name      string
		body      []byte
		status    int
		typ       string
		mentions  string
		checkNone bool
	}{
		{"malformed JSON", []byte(`{"process_guid": "bad",`), 400, "InvalidRequest", "body", true},
		{"trailing data", append(lrpJSON(func(map[string]any) {}), []byte(` {}`)...), 400, "InvalidRequest", "body", true},
		{"unknown field", lrpJSON(func(m map[string]any) { m["instancez"] = 1 }), 400, "InvalidRequest", "instancez", true},
		{"wrong type", lrpJSON(func(m map[string]any) { m["instances"] = "two" }), 400, "InvalidRequest", "instances", true},
		{"empty body", nil, 400, "InvalidRequest", "empty", true},
		{"negative instances", lrpJSON(func(m map[string]any) { m["instances"] = -1 }), 422, "InvalidRecord", "instances", true},
		{"memory_mb -1", lrpJSON(func(m map[string]any) { m["memory_mb"] = -1 }), 422, "InvalidRecord", "memory_mb", true},
		{"unknown rootfs scheme", lrpJSON(func(m map[string]any) { m["rootfs"] = "ftp://x/y" }), 422, "InvalidRecord", "rootfs", true},
		{"process_guid with spaces", lrpJSON(func(m map[string]any) { m["process_guid"] = "has spaces" }), 422, "InvalidRecord", "process_guid", false},
		{"5 MiB annotation", lrpJSON(func(m map[string]any) { m["annotation"] = strings.Repeat("a", 5<<20) }), 413, "TooLarge", "limit", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, raw := rawCall(t, e, &opFiles, http.MethodPost, "/v1/desired_lrps", tt.body, nil)
			if status != tt.status || eb.Type != tt.typ || !strings.Contains(eb.Message, tt.mentions) {
				t.Fatalf("got %d %s %q (%.200s); want %d %s mentioning %q", status, eb.Type, eb.Message, raw, tt.status, tt.typ, tt.mentions)
			}
			if tt.checkNone {
				if _, err := op.DesiredLRP(ctx, "bad"); !models.IsNotFound(err) {
					t.Fatalf("a refused request stored a record: %v", err)
				}
			}
			lrps, _, err := op.DesiredLRPs(ctx, store.DesiredLRPFilter{})
			if err != nil || len(lrps) != 0 {
				t.Fatalf("DesiredLRPs after a refused request = %d, %v", len(lrps), err)
			}
			actuals, _, err := op.ActualLRPs(ctx, store.ActualLRPFilter{})
			if err != nil || len(actuals) != 0 {
				t.Fatalf("ActualLRPs after a refused request = %d, %v", len(actuals), err)
			}
		})
	}

	// The client keeps the class and the message of each.
	if _, err := op.DesireLRP(ctx, &models.DesiredLRP{ProcessGuid: "x y"}); !models.IsInvalidRecord(err) || !strings.Contains(err.Error(), "process_guid") {
		t.Fatalf("client DesireLRP invalid = %v", err)
	}
	var ae *client.APIError
	if _, err := op.DesiredLRP(ctx, "missing"); !models.IsNotFound(err) || !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("client DesiredLRP missing = %v", err)
	}
	big := strings.Repeat("a", 5<<20)
	lrp := testLRP("big", 1)
	lrp.Annotation = big
	if _, err := op.DesireLRP(ctx, lrp); !errors.Is(err, models.ErrTooLarge) {
		t.Fatalf("client DesireLRP 5 MiB = %v, want TooLarge", err)
	}

	others := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    http.Header
		status int
		typ    string
	}{
		{"not found", "GET", "/v1/tasks/nope", "", nil, 404, "NotFound"},
		{"no route", "GET", "/v1/nothing", "", nil, 404, "NotFound"},
		{"bad index", "GET", "/v1/actual_lrps/web/-1", "", nil, 400, "InvalidRequest"},
		{"bad If-Match", "PATCH", "/v1/desired_lrps/web", `{}`, http.Header{"If-Match": {"abc"}}, 400, "InvalidRequest"},
		{"lock ttl too short", "PUT", "/v1/locks/x", `{"owner":"o","ttl_ms":1}`, nil, 422, "InvalidRecord"},
		{"heartbeat by the operator", "PUT", "/v1/cells/c/presence?ttl_ms=5", `{}`, http.Header{}, 403, "Forbidden"},
		{"conflict on duplicate task", "POST", "/v1/tasks", `{"task_guid":"dup","domain":"d","rootfs":"docker:///busybox","memory_mb":1,"disk_mb":1,"action":{"run":{"path":"/bin/true","user":"root"}}}`, nil, 201, ""},
		{"duplicate task", "POST", "/v1/tasks", `{"task_guid":"dup","domain":"d","rootfs":"docker:///busybox","memory_mb":1,"disk_mb":1,"action":{"run":{"path":"/bin/true","user":"root"}}}`, nil, 409, "AlreadyExists"},
		{"invalid transition", "POST", "/v1/tasks/dup/resolve", "", nil, 409, "InvalidTransition"},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, raw := rawCall(t, e, &opFiles, tt.method, tt.path, []byte(tt.body), tt.hdr)
			if status != tt.status || eb.Type != tt.typ {
				t.Fatalf("%s %s = %d %s (%s); want %d %s", tt.method, tt.path, status, eb.Type, raw, tt.status, tt.typ)
			}
		})
	}
}
