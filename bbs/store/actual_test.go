package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

var netInfo = models.ActualLRPNetInfo{Address: "10.0.0.1", InstanceAddress: "10.255.0.2",
	Ports: []models.PortMapping{{ContainerPort: 8080, HostPort: 61001}}}

// claimAndStart places, claims and starts key on cellID as instance guid.
func claimAndStart(t *testing.T, s *store.Store, key models.ActualLRPKey, cellID, guid string) models.ActualLRPInstanceKey {
	t.Helper()
	ctx := ctxT(t)
	ik := models.ActualLRPInstanceKey{InstanceGuid: guid, CellID: cellID}
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, cellID, 0))
	must[*models.ActualLRP](t)(s.ClaimActualLRP(ctx, key, ik))
	must[*models.ActualLRP](t)(s.StartActualLRP(ctx, key, ik, netInfo))
	return ik
}

// records returns every record of one index as presence → record.
func records(t *testing.T, s *store.Store, key models.ActualLRPKey) map[string]*models.ActualLRP {
	t.Helper()
	idx := key.Index
	list, _, err := s.ActualLRPs(ctxT(t), store.ActualLRPFilter{ProcessGuid: key.ProcessGuid, Index: &idx})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*models.ActualLRP{}
	for _, a := range list {
		out[a.Presence] = a
	}
	return out
}

func TestActualLRPBrainTransitions(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 2)))
	key := lrpKey("web", 0)
	start := records(t, s, key)[models.PresenceOrdinary]

	// Place: only UNCLAIMED, compared on the revision.
	placed, err := s.PlaceActualLRP(ctx, key, "cell-a", start.Revision)
	wantErr(t, err, nil, "place")
	if placed.CellID != "cell-a" || placed.State != models.ActualLRPStateUnclaimed || placed.Revision <= start.Revision {
		t.Fatalf("placed = %+v", placed)
	}
	_, err = s.PlaceActualLRP(ctx, key, "cell-b", start.Revision)
	wantErr(t, err, models.ErrConflict, "place with stale revision")
	_, err = s.PlaceActualLRP(ctx, key, "", 0)
	wantErr(t, err, models.ErrInvalidRecord, "place without cell")
	_, err = s.PlaceActualLRP(ctx, lrpKey("web", 7), "cell-a", 0)
	wantErr(t, err, models.ErrNotFound, "place missing index")

	// FailActualLRPPlacement: sets the error and clears the cell.
	failed, err := s.FailActualLRPPlacement(ctx, key, "insufficient resources: memory", placed.Revision)
	wantErr(t, err, nil, "fail placement")
	if failed.CellID != "" || failed.PlacementError != "insufficient resources: memory" {
		t.Fatalf("failed placement = %+v", failed)
	}
	replaced := must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, "cell-a", 0))
	if replaced.PlacementError != "" {
		t.Fatalf("placing again kept placement_error %q", replaced.PlacementError)
	}

	// A RUNNING instance can no longer be placed or fail placement, and is not restarted.
	ik := models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "cell-a"}
	must[*models.ActualLRP](t)(s.ClaimActualLRP(ctx, key, ik))
	running := must[*models.ActualLRP](t)(s.StartActualLRP(ctx, key, ik, netInfo))
	_, err = s.PlaceActualLRP(ctx, key, "cell-b", 0)
	wantErr(t, err, models.ErrInvalidTransition, "place RUNNING")
	_, err = s.FailActualLRPPlacement(ctx, key, "x", 0)
	wantErr(t, err, models.ErrInvalidTransition, "fail placement of RUNNING")
	_, err = s.RestartActualLRP(ctx, key, 0)
	wantErr(t, err, models.ErrInvalidTransition, "restart RUNNING")

	// Crash then restart: the crash count is kept, the instance key cleared.
	crashed := must[*models.ActualLRP](t)(s.CrashActualLRP(ctx, key, ik, "exit status 1"))
	restarted, err := s.RestartActualLRP(ctx, key, crashed.Revision)
	wantErr(t, err, nil, "restart")
	if restarted.State != models.ActualLRPStateUnclaimed || restarted.CrashCount != 1 || restarted.InstanceGuid != "" ||
		restarted.RunningSince != running.RunningSince {
		t.Fatalf("restarted = %+v", restarted)
	}

	// Retire: any state, compared on the revision when asked.
	_, err = s.CreateUnclaimedActualLRP(ctx, key)
	wantErr(t, err, models.ErrAlreadyExists, "create existing index")
	wantErr(t, s.RetireActualLRP(ctx, key, models.PresenceOrdinary, restarted.Revision-1), models.ErrConflict, "retire stale")
	wantErr(t, s.RetireActualLRP(ctx, key, models.PresenceOrdinary, restarted.Revision), nil, "retire")
	wantErr(t, s.RetireActualLRP(ctx, key, models.PresenceOrdinary, 0), models.ErrNotFound, "retire twice")
	wantErr(t, s.RetireActualLRP(ctx, key, "SIDEWAYS", 0), models.ErrInvalidRecord, "retire unknown presence")

	// CreateUnclaimedActualLRP fills the gap, within the desired range only.
	recreated, err := s.CreateUnclaimedActualLRP(ctx, key)
	wantErr(t, err, nil, "create missing index")
	if recreated.State != models.ActualLRPStateUnclaimed || recreated.Domain != "apps" {
		t.Fatalf("recreated = %+v", recreated)
	}
	_, err = s.CreateUnclaimedActualLRP(ctx, lrpKey("web", 2))
	wantErr(t, err, models.ErrInvalidRecord, "create index out of range")
	_, err = s.CreateUnclaimedActualLRP(ctx, lrpKey("nope", 0))
	wantErr(t, err, models.ErrNotFound, "create for missing desired lrp")
}

func TestActualLRPCellTransitions(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 1)))
	key := lrpKey("web", 0)
	ik := models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "cell-a"}
	other := models.ActualLRPInstanceKey{InstanceGuid: "i-2", CellID: "cell-a"}

	_, err := s.ClaimActualLRP(ctx, key, ik)
	wantErr(t, err, models.ErrForbidden, "claim unplaced")
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, "cell-b", 0))
	_, err = s.ClaimActualLRP(ctx, key, ik)
	wantErr(t, err, models.ErrForbidden, "claim placed elsewhere")
	_, err = s.RejectActualLRP(ctx, key, "cell-a", "no room")
	wantErr(t, err, models.ErrForbidden, "reject placed elsewhere")

	// Reject: back to UNCLAIMED unplaced with the reason.
	rejected, err := s.RejectActualLRP(ctx, key, "cell-b", "insufficient resources: disk")
	wantErr(t, err, nil, "reject")
	if rejected.CellID != "" || rejected.PlacementError != "insufficient resources: disk" || rejected.State != models.ActualLRPStateUnclaimed {
		t.Fatalf("rejected = %+v", rejected)
	}

	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, "cell-a", 0))
	claimed, err := s.ClaimActualLRP(ctx, key, ik)
	wantErr(t, err, nil, "claim")
	if claimed.State != models.ActualLRPStateClaimed || claimed.ActualLRPInstanceKey != ik {
		t.Fatalf("claimed = %+v", claimed)
	}
	again, err := s.ClaimActualLRP(ctx, key, ik)
	wantErr(t, err, nil, "claim again by the same instance")
	if again.Revision != claimed.Revision {
		t.Fatalf("idempotent claim wrote a new revision %d (was %d)", again.Revision, claimed.Revision)
	}
	_, err = s.ClaimActualLRP(ctx, key, other)
	wantErr(t, err, models.ErrInvalidTransition, "claim by another instance")
	_, err = s.RejectActualLRP(ctx, key, "cell-b", "x")
	wantErr(t, err, models.ErrForbidden, "reject CLAIMED by another cell")
	back, err := s.RejectActualLRP(ctx, key, "cell-a", "insufficient resources: memory")
	wantErr(t, err, nil, "reject CLAIMED")
	if back.State != models.ActualLRPStateUnclaimed || back.CellID != "" || back.InstanceGuid != "" || back.PlacementError != "insufficient resources: memory" {
		t.Fatalf("rejected claimed = %+v", back)
	}

	// Claimed again, answered with the definition.
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, "cell-a", 0))
	reclaimed, d, err := s.ClaimActualLRPWithDesired(ctx, key, ik)
	wantErr(t, err, nil, "claim with the desired lrp")
	if reclaimed.State != models.ActualLRPStateClaimed || reclaimed.ActualLRPInstanceKey != ik || d == nil || d.ProcessGuid != "web" || d.Instances != 1 {
		t.Fatalf("claimed with desired = %+v, %+v", reclaimed, d)
	}
	_, _, err = s.ClaimActualLRPWithDesired(ctx, key, other)
	wantErr(t, err, models.ErrInvalidTransition, "claim with the desired lrp by another instance")
	_, err = s.ClaimActualLRP(ctx, key, models.ActualLRPInstanceKey{CellID: "cell-a"})
	wantErr(t, err, models.ErrInvalidRecord, "claim without instance guid")

	// Start: needs the holder and an address.
	_, err = s.StartActualLRP(ctx, key, other, netInfo)
	wantErr(t, err, models.ErrInvalidTransition, "start by another instance")
	_, err = s.StartActualLRP(ctx, key, ik, models.ActualLRPNetInfo{})
	wantErr(t, err, models.ErrInvalidRecord, "start without address")
	running, err := s.StartActualLRP(ctx, key, ik, netInfo)
	wantErr(t, err, nil, "start")
	if running.State != models.ActualLRPStateRunning || running.Address != netInfo.Address || running.RunningSince == 0 {
		t.Fatalf("running = %+v", running)
	}
	same := must[*models.ActualLRP](t)(s.StartActualLRP(ctx, key, ik, netInfo))
	if same.Revision != running.Revision {
		t.Fatalf("repeated start wrote a new revision")
	}

	// Crash: only by the holder; the count goes up and the instance key is cleared.
	_, err = s.CrashActualLRP(ctx, key, other, "boom")
	wantErr(t, err, models.ErrInvalidTransition, "crash by another instance")
	crashed, err := s.CrashActualLRP(ctx, key, ik, "exit status 2")
	wantErr(t, err, nil, "crash")
	if crashed.State != models.ActualLRPStateCrashed || crashed.CrashCount != 1 || crashed.CrashReason != "exit status 2" ||
		crashed.InstanceGuid != "" || crashed.Address != "" || crashed.RunningSince != running.RunningSince {
		t.Fatalf("crashed = %+v", crashed)
	}
	_, err = s.CrashActualLRP(ctx, key, ik, "again")
	wantErr(t, err, models.ErrInvalidTransition, "crash twice")
	_, err = s.ClaimActualLRP(ctx, key, ik)
	wantErr(t, err, models.ErrInvalidTransition, "claim CRASHED")
	_, err = s.StartActualLRP(ctx, key, ik, netInfo)
	wantErr(t, err, models.ErrInvalidTransition, "start CRASHED")

	// Start straight from UNCLAIMED (a cell re-attaching), then Remove by the holder only.
	must[*models.ActualLRP](t)(s.RestartActualLRP(ctx, key, 0))
	must[*models.ActualLRP](t)(s.StartActualLRP(ctx, key, ik, netInfo))
	wantErr(t, s.RemoveActualLRP(ctx, key, models.PresenceOrdinary, other), models.ErrForbidden, "remove by another instance")
	wantErr(t, s.RemoveActualLRP(ctx, key, models.PresenceOrdinary, ik), nil, "remove")
	wantErr(t, s.RemoveActualLRP(ctx, key, models.PresenceOrdinary, ik), models.ErrNotFound, "remove twice")
}

func TestEvacuateActualLRP(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 2)))
	key := lrpKey("web", 0)
	ik := claimAndStart(t, s, key, "cell-a", "i-1")

	_, err := s.EvacuateActualLRP(ctx, key, models.ActualLRPInstanceKey{InstanceGuid: "i-9", CellID: "cell-a"})
	wantErr(t, err, models.ErrForbidden, "evacuate by another instance")

	ord, err := s.EvacuateActualLRP(ctx, key, ik)
	wantErr(t, err, nil, "evacuate RUNNING")
	recs := records(t, s, key)
	evac := recs[models.PresenceEvacuating]
	if ord.State != models.ActualLRPStateUnclaimed || ord.InstanceGuid != "" || recs[models.PresenceOrdinary].Revision != ord.Revision {
		t.Fatalf("ordinary after evacuation = %+v", ord)
	}
	if evac == nil || evac.State != models.ActualLRPStateRunning || evac.ActualLRPInstanceKey != ik || evac.Address != netInfo.Address ||
		evac.Revision != ord.Revision {
		t.Fatalf("evacuating record = %+v, want RUNNING copy written in the same transaction", evac)
	}
	again, err := s.EvacuateActualLRP(ctx, key, ik)
	wantErr(t, err, nil, "evacuate again")
	if again.Revision != ord.Revision {
		t.Fatal("repeated evacuation wrote again")
	}

	// The replacement runs elsewhere; the evacuee's crash removes only its own record.
	ik2 := claimAndStart(t, s, key, "cell-b", "i-2")
	gone, err := s.CrashActualLRP(ctx, key, ik, "stopped")
	wantErr(t, err, nil, "crash evacuating instance")
	if gone.Presence != models.PresenceEvacuating {
		t.Fatalf("crash returned %+v, want the removed EVACUATING record", gone)
	}
	recs = records(t, s, key)
	if recs[models.PresenceEvacuating] != nil || recs[models.PresenceOrdinary].ActualLRPInstanceKey != ik2 ||
		recs[models.PresenceOrdinary].State != models.ActualLRPStateRunning {
		t.Fatalf("after crash of evacuee: %v", recs)
	}

	// A CLAIMED instance goes straight back to UNCLAIMED, with no EVACUATING record.
	key1 := lrpKey("web", 1)
	ik3 := models.ActualLRPInstanceKey{InstanceGuid: "i-3", CellID: "cell-a"}
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key1, "cell-a", 0))
	must[*models.ActualLRP](t)(s.ClaimActualLRP(ctx, key1, ik3))
	back := must[*models.ActualLRP](t)(s.EvacuateActualLRP(ctx, key1, ik3))
	if back.State != models.ActualLRPStateUnclaimed || back.CellID != "" || records(t, s, key1)[models.PresenceEvacuating] != nil {
		t.Fatalf("evacuated CLAIMED = %+v", back)
	}
	_, err = s.EvacuateActualLRP(ctx, key1, ik3)
	wantErr(t, err, models.ErrInvalidTransition, "evacuate UNCLAIMED")

	// Removing an EVACUATING record by its holder.
	must[*models.ActualLRP](t)(s.EvacuateActualLRP(ctx, key, ik2))
	wantErr(t, s.RemoveActualLRP(ctx, key, models.PresenceEvacuating, ik2), nil, "remove EVACUATING")
}

func TestMarkActualLRPSuspect(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 1)))
	key := lrpKey("web", 0)

	_, err := s.MarkActualLRPSuspect(ctx, key, 0)
	wantErr(t, err, models.ErrInvalidTransition, "suspect UNCLAIMED")

	ik := claimAndStart(t, s, key, "cell-a", "i-1")
	cur := records(t, s, key)[models.PresenceOrdinary]
	_, err = s.MarkActualLRPSuspect(ctx, key, cur.Revision-1)
	wantErr(t, err, models.ErrConflict, "suspect with stale revision")
	ord, err := s.MarkActualLRPSuspect(ctx, key, cur.Revision)
	wantErr(t, err, nil, "suspect")
	recs := records(t, s, key)
	sus := recs[models.PresenceSuspect]
	if ord.State != models.ActualLRPStateUnclaimed || ord.Presence != models.PresenceOrdinary ||
		sus == nil || sus.State != models.ActualLRPStateRunning || sus.ActualLRPInstanceKey != ik || sus.Revision != ord.Revision {
		t.Fatalf("after suspect: ordinary %+v, suspect %+v", ord, sus)
	}

	// The suspect instance is reported crashed later: its SUSPECT record goes.
	_, err = s.CrashActualLRP(ctx, key, ik, "cell came back without it")
	wantErr(t, err, nil, "crash suspect instance")
	if recs := records(t, s, key); recs[models.PresenceSuspect] != nil || recs[models.PresenceOrdinary] == nil {
		t.Fatalf("after crash of suspect: %v", recs)
	}
}

// TestClaimRace has 100 instances claim the same placed index at once: exactly one wins,
// every other is refused as an invalid transition, and the record names the winner.
func TestClaimRace(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 1)))
	key := lrpKey("web", 0)
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, key, "cell-a", 0))

	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.ClaimActualLRP(ctx, key, models.ActualLRPInstanceKey{InstanceGuid: fmt.Sprintf("i-%d", i), CellID: "cell-a"})
		})
	}
	wg.Wait()
	won, refused := -1, 0
	for i, err := range errs {
		switch {
		case err == nil:
			if won >= 0 {
				t.Fatalf("instances %d and %d both claimed", won, i)
			}
			won = i
		case errors.Is(err, models.ErrInvalidTransition):
			refused++
		default:
			t.Fatalf("claim %d: unexpected error %v", i, err)
		}
	}
	if won < 0 || refused != n-1 {
		t.Fatalf("winner %d, refused %d; want one winner and %d refusals", won, refused, n-1)
	}
	if got := records(t, s, key)[models.PresenceOrdinary]; got.InstanceGuid != fmt.Sprintf("i-%d", won) {
		t.Fatalf("record held by %q, winner was i-%d", got.InstanceGuid, won)
	}
}

// TestExpectRevisionRace has 50 brains place the same instance with the revision they read:
// one wins, the rest get Conflict.
func TestExpectRevisionRace(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 1)))
	key := lrpKey("web", 0)
	rev := records(t, s, key)[models.PresenceOrdinary].Revision

	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.PlaceActualLRP(ctx, key, fmt.Sprintf("cell-%d", i), rev)
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, models.ErrConflict):
			t.Fatalf("place %d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d placements won, want exactly 1", wins)
	}
}

// TestCrashCountResetsAfterLongRun: a crash after more than the restart policy's reset window
// RUNNING counts as the first crash again; a quick crash adds one.
func TestCrashCountResetsAfterLongRun(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	s := store.New(shared.Client(), store.Options{
		Prefix: fmt.Sprintf("/test/crash-reset-%d/", prefixes.Add(1)),
		Now:    func() time.Time { return time.Unix(0, clock.Load()) },
	})
	ctx := ctxT(t)
	lrp := desiredLRP("web", 1)
	lrp.RestartPolicy = &models.RestartPolicy{ResetAfterMs: 60_000}
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, lrp))
	key := lrpKey("web", 0)

	crashAfter := func(guid string, ran time.Duration) int32 {
		t.Helper()
		ik := claimAndStart(t, s, key, "cell-a", guid)
		clock.Add(ran.Nanoseconds())
		crashed := must[*models.ActualLRP](t)(s.CrashActualLRP(ctx, key, ik, "exited with status 1"))
		must[*models.ActualLRP](t)(s.RestartActualLRP(ctx, key, crashed.Revision))
		return crashed.CrashCount
	}
	for i, tc := range []struct {
		ran  time.Duration
		want int32
	}{
		{time.Second, 1},
		{time.Second, 2},
		{59 * time.Second, 3},
		{61 * time.Second, 1}, // over the 60 s window: the count starts again
		{time.Second, 2},
	} {
		if got := crashAfter(fmt.Sprintf("i-%d", i), tc.ran); got != tc.want {
			t.Errorf("crash %d after running %s: crash_count %d, want %d", i+1, tc.ran, got, tc.want)
		}
	}
}
