//go:build !windows

package installer

import "github.com/trellis-run/trellis/installer/systemd"

// DefaultConfigPath is where the agent's configuration lives.
func DefaultConfigPath() string { return systemd.AgentConfig }

// defaultDataDir is the agent's data directory when the configuration names none.
func defaultDataDir() string { return "/var/lib/trellis/agent" }
