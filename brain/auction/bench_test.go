package auction

import (
	"fmt"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
)

// benchFleet is the figure the brain is held to: 1,000 cells in 3 zones (one in five runs
// Windows) and 10,000 instances of 1,000 processes (one in five Windows), all of which fit.
func benchFleet() ([]*CellState, []LRPWork) {
	cells := make([]*CellState, 1000)
	for i := range cells {
		providers := []string{linuxStack, "docker"}
		if i%5 == 0 {
			providers = []string{windowsStack}
		}
		cells[i] = NewCellState(&models.CellPresence{
			CellID:          fmt.Sprintf("cell-%04d", i),
			Zone:            fmt.Sprintf("z%d", i%3),
			Capacity:        models.Resources{MemoryMB: 65536, DiskMB: 262144, Containers: 256},
			RootFSProviders: providers,
		})
	}
	memories := []int32{256, 512, 1024, 2048}
	lrps := make([]LRPWork, 0, 10000)
	for p := range 1000 {
		rootfs := linuxStack
		if p%5 == 0 {
			rootfs = windowsStack
		} else if p%3 == 0 {
			rootfs = "docker:///library/app"
		}
		for i := range int32(10) {
			lrps = append(lrps, LRPWork{ProcessGuid: fmt.Sprintf("process-%04d", p), Index: i, Domain: "bench",
				RootFS: rootfs, MemoryMB: memories[p%len(memories)], DiskMB: 1024})
		}
	}
	return cells, lrps
}

func benchmarkAuction(b *testing.B, auction func([]*CellState, []LRPWork, []TaskWork, Options) Results) {
	cells, lrps := benchFleet()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res := auction(cells, lrps, nil, DefaultOptions())
		if len(res.PlacedLRPs) != len(lrps) {
			b.Fatalf("placed %d of %d", len(res.PlacedLRPs), len(lrps))
		}
	}
	b.ReportMetric(float64(len(lrps))*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkAuction places 10,000 instances over 1,000 cells; "placements/s" is the figure.
func BenchmarkAuction(b *testing.B) { benchmarkAuction(b, Auction) }

// BenchmarkAuctionReference runs the straightforward implementation of the same algorithm,
// the peer BenchmarkAuction is compared with.
func BenchmarkAuctionReference(b *testing.B) { benchmarkAuction(b, referenceAuction) }
