package isolationwindows

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// Mode is how the containers of one stack are isolated.
type Mode string

const (
	// ModeProcess runs a container's processes in a job object on the host, with a private
	// directory and host ports (the Windows 2012 model of Diego).
	ModeProcess Mode = "process"
	// ModeContainer runs a Windows Server container through HCS, with the stack's layers,
	// mapped directories and an HNS NAT endpoint.
	ModeContainer Mode = "container"
)

// Defaults.
const (
	DefaultStateDir      = `C:\ProgramData\trellis\containers`
	DefaultHostIP        = "127.0.0.1"
	DefaultPortRangeLo   = 61001
	DefaultPortRangeHi   = 65000
	DefaultMaxContainers = 250
	DefaultNATNetwork    = "nat"
	DefaultStopTimeout   = 30 * time.Second
	// DefaultDiskCheckInterval is how often process mode measures its disk-limited containers.
	DefaultDiskCheckInterval = 5 * time.Second
	minDiskCheckInterval     = 100 * time.Millisecond
)

// StackConfig says how containers of one preloaded stack are made.
type StackConfig struct {
	// Mode is ModeProcess or ModeContainer.
	Mode Mode `json:"mode"`
	// Layers is the stack's layer folder chain for ModeContainer, topmost first and the base
	// OS layer last (each a folder of the Windows rootfs store, as windowsfilter keeps them).
	// Empty for ModeProcess.
	Layers []string `json:"layers,omitempty"`
}

// Config configures a Backend. Start from DefaultConfig and change what differs.
type Config struct {
	// StateDir holds one directory per container: container.json, one JSON record and two
	// log files per process, and (process mode) the container's private directory "root".
	StateDir string
	// Stacks maps a stack name (the <stack> of "preloaded:<stack>") to its mode and data. A
	// RootFS naming another stack, or another scheme, is isolation.ErrUnsupported.
	Stacks map[string]StackConfig
	// ScratchDir holds the writable scratch layer of every ModeContainer container (one
	// folder per container). Unused when no stack is in ModeContainer.
	ScratchDir string
	// HostIP is the address reported as a container's HostIP (where mapped ports answer).
	HostIP string
	// PortRangeLo and PortRangeHi bound the host ports allocated to NetIn with HostPort 0.
	PortRangeLo, PortRangeHi uint32
	// NATNetwork names the HNS network ModeContainer endpoints join.
	NATNetwork string
	// MaxContainers is reported by Capacity; Create refuses more.
	MaxContainers uint64
	// MemoryBytes and DiskBytes are reported by Capacity; zero means "measure the host".
	MemoryBytes, DiskBytes uint64
	// KeepAcrossRestart lets process-mode containers outlive the backend (an agent restart):
	// every process started in a container inherits a handle to the container's job object,
	// so the job and its processes live on when the backend closes its own handle, and a new
	// Backend reopens the job by name. With false the backend holds the only handle, and its
	// exit kills every container (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE).
	KeepAcrossRestart bool
	// StopTimeout bounds how long Stop and Destroy wait for processes to exit after a kill.
	StopTimeout time.Duration
	// DiskCheckInterval is how often the backend measures the private directory of every
	// process-mode container (diskwatch.go): one over its Limits.DiskBytes is reported with
	// the event "disk limit exceeded" and its processes are killed. Zero means
	// DefaultDiskCheckInterval; at least 100ms otherwise.
	DiskCheckInterval time.Duration
}

// DefaultConfig returns the configuration a cell uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		StateDir:          DefaultStateDir,
		Stacks:            map[string]StackConfig{},
		ScratchDir:        `C:\ProgramData\trellis\scratch`,
		HostIP:            DefaultHostIP,
		PortRangeLo:       DefaultPortRangeLo,
		PortRangeHi:       DefaultPortRangeHi,
		NATNetwork:        DefaultNATNetwork,
		MaxContainers:     DefaultMaxContainers,
		KeepAcrossRestart: true,
		StopTimeout:       DefaultStopTimeout,
	}
}

// Validate checks every field. Errors wrap isolation.ErrInvalidSpec and name the field.
func (c Config) Validate() error {
	if !isAbsHostPath(c.StateDir) {
		return fmt.Errorf("%w: Config.StateDir %q must be an absolute path", isolation.ErrInvalidSpec, c.StateDir)
	}
	needScratch := false
	for name, s := range c.Stacks {
		if name == "" || strings.ContainsAny(name, `/\:`) {
			return fmt.Errorf("%w: Config.Stacks: stack name %q is not valid", isolation.ErrInvalidSpec, name)
		}
		switch s.Mode {
		case ModeProcess:
			if len(s.Layers) != 0 {
				return fmt.Errorf("%w: Config.Stacks[%q].Layers: a %s-mode stack has no layers", isolation.ErrInvalidSpec, name, s.Mode)
			}
		case ModeContainer:
			needScratch = true
			if len(s.Layers) == 0 {
				return fmt.Errorf("%w: Config.Stacks[%q].Layers: a %s-mode stack needs its layer chain (at least the base OS layer)", isolation.ErrInvalidSpec, name, s.Mode)
			}
			for i, l := range s.Layers {
				if !isAbsHostPath(l) {
					return fmt.Errorf("%w: Config.Stacks[%q].Layers[%d] %q must be an absolute path", isolation.ErrInvalidSpec, name, i, l)
				}
			}
		default:
			return fmt.Errorf("%w: Config.Stacks[%q].Mode %q: want %q or %q", isolation.ErrInvalidSpec, name, s.Mode, ModeProcess, ModeContainer)
		}
	}
	if needScratch && !isAbsHostPath(c.ScratchDir) {
		return fmt.Errorf("%w: Config.ScratchDir %q must be an absolute path", isolation.ErrInvalidSpec, c.ScratchDir)
	}
	if _, err := netip.ParseAddr(c.HostIP); err != nil {
		return fmt.Errorf("%w: Config.HostIP %q: %v", isolation.ErrInvalidSpec, c.HostIP, err)
	}
	if c.PortRangeLo == 0 || c.PortRangeHi > 65535 || c.PortRangeLo > c.PortRangeHi {
		return fmt.Errorf("%w: Config.PortRangeLo/PortRangeHi %d-%d: want 1 <= lo <= hi <= 65535", isolation.ErrInvalidSpec, c.PortRangeLo, c.PortRangeHi)
	}
	if needScratch && c.NATNetwork == "" {
		return fmt.Errorf("%w: Config.NATNetwork must name the HNS NAT network", isolation.ErrInvalidSpec)
	}
	if c.MaxContainers == 0 {
		return fmt.Errorf("%w: Config.MaxContainers must be > 0", isolation.ErrInvalidSpec)
	}
	if c.StopTimeout <= 0 {
		return fmt.Errorf("%w: Config.StopTimeout must be > 0", isolation.ErrInvalidSpec)
	}
	if c.DiskCheckInterval != 0 && c.DiskCheckInterval < minDiskCheckInterval {
		return fmt.Errorf("%w: Config.DiskCheckInterval %v: want 0 (the default, %v) or at least %v", isolation.ErrInvalidSpec, c.DiskCheckInterval, DefaultDiskCheckInterval, minDiskCheckInterval)
	}
	return nil
}

// isAbsHostPath reports whether p is absolute on the host: a drive or UNC path on Windows,
// and also a slash path so that the mode logic and its tests run on other systems.
func isAbsHostPath(p string) bool {
	return filepath.IsAbs(p) || isWindowsAbs(p)
}

// isWindowsAbs reports whether p is a drive-absolute Windows path such as C:\x or C:/x.
func isWindowsAbs(p string) bool {
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z'))
}
