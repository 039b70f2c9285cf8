package command

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newDomainsCommand) }

func newDomainsCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "domains",
		Short: "List fresh domains, or mark one fresh",
		Long: `A domain groups desired LRPs. While a domain is fresh, the converger may retire instances
and orphans of it that nothing desires any more; mark a domain fresh after syncing it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			domains, err := c.Domains(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), domains)
			}
			t := newTable(cmd.OutOrStdout(), "DOMAIN", "FRESH UNTIL")
			for _, d := range domains {
				until := "forever"
				if d.ExpiresAt != 0 {
					until = time.Unix(0, d.ExpiresAt).Format(time.RFC3339)
				}
				t.row(d.Name, until)
			}
			return t.flush()
		},
	}
	addClientFlags(cmd, &f)
	var ttl time.Duration
	set := &cobra.Command{
		Use:     "set NAME",
		Short:   "Mark a domain fresh for --ttl (0 = forever)",
		Example: "  trellis domains set examples --ttl 2m",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl %s: must not be negative", ttl)
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			if err := c.UpsertDomain(cmd.Context(), args[0], ttl); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "domain %s is fresh\n", args[0])
			return nil
		},
	}
	set.Flags().DurationVar(&ttl, "ttl", 0, "how long the domain stays fresh (0 = forever)")
	cmd.AddCommand(set)
	return cmd
}
