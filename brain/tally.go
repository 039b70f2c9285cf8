package brain

import (
	"maps"

	"github.com/trellis-run/trellis/bbs/models"
)

// cellUsage is what the view's instance records hold on one cell. The session keeps it up to
// date as records change, so that an auction reads it per cell instead of walking every
// record of the view (250,000 of them at Diego's scale) before each batch.
type cellUsage struct {
	reserved  models.Resources
	starting  int32
	instances map[string]int32
	// shared says instances is referenced by a CellState handed to an auction, which reads
	// it without the session's lock: the next change copies it first.
	shared bool
}

// contribution is what one record adds to its cell's usage, remembered so that exactly that
// is taken away when the record changes or goes.
type contribution struct {
	cell      string
	guid      string
	mem, disk int32
	starting  bool
}

func (u *cellUsage) add(c contribution, sign int32) {
	u.reserved.MemoryMB += sign * c.mem
	u.reserved.DiskMB += sign * c.disk
	u.reserved.Containers += sign
	if c.starting {
		u.starting += sign
	}
	if u.shared {
		u.instances = maps.Clone(u.instances)
		u.shared = false
	}
	if n := u.instances[c.guid] + sign; n > 0 {
		u.instances[c.guid] = n
	} else {
		delete(u.instances, c.guid)
	}
}

// contributionOf returns what a counts on its cell: a placed, claimed or running instance
// holds its DesiredLRP's memory and disk and one container, "starting" until RUNNING.
func (s *session) contributionOf(a *models.ActualLRP) (contribution, bool) {
	if a.CellID == "" || a.State == models.ActualLRPStateCrashed {
		return contribution{}, false
	}
	c := contribution{cell: a.CellID, guid: a.ProcessGuid, starting: a.State != models.ActualLRPStateRunning}
	if d := s.desired[a.ProcessGuid]; d != nil {
		c.mem, c.disk = d.MemoryMB, d.DiskMB
	}
	return c, true
}

// setActualLocked stores a under k and updates the cells' usage.
func (s *session) setActualLocked(k actualKey, a *models.ActualLRP) {
	s.untallyLocked(k)
	if _, ok := s.actual[k]; !ok {
		g := s.byGuid[k.guid]
		g.records++
		g.maxIndex = max(g.maxIndex, k.index)
		s.byGuid[k.guid] = g
	}
	s.actual[k] = a
	if c, ok := s.contributionOf(a); ok {
		u := s.usage[c.cell]
		if u == nil {
			u = &cellUsage{instances: map[string]int32{}}
			s.usage[c.cell] = u
		}
		u.add(c, 1)
		s.contrib[k] = c
	}
}

// deleteActualLocked removes k and its share of its cell's usage.
func (s *session) deleteActualLocked(k actualKey) {
	s.untallyLocked(k)
	if _, ok := s.actual[k]; !ok {
		return
	}
	delete(s.actual, k)
	if g := s.byGuid[k.guid]; g.records > 1 {
		g.records--
		s.byGuid[k.guid] = g
	} else {
		delete(s.byGuid, k.guid)
	}
}

// guidRecords counts the records of one process in the view and bounds their indices, so
// that a plan of a few processes finds their records without a walk of the whole view.
type guidRecords struct {
	records  int32
	maxIndex int32 // no record of the process has a higher index
}

// recordsOfLocked returns every record of process guid in the view. Callers hold s.mu.
func (s *session) recordsOfLocked(guid string) []*models.ActualLRP {
	g, ok := s.byGuid[guid]
	if !ok {
		return nil
	}
	out := make([]*models.ActualLRP, 0, g.records)
	for i := int32(0); i <= g.maxIndex && int32(len(out)) < g.records; i++ {
		for _, p := range presences {
			if a := s.actual[actualKey{guid, i, p}]; a != nil {
				out = append(out, a)
			}
		}
	}
	return out
}

func (s *session) untallyLocked(k actualKey) {
	c, ok := s.contrib[k]
	if !ok {
		return
	}
	delete(s.contrib, k)
	u := s.usage[c.cell]
	u.add(c, -1)
	if u.reserved.Containers == 0 {
		delete(s.usage, c.cell)
	}
}

// presences are the presences an index's records can have.
var presences = [...]string{models.PresenceOrdinary, models.PresenceEvacuating, models.PresenceSuspect}

// retallyLocked recounts the records of a DesiredLRP that arrived after some of its
// instances did (they were counted without its memory and disk).
func (s *session) retallyLocked(d *models.DesiredLRP) {
	for i := int32(0); i < d.Instances; i++ {
		for _, p := range presences {
			k := actualKey{d.ProcessGuid, i, p}
			if a := s.actual[k]; a != nil {
				s.setActualLocked(k, a)
			}
		}
	}
}
