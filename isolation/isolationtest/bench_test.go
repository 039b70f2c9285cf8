package isolationtest

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

func benchMemory(b *testing.B, containers uint64) *Memory {
	b.Helper()
	cfg := DefaultMemoryConfig()
	cfg.Capacity.MaxContainers = containers
	cfg.ContainerSubnet = "127.0.0.0/8"
	cfg.PortRangeStart, cfg.PortRangeEnd = 1024, 65535
	m, err := NewMemory(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkMemoryCreateDestroy(b *testing.B) {
	m := benchMemory(b, 1<<20)
	ctx := context.Background()
	spec := isolation.ContainerSpec{RootFS: MemoryRootFS, Properties: isolation.Properties{"cell": "c1", "guid": "x"}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		spec.Handle = "h" + strconv.Itoa(i)
		if _, err := m.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
		if err := m.Destroy(ctx, spec.Handle); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryCreateDestroyParallel(b *testing.B) {
	m := benchMemory(b, 1<<20)
	ctx := context.Background()
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		spec := isolation.ContainerSpec{RootFS: MemoryRootFS, Properties: isolation.Properties{"cell": "c1"}}
		for pb.Next() {
			spec.Handle = "h" + strconv.FormatUint(seq.Add(1), 10)
			if _, err := m.Create(ctx, spec); err != nil {
				b.Fatal(err)
			}
			if err := m.Destroy(ctx, spec.Handle); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMemoryListFiltered lists one process's 4 containers among 10,000.
func BenchmarkMemoryListFiltered(b *testing.B) {
	m := benchMemory(b, 1<<20)
	ctx := context.Background()
	for i := range 10000 {
		spec := isolation.ContainerSpec{Handle: fmt.Sprint("h", i), RootFS: MemoryRootFS,
			Properties: isolation.Properties{"cell": "c1", "guid": fmt.Sprint("g", i/4)}}
		if _, err := m.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
	}
	filter := isolation.Properties{"cell": "c1", "guid": "g1234"}
	for b.Loop() {
		got, err := m.List(ctx, filter)
		if err != nil || len(got) != 4 {
			b.Fatalf("List = %d, %v", len(got), err)
		}
	}
}

// BenchmarkMemoryFootprint reports the heap held per idle container with two properties and
// a mapped port, the shape a simulated cell keeps 250 of (and a simulator 250,000).
func BenchmarkMemoryFootprint(b *testing.B) {
	const n = 20000
	ctx := context.Background()
	for b.Loop() {
		m := benchMemory(b, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			spec := isolation.ContainerSpec{Handle: "instance-" + strconv.Itoa(i), RootFS: MemoryRootFS,
				Properties: isolation.Properties{"cell": "c1", "guid": strconv.Itoa(i)},
				NetIn:      []isolation.NetIn{{ContainerPort: 8080}}}
			if _, err := m.Create(ctx, spec); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/container")
		runtime.KeepAlive(m)
	}
}
