package agent

import (
	"github.com/trellis-run/trellis/bbs/models"
)

// The agent keeps the DesiredLRP of every app it runs, so that the second and later instances
// of an app placed on the cell start without reading it again (one BBS read per app per cell,
// not per instance).
//
// What the cell runs from a DesiredLRP cannot change in place: an update changes only the
// instance count, routes, annotation and restart policy, none of which the agent uses. A new
// definition under the same process guid needs the record removed and desired again, and a
// removal deletes every instance record of the app in the same transaction. So a cached
// definition is used only while an anchor vouches for it: another instance on this cell,
// started from that very definition, not being stopped — its record is on this cell, so the
// cell's event stream (in revision order) delivers that record's removal before any instance of
// a re-desired app, and a reconcile that finds the record missing drops the definition before
// it looks at anything else. The definition is dropped when such a removal is seen, and when
// the last instance of the app on the cell is gone; a read asked before a drop is not cached.
// Instances placed together, before any of them has the definition, share the read in flight.

// desiredFor returns the DesiredLRP to run c from: the cached one when an anchor vouches for
// it; else the answer of a read of it already in flight that was asked after c's record was
// seen (instances of an app placed together share one read: the BBS answers a read with the
// record as it is when asked, so that answer is as good as c's own read); else a fresh read,
// which becomes the cached one unless a drop happened meanwhile or a newer one is cached.
// Errors: the BBS's.
func (a *Agent) desiredFor(c *container) (*models.DesiredLRP, error) {
	guid := c.key.ProcessGuid
	a.mu.Lock()
	for {
		if d := a.desired[guid]; d != nil && a.anchoredLocked(c, d) {
			c.desired = d
			a.mu.Unlock()
			return d, nil
		}
		f := a.desiredReads[guid]
		if f == nil {
			break
		}
		a.mu.Unlock()
		<-f.done
		a.mu.Lock()
		if f.err == nil && c.seq < f.seq {
			c.desired = f.lrp
			a.mu.Unlock()
			return f.lrp, nil
		}
		// Asked before c's record was seen, or failed: look again.
	}
	a.seq++
	f := &desiredRead{seq: a.seq, done: make(chan struct{})}
	a.desiredReads[guid] = f
	epoch := a.desiredEpoch
	a.mu.Unlock()

	ctx, cancel := a.bbsCtx()
	d, err := a.store.DesiredLRP(ctx, guid)
	cancel()

	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.desiredReads, guid)
	f.lrp, f.err = d, err
	close(f.done)
	if err != nil {
		return nil, err
	}
	// A read answered after a drop may predate the removal that caused it; a read answered
	// late must not replace a newer record read meanwhile (revisions only grow, and a
	// re-desired app's record is newer than the removed one's).
	if cur := a.desired[guid]; a.desiredEpoch == epoch && (cur == nil || d.Revision > cur.Revision) {
		a.desired[guid] = d
	}
	c.desired = d
	return d, nil
}

// desiredRead is a read of a DesiredLRP in flight.
type desiredRead struct {
	seq  uint64        // Agent.seq when it was asked
	done chan struct{} // closed when answered
	lrp  *models.DesiredLRP
	err  error
}

// anchoredLocked reports whether a live instance other than c was started from d.
// Callers hold a.mu.
func (a *Agent) anchoredLocked(c *container, d *models.DesiredLRP) bool {
	for _, o := range a.containers {
		if o != c && o.kind == KindLRP && !o.stopping && o.desired == d {
			return true
		}
	}
	return false
}

// dropDesiredLocked forgets the cached DesiredLRP of guid. Callers hold a.mu.
func (a *Agent) dropDesiredLocked(guid string) {
	delete(a.desired, guid)
	a.desiredEpoch++
}

// dropUnusedDesiredLocked forgets the cached DesiredLRP of guid when no instance of it is left
// on the cell. Callers hold a.mu.
func (a *Agent) dropUnusedDesiredLocked(guid string) {
	if _, ok := a.desired[guid]; !ok {
		return
	}
	for _, o := range a.containers {
		if o.kind == KindLRP && o.key.ProcessGuid == guid {
			return
		}
	}
	delete(a.desired, guid)
}
