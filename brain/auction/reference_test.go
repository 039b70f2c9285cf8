package auction

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/trellis-run/trellis/bbs/models"
)

// referenceAuction is the auction written the obvious way: for every piece of work it walks
// every cell, filters, counts zone instances from the cells' maps and scores. It shares no
// state or index with Auction, so TestAuctionMatchesReference can check the optimised
// indexing, caching and bookkeeping against it; BenchmarkAuctionReference is its peer figure.
func referenceAuction(cells []*CellState, lrps []LRPWork, tasks []TaskWork, opts Options) Results {
	var live []*CellState
	for _, c := range cells {
		if c != nil && !c.Draining {
			live = append(live, c.Clone())
		}
	}
	slices.SortStableFunc(live, func(x, y *CellState) int { return strings.Compare(x.ID, y.ID) })

	type work struct {
		lrp  *LRPWork
		task *TaskWork
	}
	var order []work
	for i := range lrps {
		if lrps[i].Index == 0 {
			order = append(order, work{lrp: &lrps[i]})
		}
	}
	var rest []work
	for i := range tasks {
		rest = append(rest, work{task: &tasks[i]})
	}
	byMemory := func(ws []work) {
		slices.SortStableFunc(ws, func(x, y work) int {
			mx, my := memoryOf(x.lrp, x.task), memoryOf(y.lrp, y.task)
			if c := cmp.Compare(my, mx); c != 0 {
				return c
			}
			if x.lrp != nil {
				if c := strings.Compare(x.lrp.ProcessGuid, y.lrp.ProcessGuid); c != 0 {
					return c
				}
				return cmp.Compare(x.lrp.Index, y.lrp.Index)
			}
			return strings.Compare(x.task.TaskGuid, y.task.TaskGuid)
		})
	}
	byMemory(order)
	byMemory(rest)
	order = append(order, rest...)
	var others []work
	for i := range lrps {
		if lrps[i].Index != 0 {
			others = append(others, work{lrp: &lrps[i]})
		}
	}
	byMemory(others)
	order = append(order, others...)

	var res Results
	for _, w := range order {
		var rootfs, guid string
		var tags []string
		var mem, disk int32
		if w.lrp != nil {
			rootfs, tags, mem, disk, guid = w.lrp.RootFS, w.lrp.PlacementTags, w.lrp.MemoryMB, w.lrp.DiskMB, w.lrp.ProcessGuid
		} else {
			rootfs, tags, mem, disk = w.task.RootFS, w.task.PlacementTags, w.task.MemoryMB, w.task.DiskMB
		}
		winner, err := referencePick(live, rootfs, tags, mem, disk, guid, w.lrp != nil, opts)
		switch {
		case w.lrp != nil && err != nil:
			res.FailedLRPs = append(res.FailedLRPs, LRPFailure{Work: *w.lrp, Err: err})
		case w.lrp != nil:
			winner.AddLRP(guid, mem, disk, true)
			res.PlacedLRPs = append(res.PlacedLRPs, LRPPlacement{Work: *w.lrp, CellID: winner.ID})
		case err != nil:
			res.FailedTasks = append(res.FailedTasks, TaskFailure{Work: *w.task, Err: err})
		default:
			winner.AddTask(mem, disk, true)
			res.PlacedTasks = append(res.PlacedTasks, TaskPlacement{Work: *w.task, CellID: winner.ID})
		}
	}
	return res
}

func memoryOf(l *LRPWork, t *TaskWork) int32 {
	if l != nil {
		return l.MemoryMB
	}
	return t.MemoryMB
}

func referencePick(cells []*CellState, rootfs string, tags []string, mem, disk int32, guid string, lrp bool, opts Options) (*CellState, error) {
	want, ok := models.RequiredRootFSProvider(rootfs)
	var byRootFS, byTags []*CellState
	for _, c := range cells {
		if ok && slices.Contains(c.RootFSProviders, want) {
			byRootFS = append(byRootFS, c)
		}
	}
	if len(byRootFS) == 0 {
		return nil, ErrNoRootFSMatch
	}
	for _, c := range byRootFS {
		if acceptsTags(c.PlacementTags, c.OptionalPlacementTags, tags) {
			byTags = append(byTags, c)
		}
	}
	if len(byTags) == 0 {
		return nil, ErrNoPlacementTagsMatch
	}
	zoneCount := map[string]int32{}
	if lrp {
		for _, c := range byTags {
			zoneCount[c.Zone] += c.Instances[guid]
		}
	}
	var short InsufficientResourcesError
	var winner *CellState
	winnerZone, winnerScore := int32(math.MaxInt32), math.Inf(1)
	inv := func(n int32) float64 {
		if n <= 0 {
			return 0
		}
		return 1 / float64(n)
	}
	for _, c := range byTags {
		m := int64(c.Reserved.MemoryMB)+int64(mem) > int64(c.Capacity.MemoryMB)
		d := int64(c.Reserved.DiskMB)+int64(disk) > int64(c.Capacity.DiskMB)
		n := int64(c.Reserved.Containers)+1 > int64(c.Capacity.Containers)
		if m || d || n {
			short.Memory, short.Disk, short.Containers = short.Memory || m, short.Disk || d, short.Containers || n
			continue
		}
		used := (float64(int64(c.Reserved.MemoryMB)+int64(mem))*inv(c.Capacity.MemoryMB) +
			float64(int64(c.Reserved.DiskMB)+int64(disk))*inv(c.Capacity.DiskMB) +
			float64(int64(c.Reserved.Containers)+1)*inv(c.Capacity.Containers)) / 3
		if opts.BinPack {
			used = 1 - used
		}
		score := used + opts.StartingContainerWeight*float64(c.StartingContainers)
		zone := int32(0)
		if lrp {
			score += SameProcessWeight * float64(c.Instances[guid])
			zone = zoneCount[c.Zone]
		}
		if zone < winnerZone || zone == winnerZone && score < winnerScore {
			winner, winnerZone, winnerScore = c, zone, score
		}
	}
	if winner == nil {
		return nil, &short
	}
	return winner, nil
}
