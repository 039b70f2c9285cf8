package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"

	"github.com/spf13/cobra"
)

// devClusterIDRe matches the name of a dev cluster's cells root under devCellsRootBase.
var devClusterIDRe = regexp.MustCompile(`^trd[0-9a-f]{6}$`)

func newDevPurgeCommand(defaultDataDir string) *cobra.Command {
	var dataDir, logLevel string
	cmd := &cobra.Command{
		Use:   "purge [CLUSTER-ID...]",
		Short: "Remove what a stopped dev cluster left on the host",
		Long: `Remove what a stopped dev cluster keeps on the host outside its --data-dir: its cells'
containers, their bridges and iptables chains, the cells' cgroups, and the cells' directory
` + devCellsRootBase + `/<cluster-id>. The data dir itself (etcd, certificates, desired work)
stays; remove it yourself if the cluster is not to start again.

Name the cluster by its --data-dir (the default is the one 'trellis dev' uses), or by its
cluster ids (the trd... directories under ` + devCellsRootBase + `), which is the only way
to purge a cluster whose data dir was deleted. A cluster whose cell agents still run is
refused: stop it first.`,
		Example: `  trellis dev purge                          # the default dev cluster
  trellis dev purge --data-dir /tmp/cluster/data
  trellis dev purge trd0173e8 trd049a30      # clusters whose data dir is gone`,
		RunE: func(cmd *cobra.Command, args []string) error {
			logger, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			ids := args
			if len(ids) == 0 {
				abs, err := filepath.Abs(dataDir)
				if err != nil {
					return err
				}
				ids = []string{devClusterID(abs)}
			} else if cmd.Flags().Changed("data-dir") {
				return fmt.Errorf("dev purge: give either --data-dir or cluster ids, not both")
			}
			for _, id := range ids {
				if !devClusterIDRe.MatchString(id) {
					return fmt.Errorf("dev purge: %q is not a dev cluster id (trd and 6 hex digits)", id)
				}
			}
			return purgeDevClusters(cmd.Context(), cmd.OutOrStdout(), ids, logger)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir, "the data dir of the cluster to purge")
	cmd.Flags().StringVar(&logLevel, "log-level", "error", "debug, info, warn or error")
	return cmd
}

// purgeDevClusters purges each cluster in turn, reporting what it removed, and returns the
// errors of all.
func purgeDevClusters(ctx context.Context, out io.Writer, ids []string, logger *slog.Logger) error {
	var errs []error
	for _, id := range ids {
		n, err := purgeDevCluster(ctx, id, logger)
		if err != nil {
			errs = append(errs, fmt.Errorf("dev purge %s: %w", id, err))
			continue
		}
		fmt.Fprintf(out, "purged dev cluster %s (%d containers destroyed)\n", id, n)
	}
	return errors.Join(errs...)
}

// devCgroupParent is the cgroup holding the cells of the cluster with cells root id.
func devCgroupParent(id string) string { return "trellis-dev-" + id[3:] }
