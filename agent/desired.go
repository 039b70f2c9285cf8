package agent

import (
	"github.com/trellis-run/trellis/bbs/models"
)

// The agent keeps the DesiredLRP of every app it runs, so that the second and later instances
// of an app placed on the cell start without fetching it again; the first instance of an app
// gets it with its claim (ClaimActualLRPWithDesired), so the agent never reads it before
// running an instance: one BBS request per instance less than a read then a claim.
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
// the last instance of the app on the cell is gone; a definition fetched before a drop is not
// cached.

// cachedDesired returns the DesiredLRP to run c from when the cell holds one an anchor vouches
// for (reserve, then claim). Otherwise it returns nil and the current drop epoch: the caller
// claims c with its definition and hands the answer to keepDesired with that epoch.
func (a *Agent) cachedDesired(c *container) (*models.DesiredLRP, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if d := a.desired[c.key.ProcessGuid]; d != nil && a.anchoredLocked(c, d) {
		c.desired = d
		return d, 0
	}
	return nil, a.desiredEpoch
}

// keepDesired records d, fetched for c after the drop epoch epoch: c runs from it, and it
// becomes the cell's definition of the app unless a drop happened since (d may predate the
// removal that caused it) or a newer one is held (revisions only grow, and a re-desired app's
// record is newer than the removed one's).
func (a *Agent) keepDesired(c *container, d *models.DesiredLRP, epoch uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.desired[c.key.ProcessGuid]; a.desiredEpoch == epoch && (cur == nil || d.Revision > cur.Revision) {
		a.desired[c.key.ProcessGuid] = d
	}
	c.desired = d
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
