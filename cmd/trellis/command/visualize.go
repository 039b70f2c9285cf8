package command

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func init() { register(newVisualizeCommand) }

func newVisualizeCommand() *cobra.Command {
	var (
		f        clientFlags
		once     bool
		interval time.Duration
		noColor  bool
	)
	cmd := &cobra.Command{
		Use:   "visualize",
		Short: "Watch the cluster live: cells as rows, instances as coloured marks",
		Long: `Show every present cell as a row (zone, tags, free capacity) with one mark per instance on
it, coloured by state, refreshed every --interval. Instances that are not placed on a cell are
shown at the bottom with their placement errors. --once prints a single frame and exits.

Marks: ● running  ○ claimed (starting)  ◌ placed, not yet claimed  ✖ crashed
       ◐ evacuating  ◇ suspect (its cell vanished)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return fmt.Errorf("--interval %s: must be positive", interval)
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			color := !noColor && os.Getenv("NO_COLOR") == "" && isTerminal(cmd.OutOrStdout())
			ctx := cmd.Context()
			for {
				cells, _, err := c.Cells(ctx)
				if err != nil {
					return err
				}
				actual, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{})
				if err != nil {
					return err
				}
				tasks, _, err := c.Tasks(ctx, store.TaskFilter{})
				if err != nil {
					return err
				}
				var frame strings.Builder
				renderFrame(&frame, cells, actual, tasks, time.Now(), color)
				out := cmd.OutOrStdout()
				if once {
					_, err := io.WriteString(out, frame.String())
					return err
				}
				// Home the cursor and clear, then draw: one write per frame, so it does not flicker.
				io.WriteString(out, "\x1b[H\x1b[2J"+frame.String())
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	addClientFlags(cmd, &f)
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval")
	cmd.Flags().BoolVar(&noColor, "no-color", false, "no ANSI colours (also when NO_COLOR is set or stdout is not a terminal)")
	return cmd
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// mark is how one instance is drawn.
type mark struct {
	glyph string
	color string // ANSI SGR parameters
}

var (
	markRunning    = mark{"●", "32"}
	markClaimed    = mark{"○", "33"}
	markPlaced     = mark{"◌", "37"}
	markCrashed    = mark{"✖", "31"}
	markEvacuating = mark{"◐", "36"}
	markSuspect    = mark{"◇", "35"}
)

func markFor(a *models.ActualLRP) mark {
	switch {
	case a.Presence == models.PresenceEvacuating:
		return markEvacuating
	case a.Presence == models.PresenceSuspect:
		return markSuspect
	case a.State == models.ActualLRPStateRunning:
		return markRunning
	case a.State == models.ActualLRPStateClaimed:
		return markClaimed
	case a.State == models.ActualLRPStateCrashed:
		return markCrashed
	}
	return markPlaced
}

// maxMarks bounds the marks drawn per row; the rest is counted.
const maxMarks = 100

// renderFrame draws one frame of the cluster.
func renderFrame(w io.Writer, cells []*models.CellPresence, actual []*models.ActualLRP, tasks []*models.Task, now time.Time, color bool) {
	paint := func(m mark) string {
		if !color {
			return m.glyph
		}
		return "\x1b[" + m.color + "m" + m.glyph + "\x1b[0m"
	}
	byCell := map[string][]*models.ActualLRP{}
	var unplaced []*models.ActualLRP
	states := map[string]int{}
	for _, a := range actual {
		if a.Presence == models.PresenceOrdinary {
			states[a.State]++
		}
		if a.CellID == "" {
			unplaced = append(unplaced, a)
			continue
		}
		byCell[a.CellID] = append(byCell[a.CellID], a)
	}
	runningTasks := 0
	for _, t := range tasks {
		if t.State == models.TaskStateRunning {
			runningTasks++
		}
	}
	fmt.Fprintf(w, "trellis  %d cells · %d instances (%d running, %d claimed, %d unclaimed, %d crashed) · %d tasks running   %s\n\n",
		len(cells), states[models.ActualLRPStateRunning]+states[models.ActualLRPStateClaimed]+states[models.ActualLRPStateUnclaimed]+states[models.ActualLRPStateCrashed],
		states[models.ActualLRPStateRunning], states[models.ActualLRPStateClaimed], states[models.ActualLRPStateUnclaimed],
		states[models.ActualLRPStateCrashed], runningTasks, now.Format("15:04:05"))

	sort.Slice(cells, func(i, j int) bool {
		if cells[i].Zone != cells[j].Zone {
			return cells[i].Zone < cells[j].Zone
		}
		return cells[i].CellID < cells[j].CellID
	})
	present := map[string]bool{}
	t := newTable(w, "CELL", "ZONE", "TAGS", "MEMORY FREE", "CONTAINERS", "INSTANCES")
	for _, c := range cells {
		present[c.CellID] = true
		id := c.CellID
		if c.Draining {
			id += " (draining)"
		}
		t.row(id, c.Zone, tags(c),
			capacity(c.Available, c.Capacity.MemoryMB, func(r *models.Resources) int32 { return r.MemoryMB }, "M"),
			capacity(c.Available, c.Capacity.Containers, func(r *models.Resources) int32 { return r.Containers }, ""),
			marks(byCell[c.CellID], paint))
	}
	// Instances on cells that are no longer present (their cell vanished) get a row of their own.
	var gone []string
	for id := range byCell {
		if !present[id] {
			gone = append(gone, id)
		}
	}
	sort.Strings(gone)
	for _, id := range gone {
		t.row(id+" (gone)", "", "", "", "", marks(byCell[id], paint))
	}
	t.flush()

	if len(unplaced) > 0 {
		errs := map[string]int{}
		for _, a := range unplaced {
			if a.PlacementError != "" {
				errs[a.PlacementError]++
			}
		}
		fmt.Fprintf(w, "\nunplaced  %s\n", marks(unplaced, paint))
		reasons := make([]string, 0, len(errs))
		for r := range errs {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "  %d × %s\n", errs[r], r)
		}
	}
	fmt.Fprintf(w, "\n%s running  %s claimed  %s placed  %s crashed  %s evacuating  %s suspect\n",
		paint(markRunning), paint(markClaimed), paint(markPlaced), paint(markCrashed), paint(markEvacuating), paint(markSuspect))
}

// marks draws one glyph per instance, grouped by process so each app's instances sit together.
func marks(list []*models.ActualLRP, paint func(mark) string) string {
	sort.Slice(list, func(i, j int) bool {
		if list[i].ProcessGuid != list[j].ProcessGuid {
			return list[i].ProcessGuid < list[j].ProcessGuid
		}
		return list[i].Index < list[j].Index
	})
	var b strings.Builder
	for i, a := range list {
		if i == maxMarks {
			fmt.Fprintf(&b, " +%d", len(list)-maxMarks)
			break
		}
		b.WriteString(paint(markFor(a)))
	}
	return b.String()
}
