package auction

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/trellis-run/trellis/bbs/models"
)

// SameProcessWeight is added to a cell's score for each instance of the same process it already
// holds. It dominates every other term, so instances of one process spread over cells before
// any cell gets a second one.
const SameProcessWeight = 1000

// Options tune an auction. The zero value is valid but turns the starting-containers penalty
// off; start from DefaultOptions.
type Options struct {
	// StartingContainerWeight is added to a cell's score per container still starting on it,
	// so a burst of work does not all land on the one emptiest cell. DESIGN: 0.25.
	StartingContainerWeight float64
	// BinPack prefers the fullest cell that fits instead of the emptiest: the score's resource
	// term becomes 1 − (mean fraction used after placing). Zone balance, the same-process
	// penalty and the starting penalty still apply, so one process's instances still spread
	// over cells and zones while different processes pack together and leave whole cells
	// free (for scaling the fleet down).
	BinPack bool
}

// DefaultOptions returns DESIGN §3's numbers: spread mode, starting weight 0.25.
func DefaultOptions() Options {
	return Options{StartingContainerWeight: 0.25}
}

// Validate reports whether o can be used.
func (o Options) Validate() error {
	if o.StartingContainerWeight < 0 || math.IsNaN(o.StartingContainerWeight) || math.IsInf(o.StartingContainerWeight, 0) {
		return fmt.Errorf("auction options: starting container weight %v must be a finite number >= 0", o.StartingContainerWeight)
	}
	return nil
}

// LRPWork is one ActualLRP instance to place.
type LRPWork struct {
	ProcessGuid   string
	Index         int32
	Domain        string
	RootFS        string
	MemoryMB      int32
	DiskMB        int32
	PlacementTags []string
}

// LRPWorkFor returns the work of instance index of d.
func LRPWorkFor(d *models.DesiredLRP, index int32) LRPWork {
	return LRPWork{
		ProcessGuid:   d.ProcessGuid,
		Index:         index,
		Domain:        d.Domain,
		RootFS:        d.RootFS,
		MemoryMB:      d.MemoryMB,
		DiskMB:        d.DiskMB,
		PlacementTags: d.PlacementTags,
	}
}

// TaskWork is one Task to place.
type TaskWork struct {
	TaskGuid      string
	Domain        string
	RootFS        string
	MemoryMB      int32
	DiskMB        int32
	PlacementTags []string
}

// TaskWorkFor returns the work of t.
func TaskWorkFor(t *models.Task) TaskWork {
	return TaskWork{
		TaskGuid:      t.TaskGuid,
		Domain:        t.Domain,
		RootFS:        t.RootFS,
		MemoryMB:      t.MemoryMB,
		DiskMB:        t.DiskMB,
		PlacementTags: t.PlacementTags,
	}
}

// LRPPlacement is an instance placed on a cell.
type LRPPlacement struct {
	Work   LRPWork
	CellID string
}

// LRPFailure is an instance that could not be placed; Err is one of the placement error classes
// (ErrNoRootFSMatch, ErrNoPlacementTagsMatch, *InsufficientResourcesError) and its message is
// the placement_error to record.
type LRPFailure struct {
	Work LRPWork
	Err  error
}

// TaskPlacement is a task placed on a cell.
type TaskPlacement struct {
	Work   TaskWork
	CellID string
}

// TaskFailure is a task that could not be placed; Err is as in LRPFailure.
type TaskFailure struct {
	Work TaskWork
	Err  error
}

// Results is the outcome of one auction. Every piece of work appears exactly once, in one of
// the four lists; each list is in auction order.
type Results struct {
	PlacedLRPs  []LRPPlacement
	FailedLRPs  []LRPFailure
	PlacedTasks []TaskPlacement
	FailedTasks []TaskFailure
}

// Len returns how much work the results cover.
func (r *Results) Len() int {
	return len(r.PlacedLRPs) + len(r.FailedLRPs) + len(r.PlacedTasks) + len(r.FailedTasks)
}

// Auction places lrps and tasks on cells. It is a pure function: the cells are not modified, and
// equal inputs give equal results.
//
// Work is auctioned in this order: LRP instances of index 0, then tasks, then the other LRP
// instances, larger memory first within each group (ties by process guid and index, or task
// guid). For each piece of work, draining cells are left out and the others are filtered in
// order by rootfs, placement tags and resources; the first filter that leaves no cell names the
// placement error. Among the cells that fit, an LRP instance goes to the zone holding the
// fewest instances of its process (counted over the cells that accept its rootfs and tags) and,
// within it, to the cell of lowest score:
//
//	mean(memory, disk, containers fraction used after placing)
//	  + StartingContainerWeight × containers still starting
//	  + SameProcessWeight × instances of the same process on the cell
//
// A task has no zone balance and no same-process term. Equal scores go to the lowest cell id.
// Each placement is accounted on its cell (resources, one more starting container, one more
// instance of the process) before the next piece of work is auctioned.
func Auction(cells []*CellState, lrps []LRPWork, tasks []TaskWork, opts Options) Results {
	a := newAuctioneer(cells, lrps, opts)
	res := Results{}
	for _, it := range workOrder(lrps, tasks) {
		if it.lrp >= 0 {
			w := &lrps[it.lrp]
			cellID, err := a.placeLRP(w)
			if err != nil {
				res.FailedLRPs = append(res.FailedLRPs, LRPFailure{Work: *w, Err: err})
			} else {
				res.PlacedLRPs = append(res.PlacedLRPs, LRPPlacement{Work: *w, CellID: cellID})
			}
			continue
		}
		w := &tasks[it.task]
		cellID, err := a.placeTask(w)
		if err != nil {
			res.FailedTasks = append(res.FailedTasks, TaskFailure{Work: *w, Err: err})
		} else {
			res.PlacedTasks = append(res.PlacedTasks, TaskPlacement{Work: *w, CellID: cellID})
		}
	}
	return res
}

// workItem is one entry of the auction order: an index into lrps or into tasks.
type workItem struct {
	group  uint8 // 0: LRP index 0, 1: task, 2: other LRP indices
	memory int32
	lrp    int32 // -1 for a task
	task   int32 // -1 for an LRP
}

func workOrder(lrps []LRPWork, tasks []TaskWork) []workItem {
	items := make([]workItem, 0, len(lrps)+len(tasks))
	for i := range lrps {
		g := uint8(2)
		if lrps[i].Index == 0 {
			g = 0
		}
		items = append(items, workItem{group: g, memory: lrps[i].MemoryMB, lrp: int32(i), task: -1})
	}
	for i := range tasks {
		items = append(items, workItem{group: 1, memory: tasks[i].MemoryMB, lrp: -1, task: int32(i)})
	}
	slices.SortStableFunc(items, func(x, y workItem) int {
		if c := cmp.Compare(x.group, y.group); c != 0 {
			return c
		}
		if c := cmp.Compare(y.memory, x.memory); c != 0 {
			return c
		}
		if x.lrp >= 0 {
			a, b := &lrps[x.lrp], &lrps[y.lrp]
			if c := strings.Compare(a.ProcessGuid, b.ProcessGuid); c != 0 {
				return c
			}
			return cmp.Compare(a.Index, b.Index)
		}
		return strings.Compare(tasks[x.task].TaskGuid, tasks[y.task].TaskGuid)
	})
	return items
}

// slot is the auction's working copy of one non-draining cell.
type slot struct {
	memUsed, diskUsed, ctrUsed int64
	memCap, diskCap, ctrCap    int64
	invMem, invDisk, invCtr    float64 // 1/capacity, 0 for a zero capacity
	starting                   float64 // containers still starting
	zone                       int32
}

// class is the set of cells that accept one (rootfs, placement tags) combination.
type class struct {
	cells  []int32  // slot indices, in cell id order
	member []uint64 // bitset over slot indices
	err    error    // set when cells is empty
}

func (c *class) has(i int32) bool { return c.member[i>>6]&(1<<(uint(i)&63)) != 0 }

// process is what the auction knows of one process guid: its instances per slot.
type process struct {
	counts map[int32]int32
}

type auctioneer struct {
	opts    Options
	states  []*CellState // non-draining cells, by id
	slots   []slot
	zones   int
	classes map[string]*class
	procs   map[string]*process

	// The last class looked up, to skip building the key for consecutive work of one process.
	lastRootFS string
	lastTags   []string
	lastClass  *class

	// sameProc[i] is the current process's instances on slot i and zoneCount[z] its instances
	// in zone z over the current class; both are loaded for one (process, class) at a time.
	curProc   *process
	curClass  *class
	sameProc  []int32
	zoneCount []int32
}

func newAuctioneer(cells []*CellState, lrps []LRPWork, opts Options) *auctioneer {
	a := &auctioneer{opts: opts, classes: map[string]*class{}, procs: map[string]*process{}}
	for _, c := range cells {
		if c != nil && !c.Draining {
			a.states = append(a.states, c)
		}
	}
	slices.SortStableFunc(a.states, func(x, y *CellState) int { return strings.Compare(x.ID, y.ID) })

	zoneIndex := map[string]int32{}
	a.slots = make([]slot, len(a.states))
	for i, c := range a.states {
		z, ok := zoneIndex[c.Zone]
		if !ok {
			z = int32(len(zoneIndex))
			zoneIndex[c.Zone] = z
		}
		a.slots[i] = slot{
			memUsed: int64(c.Reserved.MemoryMB), diskUsed: int64(c.Reserved.DiskMB), ctrUsed: int64(c.Reserved.Containers),
			memCap: int64(c.Capacity.MemoryMB), diskCap: int64(c.Capacity.DiskMB), ctrCap: int64(c.Capacity.Containers),
			invMem: inverse(c.Capacity.MemoryMB), invDisk: inverse(c.Capacity.DiskMB), invCtr: inverse(c.Capacity.Containers),
			starting: float64(c.StartingContainers),
			zone:     z,
		}
	}
	a.zones = len(zoneIndex)
	a.sameProc = make([]int32, len(a.slots))
	a.zoneCount = make([]int32, a.zones)

	// Index the instances the cells already hold, for the processes in this batch only.
	for i := range lrps {
		if _, ok := a.procs[lrps[i].ProcessGuid]; !ok {
			a.procs[lrps[i].ProcessGuid] = &process{counts: map[int32]int32{}}
		}
	}
	// Walk whichever side is smaller: every cell's instances, or this batch's processes
	// looked up on every cell. A batch of a few apps over cells holding 250,000 instances
	// takes the second way.
	held := 0
	for _, c := range a.states {
		held += len(c.Instances)
	}
	if held <= len(a.procs)*len(a.states) {
		for i, c := range a.states {
			for guid, n := range c.Instances {
				if p, ok := a.procs[guid]; ok && n > 0 {
					p.counts[int32(i)] += n
				}
			}
		}
		return a
	}
	for guid, p := range a.procs {
		for i, c := range a.states {
			if n := c.Instances[guid]; n > 0 {
				p.counts[int32(i)] += n
			}
		}
	}
	return a
}

func inverse(capacity int32) float64 {
	if capacity <= 0 {
		return 0
	}
	return 1 / float64(capacity)
}

// classFor returns the cells that accept rootfs and tags, building the class on first use.
func (a *auctioneer) classFor(rootfs string, tags []string) *class {
	if a.lastClass != nil && rootfs == a.lastRootFS && slices.Equal(tags, a.lastTags) {
		return a.lastClass
	}
	key := rootfs
	if len(tags) > 0 {
		sorted := slices.Clone(tags)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
		key = rootfs + "\x00" + strings.Join(sorted, "\x00")
	}
	c, ok := a.classes[key]
	if !ok {
		c = a.buildClass(rootfs, tags)
		a.classes[key] = c
	}
	a.lastRootFS, a.lastTags, a.lastClass = rootfs, tags, c
	return c
}

func (a *auctioneer) buildClass(rootfs string, tags []string) *class {
	c := &class{member: make([]uint64, (len(a.slots)+63)/64)}
	want, ok := models.RequiredRootFSProvider(rootfs)
	if !ok {
		c.err = ErrNoRootFSMatch
		return c
	}
	rootfsMatched := false
	for i, s := range a.states {
		if !slices.Contains(s.RootFSProviders, want) {
			continue
		}
		rootfsMatched = true
		if !acceptsTags(s.PlacementTags, s.OptionalPlacementTags, tags) {
			continue
		}
		c.cells = append(c.cells, int32(i))
		c.member[i>>6] |= 1 << (uint(i) & 63)
	}
	switch {
	case !rootfsMatched:
		c.err = ErrNoRootFSMatch
	case len(c.cells) == 0:
		c.err = ErrNoPlacementTagsMatch
	}
	return c
}

// load makes sameProc and zoneCount describe p over class c.
func (a *auctioneer) load(p *process, c *class) {
	if a.curProc == p && a.curClass == c {
		return
	}
	if a.curProc != nil {
		for i := range a.curProc.counts {
			a.sameProc[i] = 0
		}
	}
	clear(a.zoneCount)
	for i, n := range p.counts {
		a.sameProc[i] = n
		if c.has(i) {
			a.zoneCount[a.slots[i].zone] += n
		}
	}
	a.curProc, a.curClass = p, c
}

func (a *auctioneer) placeLRP(w *LRPWork) (string, error) {
	c := a.classFor(w.RootFS, w.PlacementTags)
	if c.err != nil {
		return "", c.err
	}
	p := a.procs[w.ProcessGuid]
	a.load(p, c)
	best, err := a.best(c, int64(w.MemoryMB), int64(w.DiskMB), true)
	if err != nil {
		return "", err
	}
	a.reserve(best, w.MemoryMB, w.DiskMB)
	p.counts[best]++
	a.sameProc[best]++
	a.zoneCount[a.slots[best].zone]++
	return a.states[best].ID, nil
}

func (a *auctioneer) placeTask(w *TaskWork) (string, error) {
	c := a.classFor(w.RootFS, w.PlacementTags)
	if c.err != nil {
		return "", c.err
	}
	best, err := a.best(c, int64(w.MemoryMB), int64(w.DiskMB), false)
	if err != nil {
		return "", err
	}
	a.reserve(best, w.MemoryMB, w.DiskMB)
	return a.states[best].ID, nil
}

func (a *auctioneer) reserve(i int32, memoryMB, diskMB int32) {
	s := &a.slots[i]
	s.memUsed += int64(memoryMB)
	s.diskUsed += int64(diskMB)
	s.ctrUsed++
	s.starting++
}

// best returns the winning slot of class c for work of the given size. With lrp set, zone
// balance and the same-process term (from sameProc and zoneCount, loaded by the caller) apply.
// This loop is the auction's hot path: no allocation, no map access.
func (a *auctioneer) best(c *class, memory, disk int64, lrp bool) (int32, error) {
	var short InsufficientResourcesError
	winner := int32(-1)
	winnerZone := int32(math.MaxInt32)
	winnerScore := math.Inf(1)
	startingWeight := a.opts.StartingContainerWeight
	for _, i := range c.cells {
		s := &a.slots[i]
		memShort := s.memUsed+memory > s.memCap
		diskShort := s.diskUsed+disk > s.diskCap
		ctrShort := s.ctrUsed+1 > s.ctrCap
		if memShort || diskShort || ctrShort {
			short.Memory = short.Memory || memShort
			short.Disk = short.Disk || diskShort
			short.Containers = short.Containers || ctrShort
			continue
		}
		var zone int32
		if lrp {
			zone = a.zoneCount[s.zone]
			if zone > winnerZone {
				continue
			}
		}
		used := (float64(s.memUsed+memory)*s.invMem + float64(s.diskUsed+disk)*s.invDisk +
			float64(s.ctrUsed+1)*s.invCtr) / 3
		if a.opts.BinPack {
			used = 1 - used
		}
		score := used + startingWeight*s.starting
		if lrp {
			score += SameProcessWeight * float64(a.sameProc[i])
		}
		if zone < winnerZone || score < winnerScore {
			winner, winnerZone, winnerScore = i, zone, score
		}
	}
	if winner < 0 {
		return -1, &short
	}
	return winner, nil
}
