package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// DefaultStopTimeout bounds how long `trellis agent stop` waits for the drain: the agent's
// default evacuation timeout (10 min) with a margin, as the systemd unit's TimeoutStopSec.
const DefaultStopTimeout = 15 * time.Minute

// ServiceCommands returns `install`, `uninstall`, `start`, `stop`, `status`, `configure`,
// `purge` and the hidden `recovery`, for the CLI to add under `trellis agent`. Each takes
// --config (default o.ConfigPath); install takes --init to choose the service manager.
// Options are checked when a command runs, so a bad field fails that command with
// ErrInvalidOptions.
func ServiceCommands(o Options) []*cobra.Command {
	var stopTimeout time.Duration
	service := func() (Service, error) { return NewService(o) }
	withConfig := func(cmd *cobra.Command) *cobra.Command {
		cmd.Flags().StringVar(&o.ConfigPath, "config", o.ConfigPath, "the agent's configuration file")
		cmd.Args = cobra.NoArgs
		return cmd
	}

	install := withConfig(&cobra.Command{
		Use:   "install",
		Short: "Register the agent as a system service that starts at boot (it is not started)",
		Long: `Register the agent as a system service: on Linux a systemd unit (trellis's own: containers
outlive an agent restart, and a stop drains the cell) enabled at boot; on Windows a service with
restart-on-failure recovery. The service runs this binary with --config. Write the configuration
first with 'trellis agent configure', then 'trellis agent start'. The .deb and the MSI do this
for you; use install for a binary copied by hand.`,
		Example: "  trellis agent install\n  trellis agent install --init systemd   # even where systemd is not PID 1 (image builds)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := service()
			if err != nil {
				return err
			}
			if _, err := os.Stat(o.ConfigPath); errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %s does not exist yet; write it with 'trellis agent configure' before starting\n", o.ConfigPath)
			}
			if err := s.Install(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s (%s), enabled at boot; start it with 'trellis agent start'\n", o.Name, s.Manager())
			return nil
		},
	})
	install.Flags().StringVar(&o.InitSystem, "init", o.InitSystem, "service manager: auto, systemd or native (kardianos/service: Windows, System V, …)")

	uninstall := withConfig(&cobra.Command{
		Use:   "uninstall",
		Short: "Stop the agent (draining the cell) and remove its service; the configuration stays",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := service()
			if err != nil {
				return err
			}
			if err := s.Uninstall(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s; 'trellis agent purge' deletes its configuration and data\n", o.Name)
			return nil
		},
	})

	start := withConfig(&cobra.Command{
		Use:   "start",
		Short: "Start the agent's service",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := service()
			if err != nil {
				return err
			}
			return s.Start(cmd.Context())
		},
	})

	stop := withConfig(&cobra.Command{
		Use:   "stop",
		Short: "Stop the agent's service: a drain, which waits until the cell's work has moved away",
		Long: `Stop the agent's service. Stopping the agent drains the cell: it stops taking work, each
running instance gets a replacement elsewhere, and its containers stop once the replacement runs
(or after the evacuation timeout, 10 minutes by default). The command waits for the drain.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := service()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if stopTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, stopTimeout)
				defer cancel()
			}
			return s.Stop(ctx)
		},
	})
	stop.Flags().DurationVar(&stopTimeout, "timeout", DefaultStopTimeout, "how long to wait for the drain (0: as long as it takes)")

	status := withConfig(&cobra.Command{
		Use:   "status",
		Short: "Print whether the agent's service is installed, enabled and running",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := service()
			if err != nil {
				return err
			}
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			enabled := "disabled"
			if st.Enabled {
				enabled = "enabled"
			}
			if st.State == StateNotInstalled {
				enabled = "-"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\t%s\n", o.Name, st.State, enabled, st.Manager)
			return nil
		},
	})

	var set Settings
	configure := withConfig(&cobra.Command{
		Use:   "configure",
		Short: "Write and validate the agent's configuration file",
		Long: `Write the agent's configuration file. Flags that are given replace what the file says; flags
left out (or given empty) keep it, and so do keys configure does not know. The result is checked
as the agent checks it at start, and the file is replaced only if it is valid. Restart the agent
to apply a change. --tags and --rootfs take comma-separated lists or repeat.`,
		Example: `  trellis agent configure --cell-id cell-1 --zone z1 --bbs-url https://bbs.example:8889 \
      --ca-file /etc/trellis/pki/ca.crt --cert-file /etc/trellis/pki/cell.crt --key-file /etc/trellis/pki/cell.key \
      --rootfs preloaded:cflinuxfs4=/var/lib/trellis/rootfs/cflinuxfs4 --rootfs docker --tags ssd,gpu`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if set.empty() {
				if _, err := os.Stat(o.ConfigPath); err == nil {
					// Nothing to change (the MSI on an upgrade): still check the file.
					if err := o.ValidateConfig(o.ConfigPath); err != nil {
						return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s is valid; nothing to change\n", o.ConfigPath)
					return nil
				}
			}
			if err := Configure(cmd.Context(), o.ConfigPath, set, o.ValidateConfig); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", o.ConfigPath)
			return nil
		},
	})
	fl := configure.Flags()
	fl.StringVar(&set.CellID, "cell-id", "", "the cell's id: 1-128 characters of [A-Za-z0-9_.-]; its certificate's CommonName is cell:<id>")
	fl.StringVar(&set.Zone, "zone", "", "failure zone the auctioneer balances across (default z1)")
	fl.StringVar(&set.BBSURL, "bbs-url", "", "the BBS's URL, https://host:8889")
	fl.StringVar(&set.CAFile, "ca-file", "", "CA certificate that signed the BBS's certificate")
	fl.StringVar(&set.CertFile, "cert-file", "", "the cell's client certificate (CommonName cell:<id>)")
	fl.StringVar(&set.KeyFile, "key-file", "", "the cell's client key")
	fl.StringSliceVar(&set.PlacementTags, "tags", nil, "placement tags the cell requires work to ask for (replaces the list)")
	fl.StringSliceVar(&set.RootFSProviders, "rootfs", nil, "rootfs providers: preloaded:<stack>=<path> or a scheme such as docker (replaces the list)")
	fl.StringVar(&set.DataDir, "data-dir", "", "where the agent keeps logs, downloads and container state")
	fl.StringVar(&set.Backend, "backend", "", "isolation backend (linux, or memory for tests)")

	purge := withConfig(&cobra.Command{
		Use:   "purge",
		Short: "Delete the agent's configuration and data directory (after uninstall)",
		Long: `Delete the configuration file and the agent's data directory, then the configuration's
directory if it is empty. The data directory is deleted only if it is the default one or lies
beside the configuration. It refuses while the service is installed: run 'trellis agent
uninstall' first.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Purging a cell whose service may still start would leave it unable to.
			s, err := service()
			if err != nil {
				return err
			}
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			if st.State != StateNotInstalled {
				return fmt.Errorf("%w: %s (%s); run 'trellis agent uninstall' first", ErrStillInstalled, o.Name, st.State)
			}
			return Purge(cmd.Context(), o.ConfigPath)
		},
	})

	recovery := &cobra.Command{
		Use:    "recovery",
		Short:  "Set the Windows service's restart-on-failure actions (run by the MSI)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return SetRecovery(o.Name)
		},
	}
	recovery.Flags().StringVar(&o.Name, "name", o.Name, "service name")

	return []*cobra.Command{install, uninstall, start, stop, status, configure, purge, recovery}
}
