package bbs_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
)

// TestCellActsOnlyForItself: a cell certificate may not move another cell's instance or
// heartbeat as another cell.
func TestCellActsOnlyForItself(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cellA := e.client("operator"), e.client("brain"), e.client("cell:a")
	if _, err := op.DesireLRP(ctx, testLRP("web", 1)); err != nil {
		t.Fatal(err)
	}
	key := models.ActualLRPKey{ProcessGuid: "web", Index: 0}
	if _, err := brain.PlaceActualLRP(ctx, key, "b", 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func() error
	}{
		{"claim as cell b", func() error {
			_, err := cellA.ClaimActualLRP(ctx, key, models.ActualLRPInstanceKey{InstanceGuid: "i", CellID: "b"})
			return err
		}},
		{"claim an instance placed on b", func() error {
			_, err := cellA.ClaimActualLRP(ctx, key, models.ActualLRPInstanceKey{InstanceGuid: "i", CellID: "a"})
			return err
		}},
		{"reject as cell b", func() error { _, err := cellA.RejectActualLRP(ctx, key, "b", "full"); return err }},
		{"heartbeat as b", func() error { return cellA.Heartbeat(ctx, testCell("b"), 0) }},
		{"heartbeat path a, body b", func() error {
			status, _, _ := rawCall(t, e, ptr(e.pki.ClientFiles(certs.Identity{Role: certs.RoleCell, CellID: "a"})),
				http.MethodPut, "/v1/cells/a/presence", mustJSON(testCell("b")), nil)
			if status != http.StatusForbidden {
				return errors.New(http.StatusText(status))
			}
			return models.ErrForbidden
		}},
		{"remove cell b", func() error { return cellA.RemoveCell(ctx, "b") }},
		{"start task as b", func() error { _, err := cellA.StartTask(ctx, "t", "b"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !models.IsForbidden(err) {
				t.Fatalf("got %v, want Forbidden", err)
			}
		})
	}
	if lrps, err := op.ActualLRP(ctx, "web", 0); err != nil || lrps[0].State != models.ActualLRPStateUnclaimed {
		t.Fatalf("instance changed by refused calls: %+v, %v", lrps, err)
	}
	if cells, _, err := op.Cells(ctx); err != nil || len(cells) != 0 {
		t.Fatalf("cells after refused heartbeats = %d, %v", len(cells), err)
	}
}

// TestRoleChecks: operator-only routes refuse brain and cell; cell routes refuse the others;
// reads are open to all.
func TestRoleChecks(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cell := e.client("operator"), e.client("brain"), e.client("cell:a")
	if _, err := op.DesireTask(ctx, testTask("t1")); err != nil {
		t.Fatal(err)
	}
	forbidden := []struct {
		name string
		call func() error
	}{
		{"brain desires an LRP", func() error { _, err := brain.DesireLRP(ctx, testLRP("x", 1)); return err }},
		{"cell desires an LRP", func() error { _, err := cell.DesireLRP(ctx, testLRP("x", 1)); return err }},
		{"brain removes an LRP", func() error { return brain.RemoveDesiredLRP(ctx, "x") }},
		{"cell desires a task", func() error { _, err := cell.DesireTask(ctx, testTask("x")); return err }},
		{"brain cancels a task", func() error { _, err := brain.CancelTask(ctx, "t1"); return err }},
		{"cell upserts a domain", func() error { return cell.UpsertDomain(ctx, "d", 0) }},
		{"cell places a task", func() error { _, err := cell.PlaceTask(ctx, "t1", "a", 0); return err }},
		{"cell takes a lock", func() error { return cell.AcquireLock(ctx, "l", "me", 5e9) }},
		{"operator claims as a cell", func() error {
			_, err := op.ClaimActualLRP(ctx, models.ActualLRPKey{ProcessGuid: "x"}, models.ActualLRPInstanceKey{InstanceGuid: "i", CellID: "a"})
			return err
		}},
		{"brain heartbeats", func() error { return brain.Heartbeat(ctx, testCell("a"), 0) }},
	}
	for _, tt := range forbidden {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !models.IsForbidden(err) {
				t.Fatalf("got %v, want Forbidden", err)
			}
		})
	}
	if tasks, _, err := cell.Tasks(ctx, storeTaskFilter()); err != nil || len(tasks) != 1 || tasks[0].State != models.TaskStatePending {
		t.Fatalf("Tasks read by a cell = %+v, %v", tasks, err)
	}
}

// TestAuthentication: no client certificate gets 401 (except /healthz); a certificate from
// another CA fails the handshake.
func TestAuthentication(t *testing.T) {
	e := newEnv(t, nil)
	status, eb, _ := rawCall(t, e, nil, http.MethodGet, "/v1/desired_lrps", nil, nil)
	if status != http.StatusUnauthorized || eb.Type != "Unauthenticated" {
		t.Fatalf("no certificate: %d %s, want 401 Unauthenticated", status, eb.Type)
	}
	if status, _, _ := rawCall(t, e, nil, http.MethodGet, "/healthz", nil, nil); status != http.StatusOK {
		t.Fatalf("/healthz without a certificate: %d, want 200", status)
	}

	noCert, err := client.New(client.Config{URL: e.url, CAFile: e.pki.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noCert.Info(ctxT(t)); !errors.Is(err, models.ErrUnauthenticated) {
		t.Fatalf("client without a certificate: %v, want Unauthenticated", err)
	}

	other, err := certs.EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := client.New(client.Config{URL: e.url, CAFile: e.pki.CAFile, CertFile: other.Operator.CertFile, KeyFile: other.Operator.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	_, err = foreign.Info(ctxT(t))
	var ae *client.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("certificate from another CA: %v, want a TLS failure", err)
	}
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS failure does not mention the certificate: %v", err)
	}
}

// fixedAddrListener reports a chosen address, to present Serve with a non-loopback listener
// without binding one.
type fixedAddrListener struct {
	net.Listener
	addr net.Addr
}

func (l fixedAddrListener) Addr() net.Addr { return l.addr }

func TestInsecureModeOnlyOnLoopback(t *testing.T) {
	st := newStore(t)
	cfg := bbs.DefaultConfig()
	cfg.Insecure = true
	for _, addr := range []string{"0.0.0.0:8889", ":8889", "10.1.2.3:8889", "example.com:8889"} {
		cfg.ListenAddress = addr
		if _, err := bbs.NewServer(cfg, st, nil); !errors.Is(err, bbs.ErrInvalidConfig) || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("insecure on %s: %v, want ErrInvalidConfig about loopback", addr, err)
		}
	}
	cfg.ListenAddress = "127.0.0.1:0"
	srv, err := bbs.NewServer(cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Serve(context.Background(), fixedAddrListener{ln, &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 8889}})
	if !errors.Is(err, bbs.ErrInvalidConfig) {
		t.Fatalf("Serve insecure on a non-loopback listener: %v, want ErrInvalidConfig", err)
	}
}

// TestInsecureIdentityHeader: in insecure mode the identity header drives the same role checks.
func TestInsecureIdentityHeader(t *testing.T) {
	e := newEnv(t, func(c *bbs.Config) { c.Insecure = true })
	ctx := ctxT(t)
	mk := func(id string) *client.Client {
		c, err := client.New(client.Config{URL: e.url, Insecure: true, Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if info, err := mk("").Info(ctx); err != nil || info.Identity.Role != certs.RoleOperator {
		t.Fatalf("default identity = %+v, %v; want operator", info, err)
	}
	if _, err := mk("cell:a").DesireLRP(ctx, testLRP("x", 1)); !models.IsForbidden(err) {
		t.Fatalf("cell desires over insecure: %v, want Forbidden", err)
	}
	if err := mk("cell:a").Heartbeat(ctx, testCell("a"), 0); err != nil {
		t.Fatalf("cell heartbeat over insecure: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/info", nil)
	req.Header.Set(bbs.IdentityHeader, "root")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown identity header: %d, want 401", resp.StatusCode)
	}
}
