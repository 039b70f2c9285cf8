package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/installer"
)

func init() { register(newAgentCommand) }

func newAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "The cell agent: runs the work the BBS places on this machine",
	}
	o := installer.DefaultOptions()
	o.Version = Version
	cmd.AddCommand(newAgentRun(o))
	cmd.AddCommand(installer.ServiceCommands(o)...)
	return cmd
}

// AgentLogFile is the agent's own log under the Windows service manager, inside its data_dir;
// it is bounded by installer.DefaultLogFileBytes (plus one rotated copy, AgentLogFile.1).
const AgentLogFile = "agent.log"

func newAgentRun(o installer.Options) *cobra.Command {
	var config, level string
	var service bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the cell agent in the foreground until SIGTERM or SIGINT, then drain the cell",
		Long: `Run the cell agent in the foreground. It announces the cell to the BBS, runs the LRP
instances and tasks placed on it, and serves their logs and metrics on its HTTPS API.

SIGTERM or SIGINT drains the cell before the agent exits: its running instances are evacuated
(each keeps serving until its replacement runs on another cell, or until evacuation_timeout),
its tasks finish, and its presence is removed. SIGKILL stops the agent at once; the containers
keep running and the next agent re-attaches to them.

--service (Windows) runs the agent under the service control manager, as the MSI and
'trellis agent install' register it: a stop or shutdown request from the service manager
drains the cell, with progress reported until the drain ends. It never asks Windows whether
the process is a service (wine answers that wrongly), so it is also how the agent runs as a
service under wine. The agent's log then goes to ` + AgentLogFile + ` in its data_dir (rotated past
16 MiB, one old copy kept as ` + AgentLogFile + `.1).`,
		Example: `  trellis agent run --config /etc/trellis/agent.yaml
  trellis.exe agent run --service --config "C:\ProgramData\trellis\agent.yaml"   # the service's command line`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: %w", level, err)
			}
			if service {
				return runAgentService(cmd.Context(), o.Name, config, lv)
			}
			cfg, err := agent.LoadConfig(config)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			return agent.Serve(cmd.Context(), cfg, logger)
		},
	}
	cmd.Flags().StringVar(&config, "config", o.ConfigPath, "the agent's YAML configuration")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().BoolVar(&service, "service", false, "run under the Windows service control manager (the service's command line; Windows only)")
	return cmd
}

// runAgentService runs the agent as the named Windows service, logging to AgentLogFile in its
// data_dir. The stop request of the service manager cancels Serve's context, which drains the
// cell. A configuration that does not load still starts the service, so the service manager
// sees it fail (exit code 1, which the recovery actions retry) and the reason is logged to
// the default data_dir.
func runAgentService(ctx context.Context, name, config string, lv slog.Level) error {
	if runtime.GOOS != "windows" {
		return fmt.Errorf("--service: %w on %s: the init system runs the agent as an ordinary process there", errors.ErrUnsupported, runtime.GOOS)
	}
	cfg, cfgErr := agent.LoadConfig(config)
	dataDir := cfg.DataDir
	if cfgErr != nil {
		dataDir = agent.DefaultConfig().DataDir
	}
	lf, err := installer.OpenLogFile(filepath.Join(dataDir, AgentLogFile), installer.DefaultLogFileBytes)
	if err != nil {
		return fmt.Errorf("agent service log: %w", err)
	}
	defer lf.Close()
	logger := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: lv}))
	logger.Info("starting under the service manager", "service", name, "config", config, "version", Version)
	err = installer.RunService(ctx, name, installer.Program{Run: func(ctx context.Context) error {
		if cfgErr != nil {
			return cfgErr
		}
		return agent.Serve(ctx, cfg, logger)
	}})
	if err != nil {
		logger.Error("the agent service stopped with an error", "err", err)
	} else {
		logger.Info("the agent service stopped")
	}
	return err
}

// newCellsDrain is `trellis cells drain`, attached to the cells command.
func newCellsDrain(f *clientFlags) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain CELL_ID",
		Short: "Evacuate a cell: its instances move to other cells, its tasks finish, then it leaves",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			p, err := c.DrainCell(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json && !wait {
				return printJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "draining %s\n", p.CellID)
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for {
				if _, err := c.Cell(ctx, args[0]); models.IsNotFound(err) {
					fmt.Fprintf(cmd.OutOrStdout(), "%s drained\n", args[0])
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("%s still present after %s", args[0], timeout)
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the cell has left")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	return cmd
}

// agentHTTPClient is an HTTPS client of cells' agent APIs with the operator's certificate from
// the client configuration.
func agentHTTPClient(f *clientFlags, timeout time.Duration) (*http.Client, error) {
	cfg, err := client.LoadConfig(f.config)
	if err != nil {
		return nil, err
	}
	if cfg.CAFile == "" || cfg.CertFile == "" {
		return nil, fmt.Errorf("%s: the agents' APIs need the operator's certificate (ca_file, cert_file, key_file)", f.config)
	}
	tc, err := certs.ClientTLSConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: timeout}, nil
}

// cellAddresses maps the cells that hold instances (any presence) of actual to their agents'
// API addresses — every present cell with all — leaving out cells that announce no address.
func cellAddresses(ctx context.Context, c *client.Client, actual []*models.ActualLRP, all bool) (map[string]string, error) {
	cells, _, err := c.Cells(ctx)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, a := range actual {
		if a.CellID != "" {
			want[a.CellID] = true
		}
	}
	out := map[string]string{}
	for _, cell := range cells {
		if cell.Address != "" && (all || want[cell.CellID]) {
			out[cell.CellID] = cell.Address
		}
	}
	return out, nil
}

// instanceMetrics fetches GET /v1/metrics from each agent at once, bounded by the client's
// timeout, and indexes the answers by instance guid. Unreachable agents are left out.
func instanceMetrics(ctx context.Context, hc *http.Client, addrs map[string]string) map[string]agent.InstanceMetrics {
	var mu sync.Mutex
	out := map[string]agent.InstanceMetrics{}
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/metrics", nil)
			if err != nil {
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			var mr agent.MetricsResponse
			if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&mr) != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range mr.Instances {
				out[m.InstanceGuid] = m
			}
		}()
	}
	wg.Wait()
	return out
}

// usage renders one instance's cpu/memory/disk, or "-" each when its agent did not answer.
func usage(m agent.InstanceMetrics, ok bool) (string, string, string) {
	if !ok {
		return "-", "-", "-"
	}
	return fmt.Sprintf("%.1f%%", m.CPUPercent), bytesOf(m.MemoryBytes, m.MemoryLimitBytes), bytesOf(m.DiskBytes, m.DiskLimitBytes)
}

func bytesOf(used, limit uint64) string {
	s := fmt.Sprintf("%.1fM", float64(used)/(1<<20))
	if limit > 0 {
		s += fmt.Sprintf("/%dM", limit>>20)
	}
	return s
}
