package network

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// BenchmarkSetupTeardownConcurrent is the agent's pattern when an LRP scales up and down: each
// op creates 50 network namespaces, sets each up with one mapped port, 8 at a time, then tears
// them all down 8 at a time. With resident=250 the state directory also holds 250 records of
// other containers (unattached, no ports), the store's load at the top of a 1-to-300 scale-up.
// Besides ns/op it reports the CPU (user + system) per container of this process (the agent's
// share: state store, libcni, netlink) and of the plugin and iptables processes it ran, which
// is what a CPU-bound cell pays.
func BenchmarkSetupTeardownConcurrent(b *testing.B) {
	const containers, parallel = 50, 8
	ctx := context.Background()
	for _, resident := range []int{0, 250} {
		b.Run(fmt.Sprintf("resident=%d", resident), func(b *testing.B) {
			tn := newTestNet(b, 2*containers)
			for i := range resident {
				writeResidentRecord(b, tn.cfg.StateDir, fmt.Sprintf("resident-%d", i))
			}
			b.Cleanup(func() {
				for i := range resident {
					os.Remove(filepath.Join(tn.cfg.StateDir, recordsDir, fmt.Sprintf("resident-%d.json", i)))
				}
			})
			netIn := []isolation.NetIn{{ContainerPort: 8080}}
			self0, children0 := cpuTime()
			round := 0
			for b.Loop() {
				paths := make([]string, containers)
				forEach(b, containers, parallel, func(i int) error {
					paths[i] = filepath.Join(tn.dir, fmt.Sprintf("r%d-%d", round, i))
					if err := CreateNetNS(paths[i]); err != nil {
						return err
					}
					_, err := tn.nw.Setup(ctx, fmt.Sprintf("c%d", i), paths[i], netIn)
					return err
				})
				forEach(b, containers, parallel, func(i int) error {
					if err := tn.nw.Teardown(ctx, fmt.Sprintf("c%d", i), paths[i]); err != nil {
						return err
					}
					return DeleteNetNS(paths[i])
				})
				round++
			}
			self, children := cpuTime()
			perContainer := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*containers) }
			b.ReportMetric(perContainer(self-self0), "self-cpu-ms/container")
			b.ReportMetric(perContainer(children-children0), "exec-cpu-ms/container")
		})
	}
}

// forEach runs f(0..n-1), parallel at a time, and fails b on the first error.
func forEach(b *testing.B, n, parallel int, f func(i int) error) {
	b.Helper()
	sem := make(chan struct{}, parallel)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// writeResidentRecord writes, in the on-disk format, the record of a container reserved but
// not attached, as another agent would have.
func writeResidentRecord(b *testing.B, stateDir, cid string) {
	b.Helper()
	data, err := json.MarshalIndent(record{Version: recordVersion, Handle: cid, ContainerID: cid, OwnRules: true, CreatedAt: time.Now().UTC()}, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, recordsDir, cid+".json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the CPU time used so far by this process, and by its waited-for children.
func cpuTime() (self, children time.Duration) {
	var s, c unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &s)
	unix.Getrusage(unix.RUSAGE_CHILDREN, &c)
	return time.Duration(s.Utime.Nano() + s.Stime.Nano()), time.Duration(c.Utime.Nano() + c.Stime.Nano())
}
