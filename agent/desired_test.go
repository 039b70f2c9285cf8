package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// countingStore counts the agent's DesiredLRP reads and claims.
type countingStore struct {
	store.Interface
	desiredReads, claims, claimsWithDesired atomic.Int64
}

func (s *countingStore) DesiredLRP(ctx context.Context, guid string) (*models.DesiredLRP, error) {
	s.desiredReads.Add(1)
	return s.Interface.DesiredLRP(ctx, guid)
}

func (s *countingStore) ClaimActualLRP(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	s.claims.Add(1)
	return s.Interface.ClaimActualLRP(ctx, k, ik)
}

func (s *countingStore) ClaimActualLRPWithDesired(ctx context.Context, k models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, *models.DesiredLRP, error) {
	s.claimsWithDesired.Add(1)
	return s.Interface.ClaimActualLRPWithDesired(ctx, k, ik)
}

// fetches checks how the agent got its definitions so far: never by a read of its own, and
// wantWithDesired times with a claim.
func (s *countingStore) fetches(t *testing.T, when string, wantWithDesired int64) {
	t.Helper()
	if n := s.desiredReads.Load(); n != 0 {
		t.Fatalf("DesiredLRP reads %s = %d, want none (the claim brings the definition)", when, n)
	}
	if n := s.claimsWithDesired.Load(); n != wantWithDesired {
		t.Fatalf("claims with the definition %s = %d, want %d", when, n, wantWithDesired)
	}
}

// TestDesiredLRPCache: an app's first instance on the cell gets the definition with its claim
// and no read; further instances of an app already running on the cell claim without it, an
// update leaves the cached definition in use, and an app removed and desired again under the
// same guid runs from its new definition.
func TestDesiredLRPCache(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	mem := memoryBackend(t)
	counting := &countingStore{}
	startAgentVia(t, e, e.testConfig(t, cellID), mem, func(s store.Interface) store.Interface {
		counting.Interface = s
		return counting
	})
	op, brain := e.operator(t), e.brain(t)
	ctx := context.Background()
	guid := uniq("web")
	lrp := webLRP(guid, 1)
	desireAndPlace(t, e, lrp, cellID)
	waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	counting.fetches(t, "after the first instance", 1)

	// Scaling up (an update of the record) places two more instances here: no new read.
	three := int32(3)
	if _, err := op.UpdateDesiredLRP(ctx, guid, models.DesiredLRPUpdate{Instances: &three}, 0); err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i < 3; i++ {
		if _, err := brain.PlaceActualLRP(ctx, models.ActualLRPKey{ProcessGuid: guid, Index: i, Domain: lrp.Domain}, cellID, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := int32(1); i < 3; i++ {
		waitState(t, op, guid, i, models.ActualLRPStateRunning, 10*time.Second)
	}
	counting.fetches(t, "after scaling to 3 on the cell", 1)
	if n := counting.claims.Load(); n != 2 {
		t.Fatalf("plain claims after scaling to 3 on the cell = %d, want 2", n)
	}

	// Removed and desired again with another definition: the new instance runs from it.
	if err := op.RemoveDesiredLRP(ctx, guid); err != nil {
		t.Fatal(err)
	}
	lrp2 := webLRP(guid, 1)
	lrp2.MemoryMB = 96
	desireAndPlace(t, e, lrp2, cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	spec, err := mem.Spec(rec.InstanceGuid)
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Limits.MemoryBytes; got != 96<<20 {
		t.Fatalf("re-desired instance runs with a memory limit of %d bytes, want %d (the new definition)", got, 96<<20)
	}
	counting.fetches(t, "after the app was desired again", 2)
	waitFor(t, 10*time.Second, "the removed app's containers are gone", func() bool { return mem.Len() == 1 })

	// Instances of an app placed together, none of them anchored yet: each claim brings the
	// definition, and there is no read.
	other := uniq("web")
	desireAndPlace(t, e, webLRP(other, 4), cellID)
	for i := int32(0); i < 4; i++ {
		waitState(t, op, other, i, models.ActualLRPStateRunning, 10*time.Second)
	}
	if n := counting.desiredReads.Load(); n != 0 {
		t.Fatalf("DesiredLRP reads after 4 instances of another app placed at once = %d, want none", n)
	}
	if n := counting.claims.Load() + counting.claimsWithDesired.Load(); n != 2+2+4 {
		t.Fatalf("claims in all = %d, want one per instance (8)", n)
	}
}
