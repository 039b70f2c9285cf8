package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// bothStores runs fn on a Store deciding from its shared watch and on one reading etcd.
func bothStores(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			shared, d := newStoreWith(t, store.Options{})
			if direct {
				fn(t, d)
				return
			}
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			watchAsync(ctx, shared, 0, store.EventFilter{}) // starts the shared watch
			fn(t, shared)
		})
	}
}

func apply(t *testing.T, s *store.Store, ops ...store.ActualLRPOp) []store.ActualLRPOpResult {
	t.Helper()
	res, err := s.ApplyActualLRPOps(ctxT(t), ops)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ops) {
		t.Fatalf("%d results for %d operations", len(res), len(ops))
	}
	return res
}

func TestApplyActualLRPOpsPlacesWithPerOperationResults(t *testing.T) {
	bothStores(t, func(t *testing.T, s *store.Store) {
		ctx := ctxT(t)
		const n = 150 // more than one etcd transaction
		must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", n)))
		var ops []store.ActualLRPOp
		for i := int32(0); i < n; i++ {
			a := records(t, s, lrpKey("web", i))[models.PresenceOrdinary]
			ops = append(ops, store.ActualLRPOp{Action: store.ActionPlace, ProcessGuid: "web", Index: i,
				CellID: fmt.Sprintf("cell-%d", i%3), Revision: a.Revision})
		}
		first := ops[0]
		ops = append(ops,
			first, // the same index again, at the revision the first write replaced
			store.ActualLRPOp{Action: store.ActionPlace, ProcessGuid: "web", Index: n, CellID: "cell-0"},
			store.ActualLRPOp{Action: store.ActionPlace, ProcessGuid: "web", Index: 1},
			store.ActualLRPOp{Action: "teleport", ProcessGuid: "web", Index: 1},
			store.ActualLRPOp{Action: store.ActionFailPlacement, ProcessGuid: "web", Index: 2, Reason: "no room"},
		)
		res := apply(t, s, ops...)
		for i := 0; i < n; i++ {
			if res[i].Err != nil {
				t.Fatalf("op %d: %v", i, res[i].Err)
			}
			got := res[i].ActualLRP
			stored := records(t, s, lrpKey("web", int32(i)))[models.PresenceOrdinary]
			if i == 2 {
				continue // failed afterwards, checked below
			}
			if got.CellID != ops[i].CellID || got.Revision <= ops[i].Revision || got.Revision != stored.Revision || stored.CellID != ops[i].CellID {
				t.Fatalf("op %d answered %+v, etcd holds %+v", i, got, stored)
			}
		}
		if res[0].ActualLRP.Revision != res[99].ActualLRP.Revision {
			t.Errorf("the first 100 placements were not one transaction: revisions %d and %d",
				res[0].ActualLRP.Revision, res[99].ActualLRP.Revision)
		}
		wantErr(t, res[n].Err, models.ErrConflict, "the same index at the replaced revision")
		wantErr(t, res[n+1].Err, models.ErrNotFound, "a missing index")
		wantErr(t, res[n+2].Err, models.ErrInvalidRecord, "no cell")
		wantErr(t, res[n+3].Err, models.ErrInvalidRecord, "an unknown action")
		wantErr(t, res[n+4].Err, nil, "fail placement after place")
		if a := records(t, s, lrpKey("web", 2))[models.PresenceOrdinary]; a.CellID != "" || a.PlacementError != "no room" {
			t.Errorf("index 2 after place then fail placement: %+v", a)
		}

		if _, err := s.ApplyActualLRPOps(ctx, make([]store.ActualLRPOp, store.MaxActualLRPOps+1)); !models.IsInvalidRecord(err) {
			t.Errorf("over the limit: error %v, want InvalidRecord", err)
		}
	})
}

func TestApplyActualLRPOpsConvergenceActions(t *testing.T) {
	bothStores(t, func(t *testing.T, s *store.Store) {
		ctx := ctxT(t)
		must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 4)))
		from := must[int64](t)(s.Revision(ctx))
		w := watchAsync(ctx, s, from, store.EventFilter{ProcessGuid: "web"})
		// 0 runs (its cell vanished), 1 is missing, 2 crashed, 3 runs.
		claimAndStart(t, s, lrpKey("web", 0), "gone", "i-0")
		must[struct{}](t)(struct{}{}, s.RetireActualLRP(ctx, lrpKey("web", 1), models.PresenceOrdinary, 0))
		ik2 := claimAndStart(t, s, lrpKey("web", 2), "c1", "i-2")
		must[*models.ActualLRP](t)(s.CrashActualLRP(ctx, lrpKey("web", 2), ik2, "exit 1"))
		claimAndStart(t, s, lrpKey("web", 3), "c1", "i-3")
		before := must[int64](t)(s.Revision(ctx))
		// The shared watch's records must have caught up with these writes (a subscriber gets
		// an event after the records are updated): otherwise the operations decided on a stale
		// record lose their compare-and-swap and are redone in a second transaction, which is
		// correct but not what this test checks.
		seen := len(w.waitUntil(t, before))

		res := apply(t, s,
			store.ActualLRPOp{Action: store.ActionMarkSuspect, ProcessGuid: "web", Index: 0},
			store.ActualLRPOp{Action: store.ActionCreateUnclaimed, ProcessGuid: "web", Index: 1},
			store.ActualLRPOp{Action: store.ActionRestart, ProcessGuid: "web", Index: 2},
			store.ActualLRPOp{Action: store.ActionRetire, ProcessGuid: "web", Index: 3, Presence: models.PresenceOrdinary},
			store.ActualLRPOp{Action: store.ActionCreateUnclaimed, ProcessGuid: "web", Index: 0},   // exists
			store.ActualLRPOp{Action: store.ActionCreateUnclaimed, ProcessGuid: "web", Index: 9},   // out of range
			store.ActualLRPOp{Action: store.ActionCreateUnclaimed, ProcessGuid: "other", Index: 0}, // no DesiredLRP
			store.ActualLRPOp{Action: store.ActionRestart, ProcessGuid: "web", Index: 0},           // not CRASHED
			store.ActualLRPOp{Action: store.ActionRetire, ProcessGuid: "web", Index: 3, Presence: "LOST"},
		)
		for i := 0; i < 4; i++ {
			wantErr(t, res[i].Err, nil, fmt.Sprintf("op %d", i))
		}
		wantErr(t, res[4].Err, models.ErrAlreadyExists, "create an existing index")
		wantErr(t, res[5].Err, models.ErrInvalidRecord, "create out of range")
		wantErr(t, res[6].Err, models.ErrNotFound, "create without a DesiredLRP")
		wantErr(t, res[7].Err, models.ErrInvalidTransition, "restart an UNCLAIMED instance")
		wantErr(t, res[8].Err, models.ErrInvalidRecord, "retire an unknown presence")

		r0 := records(t, s, lrpKey("web", 0))
		if r0[models.PresenceSuspect] == nil || r0[models.PresenceSuspect].InstanceGuid != "i-0" ||
			r0[models.PresenceOrdinary].State != models.ActualLRPStateUnclaimed || r0[models.PresenceOrdinary].Revision != res[0].ActualLRP.Revision {
			t.Errorf("index 0 after mark suspect: %+v / %+v", r0[models.PresenceSuspect], r0[models.PresenceOrdinary])
		}
		if a := records(t, s, lrpKey("web", 1))[models.PresenceOrdinary]; a == nil || a.State != models.ActualLRPStateUnclaimed ||
			a.Domain != "apps" || a.Revision != res[1].ActualLRP.Revision {
			t.Errorf("index 1 after create: %+v (answered %+v)", a, res[1].ActualLRP)
		}
		if a := records(t, s, lrpKey("web", 2))[models.PresenceOrdinary]; a.State != models.ActualLRPStateUnclaimed || a.CrashCount != 1 {
			t.Errorf("index 2 after restart: %+v", a)
		}
		if got := records(t, s, lrpKey("web", 3)); len(got) != 0 || res[3].ActualLRP != nil {
			t.Errorf("index 3 after retire: %v, answered %+v", got, res[3].ActualLRP)
		}
		// One event per record changed, as with the single calls: SUSPECT created and ORDINARY
		// changed (0), created (1), changed (2), removed (3).
		after := res[0].ActualLRP.Revision
		if after <= before || res[1].ActualLRP.Revision != after || res[2].ActualLRP.Revision != after {
			t.Errorf("revisions %d %d %d, want one transaction after %d", after, res[1].ActualLRP.Revision, res[2].ActualLRP.Revision, before)
		}
		want := []string{"actual_lrp_created web/0", "actual_lrp_changed web/0", "actual_lrp_created web/1",
			"actual_lrp_changed web/2", "actual_lrp_removed web/3"}
		// Every event after the writes above (waitUntil on the batch's revision could return
		// before all of its events had arrived).
		batch := w.waitUntilCount(t, seen+len(want))[seen:]
		if fmt.Sprint(batch) != fmt.Sprint(want) {
			t.Errorf("events of the batch: %v, want %v", batch, want)
		}
	})
}

func TestApplyActualLRPOpsNeverCommitsOnAStaleRecord(t *testing.T) {
	// b decides from its shared watch, which lags a's writes: a batch must still refuse
	// what etcd refuses and apply what etcd allows.
	a, b, ctx := laggingPair(t)
	must[*models.DesiredLRP](t)(a.DesireLRP(ctx, desiredLRP("web", 10)))
	for round := range 10 {
		for i := int32(0); i < 10; i++ {
			r := records(t, a, lrpKey("web", i))[models.PresenceOrdinary]
			if r.State != models.ActualLRPStateUnclaimed {
				t.Fatalf("round %d: index %d is %s", round, i, r.State)
			}
		}
		// a claims the even indices just before b's batch places them all at any revision.
		for i := int32(0); i < 10; i += 2 {
			must[*models.ActualLRP](t)(a.PlaceActualLRP(ctx, lrpKey("web", i), "c1", 0))
			must[*models.ActualLRP](t)(a.ClaimActualLRP(ctx, lrpKey("web", i), models.ActualLRPInstanceKey{InstanceGuid: "x", CellID: "c1"}))
		}
		var ops []store.ActualLRPOp
		for i := int32(0); i < 10; i++ {
			ops = append(ops, store.ActualLRPOp{Action: store.ActionPlace, ProcessGuid: "web", Index: i, CellID: "c2"})
		}
		res := apply(t, b, ops...)
		for i, r := range res {
			stored := records(t, a, lrpKey("web", int32(i)))[models.PresenceOrdinary]
			if i%2 == 0 {
				wantErr(t, r.Err, models.ErrInvalidTransition, fmt.Sprintf("round %d: place claimed index %d", round, i))
				if stored.State != models.ActualLRPStateClaimed || stored.CellID != "c1" {
					t.Fatalf("round %d: claimed index %d became %+v", round, i, stored)
				}
				continue
			}
			wantErr(t, r.Err, nil, fmt.Sprintf("round %d: place index %d", round, i))
			if stored.CellID != "c2" || stored.Revision != r.ActualLRP.Revision {
				t.Fatalf("round %d: index %d answered %+v, etcd holds %+v", round, i, r.ActualLRP, stored)
			}
		}
		// Back to UNCLAIMED for the next round.
		for i := int32(0); i < 10; i++ {
			must[struct{}](t)(struct{}{}, a.RetireActualLRP(ctx, lrpKey("web", i), models.PresenceOrdinary, 0))
			must[*models.ActualLRP](t)(a.CreateUnclaimedActualLRP(ctx, lrpKey("web", i)))
		}
	}
}
