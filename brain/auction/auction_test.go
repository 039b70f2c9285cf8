package auction

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
)

const (
	linuxStack   = "preloaded:cflinuxfs4"
	windowsStack = "preloaded:windows2016"
)

// cell returns an empty cell with a generous capacity.
func cell(id, zone string, providers ...string) *CellState {
	return NewCellState(&models.CellPresence{
		CellID:          id,
		Zone:            zone,
		Capacity:        models.Resources{MemoryMB: 8192, DiskMB: 32768, Containers: 100},
		RootFSProviders: providers,
	})
}

func linuxCell(id, zone string) *CellState { return cell(id, zone, linuxStack, "docker") }

func lrp(guid string, index int32, memory int32) LRPWork {
	return LRPWork{ProcessGuid: guid, Index: index, Domain: "d", RootFS: linuxStack, MemoryMB: memory, DiskMB: 64}
}

func task(guid string, memory int32) TaskWork {
	return TaskWork{TaskGuid: guid, Domain: "d", RootFS: linuxStack, MemoryMB: memory, DiskMB: 64}
}

// placements maps "guid/index" (or the task guid) to the cell id it went to.
func placements(r Results) map[string]string {
	m := map[string]string{}
	for _, p := range r.PlacedLRPs {
		m[fmt.Sprintf("%s/%d", p.Work.ProcessGuid, p.Work.Index)] = p.CellID
	}
	for _, p := range r.PlacedTasks {
		m[p.Work.TaskGuid] = p.CellID
	}
	return m
}

// perCell counts placements per cell id.
func perCell(r Results) map[string]int {
	m := map[string]int{}
	for _, p := range r.PlacedLRPs {
		m[p.CellID]++
	}
	for _, p := range r.PlacedTasks {
		m[p.CellID]++
	}
	return m
}

func TestRootFSFilter(t *testing.T) {
	cells := []*CellState{
		linuxCell("linux-1", "z1"),
		linuxCell("linux-2", "z1"),
		cell("windows-1", "z1", windowsStack),
		cell("oci-1", "z1", "oci"),
	}
	// The Windows cell is the fullest, so a score-only choice would never pick it.
	cells[2].Reserved = models.Resources{MemoryMB: 5000, DiskMB: 20000, Containers: 60}

	tests := []struct {
		rootfs  string
		want    []string // acceptable cells
		wantErr error
	}{
		{rootfs: windowsStack, want: []string{"windows-1"}},
		{rootfs: linuxStack, want: []string{"linux-1", "linux-2"}},
		{rootfs: "docker:///library/nginx", want: []string{"linux-1", "linux-2"}},
		{rootfs: "docker://registry.example.com/team/app:v1", want: []string{"linux-1", "linux-2"}},
		{rootfs: "oci://registry.example.com/app", want: []string{"oci-1"}},
		{rootfs: "preloaded:cflinuxfs3", wantErr: ErrNoRootFSMatch},
		{rootfs: "preloaded:", wantErr: ErrNoRootFSMatch},
		{rootfs: "preloaded", wantErr: ErrNoRootFSMatch},
		{rootfs: "cflinuxfs4", wantErr: ErrNoRootFSMatch},
		{rootfs: "", wantErr: ErrNoRootFSMatch},
		// A bare provider entry does not accept a preloaded stack of the same name, nor the
		// reverse.
		{rootfs: "preloaded:docker", wantErr: ErrNoRootFSMatch},
		{rootfs: "windows2016:///x", wantErr: ErrNoRootFSMatch},
	}
	for _, tt := range tests {
		t.Run(tt.rootfs, func(t *testing.T) {
			var work []LRPWork
			for i := range int32(20) {
				w := lrp("p", i, 128)
				w.RootFS = tt.rootfs
				work = append(work, w)
			}
			res := Auction(cells, work, nil, DefaultOptions())
			if tt.wantErr != nil {
				if len(res.PlacedLRPs) != 0 || len(res.FailedLRPs) != len(work) {
					t.Fatalf("placed %d, failed %d; want all %d to fail", len(res.PlacedLRPs), len(res.FailedLRPs), len(work))
				}
				for _, f := range res.FailedLRPs {
					if !errors.Is(f.Err, tt.wantErr) || f.Err.Error() != tt.wantErr.Error() {
						t.Fatalf("error %q, want %q", f.Err, tt.wantErr)
					}
				}
				return
			}
			if len(res.PlacedLRPs) != len(work) {
				t.Fatalf("placed %d of %d: %v", len(res.PlacedLRPs), len(work), res.FailedLRPs)
			}
			for _, p := range res.PlacedLRPs {
				if !slices.Contains(tt.want, p.CellID) {
					t.Errorf("%s/%d landed on %s, want one of %v", p.Work.ProcessGuid, p.Work.Index, p.CellID, tt.want)
				}
			}
		})
	}
}

func TestAcceptsTags(t *testing.T) {
	tests := []struct {
		name                          string
		required, optional, requested []string
		want                          bool
	}{
		{"nothing anywhere", nil, nil, nil, true},
		{"request on an untagged cell", nil, nil, []string{"gpu"}, false},
		{"required tag not requested", []string{"gpu"}, nil, nil, false},
		{"required tag requested", []string{"gpu"}, nil, []string{"gpu"}, true},
		{"required and optional requested", []string{"gpu"}, []string{"ssd"}, []string{"gpu", "ssd"}, true},
		{"optional only, required missing", []string{"gpu"}, []string{"ssd"}, []string{"ssd"}, false},
		{"required plus an unknown tag", []string{"gpu"}, []string{"ssd"}, []string{"gpu", "fpga"}, false},
		{"optional tags need not be requested", nil, []string{"ssd"}, nil, true},
		{"optional tag requested", nil, []string{"ssd"}, []string{"ssd"}, true},
		{"several required, any order", []string{"a", "b"}, nil, []string{"b", "a"}, true},
		{"several required, one missing", []string{"a", "b"}, nil, []string{"a"}, false},
		{"duplicates in the request", []string{"a"}, nil, []string{"a", "a"}, true},
		{"tag both required and optional is required", []string{"a"}, []string{"a"}, nil, false},
		{"tags are case-sensitive", []string{"GPU"}, nil, []string{"gpu"}, false},
		{"empty-string tag is a tag", nil, nil, []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := acceptsTags(tt.required, tt.optional, tt.requested); got != tt.want {
				t.Fatalf("acceptsTags(%v, %v, %v) = %v, want %v", tt.required, tt.optional, tt.requested, got, tt.want)
			}
		})
	}
}

func TestPlacementTagsThroughAuction(t *testing.T) {
	plain := linuxCell("plain", "z1")
	gpu := linuxCell("gpu", "z1")
	gpu.PlacementTags = []string{"gpu"}
	gpu.OptionalPlacementTags = []string{"ssd"}
	winGPU := cell("win-gpu", "z1", windowsStack)
	winGPU.PlacementTags = []string{"gpu"}
	cells := []*CellState{plain, gpu, winGPU}

	tests := []struct {
		tags    []string
		want    string
		wantErr error
	}{
		{tags: nil, want: "plain"},
		{tags: []string{"gpu"}, want: "gpu"},
		{tags: []string{"ssd", "gpu"}, want: "gpu"},
		{tags: []string{"ssd"}, wantErr: ErrNoPlacementTagsMatch},
		{tags: []string{"gpu", "fpga"}, wantErr: ErrNoPlacementTagsMatch},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.tags), func(t *testing.T) {
			w := lrp("p", 0, 128)
			w.PlacementTags = tt.tags
			res := Auction(cells, []LRPWork{w}, nil, DefaultOptions())
			if tt.wantErr != nil {
				if len(res.FailedLRPs) != 1 || res.FailedLRPs[0].Err.Error() != tt.wantErr.Error() {
					t.Fatalf("results %+v, want failure %q", res, tt.wantErr)
				}
				return
			}
			if got := placements(res)["p/0"]; got != tt.want {
				t.Fatalf("placed on %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPlacementErrorMessages(t *testing.T) {
	small := func(id string, mem, disk, ctrs int32) *CellState {
		c := linuxCell(id, "z1")
		c.Capacity = models.Resources{MemoryMB: mem, DiskMB: disk, Containers: ctrs}
		return c
	}
	tagged := linuxCell("tagged", "z1")
	tagged.PlacementTags = []string{"gpu"}
	tests := []struct {
		name  string
		cells []*CellState
		work  LRPWork
		want  string
	}{
		{"no cells at all", nil, lrp("p", 0, 128), "found no compatible cell for required rootfs"},
		{"rootfs", []*CellState{cell("w", "z1", windowsStack)}, lrp("p", 0, 128), "found no compatible cell for required rootfs"},
		{"placement tags", []*CellState{tagged}, lrp("p", 0, 128), "found no compatible cell with required placement tags"},
		{"memory", []*CellState{small("a", 100, 1000, 10)}, lrp("p", 0, 128), "insufficient resources: memory"},
		{"disk", []*CellState{small("a", 1000, 10, 10)}, lrp("p", 0, 128), "insufficient resources: disk"},
		{"containers", []*CellState{small("a", 1000, 1000, 0)}, lrp("p", 0, 128), "insufficient resources: containers"},
		{"memory and disk on different cells", []*CellState{small("a", 100, 1000, 10), small("b", 1000, 10, 10)},
			lrp("p", 0, 128), "insufficient resources: memory, disk"},
		{"all three", []*CellState{small("a", 100, 10, 0)}, lrp("p", 0, 128), "insufficient resources: memory, disk, containers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Auction(tt.cells, []LRPWork{tt.work}, []TaskWork{{TaskGuid: "t", RootFS: tt.work.RootFS, MemoryMB: tt.work.MemoryMB, DiskMB: tt.work.DiskMB}}, DefaultOptions())
			if len(res.FailedLRPs) != 1 || len(res.FailedTasks) != 1 {
				t.Fatalf("results %+v, want the LRP and the task to fail", res)
			}
			for _, err := range []error{res.FailedLRPs[0].Err, res.FailedTasks[0].Err} {
				if err.Error() != tt.want {
					t.Errorf("error %q, want %q", err, tt.want)
				}
				if !IsPlacementError(err) {
					t.Errorf("IsPlacementError(%v) = false", err)
				}
			}
		})
	}
	var ire *InsufficientResourcesError
	res := Auction([]*CellState{small("a", 100, 1000, 10)}, []LRPWork{lrp("p", 0, 128)}, nil, DefaultOptions())
	if err := res.FailedLRPs[0].Err; !errors.As(err, &ire) || !errors.Is(err, ErrInsufficientResources) || !ire.Memory || ire.Disk || ire.Containers {
		t.Fatalf("error %#v does not unwrap to a memory-only InsufficientResourcesError", err)
	}
}

func TestZoneBalance(t *testing.T) {
	t.Run("fresh process spreads evenly over 3 zones of unequal size", func(t *testing.T) {
		cells := []*CellState{
			linuxCell("a1", "z1"), linuxCell("a2", "z1"), linuxCell("a3", "z1"), linuxCell("a4", "z1"),
			linuxCell("b1", "z2"),
			linuxCell("c1", "z3"), linuxCell("c2", "z3"),
		}
		var work []LRPWork
		for i := range int32(9) {
			work = append(work, lrp("p", i, 128))
		}
		res := Auction(cells, work, nil, DefaultOptions())
		zoneOf := map[string]string{}
		for _, c := range cells {
			zoneOf[c.ID] = c.Zone
		}
		perZone := map[string]int{}
		for _, p := range res.PlacedLRPs {
			perZone[zoneOf[p.CellID]]++
		}
		if want := map[string]int{"z1": 3, "z2": 3, "z3": 3}; !reflect.DeepEqual(perZone, want) {
			t.Fatalf("per zone %v, want %v", perZone, want)
		}
	})
	t.Run("the emptiest zone wins over a better-scoring cell", func(t *testing.T) {
		a, b, c := linuxCell("a", "z1"), linuxCell("b", "z2"), linuxCell("c", "z3")
		a.AddLRP("p", 128, 64, false)
		b.AddLRP("p", 128, 64, false)
		// c is much fuller (other work) but holds no instance of p.
		c.Reserved = models.Resources{MemoryMB: 7000, DiskMB: 30000, Containers: 90}
		res := Auction([]*CellState{a, b, c}, []LRPWork{lrp("p", 2, 128)}, nil, DefaultOptions())
		if got := placements(res)["p/2"]; got != "c" {
			t.Fatalf("placed on %q, want c (zone z3 holds no instance)", got)
		}
	})
	t.Run("a zone without room falls through to the next", func(t *testing.T) {
		a, b, c := linuxCell("a", "z1"), linuxCell("b", "z2"), linuxCell("c", "z3")
		a.AddLRP("p", 128, 64, false)
		a.AddLRP("p", 128, 64, false)
		b.AddLRP("p", 128, 64, false)
		c.Reserved.MemoryMB = c.Capacity.MemoryMB // z3 is empty of p but full
		res := Auction([]*CellState{a, b, c}, []LRPWork{lrp("p", 3, 128)}, nil, DefaultOptions())
		if got := placements(res)["p/3"]; got != "b" {
			t.Fatalf("placed on %q, want b (z2 has fewer instances than z1)", got)
		}
	})
	t.Run("zones are counted over compatible cells only", func(t *testing.T) {
		// z2's only cell that holds p's instances is Windows-only now (say it was repaved);
		// for a Linux process z2 then holds nothing and is preferred.
		a, b, w := linuxCell("a", "z1"), linuxCell("b", "z2"), cell("w", "z2", windowsStack)
		a.AddLRP("p", 128, 64, false)
		w.AddLRP("p", 128, 64, false)
		w.AddLRP("p", 128, 64, false)
		res := Auction([]*CellState{a, b, w}, []LRPWork{lrp("p", 3, 128)}, nil, DefaultOptions())
		if got := placements(res)["p/3"]; got != "b" {
			t.Fatalf("placed on %q, want b", got)
		}
	})
}

func TestSameProcessSpread(t *testing.T) {
	cells := []*CellState{linuxCell("c1", "z1"), linuxCell("c2", "z1"), linuxCell("c3", "z1")}
	var work []LRPWork
	for i := range int32(30) {
		work = append(work, lrp("web", i, 64))
	}
	res := Auction(cells, work, nil, DefaultOptions())
	if want := map[string]int{"c1": 10, "c2": 10, "c3": 10}; !reflect.DeepEqual(perCell(res), want) {
		t.Fatalf("per cell %v, want %v", perCell(res), want)
	}
	// Instances already on a cell count: c1 holds 4, so 8 new ones go 4 to c2 and 4 to c3.
	c1, c2, c3 := linuxCell("c1", "z1"), linuxCell("c2", "z1"), linuxCell("c3", "z1")
	for range 4 {
		c1.AddLRP("web", 64, 64, false)
	}
	res = Auction([]*CellState{c1, c2, c3}, work[:8], nil, DefaultOptions())
	if want := map[string]int{"c2": 4, "c3": 4}; !reflect.DeepEqual(perCell(res), want) {
		t.Fatalf("per cell %v, want %v", perCell(res), want)
	}
}

func TestBinPack(t *testing.T) {
	mk := func() []*CellState {
		a, b, c := linuxCell("a", "z1"), linuxCell("b", "z1"), linuxCell("c", "z1")
		a.AddLRP("other", 4096, 4096, false) // half full
		b.AddLRP("other2", 1024, 1024, false)
		return []*CellState{a, b, c}
	}
	work := []LRPWork{lrp("p1", 0, 256), lrp("p2", 0, 256), lrp("p3", 0, 256)}

	spread := Auction(mk(), work, nil, DefaultOptions())
	if want := map[string]int{"c": 1, "b": 1, "a": 1}; !reflect.DeepEqual(perCell(spread), want) {
		t.Errorf("spread: per cell %v, want %v", perCell(spread), want)
	}
	opts := DefaultOptions()
	opts.BinPack = true
	opts.StartingContainerWeight = 0
	packed := Auction(mk(), work, nil, opts)
	if want := map[string]int{"a": 3}; !reflect.DeepEqual(perCell(packed), want) {
		t.Errorf("bin-pack: per cell %v, want %v", perCell(packed), want)
	}
	// Bin-pack still spreads one process's instances.
	same := []LRPWork{lrp("p", 0, 256), lrp("p", 1, 256), lrp("p", 2, 256)}
	if got, want := perCell(Auction(mk(), same, nil, opts)), map[string]int{"a": 1, "b": 1, "c": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("bin-pack, one process: per cell %v, want %v", got, want)
	}
	// And it never overfills: a is full after its free 4096 MB.
	big := []LRPWork{lrp("q1", 0, 4096), lrp("q2", 0, 4096)}
	if got, want := placements(Auction(mk(), big, nil, opts)), map[string]string{"q1/0": "a", "q2/0": "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("bin-pack, big work: %v, want %v", got, want)
	}
}

func TestOrdering(t *testing.T) {
	oneSlot := func(ctrs int32) []*CellState {
		c := linuxCell("only", "z1")
		c.Capacity.Containers = ctrs
		return []*CellState{c}
	}
	lrps := []LRPWork{lrp("a", 1, 4096), lrp("b", 0, 128), lrp("c", 0, 512), lrp("a", 2, 64)}
	tasks := []TaskWork{task("t-small", 64), task("t-big", 2048)}
	// The full order: index 0 by memory (c, b), tasks by memory (t-big, t-small), then the
	// other indices by memory (a/1, a/2). With n container slots the first n win.
	order := []string{"c/0", "b/0", "t-big", "t-small", "a/1", "a/2"}
	for n := range len(order) + 1 {
		t.Run(fmt.Sprintf("%d slots", n), func(t *testing.T) {
			res := Auction(oneSlot(int32(n)), lrps, tasks, DefaultOptions())
			got := placements(res)
			for i, k := range order {
				if _, placed := got[k]; placed != (i < n) {
					t.Errorf("%s placed=%v, want %v (placements %v)", k, placed, i < n, got)
				}
			}
			if res.Len() != len(lrps)+len(tasks) {
				t.Errorf("results cover %d pieces of work, want %d", res.Len(), len(lrps)+len(tasks))
			}
		})
	}
	res := Auction(oneSlot(100), lrps, tasks, DefaultOptions())
	var gotOrder []string
	for _, p := range res.PlacedLRPs {
		gotOrder = append(gotOrder, fmt.Sprintf("%s/%d", p.Work.ProcessGuid, p.Work.Index))
	}
	if want := []string{"c/0", "b/0", "a/1", "a/2"}; !slices.Equal(gotOrder, want) {
		t.Errorf("PlacedLRPs order %v, want %v", gotOrder, want)
	}
}

func TestStartingContainersPenalty(t *testing.T) {
	mk := func() []*CellState {
		// busy is emptier but has 4 containers starting (4 × 0.25 = 1.0 of penalty);
		// calm is fuller (about 0.4 more used) with none starting.
		busy, calm := linuxCell("busy", "z1"), linuxCell("calm", "z1")
		busy.Reserved = models.Resources{MemoryMB: 0, DiskMB: 0, Containers: 4}
		busy.StartingContainers = 4
		calm.Reserved = models.Resources{MemoryMB: 4096, DiskMB: 16384, Containers: 4}
		return []*CellState{busy, calm}
	}
	tests := []struct {
		weight float64
		want   string
	}{
		{0.25, "calm"},
		{0, "busy"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weight), func(t *testing.T) {
			res := Auction(mk(), []LRPWork{lrp("p", 0, 128)}, nil, Options{StartingContainerWeight: tt.weight})
			if got := placements(res)["p/0"]; got != tt.want {
				t.Fatalf("placed on %q, want %q", got, tt.want)
			}
		})
	}
	// Placements in the batch count as starting: 8 tasks over two equal cells alternate.
	res := Auction([]*CellState{linuxCell("x", "z1"), linuxCell("y", "z1")}, nil,
		[]TaskWork{task("t1", 1), task("t2", 1), task("t3", 1), task("t4", 1)}, DefaultOptions())
	if want := map[string]int{"x": 2, "y": 2}; !reflect.DeepEqual(perCell(res), want) {
		t.Fatalf("per cell %v, want %v", perCell(res), want)
	}
}

func TestDrainingCells(t *testing.T) {
	draining := linuxCell("draining", "z1")
	draining.Draining = true
	busy := linuxCell("busy", "z1")
	busy.Reserved = models.Resources{MemoryMB: 8000, DiskMB: 32000, Containers: 99}
	winDraining := cell("win", "z1", windowsStack)
	winDraining.Draining = true
	cells := []*CellState{draining, busy, winDraining}

	res := Auction(cells, []LRPWork{lrp("p", 0, 128)}, []TaskWork{task("t", 64)}, DefaultOptions())
	if got := placements(res); got["p/0"] != "busy" || got["t"] != "" {
		t.Fatalf("placements %v: want p/0 on busy (the only live cell) and t without room", got)
	}
	if len(res.FailedTasks) != 1 || res.FailedTasks[0].Err.Error() != "insufficient resources: containers" {
		t.Fatalf("task failure %+v, want insufficient containers", res.FailedTasks)
	}
	w := lrp("w", 0, 128)
	w.RootFS = windowsStack
	res = Auction(cells, []LRPWork{w}, nil, DefaultOptions())
	if len(res.FailedLRPs) != 1 || !errors.Is(res.FailedLRPs[0].Err, ErrNoRootFSMatch) {
		t.Fatalf("results %+v: the only Windows cell drains, want a rootfs error", res)
	}
}

func TestPlacementsUpdateCellState(t *testing.T) {
	c := linuxCell("c", "z1")
	c.Capacity.MemoryMB = 1000
	work := []LRPWork{lrp("p", 0, 400), lrp("q", 0, 400), lrp("r", 0, 400)}
	res := Auction([]*CellState{c}, work, nil, DefaultOptions())
	if len(res.PlacedLRPs) != 2 || len(res.FailedLRPs) != 1 || res.FailedLRPs[0].Err.Error() != "insufficient resources: memory" {
		t.Fatalf("results %+v, want two placed and one short of memory", res)
	}
	if c.Reserved != (models.Resources{}) || c.StartingContainers != 0 || len(c.Instances) != 0 {
		t.Fatalf("Auction modified its input cell: %+v", c)
	}
}

func TestTieBreakByCellID(t *testing.T) {
	cells := []*CellState{linuxCell("c", "z1"), linuxCell("a", "z1"), linuxCell("b", "z1")}
	for range 5 {
		res := Auction(cells, []LRPWork{lrp("p", 0, 128)}, []TaskWork{task("t", 64)}, DefaultOptions())
		if got := placements(res); got["p/0"] != "a" || got["t"] != "b" {
			t.Fatalf("placements %v, want p/0 on a (lowest id) and t on b", got)
		}
		slices.Reverse(cells)
	}
}

// randomFleet builds a random but reproducible batch: cells of two stacks, tags, three zones,
// some existing instances and reservations, and work of several processes, sized so that
// every filter and every error shows up.
func randomFleet(seed uint64) ([]*CellState, []LRPWork, []TaskWork) {
	r := rand.New(rand.NewPCG(seed, 7))
	tagsOf := func() []string {
		switch r.IntN(6) {
		case 0:
			return []string{"gpu"}
		case 1:
			return []string{"ssd"}
		case 2:
			return []string{"gpu", "ssd"}
		default:
			return nil
		}
	}
	stacks := []string{linuxStack, windowsStack, "docker:///library/app", "preloaded:cflinuxfs3"}
	var cells []*CellState
	for i := range 5 + r.IntN(40) {
		var c *CellState
		if r.IntN(4) == 0 {
			c = cell(fmt.Sprintf("cell-%02d", i), fmt.Sprintf("z%d", r.IntN(3)), windowsStack)
		} else {
			c = linuxCell(fmt.Sprintf("cell-%02d", i), fmt.Sprintf("z%d", r.IntN(3)))
		}
		c.Capacity = models.Resources{MemoryMB: int32(1024 * (1 + r.IntN(8))), DiskMB: int32(2048 * (1 + r.IntN(8))), Containers: int32(2 + r.IntN(12))}
		c.PlacementTags = tagsOf()
		if r.IntN(2) == 0 {
			c.OptionalPlacementTags = []string{"ssd"}
		}
		c.Draining = r.IntN(10) == 0
		for range r.IntN(3) {
			c.AddLRP(fmt.Sprintf("p%d", r.IntN(12)), int32(64*r.IntN(8)), int32(64*r.IntN(8)), r.IntN(2) == 0)
		}
		cells = append(cells, c)
	}
	var lrps []LRPWork
	for p := range 12 {
		stack, tags, mem := stacks[r.IntN(len(stacks))], tagsOf(), int32(128*(1+r.IntN(8)))
		for i := range int32(1 + r.IntN(10)) {
			lrps = append(lrps, LRPWork{ProcessGuid: fmt.Sprintf("p%d", p), Index: i, RootFS: stack,
				MemoryMB: mem, DiskMB: int32(256 * r.IntN(4)), PlacementTags: tags})
		}
	}
	r.Shuffle(len(lrps), func(i, j int) { lrps[i], lrps[j] = lrps[j], lrps[i] })
	var tasks []TaskWork
	for i := range r.IntN(15) {
		tasks = append(tasks, TaskWork{TaskGuid: fmt.Sprintf("t%02d", i), RootFS: stacks[r.IntN(len(stacks))],
			MemoryMB: int32(128 * (1 + r.IntN(8))), DiskMB: int32(256 * r.IntN(4)), PlacementTags: tagsOf()})
	}
	return cells, lrps, tasks
}

func TestAuctionMatchesReference(t *testing.T) {
	for seed := range uint64(300) {
		cells, lrps, tasks := randomFleet(seed)
		for _, opts := range []Options{DefaultOptions(), {StartingContainerWeight: 0.25, BinPack: true}} {
			got := Auction(cells, lrps, tasks, opts)
			want := referenceAuction(cells, lrps, tasks, opts)
			if !reflect.DeepEqual(summarize(got), summarize(want)) {
				t.Fatalf("seed %d, options %+v:\n got %v\nwant %v", seed, opts, summarize(got), summarize(want))
			}
		}
	}
}

// summarize lists results as strings so error values compare by message.
func summarize(r Results) []string {
	var out []string
	for _, p := range r.PlacedLRPs {
		out = append(out, fmt.Sprintf("lrp %s/%d -> %s", p.Work.ProcessGuid, p.Work.Index, p.CellID))
	}
	for _, f := range r.FailedLRPs {
		out = append(out, fmt.Sprintf("lrp %s/%d !! %v", f.Work.ProcessGuid, f.Work.Index, f.Err))
	}
	for _, p := range r.PlacedTasks {
		out = append(out, fmt.Sprintf("task %s -> %s", p.Work.TaskGuid, p.CellID))
	}
	for _, f := range r.FailedTasks {
		out = append(out, fmt.Sprintf("task %s !! %v", f.Work.TaskGuid, f.Err))
	}
	return out
}

func TestWorkFor(t *testing.T) {
	d := &models.DesiredLRP{ProcessGuid: "p", Domain: "d", RootFS: linuxStack, MemoryMB: 256, DiskMB: 512, PlacementTags: []string{"gpu"}}
	if got, want := LRPWorkFor(d, 3), (LRPWork{ProcessGuid: "p", Index: 3, Domain: "d", RootFS: linuxStack, MemoryMB: 256, DiskMB: 512, PlacementTags: []string{"gpu"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("LRPWorkFor = %+v, want %+v", got, want)
	}
	tk := &models.Task{TaskGuid: "t", Domain: "d", RootFS: windowsStack, MemoryMB: 64, DiskMB: 128}
	if got, want := TaskWorkFor(tk), (TaskWork{TaskGuid: "t", Domain: "d", RootFS: windowsStack, MemoryMB: 64, DiskMB: 128}); !reflect.DeepEqual(got, want) {
		t.Errorf("TaskWorkFor = %+v, want %+v", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("DefaultOptions().Validate() = %v", err)
	}
	if err := (Options{StartingContainerWeight: -1}).Validate(); err == nil {
		t.Fatal("a negative weight validated")
	}
}
