package bbs_test

import (
	"net/http"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func TestActualLRPBatch(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cell := e.client("operator"), e.client("brain"), e.client("cell:cell-a")
	if _, err := op.DesireLRP(ctx, testLRP("web", 3)); err != nil {
		t.Fatal(err)
	}
	ops := []store.ActualLRPOp{
		{Action: store.ActionPlace, ProcessGuid: "web", Index: 0, CellID: "cell-a"},
		{Action: store.ActionPlace, ProcessGuid: "web", Index: 1, CellID: "not a cell id!"},
		{Action: store.ActionPlace, ProcessGuid: "web", Index: 7, CellID: "cell-a"},
		{Action: store.ActionFailPlacement, ProcessGuid: "web", Index: 2, Reason: "no room"},
		{Action: store.ActionRetire, ProcessGuid: "web", Index: 1, Presence: models.PresenceOrdinary},
		{Action: store.ActionCreateUnclaimed, ProcessGuid: "web", Index: 1},
	}
	res, err := brain.ApplyActualLRPOps(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ops) {
		t.Fatalf("%d results for %d operations", len(res), len(ops))
	}
	if a := res[0].ActualLRP; res[0].Err != nil || a == nil || a.CellID != "cell-a" || a.Revision == 0 {
		t.Errorf("place: %+v, %v", a, res[0].Err)
	}
	if !models.IsInvalidRecord(res[1].Err) {
		t.Errorf("place on an invalid cell id: %v, want InvalidRecord", res[1].Err)
	}
	if !models.IsNotFound(res[2].Err) {
		t.Errorf("place a missing index: %v, want NotFound", res[2].Err)
	}
	if a := res[3].ActualLRP; res[3].Err != nil || a.PlacementError != "no room" {
		t.Errorf("fail placement: %+v, %v", a, res[3].Err)
	}
	if res[4].Err != nil || res[4].ActualLRP != nil {
		t.Errorf("retire: %+v, %v", res[4].ActualLRP, res[4].Err)
	}
	if a := res[5].ActualLRP; res[5].Err != nil || a.State != models.ActualLRPStateUnclaimed || a.Index != 1 {
		t.Errorf("create: %+v, %v", a, res[5].Err)
	}

	// The brain's and the operator's: a cell may not, and the request as a whole is refused.
	if _, err := cell.ApplyActualLRPOps(ctx, ops[:1]); !models.IsForbidden(err) {
		t.Errorf("a cell's batch: %v, want Forbidden", err)
	}
	if _, err := brain.ApplyActualLRPOps(ctx, make([]store.ActualLRPOp, store.MaxActualLRPOps+1)); !models.IsInvalidRecord(err) {
		t.Errorf("over the limit: %v, want InvalidRecord", err)
	}
	opFiles := e.pki.Operator
	if status, eb, _ := rawCall(t, e, &opFiles, http.MethodPost, "/v1/actual_lrps/batch", []byte(`{"ops":[{"actionz":"place"}]}`), nil); status != 400 || eb.Type != "InvalidRequest" {
		t.Errorf("unknown field: %d %s, want 400 InvalidRequest", status, eb.Type)
	}
}
