//go:build windows

package installer

import (
	"os"
	"path/filepath"
)

// programData is %ProgramData%, C:\ProgramData when the variable is unset.
func programData() string {
	if d := os.Getenv("ProgramData"); d != "" {
		return d
	}
	return `C:\ProgramData`
}

// DefaultConfigPath is where the agent's configuration lives.
func DefaultConfigPath() string { return filepath.Join(programData(), "trellis", "agent.yaml") }

// defaultDataDir is the agent's data directory when the configuration names none.
func defaultDataDir() string { return filepath.Join(programData(), "trellis", "agent") }
