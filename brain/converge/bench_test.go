package converge

import (
	"fmt"
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
	b.ReportAllocs()
	for b.Loop() {
		a := Plan(s, now, DefaultOptions())
		if len(a.MarkSuspect) != vanished {
			b.Fatalf("%d suspects, want %d", len(a.MarkSuspect), vanished)
		}
	}
	b.ReportMetric(float64(len(s.ActualLRPs))*float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}
