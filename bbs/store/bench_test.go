package store_test

import (
	"fmt"
	"testing"

	"github.com/trellis-run/trellis/bbs/store"
)

// BenchmarkActualLRPs lists 20 000 instances, all of them and those of one cell (1 %), the
// reads the brain and every cell make. Run with -bench ActualLRPs.
func BenchmarkActualLRPs(b *testing.B) {
	s := store.New(shared.Client(), store.Options{Prefix: "/bench/actual-lrps/"})
	ctx := b.Context()
	const processes, perProcess = 200, 100
	for p := range processes {
		guid := fmt.Sprintf("p%04d", p)
		if _, err := s.DesireLRP(ctx, desiredLRP(guid, perProcess)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.PlaceActualLRP(ctx, lrpKey(guid, 0), "cell-x", 0); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		filter store.ActualLRPFilter
		want   int
	}{
		{"all", store.ActualLRPFilter{}, processes * perProcess},
		{"one cell", store.ActualLRPFilter{CellID: "cell-x"}, processes},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				list, _, err := s.ActualLRPs(ctx, bc.filter)
				if err != nil {
					b.Fatal(err)
				}
				if len(list) != bc.want {
					b.Fatalf("listed %d, want %d", len(list), bc.want)
				}
			}
			b.ReportMetric(float64(bc.want), "records/op")
		})
	}
}
