// Command trellis is the one binary of the trellis runtime: the dev cluster, the BBS server,
// the brain, the cell agent and the operator CLI, as subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellis-run/trellis/cmd/trellis/command"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
)

func main() {
	// A container's init is this binary re-executed. It has already taken over, from package
	// isolation_linux/containerinit's initialisation, before the heavy packages initialise;
	// this states the contract (and never returns in an init).
	isolationlinux.MaybeRunInit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Execute(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
