package agent

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	isolationwindows "github.com/trellis-run/trellis/isolation_windows"
)

// BackendWindows is isolation_windows: job objects (process mode) and Windows Server
// containers through HCS (container mode), chosen per preloaded stack.
const BackendWindows = "windows"

// Windows stack modes (WindowsStack.Mode).
const (
	WindowsModeProcess   = string(isolationwindows.ModeProcess)
	WindowsModeContainer = string(isolationwindows.ModeContainer)
)

// DefaultWindowsDataDir is DefaultDataDir on Windows.
const DefaultWindowsDataDir = `C:\ProgramData\trellis\agent`

// WindowsStack says how the containers of one preloaded stack are isolated on a Windows cell.
type WindowsStack struct {
	// Mode is "process" (a job object on the host, with a private directory and host ports)
	// or "container" (a Windows Server container through HCS).
	Mode string `json:"mode"`
	// Layers is a container-mode stack's layer folder chain, topmost first and the base OS
	// layer last (absolute paths). Empty for process mode.
	Layers []string `json:"layers,omitempty"`
}

// WindowsConfig tunes the Windows backend. Empty fields take isolation_windows's defaults,
// with the state directories placed under the agent's data_dir.
type WindowsConfig struct {
	// Stacks maps the <stack> of each "preloaded:<stack>" rootfs provider to its mode and
	// data. A preloaded stack missing here runs in process mode.
	Stacks map[string]WindowsStack `json:"stacks,omitempty"`
	// StateDir holds one directory per container. Default <data_dir>\containers.
	StateDir string `json:"state_dir,omitempty"`
	// ScratchDir holds container mode's scratch layers. Default <data_dir>\scratch.
	ScratchDir string `json:"scratch_dir,omitempty"`
	// HostIP is reported as the instances' address (where mapped ports answer). Default the
	// first IPv4 address of an interface that is up and not loopback, else 127.0.0.1.
	HostIP string `json:"host_ip,omitempty"`
	// HostPortRange bounds the host ports given to instances. Default 61001–65000.
	HostPortRange [2]uint32 `json:"host_port_range,omitempty"`
	// NATNetwork is the HNS network container-mode endpoints join. Default "nat".
	NATNetwork string `json:"nat_network,omitempty"`
	// MaxContainers is the container capacity the backend reports. Default 250.
	MaxContainers uint64 `json:"max_containers,omitempty"`
}

// isAbsPath reports whether p is absolute on this system or is a drive-absolute Windows path
// (C:\x), so that Windows configurations validate the same way on every system.
func isAbsPath(p string) bool {
	return filepath.IsAbs(p) || (len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')))
}

// validateWindows checks what the windows backend needs: preloaded stacks only, each with a
// valid mode, and usable backend settings. It names the first bad field. Errors:
// ErrInvalidConfig.
func (c Config) validateWindows() error {
	stacks := c.stacks()
	for _, p := range c.providers() {
		field := "rootfs_providers[" + strconv.Quote(p) + "]"
		stack, preloaded := strings.CutPrefix(p, "preloaded:")
		if !preloaded {
			return invalid(field, "the windows backend runs preloaded stacks only, not the %q scheme", p)
		}
		if src := c.RootFSProviders[p]; src != "" {
			return invalid(field, "the windows backend takes no path here, got %q: set windows.stacks[%q] (mode process, or mode container with its layers)", src, stack)
		}
	}
	w := c.Windows
	for _, name := range sortedKeys(w.Stacks) {
		s := w.Stacks[name]
		field := "windows.stacks[" + strconv.Quote(name) + "]"
		if _, ok := stacks[name]; !ok {
			return invalid(field, "no rootfs provider \"preloaded:%s\" announces this stack", name)
		}
		switch s.Mode {
		case WindowsModeProcess:
			if len(s.Layers) > 0 {
				return invalid(field+".layers", "a process-mode stack has no layers")
			}
		case WindowsModeContainer:
			if len(s.Layers) == 0 {
				return invalid(field+".layers", "a container-mode stack needs its layer chain, topmost first, base OS layer last")
			}
			for i, l := range s.Layers {
				if !isAbsPath(l) {
					return invalid(field+".layers["+strconv.Itoa(i)+"]", "%q must be an absolute path", l)
				}
			}
		default:
			return invalid(field+".mode", "must be %q or %q, got %q", WindowsModeProcess, WindowsModeContainer, s.Mode)
		}
	}
	for _, f := range []struct{ name, v string }{{"windows.state_dir", w.StateDir}, {"windows.scratch_dir", w.ScratchDir}} {
		if f.v != "" && !isAbsPath(f.v) {
			return invalid(f.name, "%q must be an absolute path", f.v)
		}
	}
	if w.HostIP != "" {
		if _, err := netip.ParseAddr(w.HostIP); err != nil {
			return invalid("windows.host_ip", "%q is not an IP address", w.HostIP)
		}
	}
	if r := w.HostPortRange; r != [2]uint32{} && (r[0] == 0 || r[0] > r[1] || r[1] > 65535) {
		return invalid("windows.host_port_range", "[%d, %d]: want 1 <= low <= high <= 65535", r[0], r[1])
	}
	return nil
}

// windowsBackendConfig translates the agent's configuration into isolation_windows's: each
// preloaded stack with its mode (process unless windows.stacks says otherwise), and the state
// and scratch directories under data_dir unless configured otherwise.
func windowsBackendConfig(cfg Config) isolationwindows.Config {
	wc := isolationwindows.DefaultConfig()
	w := cfg.Windows
	wc.Stacks = map[string]isolationwindows.StackConfig{}
	for stack := range cfg.stacks() {
		sc := isolationwindows.StackConfig{Mode: isolationwindows.ModeProcess}
		if s, ok := w.Stacks[stack]; ok {
			sc = isolationwindows.StackConfig{Mode: isolationwindows.Mode(s.Mode), Layers: slices.Clone(s.Layers)}
		}
		wc.Stacks[stack] = sc
	}
	wc.StateDir = orDefaultString(w.StateDir, filepath.Join(cfg.DataDir, "containers"))
	wc.ScratchDir = orDefaultString(w.ScratchDir, filepath.Join(cfg.DataDir, "scratch"))
	wc.HostIP = orDefaultString(w.HostIP, primaryHostIPv4())
	if w.HostPortRange != [2]uint32{} {
		wc.PortRangeLo, wc.PortRangeHi = w.HostPortRange[0], w.HostPortRange[1]
	}
	wc.NATNetwork = orDefaultString(w.NATNetwork, wc.NATNetwork)
	if w.MaxContainers > 0 {
		wc.MaxContainers = w.MaxContainers
	}
	if c := cfg.Capacity; c.MemoryMB > 0 || c.DiskMB > 0 {
		// The configured capacity wins in the agent anyway; giving it to the backend spares
		// it measuring the host for a figure nobody reads.
		wc.MemoryBytes, wc.DiskBytes = uint64(c.MemoryMB)<<20, uint64(c.DiskMB)<<20
	}
	// A stop drains within graceful_stop; the backend's kill wait need not exceed it by much.
	if gs := time.Duration(cfg.GracefulStop); gs > 0 {
		wc.StopTimeout = max(wc.StopTimeout, gs+10*time.Second)
	}
	return wc
}

// primaryHostIPv4 returns the first IPv4 address of an interface that is up and not a
// loopback, or 127.0.0.1 when there is none.
func primaryHostIPv4() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return isolationwindows.DefaultHostIP
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip4 := n.IP.To4(); ip4 != nil && !ip4.IsLinkLocalUnicast() {
					return ip4.String()
				}
			}
		}
	}
	return isolationwindows.DefaultHostIP
}

func orDefaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
