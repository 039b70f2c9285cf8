package agent

import (
	"context"
	"slices"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// Presence returns what the cell announces now.
func (a *Agent) Presence() *models.CellPresence {
	avail := a.ledger.available()
	a.mu.Lock()
	draining, addr := a.draining, a.advertise
	a.mu.Unlock()
	return &models.CellPresence{
		CellID:                a.cfg.CellID,
		Zone:                  a.cfg.Zone,
		Address:               addr,
		OS:                    a.os,
		Capacity:              a.cap,
		RootFSProviders:       a.cfg.providers(),
		PlacementTags:         slices.Clone(a.cfg.PlacementTags),
		OptionalPlacementTags: slices.Clone(a.cfg.OptionalPlacementTags),
		Draining:              draining,
		Available:             &avail,
	}
}

// heartbeatNow asks the presence loop for a heartbeat without waiting for the next tick.
func (a *Agent) heartbeatNow() {
	select {
	case a.beat <- struct{}{}:
	default:
	}
}

// presenceLoop heartbeats every third of the presence TTL (and when asked) until ctx ends.
// A failed heartbeat is retried at the next tick; the lease outlives two missed ones.
//
// Only the drain asks for an early heartbeat (the draining flag). A reservation does not: the
// work's record already names this cell, and the auctioneer counts each cell's usage from the
// records, using the reported Available only where it exceeds them (containers the BBS does not
// know of). Early heartbeats for accepted instances, even at most one per minEarlyBeat, were
// half of a filling cell's heartbeats (scale simulator, 300 cells: 0.55-0.61 heartbeats per
// cell per second during a fill, 0.27-0.28 without), each a BBS write, a lease renewal and a
// cell_changed event to every stream that follows cells.
func (a *Agent) presenceLoop(ctx context.Context) {
	ttl := time.Duration(a.cfg.PresenceTTL)
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	failing := false
	for {
		hctx, cancel := context.WithTimeout(ctx, ttl/3)
		err := a.store.Heartbeat(hctx, a.Presence(), ttl)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				a.log.Warn("heartbeat failed; retrying", "error", err)
			}
			failing = true
		case err == nil && failing:
			a.log.Info("heartbeat succeeded again")
			failing = false
		}
		last := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.beat:
			// An early heartbeat comes at most one per minEarlyBeat after the last one.
			if wait := minEarlyBeat(ttl) - time.Since(last); wait > 0 {
				w := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					w.Stop()
					return
				case <-w.C:
				case <-t.C:
					w.Stop()
				}
			}
		}
	}
}

// minEarlyBeat is the shortest time between a heartbeat and an early one asked for by
// heartbeatNow: a quarter of the presence TTL.
func minEarlyBeat(ttl time.Duration) time.Duration { return ttl / 4 }
