package brain

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// benchInstances is how many instances each benchmark iteration places.
const benchInstances = 2000

// benchCells heartbeats n cells that take nothing but room, so that placements stay
// UNCLAIMED and the measurement is the brain's placing alone.
func benchCells(b *testing.B, c *cluster, n int) {
	b.Helper()
	for i := range n {
		id := fmt.Sprintf("cell-%02d", i)
		files, err := c.pki.IssueCell(id)
		if err != nil {
			b.Fatal(err)
		}
		p := &models.CellPresence{CellID: id, Zone: fmt.Sprintf("z%d", i%3), Address: "127.0.0.1:1",
			Capacity:        models.Resources{MemoryMB: 1 << 20, DiskMB: 1 << 20, Containers: 10_000},
			RootFSProviders: []string{linux}}
		if err := c.client(files).Heartbeat(context.Background(), p, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// placedCount counts the ORDINARY instances of guid that are placed on a cell.
func placedCount(b *testing.B, c *cluster, guid string) int {
	as, _, err := c.operator.ActualLRPs(context.Background(), store.ActualLRPFilter{ProcessGuid: guid})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, a := range as {
		if a.Presence == models.PresenceOrdinary && a.CellID != "" {
			n++
		}
	}
	return n
}

// BenchmarkBrainPlacement measures the running brain end to end: a DesiredLRP of 2,000
// instances is stored, and the clock stops when the brain has written every placement to the
// BBS (mutual TLS, embedded etcd) — event stream, batching, auction over 20 cells and the
// compare-and-swap writes. The time includes storing the DesiredLRP and its 2,000 UNCLAIMED
// records, which the peer below does not count, so the ratio is conservative.
func BenchmarkBrainPlacement(b *testing.B) {
	c := newCluster(b, nil)
	benchCells(b, c, 20)
	br := c.startBrain(brainOpts{ttl: 5 * time.Second})
	for !br.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	for i := range b.N {
		guid := fmt.Sprintf("bench-%d", i)
		before := metricValue(b, br, "trellis_brain_placements_total", "kind", "lrp")
		c.desire(guid, linux, benchInstances)
		for metricValue(b, br, "trellis_brain_placements_total", "kind", "lrp")-before < benchInstances {
			time.Sleep(2 * time.Millisecond)
		}
	}
	b.StopTimer()
	if got := placedCount(b, c, fmt.Sprintf("bench-%d", b.N-1)); got != benchInstances {
		b.Fatalf("%d of %d instances placed", got, benchInstances)
	}
	b.ReportMetric(float64(b.N*benchInstances)/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkDirectPlacementWrites is the peer: the same placements written straight through
// the BBS client by 32 concurrent writers (the brain's ApplyConcurrency), without a brain —
// the ceiling the brain's placing can approach.
func BenchmarkDirectPlacementWrites(b *testing.B) {
	c := newCluster(b, nil)
	benchCells(b, c, 20)
	bbs := c.client(c.pki.Brain)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		guid := fmt.Sprintf("bench-%d", i)
		c.desire(guid, linux, benchInstances)
		as, _, err := bbs.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: guid})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		work := make(chan *models.ActualLRP)
		var wg sync.WaitGroup
		for range DefaultApplyConcurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for a := range work {
					cell := fmt.Sprintf("cell-%02d", a.Index%20)
					if _, err := bbs.PlaceActualLRP(ctx, a.ActualLRPKey, cell, a.Revision); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for _, a := range as {
			work <- a
		}
		close(work)
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchInstances)/b.Elapsed().Seconds(), "placements/s")
}
