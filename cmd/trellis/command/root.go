// Package command holds the trellis command line: one cobra command tree for the servers, the
// agent and the operator CLI.
package command

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../command.Version=...".
var Version = "dev"

// NewRoot returns the root command with every subcommand attached.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis",
		Short: "trellis runs long-running processes and tasks on mixed Windows and Linux cell fleets",
		Long: `trellis is a cell runtime in the lineage of Cloud Foundry Diego: a BBS (the API over etcd),
a brain (scheduler and health monitor) and a cell agent on every machine that runs work in
containers.

Start a one-machine cluster with 'trellis dev'; the other commands then reach it through the
client config that 'trellis dev' writes under $HOME/.trellis/.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	return root
}

// subcommands are registered by the files of this package in their init functions, so that each
// area of the CLI lives in its own file.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// Execute runs the command line and returns the process exit code. Errors are printed as one
// line on stderr.
func Execute(ctx context.Context, args []string) int {
	root := NewRoot()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "trellis: %v\n", err)
		return 1
	}
	return 0
}
