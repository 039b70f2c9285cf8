// Command bbsbench measures the BBS on this machine: desire creates/s, actual-LRP reads/s and
// CAS transitions/s through the HTTPS API with N concurrent clients, with p50/p99 latency, side
// by side with the same operations issued straight to the same etcd (the peer every BBS
// request ends in), printed as ratios. `make bench` runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
)

func main() {
	var (
		workers = flag.Int("clients", 16, "concurrent clients")
		lrps    = flag.Int("lrps", 4000, "desired LRPs to create (one instance each)")
		reads   = flag.Int("reads", 40000, "actual-LRP reads")
	)
	flag.Parse()
	if err := run(*workers, *lrps, *reads); err != nil {
		log.Fatal(err)
	}
}

// phase is one measured operation kind.
type phase struct {
	name      string
	ops       int
	elapsed   time.Duration
	latencies []time.Duration
}

func (p phase) rate() float64 { return float64(p.ops) / p.elapsed.Seconds() }

func (p phase) pct(q float64) time.Duration {
	if len(p.latencies) == 0 {
		return 0
	}
	return p.latencies[int(q*float64(len(p.latencies)-1))]
}

// measure runs op for i in [0, n) on workers goroutines and records each latency.
func measure(name string, workers, n int, op func(i int) error) (phase, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				if err := op(i); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s #%d: %w", name, i, err) })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	p := phase{name: name, ops: n, elapsed: time.Since(start), latencies: lat}
	sort.Slice(p.latencies, func(i, j int) bool { return p.latencies[i] < p.latencies[j] })
	return p, firstErr
}

func run(workers, nLRPs, nReads int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bbsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pki, err := certs.EnsureDevPKI(filepath.Join(dir, "pki"), nil)
	if err != nil {
		return err
	}
	cfg := standalone.DefaultConfig()
	cfg.DataDir = dir
	cfg.Server.ListenAddress = "127.0.0.1:0"
	cfg.Server.TLS.CAFile = pki.CAFile
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = pki.Server.CertFile, pki.Server.KeyFile
	b, err := standalone.Start(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer b.Close()

	newClient := func(f certs.Files) (*client.Client, error) {
		return client.New(client.Config{URL: b.URL(), CAFile: pki.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile})
	}
	operator, err := newClient(pki.Operator)
	if err != nil {
		return err
	}
	brain, err := newClient(pki.Brain)
	if err != nil {
		return err
	}
	cellFiles, err := pki.IssueCell("bench-cell")
	if err != nil {
		return err
	}
	cell, err := newClient(cellFiles)
	if err != nil {
		return err
	}

	lrp := func(i int) *models.DesiredLRP {
		return &models.DesiredLRP{
			ProcessGuid: fmt.Sprintf("bench-%06d", i), Domain: "bench", RootFS: "preloaded:busybox",
			Instances: 1, MemoryMB: 128, DiskMB: 256, Ports: []uint32{8080},
			Action: &models.Action{Run: &models.RunAction{Path: "/bin/app", Args: []string{"--port", "8080"}}},
		}
	}
	key := func(i int) models.ActualLRPKey {
		return models.ActualLRPKey{ProcessGuid: fmt.Sprintf("bench-%06d", i), Index: 0, Domain: "bench"}
	}
	inst := func(i int) models.ActualLRPInstanceKey {
		return models.ActualLRPInstanceKey{InstanceGuid: fmt.Sprintf("ig-%06d", i), CellID: "bench-cell"}
	}

	var trellis []phase
	p, err := measure("desire LRP (write)", workers, nLRPs, func(i int) error {
		_, err := operator.DesireLRP(ctx, lrp(i))
		return err
	})
	if err != nil {
		return err
	}
	trellis = append(trellis, p)
	if p, err = measure("read actual LRP", workers, nReads, func(i int) error {
		_, err := operator.ActualLRP(ctx, fmt.Sprintf("bench-%06d", i%nLRPs), 0)
		return err
	}); err != nil {
		return err
	}
	trellis = append(trellis, p)
	// CAS transitions: place (brain), claim and start (cell) each instance.
	transitions := make([]time.Duration, 0, 3*nLRPs)
	var elapsed time.Duration
	for _, step := range []struct {
		name string
		op   func(i int) error
	}{
		{"place", func(i int) error { _, err := brain.PlaceActualLRP(ctx, key(i), "bench-cell", 0); return err }},
		{"claim", func(i int) error { _, err := cell.ClaimActualLRP(ctx, key(i), inst(i)); return err }},
		{"start", func(i int) error {
			_, err := cell.StartActualLRP(ctx, key(i), inst(i), models.ActualLRPNetInfo{Address: "10.0.0.1", InstanceAddress: "10.254.0.2",
				Ports: []models.PortMapping{{ContainerPort: 8080, HostPort: 61001}}})
			return err
		}},
	} {
		p, err := measure(step.name, workers, nLRPs, step.op)
		if err != nil {
			return err
		}
		transitions = append(transitions, p.latencies...)
		elapsed += p.elapsed
	}
	sort.Slice(transitions, func(i, j int) bool { return transitions[i] < transitions[j] })
	trellis = append(trellis, phase{name: "CAS transition", ops: len(transitions), elapsed: elapsed, latencies: transitions})

	// The peer: the same operations straight on the same etcd, with the same concurrency and
	// record sizes.
	etcdc, err := clientv3.New(clientv3.Config{Endpoints: b.EtcdEndpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer etcdc.Close()
	value, _ := json.Marshal(lrp(0))
	var peer []phase
	if p, err = measure("etcd put", workers, nLRPs, func(i int) error {
		_, err := etcdc.Put(ctx, fmt.Sprintf("/peer/%06d", i), string(value))
		return err
	}); err != nil {
		return err
	}
	peer = append(peer, p)
	if p, err = measure("etcd get", workers, nReads, func(i int) error {
		_, err := etcdc.Get(ctx, fmt.Sprintf("/peer/%06d", i%nLRPs))
		return err
	}); err != nil {
		return err
	}
	peer = append(peer, p)
	if p, err = measure("etcd get+txn", workers, 3*nLRPs, func(i int) error {
		k := fmt.Sprintf("/peer/%06d", i%nLRPs)
		for {
			r, err := etcdc.Get(ctx, k)
			if err != nil {
				return err
			}
			t, err := etcdc.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", r.Kvs[0].ModRevision)).
				Then(clientv3.OpPut(k, string(value))).Commit()
			if err != nil {
				return err
			}
			if t.Succeeded {
				return nil
			}
		}
	}); err != nil {
		return err
	}
	peer = append(peer, p)

	fmt.Printf("BBS over HTTPS+mTLS, %d concurrent clients, embedded etcd (peer: the same etcd, direct gRPC)\n", workers)
	fmt.Printf("  %-20s %10s %9s %9s   %-14s %10s %9s   %s\n", "operation", "ops/s", "p50", "p99", "etcd direct", "ops/s", "p99", "trellis/etcd")
	for i, p := range trellis {
		q := peer[i]
		fmt.Printf("  %-20s %10.0f %9s %9s   %-14s %10.0f %9s   %.2f\n", p.name, p.rate(), round(p.pct(0.5)), round(p.pct(0.99)),
			q.name, q.rate(), round(q.pct(0.99)), p.rate()/q.rate())
	}
	fmt.Printf("  goals: writes >= 2000/s, reads >= 10000/s, p99 < 50ms\n")
	return nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(10 * time.Microsecond)
	}
}
