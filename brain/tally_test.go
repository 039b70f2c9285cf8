package brain

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain/auction"
)

// unusedStore is a BBS the test never calls.
type unusedStore struct{ store.Interface }

// recount is what cellStates did before the usage was kept incrementally: a walk over every
// record of the view.
func recount(s *session) map[string]*cellUsage {
	out := map[string]*cellUsage{}
	for _, a := range s.actual {
		if a.CellID == "" || a.State == models.ActualLRPStateCrashed {
			continue
		}
		u := out[a.CellID]
		if u == nil {
			u = &cellUsage{instances: map[string]int32{}}
			out[a.CellID] = u
		}
		var mem, disk int32
		if d := s.desired[a.ProcessGuid]; d != nil {
			mem, disk = d.MemoryMB, d.DiskMB
		}
		u.add(contribution{cell: a.CellID, guid: a.ProcessGuid, mem: mem, disk: disk,
			starting: a.State != models.ActualLRPStateRunning}, 1)
	}
	return out
}

// TestCellUsageFollowsEveryChange: the per-cell usage and the per-process index of the view
// agree with a walk of its records after every change.
func TestCellUsageFollowsEveryChange(t *testing.T) {
	states := []string{models.ActualLRPStateUnclaimed, models.ActualLRPStateClaimed, models.ActualLRPStateRunning, models.ActualLRPStateCrashed}
	presences := []string{models.PresenceOrdinary, models.PresenceEvacuating, models.PresenceSuspect}
	cells := []string{"", "c1", "c2", "c3"}
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			b, err := New(DefaultConfig(), unusedStore{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newSession(b)
			for _, c := range cells[1:] {
				s.cells[c] = &models.CellPresence{CellID: c, Zone: "z1", Capacity: models.Resources{MemoryMB: 1 << 20, DiskMB: 1 << 20, Containers: 1000}}
			}
			var handedOut []*auction.CellState
			var handedCopy []map[string]int32
			for step := range 3000 {
				guid := fmt.Sprintf("app-%d", rng.IntN(6))
				k := actualKey{guid, int32(rng.IntN(4)), presences[rng.IntN(len(presences))]}
				switch r := rng.IntN(20); {
				case r == 0 && s.desired[guid] == nil:
					// The DesiredLRP arrives after some of its instances.
					s.putDesiredLocked(&models.DesiredLRP{ProcessGuid: guid, Instances: 4, MemoryMB: int32(64 * (1 + rng.IntN(4))), DiskMB: 100})
				case r < 5:
					s.deleteActualLocked(k)
				case r == 5:
					// An auction takes the states; later changes must not show in them.
					cs, _ := s.cellStates(t.Context())
					handedOut = cs
					handedCopy = nil
					for _, c := range cs {
						handedCopy = append(handedCopy, maps.Clone(c.Instances))
					}
				default:
					s.setActualLocked(k, &models.ActualLRP{ActualLRPKey: models.ActualLRPKey{ProcessGuid: guid, Index: k.index},
						Presence: k.presence, State: states[rng.IntN(len(states))],
						ActualLRPInstanceKey: models.ActualLRPInstanceKey{CellID: cells[rng.IntN(len(cells))]}})
				}
				want := recount(s)
				if len(want) != len(s.usage) {
					t.Fatalf("step %d: usage of %d cells, recount %d", step, len(s.usage), len(want))
				}
				for c, w := range want {
					g := s.usage[c]
					if g == nil || g.reserved != w.reserved || g.starting != w.starting || !maps.Equal(g.instances, w.instances) {
						t.Fatalf("step %d: cell %s usage %+v, recount %+v", step, c, g, w)
					}
				}
				// The per-process index finds exactly the records a walk of the view finds.
				byGuid := map[string]map[actualKey]bool{}
				for k := range s.actual {
					if byGuid[k.guid] == nil {
						byGuid[k.guid] = map[actualKey]bool{}
					}
					byGuid[k.guid][k] = true
				}
				if len(s.byGuid) != len(byGuid) {
					t.Fatalf("step %d: %d processes indexed, %d with records", step, len(s.byGuid), len(byGuid))
				}
				for guid, want := range byGuid {
					got := map[actualKey]bool{}
					for _, a := range s.recordsOfLocked(guid) {
						got[keyOf(a)] = true
					}
					if !maps.Equal(got, want) {
						t.Fatalf("step %d: records of %s %v, walk %v", step, guid, got, want)
					}
				}
				for i, cs := range handedOut {
					if !maps.Equal(cs.Instances, handedCopy[i]) {
						t.Fatalf("step %d: a state handed to an auction changed under it: %v, was %v", step, cs.Instances, handedCopy[i])
					}
				}
			}
		})
	}
}
