package command

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/client"
)

// clientFlags are the flags every command that talks to the BBS shares.
type clientFlags struct {
	config string
	json   bool
}

// addClientFlags adds --config and --json to cmd.
func addClientFlags(cmd *cobra.Command, f *clientFlags) {
	def := os.Getenv("TRELLIS_CONFIG")
	if def == "" {
		def = client.DefaultConfigPath()
	}
	cmd.PersistentFlags().StringVar(&f.config, "config", def,
		"client config (BBS URL and certificates); 'trellis dev' writes it (env TRELLIS_CONFIG)")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print JSON instead of tables")
}

// connect loads the client config and returns a client of the BBS.
func (f *clientFlags) connect() (*client.Client, error) {
	cfg, err := client.LoadConfig(f.config)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no client config at %s: start a cluster with 'trellis dev', or pass --config", f.config)
	}
	if err != nil {
		return nil, err
	}
	return client.New(cfg)
}
