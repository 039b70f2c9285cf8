package agent

import (
	"context"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// An evacuating instance looks for its replacement after evacuationPoll, then waits half as
// long again after each look that does not find it RUNNING, up to evacuationPollMax: a cell
// evacuating hundreds of instances would otherwise read the BBS thousands of times a second
// (measured by the scale simulator: a 10% drain of 1,000 cells stalled the BBS). The old
// container keeps serving meanwhile, so a later look costs capacity, not availability.
const (
	evacuationPoll    = 200 * time.Millisecond
	evacuationPollMax = 5 * time.Second
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
	idx := c.key.Index
	why := "evacuation timed out"
	poll := evacuationPoll
wait:
	for time.Now().Before(deadline) {
		ctx, cancel := a.bbsCtx()
		recs, _, err := a.store.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: c.key.ProcessGuid, Index: &idx})
		cancel()
		if err == nil {
			replaced, held := false, false
			for _, r := range recs {
				switch {
				case r.Presence == models.PresenceOrdinary && r.State == models.ActualLRPStateRunning && r.InstanceGuid != c.handle:
					replaced = true
				case r.Presence == models.PresenceEvacuating && r.InstanceGuid == c.handle:
					held = true
				}
			}
			if replaced {
				why = "replacement is running"
				break wait
			}
			if !held {
				why = "the evacuating record is gone"
				break wait
			}
		} else if !a.isClosed() {
			log.Warn("looking for the replacement", "error", err)
		}
		select {
		case <-c.stopCtx.Done():
			return // crashed or stopped meanwhile; its goroutine cleans up
		case <-a.closed:
			return
		case <-time.After(poll):
		}
		poll = min(poll*3/2, evacuationPollMax)
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
