// Command simbench runs the scale simulator's scenarios (package test/sim) — fill, cell loss,
// drain, steady churn — against the real BBS, etcd and brain with simulated cells in this
// process, and prints each scenario's figures next to the anchors: Diego's alert lines
// (convergence < 10 s, BBS request latency < 5 s), Nomad's ~1,500 placements/s and
// Kubernetes' 680–810 pods/s. make bench-sim runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/trellis-run/trellis/test/sim"
)

func main() {
	cfg := sim.DefaultConfig()
	fill := sim.DefaultFill()
	churn := sim.DefaultChurn()
	var (
		loss       = flag.Float64("loss", 0.2, "fraction of the cells killed at once (0 skips the scenario)")
		drain      = flag.Float64("drain", 0.1, "fraction of the cells drained (0 skips the scenario)")
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
		memProfile = flag.String("memprofile", "", "write a heap profile at the end of the fill here")
		verbose    = flag.Bool("v", false, "log the components' warnings to stderr")
		timeout    = flag.Duration("timeout", 10*time.Minute, "bound of each wait")
		pprofAddr  = flag.String("pprof", "", "serve net/http/pprof on this loopback address while running")
		gcPercent  = flag.Int("gogc", 200, "GOGC of the simulator process")
		workerGC   = flag.Int("worker-gogc", 100, "GOGC of the worker processes (they hold the agents: memory, not CPU, is their limit)")
	)
	flag.BoolVar(&cfg.Detail, "detail", false, "print the latency of each BBS method")
	flag.IntVar(&cfg.Cells, "cells", cfg.Cells, "simulated cells")
	flag.IntVar(&cfg.Zones, "zones", cfg.Zones, "zones")
	flag.StringVar(&cfg.Transport, "transport", cfg.Transport, "how cells and the brain reach the BBS: http or inproc")
	flag.DurationVar(&cfg.PresenceTTL, "ttl", cfg.PresenceTTL, "cell presence TTL")
	flag.IntVar(&fill.Instances, "instances", fill.Instances, "instances to fill")
	flag.IntVar(&fill.SingleApps, "singles", fill.SingleApps, "single-instance apps per push round (besides 20 × 25)")
	flag.IntVar(&fill.Writers, "writers", fill.Writers, "operator clients pushing concurrently, one DesireLRP at a time each (a harness parameter: how many pushers the fleet serves)")
	flag.DurationVar(&churn.Duration, "churn", churn.Duration, "steady churn duration (0 skips the scenario)")
	etcd := flag.String("etcd", "", "comma-separated endpoints of an external etcd (default: embedded)")
	worker := flag.Bool("sim-worker", false, "serve as a worker process of a simulator (internal)")
	flag.IntVar(&cfg.CellsPerWorker, "cells-per-worker", 0, "cells per worker process (0: every cell in this process; default: as many as the open-file limit allows)")
	flag.Parse()
	if *worker {
		debug.SetGCPercent(*gcPercent)
		if dir := os.Getenv("TRELLIS_SIM_WORKER_PROFILES"); dir != "" {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.prof", os.Getpid())))
			if err != nil {
				log.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				log.Fatal(err)
			}
			defer pprof.StopCPUProfile()
		}
		if err := sim.RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			pprof.StopCPUProfile()
			log.Fatal(err)
		}
		return
	}
	if *etcd != "" {
		cfg.EtcdEndpoints = strings.Split(*etcd, ",")
	}
	fill.Timeout = *timeout
	// Each instance keeps its log file open in its agent: with more instances than the
	// open-file limit allows, the cells run in worker processes.
	if !flagSet("cells-per-worker") {
		cfg.CellsPerWorker = cellsPerWorker(cfg, fill)
	}
	if cfg.CellsPerWorker > 0 {
		exe, err := os.Executable()
		if err != nil {
			log.Fatal(err)
		}
		cfg.WorkerCommand = []string{exe, "-sim-worker", "-gogc", fmt.Sprint(*workerGC)}
		cfg.Transport = sim.TransportHTTP
	}
	// Heap attribution per component samples one allocation per 256 KiB (the default 512 KiB
	// is coarse for the brain's share; finer costs CPU in stack unwinding).
	runtime.MemProfileRate = 256 << 10
	// One process holds what a fleet spreads over many machines; collecting garbage at the
	// default 100% growth costs more CPU than the components' own work here.
	debug.SetGCPercent(*gcPercent)
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	start := time.Now()
	cfg.Progress = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	if *pprofAddr != "" {
		go func() {
			if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
				log.Printf("pprof: %v", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(ctx, cfg, fill, churn, *loss, *drain, *timeout, *memProfile); err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg sim.Config, fill sim.FillOptions, churn sim.ChurnOptions, loss, drain float64, timeout time.Duration, memProfile string) error {
	fmt.Printf("trellis scale simulator: %d cells, %d zones, transport %s, presence TTL %v, %d cores (%s)\n",
		cfg.Cells, cfg.Zones, cfg.Transport, cfg.PresenceTTL, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	c, err := sim.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	var results []*sim.Result
	r, err := c.Fill(ctx, fill)
	if err != nil {
		return err
	}
	results = append(results, r)
	print(r)
	if memProfile != "" {
		if f, err := os.Create(memProfile); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	if loss > 0 {
		if r, err = c.CellLoss(ctx, loss, timeout); err != nil {
			return err
		}
		results = append(results, r)
		print(r)
	}
	if drain > 0 {
		if r, err = c.Drain(ctx, drain, timeout); err != nil {
			return err
		}
		results = append(results, r)
		print(r)
	}
	if churn.Duration > 0 {
		if r, err = c.Churn(ctx, churn); err != nil {
			return err
		}
		results = append(results, r)
		print(r)
	}
	var failures []string
	for _, r := range results {
		failures = append(failures, r.Failures...)
	}
	if len(failures) > 0 {
		return fmt.Errorf("correctness checks failed: %s", strings.Join(failures, "; "))
	}
	return nil
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// cellsPerWorker returns 0 when every instance's log fits in this process's open-file limit,
// else how many cells a worker process takes (at most 60% of the limit in instances, with
// room for the cells being refilled after a loss).
func cellsPerWorker(cfg sim.Config, fill sim.FillOptions) int {
	limit := sim.FileLimit()
	perCell := float64(fill.Instances) / float64(cfg.Cells) * 1.5
	if need := float64(fill.Instances) * 1.5; need+float64(64*cfg.Cells) < float64(limit)*0.8 {
		return 0
	}
	return max(1, int(float64(limit)*0.6/perCell))
}

func print(r *sim.Result) {
	fmt.Printf("\n%s\n", r.Name)
	for _, l := range r.Lines {
		mark := "  "
		if l.Met != nil {
			mark = "✗ "
			if *l.Met {
				mark = "✓ "
			}
		}
		anchor := ""
		if l.Anchor != "" {
			anchor = "  [" + l.Anchor + "]"
		}
		fmt.Printf("  %s%-52s %s%s\n", mark, l.Metric, l.Value, anchor)
	}
}
