package command

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/brain"
)

func init() { register(newBrainCommand) }

// brainFlags configure a brain process.
type brainFlags struct {
	bbsConfig        string
	bbsURL           string
	bbsCA            string
	bbsCert          string
	bbsKey           string
	owner            string
	lockTTL          time.Duration
	convergeInterval time.Duration
	binPack          bool
	metricsListen    string
	logLevel         string
}

func (f *brainFlags) add(cmd *cobra.Command) {
	def := brain.DefaultConfig()
	fl := cmd.Flags()
	fl.StringVar(&f.bbsConfig, "bbs-config", "", "client config file of the BBS ({url, ca_file, cert_file, key_file}, as 'trellis dev' writes); the --bbs-* flags override its fields")
	fl.StringVar(&f.bbsURL, "bbs-url", "", "BBS URL, e.g. https://bbs.example:8889")
	fl.StringVar(&f.bbsCA, "bbs-ca", "", "CA file verifying the BBS")
	fl.StringVar(&f.bbsCert, "bbs-cert", "", "the brain's client certificate (CommonName \"brain\")")
	fl.StringVar(&f.bbsKey, "bbs-key", "", "the brain's client key")
	fl.StringVar(&f.owner, "owner", def.OwnerID, "this brain's name in the leader lock; unique per brain")
	fl.DurationVar(&f.lockTTL, "lock-ttl", def.LockTTL, "leader lock lease: a standby takes over about this long after the leader dies")
	fl.DurationVar(&f.convergeInterval, "converge-interval", def.ConvergeInterval, "period of the converger's full sweep (it also runs on events)")
	fl.BoolVar(&f.binPack, "bin-pack", false, "place work on the fullest cell that fits instead of the emptiest")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "address serving Prometheus /metrics, e.g. 127.0.0.1:9101 (default: off)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
}

// clientConfig merges the config file and the flags.
func (f *brainFlags) clientConfig() (client.Config, error) {
	cfg := client.DefaultConfig()
	if f.bbsConfig != "" {
		var err error
		if cfg, err = client.LoadConfig(f.bbsConfig); err != nil {
			return client.Config{}, err
		}
	}
	for dst, src := range map[*string]string{&cfg.URL: f.bbsURL, &cfg.CAFile: f.bbsCA, &cfg.CertFile: f.bbsCert, &cfg.KeyFile: f.bbsKey} {
		if src != "" {
			*dst = src
		}
	}
	if cfg.URL == "" {
		return client.Config{}, errors.New("no BBS: pass --bbs-config or --bbs-url with --bbs-ca, --bbs-cert and --bbs-key")
	}
	if err := cfg.Validate(); err != nil {
		return client.Config{}, err
	}
	return cfg, nil
}

func (f *brainFlags) brainConfig() brain.Config {
	cfg := brain.DefaultConfig()
	cfg.OwnerID = f.owner
	cfg.LockTTL = f.lockTTL
	cfg.LockRetryInterval = f.lockTTL / 10
	cfg.ConvergeInterval = f.convergeInterval
	cfg.Auction.BinPack = f.binPack
	return cfg
}

func newBrainCommand() *cobra.Command {
	var f brainFlags
	cmd := &cobra.Command{
		Use:   "brain",
		Short: "Run a brain: the auctioneer and the converger, leader-elected over the BBS",
		Long: `Run a brain. Any number of brains may run against one BBS: they contend for a lock held
through the BBS, and only the holder acts. The leader follows the BBS event stream, places new
and unplaced instances and tasks on cells (the auctioneer), and repairs what differs from the
desired state (the converger: missing or extra instances, crashes with back-off, lost cells,
task time limits and completion callbacks). A standby takes over about --lock-ttl after the
leader dies, at once when it stops cleanly.

The brain talks to the BBS over mutual TLS with a client certificate whose CommonName is
"brain" ('trellis dev' creates one in its data dir under pki/).`,
		Example: `  trellis brain --bbs-url https://bbs.example:8889 --bbs-ca /etc/trellis/ca.crt \
      --bbs-cert /etc/trellis/brain.crt --bbs-key /etc/trellis/brain.key --metrics-listen 127.0.0.1:9101`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(f.logLevel)
			if err != nil {
				return err
			}
			ccfg, err := f.clientConfig()
			if err != nil {
				return err
			}
			bbs, err := client.New(ccfg)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			b, err := brain.New(f.brainConfig(), bbs, logger, reg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			metricsDone := make(chan error, 1)
			if f.metricsListen != "" {
				ln, err := net.Listen("tcp", f.metricsListen)
				if err != nil {
					return fmt.Errorf("--metrics-listen: %w", err)
				}
				mux := http.NewServeMux()
				mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go func() {
					if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
						metricsDone <- err
					}
				}()
				go func() {
					<-ctx.Done()
					sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					defer scancel()
					_ = srv.Shutdown(sctx)
				}()
				logger.Info("serving metrics", "address", ln.Addr().String())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "brain %s running against %s\n", f.owner, ccfg.URL)
			runErr := make(chan error, 1)
			go func() { runErr <- b.Run(ctx) }()
			select {
			case err := <-runErr:
				return err
			case err := <-metricsDone:
				// The metrics server failed: stop the brain cleanly (releasing the lock).
				cancel()
				<-runErr
				return fmt.Errorf("metrics server: %w", err)
			}
		},
	}
	f.add(cmd)
	return cmd
}
