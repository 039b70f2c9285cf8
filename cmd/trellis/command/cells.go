package command

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/models"
)

func init() { register(newCellsCommand) }

func newCellsCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "cells",
		Short: "List the cells that are present (heartbeating)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			cells, _, err := c.Cells(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), cells)
			}
			sort.Slice(cells, func(i, j int) bool { return cells[i].CellID < cells[j].CellID })
			t := newTable(cmd.OutOrStdout(), "CELL", "ZONE", "OS", "ROOTFS", "TAGS", "MEMORY", "DISK", "CONTAINERS", "STATE")
			for _, cell := range cells {
				state := "ready"
				if cell.Draining {
					state = "draining"
				}
				t.row(cell.CellID, cell.Zone, cell.OS, strings.Join(cell.RootFSProviders, ","), tags(cell),
					capacity(cell.Available, cell.Capacity.MemoryMB, func(r *models.Resources) int32 { return r.MemoryMB }, "M"),
					capacity(cell.Available, cell.Capacity.DiskMB, func(r *models.Resources) int32 { return r.DiskMB }, "M"),
					capacity(cell.Available, cell.Capacity.Containers, func(r *models.Resources) int32 { return r.Containers }, ""),
					state)
			}
			return t.flush()
		},
	}
	addClientFlags(cmd, &f)
	cmd.AddCommand(newCellsDrain(&f))
	return cmd
}

// tags renders required tags, then optional ones in brackets.
func tags(c *models.CellPresence) string {
	parts := append([]string(nil), c.PlacementTags...)
	for _, t := range c.OptionalPlacementTags {
		parts = append(parts, "["+t+"]")
	}
	return strings.Join(parts, ",")
}

// capacity renders "free/total" when the cell reports what is available, else the total.
func capacity(avail *models.Resources, total int32, pick func(*models.Resources) int32, unit string) string {
	if avail == nil {
		return fmt.Sprintf("%d%s", total, unit)
	}
	return fmt.Sprintf("%d/%d%s", pick(avail), total, unit)
}
