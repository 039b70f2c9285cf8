package auction

import (
	"maps"
	"slices"

	"github.com/trellis-run/trellis/bbs/models"
)

// CellState is one cell as the auction sees it: what it announced (its presence) and what it
// currently holds according to the BBS records placed on it.
//
// Build it with NewCellState and account for each record on the cell with AddLRP or AddTask.
// Auction never modifies a CellState; apply its placements yourself (AddLRP, AddTask) if the
// states are kept between auctions.
type CellState struct {
	ID   string
	Zone string
	// Capacity is the cell's total capacity.
	Capacity models.Resources
	// Reserved is what the work on the cell holds (placed, claimed or running).
	Reserved models.Resources
	// StartingContainers counts the containers placed or claimed on the cell that are not yet
	// RUNNING; each adds to the cell's score so a burst of work spreads out.
	StartingContainers int32
	// RootFSProviders lists "preloaded:<stack>" entries and bare schemes such as "docker".
	RootFSProviders []string
	// PlacementTags are the tags work must request to land here; OptionalPlacementTags are
	// tags work may also request.
	PlacementTags         []string
	OptionalPlacementTags []string
	// Draining cells take no new work.
	Draining bool
	// Instances counts, per process guid, the instances of that process on the cell.
	Instances map[string]int32
}

// NewCellState returns the state of a cell that holds nothing yet. Reserved starts at zero:
// the brain's own records are authoritative (they include work placed but not yet claimed,
// which the cell cannot know about), so the presence's reported Available is not used.
func NewCellState(p *models.CellPresence) *CellState {
	return &CellState{
		ID:                    p.CellID,
		Zone:                  p.Zone,
		Capacity:              p.Capacity,
		RootFSProviders:       slices.Clone(p.RootFSProviders),
		PlacementTags:         slices.Clone(p.PlacementTags),
		OptionalPlacementTags: slices.Clone(p.OptionalPlacementTags),
		Draining:              p.Draining,
		Instances:             map[string]int32{},
	}
}

// AddLRP accounts for one instance of processGuid on the cell; starting says it is not yet
// RUNNING.
func (c *CellState) AddLRP(processGuid string, memoryMB, diskMB int32, starting bool) {
	c.reserve(memoryMB, diskMB, starting)
	if c.Instances == nil {
		c.Instances = map[string]int32{}
	}
	c.Instances[processGuid]++
}

// AddTask accounts for one task on the cell; starting says it is not yet RUNNING.
func (c *CellState) AddTask(memoryMB, diskMB int32, starting bool) {
	c.reserve(memoryMB, diskMB, starting)
}

func (c *CellState) reserve(memoryMB, diskMB int32, starting bool) {
	c.Reserved.MemoryMB += memoryMB
	c.Reserved.DiskMB += diskMB
	c.Reserved.Containers++
	if starting {
		c.StartingContainers++
	}
}

// Clone returns a deep copy of c.
func (c *CellState) Clone() *CellState {
	d := *c
	d.RootFSProviders = slices.Clone(c.RootFSProviders)
	d.PlacementTags = slices.Clone(c.PlacementTags)
	d.OptionalPlacementTags = slices.Clone(c.OptionalPlacementTags)
	d.Instances = maps.Clone(c.Instances)
	return &d
}

// acceptsTags applies the placement-tag rule: the cell's required tags ⊆ requested ⊆ the
// cell's required ∪ optional tags. Duplicates in any list do not matter.
func acceptsTags(required, optional, requested []string) bool {
	for _, r := range required {
		if !slices.Contains(requested, r) {
			return false
		}
	}
	for _, t := range requested {
		if !slices.Contains(required, t) && !slices.Contains(optional, t) {
			return false
		}
	}
	return true
}
