package command

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/brain"
)

func init() { register(newDevCommand) }

type devFlags struct {
	dataDir      string
	listen       string
	clientConfig string
	logLevel     string
}

func newDevCommand() *cobra.Command {
	var f devFlags
	home, _ := os.UserHomeDir()
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-machine cluster in the foreground",
		Long: `Run a one-machine trellis cluster in the foreground: an embedded etcd, the BBS (with mutual
TLS) and the brain. On first start it creates a certificate authority and the certificates in
--data-dir/pki, and writes the operator's client config (BBS URL and certificates) to
--client-config, so plain 'trellis' commands reach this cluster. State lives in --data-dir and
survives a restart. Ctrl-C stops everything cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(f.logLevel)
			if err != nil {
				return err
			}
			pki, err := certs.EnsureDevPKI(filepath.Join(f.dataDir, "pki"), nil)
			if err != nil {
				return err
			}
			cfg := standalone.DefaultConfig()
			cfg.DataDir = f.dataDir
			cfg.Server.ListenAddress = f.listen
			cfg.Server.TLS.CAFile = pki.CAFile
			cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = pki.Server.CertFile, pki.Server.KeyFile
			cfg.Server.Version = Version
			// etcd warns about its single-node set-up at every start; in a dev cluster only its
			// debug output is of interest, and failures surface as BBS errors anyway.
			if logger.Enabled(cmd.Context(), slog.LevelDebug) {
				cfg.EmbeddedEtcd.LogLevel = slog.LevelDebug
			} else {
				cfg.EmbeddedEtcd.LogLevel = slog.LevelError + 4
			}
			b, err := standalone.Start(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			// The brain runs in this process over the store itself: same decisions, same locks,
			// no certificate round trip.
			br, err := brain.New(brain.DefaultConfig(), b.Store, logger.With("component", "brain"), nil)
			if err != nil {
				b.Close()
				return err
			}
			brainDone := make(chan error, 1)
			go func() { brainDone <- br.Run(cmd.Context()) }()

			ccfg := client.DefaultConfig()
			ccfg.URL = b.URL()
			ccfg.CAFile = pki.CAFile
			ccfg.CertFile, ccfg.KeyFile = pki.Operator.CertFile, pki.Operator.KeyFile
			if err := client.WriteConfig(f.clientConfig, ccfg); err != nil {
				b.Close()
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "trellis dev cluster is up\n")
			fmt.Fprintf(out, "  BBS            %s (mutual TLS)\n", b.URL())
			fmt.Fprintf(out, "  brain          leader-elected, in this process\n")
			fmt.Fprintf(out, "  data           %s\n", f.dataDir)
			fmt.Fprintf(out, "  client config  %s\n", f.clientConfig)
			fmt.Fprintf(out, "\nIn another terminal, try:\n")
			fmt.Fprintf(out, "  trellis lrp create -f examples/lrp-hello.json\n")
			fmt.Fprintf(out, "  trellis lrp ls\n")
			fmt.Fprintf(out, "  trellis lrp get hello --json\n")
			fmt.Fprintf(out, "  trellis task create -f examples/task-hello.json\n")
			fmt.Fprintf(out, "  trellis events\n")
			fmt.Fprintf(out, "\nCtrl-C stops the cluster; its state stays in %s.\n", f.dataDir)
			select {
			case <-cmd.Context().Done():
				fmt.Fprintln(out, "stopping")
			case err := <-b.Done():
				return fmt.Errorf("BBS stopped: %v", err)
			case err := <-brainDone:
				b.Close()
				return fmt.Errorf("brain stopped: %v", err)
			}
			<-brainDone
			return b.Close()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", filepath.Join(home, ".trellis", "dev"), "where the cluster keeps its state and certificates")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8889", "address of the BBS API")
	fl.StringVar(&f.clientConfig, "client-config", client.DefaultConfigPath(), "where to write the operator's client config")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}
