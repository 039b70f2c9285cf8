package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
	"github.com/trellis-run/trellis/isolation_linux/image"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

func init() { register(newDevCommand) }

type devFlags struct {
	dataDir      string
	listen       string
	clientConfig string
	logLevel     string
	cells        int
	cellsFile    string
	blobsDir     string
	blobsListen  string
	example      string
	presenceTTL  time.Duration
}

func newDevCommand() *cobra.Command {
	var f devFlags
	home, _ := os.UserHomeDir()
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-machine cluster in the foreground",
		Long: `Run a one-machine trellis cluster in the foreground: an embedded etcd, the BBS (with mutual
TLS), the brain, and --cells local Linux cells (each a 'trellis agent run' child process with its
own bridge, subnet, host ports and cgroups). On first start it creates a certificate authority
and the certificates in --data-dir/pki, and writes the operator's client config (BBS URL and
certificates) to --client-config, so plain 'trellis' commands reach this cluster.

It serves the files of --blobs-dir at http://<blobs-listen>/blobs/ (droplets for download
actions) and desires the --example LRP if it is not there yet, then prints where it answers.

State lives in --data-dir and survives a restart. Ctrl-C stops everything: the cells' agents and
their containers, the brain and the BBS; desired work is kept and starts again with the cluster.
'trellis dev purge' removes what a stopped cluster keeps on the host outside --data-dir.`,
		Example: `  trellis dev                       # one cell
  trellis dev --cells 3             # three cells in zones z1..z3
  trellis dev --cells-file cells.yaml

cells.yaml:
  cells:
  - {id: cell-1, zone: z1, stacks: [busybox, pinned]}
  - {id: cell-2, zone: z2, placement_tags: [gpu]}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), cmd.OutOrStdout(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", filepath.Join(home, ".trellis", "dev"), "where the cluster keeps its state and certificates")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8889", "address of the BBS API")
	fl.StringVar(&f.clientConfig, "client-config", client.DefaultConfigPath(), "where to write the operator's client config")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	fl.IntVar(&f.cells, "cells", 1, "how many local Linux cells to run (zones z1..z3 round robin)")
	fl.StringVar(&f.cellsFile, "cells-file", "", "a YAML file describing each cell (ids, zones, tags, stacks); overrides --cells")
	fl.StringVar(&f.blobsDir, "blobs-dir", "bin/blobs", "directory served as the blob store (droplets)")
	fl.StringVar(&f.blobsListen, "blobs-listen", "127.0.0.1:8890", "address of the blob store")
	fl.DurationVar(&f.presenceTTL, "presence-ttl", agent.DefaultPresenceTTL, "the cells' presence lease: a cell that stops heartbeating is gone after it")
	fl.StringVar(&f.example, "example", "examples/lrp-hello.json", "LRP to desire when the cluster starts, if not desired yet (\"\" for none)")
	cmd.AddCommand(newDevPurgeCommand(filepath.Join(home, ".trellis", "dev")))
	return cmd
}

func runDev(ctx context.Context, out io.Writer, f devFlags) error {
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	specs := defaultDevCells(f.cells)
	switch {
	case f.cellsFile != "":
		if specs, err = loadDevCells(f.cellsFile); err != nil {
			return err
		}
	case f.cells < 0:
		return fmt.Errorf("--cells %d: must not be negative", f.cells)
	}
	if f.presenceTTL < time.Second {
		return fmt.Errorf("--presence-ttl %s: must be at least 1s", f.presenceTTL)
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	pki, err := certs.EnsureDevPKI(filepath.Join(dataDir, "pki"), nil)
	if err != nil {
		return err
	}
	cfg := standalone.DefaultConfig()
	cfg.DataDir = dataDir
	cfg.Server.ListenAddress = f.listen
	cfg.Server.TLS.CAFile = pki.CAFile
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = pki.Server.CertFile, pki.Server.KeyFile
	cfg.Server.Version = Version
	// Image tags are pinned to digests when an LRP is desired, so every instance runs the same
	// bytes; a dev machine with no registry in reach gets a clear error only when it asks for one.
	cfg.Server.ImageResolver = image.Resolver{}
	// etcd warns about its single-node set-up at every start; in a dev cluster only its debug
	// output is of interest, and failures surface as BBS errors anyway.
	if logger.Enabled(ctx, slog.LevelDebug) {
		cfg.EmbeddedEtcd.LogLevel = slog.LevelDebug
	} else {
		cfg.EmbeddedEtcd.LogLevel = slog.LevelError + 4
	}
	// The BBS outlives ctx (Ctrl-C): the cells and the brain stop first, while it still answers.
	b, err := standalone.Start(context.Background(), cfg, logger)
	if err != nil {
		return err
	}
	defer b.Close()

	// The brain runs in this process over the store itself: same decisions, same lock, no
	// certificate round trip.
	br, err := brain.New(brain.DefaultConfig(), b.Store, logger, nil)
	if err != nil {
		return err
	}
	brainCtx, stopBrain := context.WithCancel(context.Background())
	brainDone := make(chan error, 1)
	go func() { brainDone <- br.Run(brainCtx) }()
	defer func() { stopBrain(); <-brainDone }()

	blobsURL, stopBlobs, err := serveBlobs(f.blobsDir, f.blobsListen, logger)
	if err != nil {
		return err
	}
	defer stopBlobs()

	var cells []*devCell
	if len(specs) > 0 {
		stackDir := filepath.Join(dataDir, "stacks", "busybox")
		if _, err := os.Stat(filepath.Join(stackDir, "bin", "busybox")); errors.Is(err, fs.ErrNotExist) {
			if err := isolationlinux.BuildBusyboxStack(stackDir, ""); err != nil {
				return fmt.Errorf("prepare the busybox stack (install busybox-static): %w", err)
			}
		}
		if cells, err = prepareDevCells(dataDir, b.URL(), pki, specs, stackDir, f.presenceTTL); err != nil {
			return err
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		level := f.logLevel
		if level == "warn" {
			level = "info" // the cells' own log files are worth reading
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stopAll(sctx, cells, logger)
			// The cells' cgroups are empty once their containers are gone; the next start
			// creates them again.
			if err := resources.RemoveTree(devCgroupParent(devClusterID(dataDir))); err != nil {
				logger.Warn("removing the cells' cgroups", "err", err)
			}
		}()
		for _, c := range cells {
			if err := c.start(self, level); err != nil {
				return err
			}
			go func() {
				select {
				case <-c.exited:
					if ctx.Err() == nil {
						logger.Warn("a cell's agent exited; its instances move to other cells once its presence expires",
							"cell", c.spec.ID, "err", c.exitErr, "log", filepath.Join(c.dir, "agent.log"))
					}
				case <-ctx.Done():
				}
			}()
		}
	}

	// Up means every cell takes work: placements made before a cell's first heartbeat would
	// all go to the cells that beat first (or fail for want of a cell).
	if err := waitForCells(ctx, b.Store, cells, devCellsUpTimeout); err != nil {
		return err
	}

	ccfg := client.DefaultConfig()
	ccfg.URL = b.URL()
	ccfg.CAFile = pki.CAFile
	ccfg.CertFile, ccfg.KeyFile = pki.Operator.CertFile, pki.Operator.KeyFile
	if err := client.WriteConfig(f.clientConfig, ccfg); err != nil {
		return err
	}

	fmt.Fprintf(out, "trellis dev cluster is up\n")
	fmt.Fprintf(out, "  BBS            %s (mutual TLS)\n", b.URL())
	fmt.Fprintf(out, "  brain          leader-elected, in this process\n")
	for _, c := range cells {
		fmt.Fprintf(out, "  cell           %s (zone %s, %s), log %s\n", c.spec.ID, c.config.Zone,
			providerList(c.config.RootFSProviders), filepath.Join(c.dir, "agent.log"))
	}
	if blobsURL != "" {
		fmt.Fprintf(out, "  blobs          %s/blobs/ (from %s)\n", blobsURL, f.blobsDir)
	}
	fmt.Fprintf(out, "  data           %s\n", dataDir)
	fmt.Fprintf(out, "  client config  %s\n", f.clientConfig)

	if f.example != "" && len(cells) > 0 {
		go deployExample(ctx, out, b.Store, f.example, logger)
	}
	fmt.Fprintf(out, "\nIn another terminal, try:\n")
	fmt.Fprintf(out, "  trellis lrp ls                  # what runs\n")
	fmt.Fprintf(out, "  trellis lrp scale hello 20      # more instances\n")
	fmt.Fprintf(out, "  trellis visualize               # cells and instances, live\n")
	fmt.Fprintf(out, "  trellis task create -f examples/task-hello.json\n")
	fmt.Fprintf(out, "\nCtrl-C stops the cluster; its state stays in %s.\n", dataDir)

	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "stopping")
		return nil
	case err := <-b.Done():
		return fmt.Errorf("BBS stopped: %v", err)
	case err := <-brainDone:
		brainDone <- err
		return fmt.Errorf("brain stopped: %v", err)
	}
}

// providerList renders a cell's rootfs providers for the banner.
func providerList(p map[string]string) string {
	names := make([]string, 0, len(p))
	for k := range p {
		names = append(names, k)
	}
	slices.Sort(names)
	return fmt.Sprint(names)
}

// serveBlobs serves dir at http://listen/blobs/ when dir exists. It returns the base URL ("" when
// there is nothing to serve) and a function that stops the server.
func serveBlobs(dir, listen string, logger *slog.Logger) (string, func(), error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		logger.Info("no blob store: the directory does not exist", "blobs_dir", dir)
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("blob store: listen on %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /blobs/", http.StripPrefix("/blobs/", http.FileServer(http.Dir(dir))))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// deployExample desires the example LRP if it is not desired yet, waits for an instance to run
// and prints where it answers.
func deployExample(ctx context.Context, out io.Writer, st store.Interface, path string, logger *slog.Logger) {
	var lrp models.DesiredLRP
	if err := readDocument(path, &lrp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		fmt.Fprintf(out, "example: %v\n", err)
		return
	}
	if _, err := st.DesiredLRP(ctx, lrp.ProcessGuid); models.IsNotFound(err) {
		if _, err := st.DesireLRP(ctx, &lrp); err != nil && !models.IsAlreadyExists(err) {
			fmt.Fprintf(out, "example: desire %s: %v\n", lrp.ProcessGuid, err)
			return
		}
		fmt.Fprintf(out, "\ndeploying the example app %q (%s) ...\n", lrp.ProcessGuid, path)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		actual, _, err := st.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: lrp.ProcessGuid})
		if err != nil && ctx.Err() != nil {
			return
		}
		for _, a := range actual {
			if a.State == models.ActualLRPStateRunning && len(a.Ports) > 0 {
				fmt.Fprintf(out, "\napp running: %s is answering at http://%s:%d/\n  curl http://%s:%d/\n",
					lrp.ProcessGuid, a.Address, a.Ports[0].HostPort, a.Address, a.Ports[0].HostPort)
				return
			}
			if a.PlacementError != "" || a.CrashReason != "" {
				logger.Info("example app not running yet", "index", a.Index, "state", a.State,
					"placement_error", a.PlacementError, "crash_reason", a.CrashReason)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "example: %s is not running after 3 minutes; see 'trellis lrp get %s' and the cells' agent.log\n",
		lrp.ProcessGuid, lrp.ProcessGuid)
}

// devCellsUpTimeout bounds how long dev waits for its cells' first heartbeats.
const devCellsUpTimeout = time.Minute

// waitForCells waits until every cell has a presence in the BBS. A cell whose agent exits
// meanwhile, or one still missing after timeout, is an error naming it and its log.
func waitForCells(ctx context.Context, st store.Interface, cells []*devCell, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		presences, _, err := st.Cells(ctx)
		if err != nil {
			return fmt.Errorf("dev: listing the cells: %w", err)
		}
		present := map[string]bool{}
		for _, p := range presences {
			present[p.CellID] = true
		}
		var missing *devCell
		for _, c := range cells {
			select {
			case <-c.exited:
				return fmt.Errorf("dev: the agent of cell %s exited (%v); see %s", c.spec.ID, c.exitErr, filepath.Join(c.dir, "agent.log"))
			default:
			}
			if !present[c.spec.ID] && missing == nil {
				missing = c
			}
		}
		if missing == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dev: cell %s has not reported to the BBS after %s; see %s", missing.spec.ID, timeout, filepath.Join(missing.dir, "agent.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
