package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// An evacuating instance learns that its replacement runs from the cell's own event stream:
// the brain's converger retires the EVACUATING record once the ORDINARY replacement is RUNNING,
// and that removal (of a record on this cell) stops the container (lrpRecordGone; the periodic
// reconcile does the same should the stream lag). Asking the BBS for the replacement instead
// cost one read per evacuating instance every few seconds while the stream already carried
// the answer: a third of the BBS requests of a simulated drain of 30 of 300 cells, and ~5,000
// reads/s for 25,000 evacuating instances. The instance still looks for itself, in case the
// converger is behind:
// first evacuationLook after it began evacuating, then at growing intervals up to
// evacuationLookMax, each with up to a quarter more at random so that a cell's evacuees do not
// look at once. The old container keeps serving meanwhile, so a late look costs capacity, not
// availability. (Variables so tests can shorten them.)
var (
	evacuationLook    = 30 * time.Second
	evacuationLookMax = 2 * time.Minute
)

// evacuate drains the cell (DESIGN §5): the presence says draining, so the auctioneer places
// nothing more here and new placements are rejected; every RUNNING instance is evacuated and
// keeps serving until its replacement runs; claimed but not yet running instances go back to
// the auctioneer; tasks finish. Once no container is left the presence is removed. When ctx
// ends first the agent simply stops (its containers keep running).
func (a *Agent) evacuate(ctx context.Context) {
	a.log.Info("draining the cell")
	a.mu.Lock()
	a.draining = true
	var lrps []*container
	for _, c := range a.containers {
		if c.kind == KindLRP {
			lrps = append(lrps, c)
		}
	}
	a.mu.Unlock()
	a.heartbeatNow()

	for _, c := range lrps {
		a.mu.Lock()
		reported, claimed, evacuating := c.reported, c.claimed, c.presence == models.PresenceEvacuating
		a.mu.Unlock()
		switch {
		case reported || evacuating:
			a.work.Go(func() { a.evacuateOne(c) })
		case claimed:
			a.work.Go(func() { a.returnClaimed(c) })
		}
		// A reserved instance checks for the drain itself before claiming, or evacuates
		// itself once it reports RUNNING.
	}

	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		a.mu.Lock()
		left := len(a.containers) + a.evacPending
		a.mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			a.log.Info("stopped before the drain finished; containers keep running", "containers", left)
			return
		case <-t.C:
		}
	}
	rctx, cancel := context.WithTimeout(ctx, bbsCallTimeout)
	defer cancel()
	if err := a.store.RemoveCell(rctx, a.cfg.CellID); err != nil && !models.IsNotFound(err) {
		a.log.Warn("removing the cell's presence after the drain", "error", err)
	}
	a.log.Info("drain finished")
	close(a.drained)
}

// returnClaimed hands an instance that is not RUNNING yet back to the auctioneer
// (EvacuateActualLRP of a CLAIMED record makes it UNCLAIMED) and stops it.
func (a *Agent) returnClaimed(c *container) {
	ctx, cancel := a.bbsCtx()
	_, err := a.store.EvacuateActualLRP(ctx, c.key, c.instanceKey(a.cfg.CellID))
	cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && c.reported {
		// It became RUNNING meanwhile and evacuates itself.
		return
	}
	a.stopLocked(c, "the cell is draining")
}

// evacuateOne evacuates a RUNNING instance: its record becomes EVACUATING while an UNCLAIMED
// replacement is auctioned; the container keeps serving until the replacement's ORDINARY
// record is RUNNING (or the EVACUATING record is gone, or EvacuationTimeout passes), then it
// stops and its EVACUATING record is removed.
func (a *Agent) evacuateOne(c *container) {
	a.mu.Lock()
	if c.evacuating || c.stopping {
		a.mu.Unlock()
		return
	}
	c.evacuating = true
	already := c.presence == models.PresenceEvacuating
	c.presence = models.PresenceEvacuating
	a.evacPending++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.evacPending--
		a.mu.Unlock()
	}()
	log := a.log.With("process_guid", c.key.ProcessGuid, "index", c.key.Index, "instance", c.handle)
	ik := c.instanceKey(a.cfg.CellID)

	if !already {
		ctx, cancel := a.bbsCtx()
		_, err := a.store.EvacuateActualLRP(ctx, c.key, ik)
		cancel()
		if err != nil {
			log.Warn("evacuating the instance failed; stopping it", "error", err)
			a.mu.Lock()
			a.stopLocked(c, "evacuation refused: "+err.Error())
			a.mu.Unlock()
			return
		}
		if cont, err := a.backend.Lookup(c.stopCtx, c.handle); err == nil {
			if err := cont.SetProperty(c.stopCtx, PropPresence, models.PresenceEvacuating); err != nil {
				log.Warn("recording the evacuation in the container", "error", err)
			}
		}
	}
	log.Info("instance evacuating; waiting for its replacement")

	deadline := time.Now().Add(time.Duration(a.cfg.EvacuationTimeout))
	why := "evacuation timed out"
	look := evacuationLook
	for {
		wait := min(look+rand.N(look/4+1), time.Until(deadline))
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-c.stopCtx.Done():
			// Its EVACUATING record was removed (the replacement runs), or it crashed or was
			// stopped: its goroutine destroys the container.
			t.Stop()
			return
		case <-a.closed:
			t.Stop()
			return
		case <-t.C:
		}
		if !time.Now().Before(deadline) {
			break
		}
		if done, reason := a.replacementRuns(c, log); done {
			why = reason
			break
		}
		look = min(2*look, evacuationLookMax)
	}
	log.Info("stopping the evacuated instance", "why", why)
	a.mu.Lock()
	a.stopLocked(c, "evacuated: "+why)
	a.mu.Unlock()
	select {
	case <-c.done:
	case <-a.closed:
		return
	}
	ctx, cancel := a.bbsCtx()
	defer cancel()
	if err := a.store.RemoveActualLRP(ctx, c.key, models.PresenceEvacuating, ik); err != nil && !models.IsNotFound(err) {
		log.Warn("removing the evacuating record", "error", err)
	}
}

// replacementRuns asks the BBS whether c, evacuating, may stop: done when the ORDINARY record
// of its index is RUNNING in another instance, or its own EVACUATING record is gone; reason
// says which. A failed read is logged and answers false.
func (a *Agent) replacementRuns(c *container, log *slog.Logger) (done bool, reason string) {
	idx := c.key.Index
	ctx, cancel := a.bbsCtx()
	recs, _, err := a.store.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: c.key.ProcessGuid, Index: &idx})
	cancel()
	if err != nil {
		if !a.isClosed() {
			log.Warn("looking for the replacement", "error", err)
		}
		return false, ""
	}
	held := false
	for _, r := range recs {
		switch {
		case r.Presence == models.PresenceOrdinary && r.State == models.ActualLRPStateRunning && r.InstanceGuid != c.handle:
			return true, "replacement is running"
		case r.Presence == models.PresenceEvacuating && r.InstanceGuid == c.handle:
			held = true
		}
	}
	if !held {
		return true, "the evacuating record is gone"
	}
	return false, ""
}
