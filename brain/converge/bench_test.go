package converge

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// BenchmarkPlan plans over Diego's published scale: 250,000 instances of 25,000 DesiredLRPs on
// 1,000 cells, 10 of which have vanished, with 10,000 tasks.
func BenchmarkPlan(b *testing.B) {
	vanished := 0
	s := Snapshot{Domains: []*models.Domain{{Name: "d"}}}
	for i := range 1000 {
		s.Cells = append(s.Cells, &models.CellPresence{CellID: fmt.Sprintf("cell-%04d", i)})
	}
	for p := range 25_000 {
		d := desired(fmt.Sprintf("process-%05d", p), "d", 10)
		s.DesiredLRPs = append(s.DesiredLRPs, d)
		for i := range d.Instances {
			cell := (p*10 + int(i)) % 1010
			if cell >= 1000 {
				vanished++
			}
			s.ActualLRPs = append(s.ActualLRPs, running(d.ProcessGuid, i, fmt.Sprintf("cell-%04d", cell)))
		}
	}
	for i := range 10_000 {
		s.Tasks = append(s.Tasks, task(fmt.Sprintf("task-%05d", i), models.TaskStateRunning, fmt.Sprintf("cell-%04d", i%1000), time.Minute))
	}
	shuffle(s)
	b.ReportAllocs()
	for b.Loop() {
		a := Plan(s, now, DefaultOptions())
		if len(a.MarkSuspect) != vanished {
			b.Fatalf("%d suspects, want %d", len(a.MarkSuspect), vanished)
		}
	}
	b.ReportMetric(float64(len(s.ActualLRPs))*float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// BenchmarkPlanManyApps plans over the scale simulator's mix: 201,600 DesiredLRPs, each round
// of 1,920 being 20 apps of 25 instances and 1,900 of one, 252,000 instances in all on 1,000
// cells. Per instance it costs more than BenchmarkPlan's 25,000 apps of 10: most of the work is
// per app (grouping by process guid and sorting the guids).
func BenchmarkPlanManyApps(b *testing.B) {
	s := Snapshot{Domains: []*models.Domain{{Name: "d"}}}
	for i := range 1000 {
		s.Cells = append(s.Cells, &models.CellPresence{CellID: fmt.Sprintf("cell-%04d", i)})
	}
	for p := range 201_600 {
		instances := int32(1)
		if p%1920 < 20 {
			instances = 25
		}
		d := desired(fmt.Sprintf("process-%06d", p), "d", instances)
		s.DesiredLRPs = append(s.DesiredLRPs, d)
		for i := range d.Instances {
			s.ActualLRPs = append(s.ActualLRPs, running(d.ProcessGuid, i, fmt.Sprintf("cell-%04d", len(s.ActualLRPs)%1000)))
		}
	}
	shuffle(s)
	b.ReportAllocs()
	for b.Loop() {
		if a := Plan(s, now, DefaultOptions()); !a.Empty() {
			b.Fatalf("a steady fleet needs no action: %+v", a)
		}
	}
	b.ReportMetric(float64(len(s.ActualLRPs))*float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// shuffle puts the snapshot's records in a random order (fixed seed), as the brain's view, a
// set of maps, hands them over.
func shuffle(s Snapshot) {
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(s.DesiredLRPs), func(i, j int) { s.DesiredLRPs[i], s.DesiredLRPs[j] = s.DesiredLRPs[j], s.DesiredLRPs[i] })
	rng.Shuffle(len(s.ActualLRPs), func(i, j int) { s.ActualLRPs[i], s.ActualLRPs[j] = s.ActualLRPs[j], s.ActualLRPs[i] })
}
