package command

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain/converge"
)

func init() { register(newLRPCommand) }

func newLRPCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "lrp",
		Short: "Manage long-running processes (desired LRPs and their instances)",
	}
	addClientFlags(cmd, &f)
	cmd.AddCommand(
		newLRPCreate(&f), newLRPList(&f), newLRPGet(&f), newLRPScale(&f), newLRPRemove(&f), newLRPRestart(&f),
	)
	return cmd
}

// readDocument decodes a JSON document from a file ("-" for stdin) strictly: unknown fields and
// malformed JSON are refused with the field or offset named.
func readDocument(path string, v any) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		r = fh
	}
	if err := models.DecodeStrict(r, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func newLRPCreate(f *clientFlags) *cobra.Command {
	return createCommand(f, "Desire an LRP from a JSON document (Diego's field names)",
		`  trellis lrp create -f examples/lrp-hello.json
  cat lrp.json | trellis lrp create -f -`,
		(*client.Client).DesireLRP,
		func(d *models.DesiredLRP) string {
			return fmt.Sprintf("created %s: %d instance(s) of %s", d.ProcessGuid, d.Instances, d.RootFS)
		})
}

// createCommand builds a `create -f FILE` command for records of type T: the document is
// decoded strictly, sent with create, and the stored record printed (a summary line, or JSON).
func createCommand[T any](f *clientFlags, short, example string,
	create func(*client.Client, context.Context, *T) (*T, error), summary func(*T) string) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "create -f FILE",
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var doc T
			if err := readDocument(file, &doc); err != nil {
				return err
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			created, err := create(c, cmd.Context(), &doc)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), created)
			}
			fmt.Fprintln(cmd.OutOrStdout(), summary(created))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the JSON document, or - for stdin")
	cmd.MarkFlagRequired("file")
	return cmd
}

func newLRPList(f *clientFlags) *cobra.Command {
	var domain string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List desired LRPs with how many instances run",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			desired, _, err := c.DesiredLRPs(ctx, store.DesiredLRPFilter{Domain: domain})
			if err != nil {
				return err
			}
			actual, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{Domain: domain})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), desired)
			}
			counts := countInstances(actual)
			sort.Slice(desired, func(i, j int) bool { return desired[i].ProcessGuid < desired[j].ProcessGuid })
			t := newTable(cmd.OutOrStdout(), "PROCESS GUID", "DOMAIN", "ROOTFS", "RUNNING", "CRASHED", "UNPLACED", "MEMORY", "DISK")
			for _, d := range desired {
				n := counts[d.ProcessGuid]
				t.row(d.ProcessGuid, d.Domain, d.RootFS, fmt.Sprintf("%d/%d", n.running, d.Instances), n.crashed, n.unplaced, mib(d.MemoryMB), mib(d.DiskMB))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "only this domain")
	return cmd
}

type instanceCounts struct{ running, crashed, unplaced int }

// countInstances counts the ORDINARY instances of each process by state.
func countInstances(actual []*models.ActualLRP) map[string]instanceCounts {
	out := make(map[string]instanceCounts)
	for _, a := range actual {
		if a.Presence != models.PresenceOrdinary {
			continue
		}
		n := out[a.ProcessGuid]
		switch a.State {
		case models.ActualLRPStateRunning:
			n.running++
		case models.ActualLRPStateCrashed:
			n.crashed++
		case models.ActualLRPStateUnclaimed:
			if a.PlacementError != "" {
				n.unplaced++
			}
		}
		out[a.ProcessGuid] = n
	}
	return out
}

func newLRPGet(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get PROCESS_GUID",
		Short: "Show a desired LRP and each of its instances",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := c.DesiredLRP(ctx, args[0])
			if err != nil {
				return err
			}
			actual, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: args[0]})
			if err != nil {
				return err
			}
			sortInstances(actual)
			if f.json {
				return printJSON(cmd.OutOrStdout(), struct {
					DesiredLRP *models.DesiredLRP  `json:"desired_lrp"`
					ActualLRPs []*models.ActualLRP `json:"actual_lrps"`
				}{d, actual})
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "process guid  %s\ndomain        %s\nrootfs        %s\ninstances     %d\nmemory/disk   %s / %s\n",
				d.ProcessGuid, d.Domain, d.RootFS, d.Instances, mib(d.MemoryMB), mib(d.DiskMB))
			if len(d.PlacementTags) > 0 {
				fmt.Fprintf(out, "tags          %s\n", strings.Join(d.PlacementTags, ", "))
			}
			if d.Annotation != "" {
				fmt.Fprintf(out, "annotation    %s\n", d.Annotation)
			}
			fmt.Fprintln(out)
			return printInstances(out, actual, d.RestartPolicy, time.Now(), fetchMetrics(ctx, f, c, actual))
		},
	}
}

// sortInstances orders instances by index, ORDINARY first.
func sortInstances(actual []*models.ActualLRP) {
	sort.Slice(actual, func(i, j int) bool {
		if actual[i].Index != actual[j].Index {
			return actual[i].Index < actual[j].Index
		}
		return actual[i].Presence > actual[j].Presence // ORDINARY > EVACUATING > SUSPECT
	})
}

// printInstances prints one row per instance; metrics (by instance guid, from the agents)
// fill the CPU, MEMORY and DISK columns, "-" for an instance whose agent did not answer.
func printInstances(w io.Writer, actual []*models.ActualLRP, policy *models.RestartPolicy, now time.Time, metrics map[string]agent.InstanceMetrics) error {
	t := newTable(w, "INDEX", "STATE", "PRESENCE", "CELL", "ADDRESS", "SINCE", "CRASHES", "CPU", "MEMORY", "DETAIL")
	for _, a := range actual {
		detail := a.PlacementError
		if detail == "" {
			detail = a.CrashReason
		}
		if a.State == models.ActualLRPStateCrashed {
			detail += "; " + backoff(a, policy, now)
		}
		var cpu, mem, disk string
		if a.InstanceGuid != "" {
			m, ok := metrics[a.InstanceGuid]
			cpu, mem, disk = usage(m, ok)
			if detail == "" && ok && m.Phase != "" {
				detail = m.Phase // e.g. an image pull's progress while the instance starts
			}
		}
		if disk != "" && disk != "-" {
			mem += ", disk " + disk
		}
		t.row(a.Index, a.State, strings.ToLower(a.Presence), a.CellID, address(a.ActualLRPNetInfo), age(a.Since, now), a.CrashCount, cpu, mem, detail)
	}
	return t.flush()
}

// backoff says when the converger restarts a CRASHED instance under the LRP's restart policy.
func backoff(a *models.ActualLRP, policy *models.RestartPolicy, now time.Time) string {
	var ranFor time.Duration
	if a.RunningSince > 0 && a.Since > a.RunningSince {
		ranFor = time.Duration(a.Since - a.RunningSince)
	}
	at, giveUp := converge.NextRestart(policy.WithDefaults(), a.CrashCount, ranFor, time.Unix(0, a.Since))
	switch {
	case giveUp:
		return fmt.Sprintf("not restarted: %d crashes", a.CrashCount)
	case !at.After(now):
		return "restarting now"
	}
	return "restarts in " + at.Sub(now).Round(time.Second).String()
}

// metricsTimeout bounds the metrics requests `lrp get` makes to the agents.
const metricsTimeout = 2 * time.Second

// fetchMetrics asks the agents of the cells holding actual for their instances' usage. Any
// failure (no operator certificate, an agent down) leaves instances out: they show "-".
func fetchMetrics(ctx context.Context, f *clientFlags, c *client.Client, actual []*models.ActualLRP) map[string]agent.InstanceMetrics {
	hc, err := agentHTTPClient(f, metricsTimeout)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	addrs, err := cellAddresses(ctx, c, actual, false)
	if err != nil || len(addrs) == 0 {
		return nil
	}
	return instanceMetrics(ctx, hc, addrs)
}

// address renders "host:hostport->containerport,..." for a running instance.
func address(n models.ActualLRPNetInfo) string {
	if n.Address == "" {
		return ""
	}
	if len(n.Ports) == 0 {
		return n.Address
	}
	parts := make([]string, len(n.Ports))
	for i, p := range n.Ports {
		parts[i] = fmt.Sprintf("%s:%d->%d", n.Address, p.HostPort, p.ContainerPort)
	}
	return strings.Join(parts, ",")
}

func newLRPScale(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "scale PROCESS_GUID INSTANCES",
		Short:   "Change how many instances of an LRP run",
		Example: "  trellis lrp scale hello 20",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil || n < 0 {
				return fmt.Errorf("instances %q: want a whole number ≥ 0", args[1])
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			count := int32(n)
			d, err := c.UpdateDesiredLRP(cmd.Context(), args[0], models.DesiredLRPUpdate{Instances: &count}, 0)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scaled %s to %d instance(s)\n", d.ProcessGuid, d.Instances)
			return nil
		},
	}
}

func newLRPRemove(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm PROCESS_GUID",
		Aliases: []string{"remove", "delete"},
		Short:   "Stop every instance of an LRP and forget it",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			if err := c.RemoveDesiredLRP(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
}

func newLRPRestart(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "restart PROCESS_GUID INDEX",
		Short: "Stop one instance and start it again (possibly on another cell)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			idx, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil || idx < 0 {
				return fmt.Errorf("index %q: want a whole number ≥ 0", args[1])
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			a, err := c.RestartActualLRPInstance(cmd.Context(), args[0], int32(idx))
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restarting %s/%d\n", args[0], idx)
			return nil
		},
	}
}
