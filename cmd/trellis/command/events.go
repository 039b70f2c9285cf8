package command

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/store"
)

func init() { register(newEventsCommand) }

func newEventsCommand() *cobra.Command {
	var (
		f      clientFlags
		filter store.EventFilter
		after  int64
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow the BBS event stream (Ctrl-C to stop)",
		Long: `Follow every change the BBS makes: desired and actual LRPs, tasks and cells, created,
changed or removed. The stream reconnects by itself and resumes where it left off. With
--after it starts from an etcd revision (replaying what happened since).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			err = c.Events(cmd.Context(), filter, after, func(e store.Event) error {
				if f.json {
					return printJSON(out, e)
				}
				fmt.Fprintf(out, "%s  %-8d %-20s %s\n", time.Now().Format("15:04:05.000"), e.Revision, e.Type, describe(e))
				return nil
			})
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	addClientFlags(cmd, &f)
	cmd.Flags().StringVar(&filter.CellID, "cell", "", "only events of this cell")
	cmd.Flags().StringVar(&filter.ProcessGuid, "process-guid", "", "only events of this process")
	cmd.Flags().Int64Var(&after, "after", 0, "replay events after this revision")
	return cmd
}

// describe is a one-line summary of what an event is about.
func describe(e store.Event) string {
	switch {
	case e.ActualLRP != nil:
		a := e.ActualLRP
		s := fmt.Sprintf("%s/%d %s %s", a.ProcessGuid, a.Index, a.State, a.Presence)
		if a.CellID != "" {
			s += " on " + a.CellID
		}
		if a.PlacementError != "" {
			s += ": " + a.PlacementError
		}
		if a.CrashReason != "" && a.State == "CRASHED" {
			s += ": " + a.CrashReason
		}
		return s
	case e.DesiredLRP != nil:
		return fmt.Sprintf("%s instances=%d", e.DesiredLRP.ProcessGuid, e.DesiredLRP.Instances)
	case e.Task != nil:
		s := fmt.Sprintf("%s %s", e.Task.TaskGuid, e.Task.State)
		if e.Task.CellID != "" {
			s += " on " + e.Task.CellID
		}
		return s
	case e.Cell != nil:
		return fmt.Sprintf("%s zone=%s", e.Cell.CellID, e.Cell.Zone)
	}
	return ""
}
