package resources

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDiskQuota measures what a container with a disk limit costs the cell: creating,
// mounting and releasing one 64 MiB volume, alone and eight at a time, and the same with a
// 6 MiB file written into it (released without an fsync, as a container that exits does).
// Besides ns/op it reports cpu-ns/op: the CPU this process and the tools it waited for used,
// since cells are CPU-bound while they start containers. Kernel threads (loop workers,
// writeback) are not counted in it.
func BenchmarkDiskQuota(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	const limit = 64 * mib
	payload := make([]byte, 6*mib)
	for i := range payload {
		payload[i] = byte(i*7 + i>>12)
	}
	cases := []struct {
		name     string
		parallel bool
		write    bool
	}{
		{"create-release/serial", false, false},
		{"create-release/parallel-8", true, false},
		{"create-write6MiB-release/serial", false, true},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			q, err := NewDiskQuota(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			// Formats its template, if it uses one, outside the measured loop: a cell pays
			// that once per size, not per container.
			cycle(b, q, "warm", limit, nil)
			var seq atomic.Int64
			one := func() {
				var data []byte
				if bc.write {
					data = payload
				}
				cycle(b, q, fmt.Sprintf("h%d", seq.Add(1)), limit, data)
			}
			cpu0 := cpuAll()
			b.ResetTimer()
			if bc.parallel {
				b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			} else {
				for b.Loop() {
					one()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuAll()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cycle creates handle's volume, writes data into it if any, and releases it.
func cycle(b *testing.B, q *DiskQuota, handle string, limit uint64, data []byte) {
	dir, err := q.Dir(handle, limit)
	if err != nil {
		b.Error(err)
		return
	}
	if data != nil {
		if err := os.WriteFile(filepath.Join(dir, "payload"), data, 0o644); err != nil {
			b.Error(err)
		}
	}
	if err := q.Release(handle); err != nil {
		b.Error(err)
	}
}

// cpuAll is the CPU time used by this process and its waited-for children.
func cpuAll() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}
