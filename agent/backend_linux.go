//go:build linux

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/trellis-run/trellis/isolation"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
)

// linuxBackendConfig translates the agent's configuration into isolation_linux's: the
// preloaded stacks, and state, layer, disk and network directories under data_dir unless
// configured otherwise.
func linuxBackendConfig(cfg Config) isolationlinux.Config {
	lc := isolationlinux.DefaultConfig()
	l := cfg.Linux
	lc.Stacks = cfg.stacks()
	lc.StateDir = orDefault(l.StateDir, filepath.Join(cfg.DataDir, "containers"))
	lc.LayerCacheDir = orDefault(l.LayerCacheDir, filepath.Join(cfg.DataDir, "layers"))
	lc.DiskDir = orDefault(l.DiskDir, filepath.Join(cfg.DataDir, "disk"))
	lc.CgroupParent = orDefault(l.CgroupParent, lc.CgroupParent)
	lc.InitBinary = l.InitBinaryPath
	switch {
	case l.MaxContainers > 0:
		lc.MaxContainers = l.MaxContainers
	case cfg.Capacity.Containers > 0:
		// The cell offers what the operator configured; the backend must not refuse less.
		lc.MaxContainers = uint64(cfg.Capacity.Containers)
	}
	lc.Images.Dir = orDefault(cfg.Images.Dir, filepath.Join(cfg.DataDir, "images"))
	if cfg.Images.MaxBytes > 0 {
		lc.Images.MaxBytes = cfg.Images.MaxBytes
	}
	lc.Images.Mirrors = cfg.Images.Mirrors
	lc.Images.InsecureRegistries = cfg.Images.InsecureRegistries
	lc.Network.StateDir = orDefault(l.NetworkDir, filepath.Join(cfg.DataDir, "network"))
	lc.Network.BridgeName = orDefault(l.BridgeName, lc.Network.BridgeName)
	lc.Network.NetworkName = orDefault(l.NetworkName, lc.Network.NetworkName)
	lc.Network.Subnet = orDefault(l.Subnet, lc.Network.Subnet)
	lc.Network.HostIP = l.HostIP
	if l.HostPortRange[0] != 0 {
		lc.Network.HostPortRange = l.HostPortRange
	}
	if len(l.CNIPluginDirs) > 0 {
		lc.Network.PluginDirs = l.CNIPluginDirs
	}
	return lc
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// newLinuxBackend builds the Linux backend. Its containers outlive the agent process.
func newLinuxBackend(ctx context.Context, cfg Config, logger *slog.Logger) (isolation.Backend, func() error, error) {
	b, err := isolationlinux.New(ctx, linuxBackendConfig(cfg), logger)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: linux backend: %w", err)
	}
	return b, b.Close, nil
}
