package agent

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// heldEvacuation holds the cell's EvacuateActualLRP calls until release is closed, and closes
// entered when the first one arrives.
type heldEvacuation struct {
	store.Interface
	entered, release chan struct{}
	once             sync.Once
}

func (h *heldEvacuation) EvacuateActualLRP(ctx context.Context, key models.ActualLRPKey, ik models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	h.once.Do(func() { close(h.entered) })
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.Interface.EvacuateActualLRP(ctx, key, ik)
}

// TestReconcileDuringEvacuationKeepsTheInstance: a reconcile whose read was taken before the
// BBS made an instance EVACUATING finds its ORDINARY record still holding it; that is the
// instance's record, not a missing one, and the instance keeps serving. (Stopping it there
// would leave the index with no running copy until its replacement ran; on a busy BBS an
// evacuation takes seconds to commit, time enough for a reconcile to fall in between.)
func TestReconcileDuringEvacuationKeepsTheInstance(t *testing.T) {
	e := testBBS(t)
	cellID := uniq("cell")
	mem := memoryBackend(t)
	held := &heldEvacuation{entered: make(chan struct{}), release: make(chan struct{})}
	a := startAgentVia(t, e, e.testConfig(t, cellID), mem, func(s store.Interface) store.Interface {
		held.Interface = s
		return held
	})
	t.Cleanup(func() {
		select {
		case <-held.release:
		default:
			close(held.release)
		}
	})
	op := e.operator(t)
	guid := uniq("web")
	desireAndPlace(t, e, webLRP(guid, 1), cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 10*time.Second)
	addr := "http://" + net.JoinHostPort(rec.InstanceAddress, "8080") + "/"

	ctx := context.Background()
	if _, err := op.DrainCell(ctx, cellID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not start evacuating")
	}
	// The evacuation is asked for but not made: the BBS still has the ORDINARY record.
	if _, err := a.reconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	c := a.containers[rec.InstanceGuid]
	stopping := c == nil || c.stopping
	a.mu.Unlock()
	if stopping {
		t.Fatal("the reconcile stopped the evacuating instance: its ORDINARY record was read as missing")
	}
	close(held.release)
	waitFor(t, 10*time.Second, "the record is EVACUATING", func() bool {
		idx := int32(0)
		recs, _, err := op.ActualLRPs(ctx, storeFilter(guid, &idx))
		for _, r := range recs {
			if err == nil && r.Presence == models.PresenceEvacuating && r.InstanceGuid == rec.InstanceGuid {
				return true
			}
		}
		return false
	})
	// With the evacuation made, a reconcile finds the EVACUATING record and keeps it too.
	if _, err := a.reconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if body, err := get(t, addr); err != nil || body != "hello from 0" {
		t.Fatalf("the evacuating instance after two reconciles: %q, %v", body, err)
	}
}
