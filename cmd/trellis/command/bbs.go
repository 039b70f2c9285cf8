package command

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs"

	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/isolation_linux/image"
)

func init() { register(newBBSCommand) }

// bbsFlags configure a BBS server process.
type bbsFlags struct {
	dataDir       string
	listen        string
	etcdEndpoints []string
	etcdCA        string
	etcdCert      string
	etcdKey       string
	etcdConns     int
	tlsCA         string
	tlsCert       string
	tlsKey        string
	insecure      bool
	logLevel      string
	// Image tags are pinned to digests when LRPs are desired unless skipImages.
	skipImages         bool
	imageTimeout       time.Duration
	insecureRegistries []string
}

func (f *bbsFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/trellis/bbs", "where the embedded etcd keeps its data (survives restarts)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8889", "address the API listens on")
	fl.StringSliceVar(&f.etcdEndpoints, "etcd-endpoints", nil, "external etcd cluster client URLs (default: run an embedded member)")
	fl.StringVar(&f.etcdCA, "etcd-ca", "", "CA file verifying the external etcd members")
	fl.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate for the external etcd")
	fl.StringVar(&f.etcdKey, "etcd-key", "", "client key for the external etcd")
	fl.IntVar(&f.etcdConns, "etcd-connections", standalone.DefaultEtcdConnections, "connections to the external etcd the store spreads its requests over (1-64; watches use the first; the embedded etcd is called in-process)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA file that signs client certificates (operator, brain, cell:<id>)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate file")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key file")
	fl.BoolVar(&f.insecure, "insecure", false, "serve plain HTTP without client certificates (loopback addresses only)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&f.skipImages, "skip-image-resolution", false, "store docker:// and oci:// rootfs tags as given instead of pinning them to a digest (air-gapped BBS)")
	fl.DurationVar(&f.imageTimeout, "image-resolve-timeout", bbs.DefaultImageResolveTimeout, "how long pinning an image tag may take before the desire request fails with 503")
	fl.StringSliceVar(&f.insecureRegistries, "insecure-registries", nil, "registry hosts reached over plain HTTP when pinning tags (loopback and private addresses always are)")
}

func (f *bbsFlags) config() standalone.Config {
	cfg := standalone.DefaultConfig()
	cfg.DataDir = f.dataDir
	cfg.Etcd.Endpoints = f.etcdEndpoints
	cfg.Etcd.CAFile, cfg.Etcd.CertFile, cfg.Etcd.KeyFile = f.etcdCA, f.etcdCert, f.etcdKey
	cfg.EtcdConnections = f.etcdConns
	cfg.Server.ListenAddress = f.listen
	cfg.Server.TLS.CAFile, cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = f.tlsCA, f.tlsCert, f.tlsKey
	cfg.Server.Insecure = f.insecure
	cfg.Server.Version = Version
	cfg.Server.ImageResolution = bbs.ImageResolutionConfig{Skip: f.skipImages, Timeout: f.imageTimeout}
	cfg.Server.ImageResolver = image.Resolver{Options: image.ResolveOptions{InsecureRegistries: f.insecureRegistries}}
	return cfg
}

func newBBSCommand() *cobra.Command {
	var f bbsFlags
	cmd := &cobra.Command{
		Use:   "bbs",
		Short: "Run the BBS: the API and source of truth, on embedded or external etcd",
		Long: `Run the BBS server. By default it runs an embedded single-node etcd whose data lives in
--data-dir; with --etcd-endpoints it uses an external etcd cluster instead, so several BBS
replicas can run behind a load balancer.

The API is HTTPS with mutual TLS: clients present a certificate signed by --tls-ca whose
CommonName is their role ("operator", "brain" or "cell:<id>"). --insecure serves plain HTTP on a
loopback address only, for local experiments.`,
		Example: `  trellis bbs --data-dir /var/lib/trellis/bbs --listen 0.0.0.0:8889 \
      --tls-ca /etc/trellis/ca.crt --tls-cert /etc/trellis/bbs.crt --tls-key /etc/trellis/bbs.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(f.logLevel)
			if err != nil {
				return err
			}
			b, err := standalone.Start(cmd.Context(), f.config(), logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "BBS serving at %s\n", b.URL())
			<-cmd.Context().Done()
			return b.Close()
		},
	}
	f.add(cmd)
	return cmd
}

// newLogger returns a text logger on stderr at the named level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
