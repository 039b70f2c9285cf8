// Command scalebench measures the seed demo on this machine: one LRP scaled from 1 to N
// instances (300 by default) on a real `trellis dev` cluster, timed until every instance is
// RUNNING with its health check passing. Diego's demo did 1 → 300 in under a minute on a
// cluster; the goal here is ≤ 10 s on one machine. `make bench` runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func main() {
	var (
		bin       = flag.String("trellis", "bin/trellis", "the trellis binary")
		blobs     = flag.String("blobs", "bin/blobs", "directory with the example droplets")
		example   = flag.String("example", "examples/lrp-hello.json", "the LRP to scale")
		instances = flag.Int("instances", 300, "instances to scale to")
		cells     = flag.Int("cells", 1, "cells of the dev cluster")
		keep      = flag.Bool("keep", false, "keep the cluster's directory (cell agent.log files with each instance's start timing) and print where it is")
	)
	flag.Parse()
	if err := run(*bin, *blobs, *example, int32(*instances), *cells, *keep); err != nil {
		log.Fatal(err)
	}
}

func run(bin, blobs, example string, n int32, cells int, keep bool) error {
	if os.Geteuid() != 0 {
		fmt.Println("scale: skipped (the dev cluster's Linux cells need root)")
		return nil
	}
	dir, err := os.MkdirTemp("", "scalebench-")
	if err != nil {
		return err
	}
	// Ctrl-C or a timeout's SIGTERM ends the run through its deferred clean-up, not around it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	data := filepath.Join(dir, "data")
	if keep {
		defer fmt.Printf("scale: kept %s; afterwards: %s dev purge --data-dir %s; rm -r %s\n", dir, bin, data, dir)
	} else {
		defer os.RemoveAll(dir)
		// The cells live outside the temporary data dir (under /var/lib/trellis/dev): purge
		// them, and whatever containers and networks a failed stop left, once dev has exited.
		defer func() {
			if out, err := exec.Command(bin, "dev", "purge", "--data-dir", data).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "scale: trellis dev purge: %v\n%s", err, out)
			}
		}()
	}
	// One cell must hold every instance: raise its container count above the default.
	var spec strings.Builder
	spec.WriteString("cells:\n")
	perCell := (int(n) + cells - 1) / cells
	for i := 1; i <= cells; i++ {
		fmt.Fprintf(&spec, "- {id: cell-%d, zone: z%d, containers: %d}\n", i, (i-1)%3+1, perCell+20)
	}
	cellsFile := filepath.Join(dir, "cells.yaml")
	if err := os.WriteFile(cellsFile, []byte(spec.String()), 0o644); err != nil {
		return err
	}
	config := filepath.Join(dir, "config.json")
	dev := exec.Command(bin, "dev", "--data-dir", data, "--listen", "127.0.0.1:0",
		"--client-config", config, "--cells-file", cellsFile, "--blobs-dir", blobs, "--example", "")
	dev.Env = append(os.Environ(), "HOME="+dir)
	dev.Stderr = os.Stderr
	out, err := dev.StdoutPipe()
	if err != nil {
		return err
	}
	if err := dev.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	defer func() {
		dev.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(3 * time.Minute): // dev gives its cells 2 minutes to stop
			dev.Process.Kill()
			<-exited
		}
	}()
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "cluster is up") {
				close(up)
			}
		}
		dev.Wait()
		close(exited)
	}()
	select {
	case <-up:
	case <-exited:
		return fmt.Errorf("trellis dev exited before it was up")
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return fmt.Errorf("trellis dev not up after 60s")
	}

	cfg, err := client.LoadConfig(config)
	if err != nil {
		return err
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	var lrp models.DesiredLRP
	fh, err := os.Open(example)
	if err != nil {
		return err
	}
	err = models.DecodeStrict(fh, &lrp)
	fh.Close()
	if err != nil {
		return err
	}
	lrp.Instances = 1
	if _, err := c.DesireLRP(ctx, &lrp); err != nil {
		return err
	}
	if _, err := waitRunning(ctx, c, lrp.ProcessGuid, 1, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("scale: 1 instance running; scaling to %d\n", n)
	if _, err := c.UpdateDesiredLRP(ctx, lrp.ProcessGuid, models.DesiredLRPUpdate{Instances: &n}, 0); err != nil {
		return err
	}
	took, err := waitRunning(ctx, c, lrp.ProcessGuid, int(n), 5*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("scale: one LRP from 1 to %d instances on %d cell(s) of this machine, until all RUNNING with passing health checks\n", n, cells)
	fmt.Printf("  trellis      %6.1f s   (%.0f instances/s)\n", took.Seconds(), float64(n-1)/took.Seconds())
	fmt.Printf("  goal           10.0 s   -> trellis is %.2fx the goal\n", took.Seconds()/10)
	fmt.Printf("  Diego demo   < 60.0 s   (1 -> 300 on a cluster)\n")
	return nil
}

// waitRunning polls until n ORDINARY instances of guid are RUNNING and returns how long it took.
func waitRunning(ctx context.Context, c *client.Client, guid string, n int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		actual, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: guid})
		if err != nil {
			return 0, err
		}
		running := 0
		for _, a := range actual {
			if a.Presence == models.PresenceOrdinary && a.State == models.ActualLRPStateRunning {
				running++
			}
		}
		if running >= n {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%d of %d instances RUNNING after %s", running, n, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
