package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	isolationwindows "github.com/trellis-run/trellis/isolation_windows"
)

// windowsConfig is a valid windows-backend configuration: a process-mode stack by default and
// a container-mode stack with its layer chain.
func windowsConfig() Config {
	c := DefaultConfig()
	c.CellID = "win-1"
	c.Backend = BackendWindows
	c.DataDir = "/var/lib/trellis/agent"
	c.BBS = BBSConfig{URL: "https://bbs:8889", CAFile: "/ca", CertFile: "/c", KeyFile: "/k"}
	c.RootFSProviders = map[string]string{"preloaded:windows2016": "", "preloaded:windows2019": ""}
	c.Windows.Stacks = map[string]WindowsStack{
		"windows2019": {Mode: WindowsModeContainer, Layers: []string{`C:\layers\app`, `C:\layers\servercore`}},
	}
	return c
}

func TestWindowsConfigValidate(t *testing.T) {
	if err := windowsConfig().Validate(); err != nil {
		t.Fatalf("valid windows config refused: %v", err)
	}
	for _, tc := range []struct {
		name, field string
		mutate      func(*Config)
	}{
		{"scheme", `rootfs_providers["docker"]`, func(c *Config) { c.RootFSProviders["docker"] = "" }},
		{"path", `rootfs_providers["preloaded:windows2016"]`, func(c *Config) { c.RootFSProviders["preloaded:windows2016"] = `/rootfs/w` }},
		{"unannounced stack", `windows.stacks["windows2022"]`, func(c *Config) {
			c.Windows.Stacks["windows2022"] = WindowsStack{Mode: WindowsModeProcess}
		}},
		{"bad mode", `windows.stacks["windows2016"].mode`, func(c *Config) {
			c.Windows.Stacks["windows2016"] = WindowsStack{Mode: "hyperv"}
		}},
		{"empty mode", `windows.stacks["windows2016"].mode`, func(c *Config) { c.Windows.Stacks["windows2016"] = WindowsStack{} }},
		{"process layers", `windows.stacks["windows2016"].layers`, func(c *Config) {
			c.Windows.Stacks["windows2016"] = WindowsStack{Mode: WindowsModeProcess, Layers: []string{`C:\l`}}
		}},
		{"container without layers", `windows.stacks["windows2019"].layers`, func(c *Config) {
			c.Windows.Stacks["windows2019"] = WindowsStack{Mode: WindowsModeContainer}
		}},
		{"relative layer", `windows.stacks["windows2019"].layers[1]`, func(c *Config) {
			c.Windows.Stacks["windows2019"] = WindowsStack{Mode: WindowsModeContainer, Layers: []string{`C:\a`, `layers\b`}}
		}},
		{"state dir", "windows.state_dir", func(c *Config) { c.Windows.StateDir = "state" }},
		{"scratch dir", "windows.scratch_dir", func(c *Config) { c.Windows.ScratchDir = `scratch\x` }},
		{"host ip", "windows.host_ip", func(c *Config) { c.Windows.HostIP = "localhost" }},
		{"port range order", "windows.host_port_range", func(c *Config) { c.Windows.HostPortRange = [2]uint32{9000, 8000} }},
		{"port range zero", "windows.host_port_range", func(c *Config) { c.Windows.HostPortRange = [2]uint32{0, 8000} }},
		{"port range high", "windows.host_port_range", func(c *Config) { c.Windows.HostPortRange = [2]uint32{8000, 70000} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := windowsConfig()
			tc.mutate(&c)
			err := c.Validate()
			if !IsInvalidConfig(err) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %s", err, tc.field)
			}
		})
	}
}

func TestWindowsBackendConfig(t *testing.T) {
	c := windowsConfig()
	c.Windows.HostIP = "10.0.0.7"
	c.Windows.HostPortRange = [2]uint32{40000, 40099}
	c.Windows.MaxContainers = 12
	c.Capacity = CapacityConfig{MemoryMB: 2048, DiskMB: 4096}
	c.GracefulStop = Duration(45 * time.Second)
	got := windowsBackendConfig(c)
	want := isolationwindows.DefaultConfig()
	want.Stacks = map[string]isolationwindows.StackConfig{
		"windows2016": {Mode: isolationwindows.ModeProcess},
		"windows2019": {Mode: isolationwindows.ModeContainer, Layers: []string{`C:\layers\app`, `C:\layers\servercore`}},
	}
	want.StateDir = filepath.Join(c.DataDir, "containers")
	want.ScratchDir = filepath.Join(c.DataDir, "scratch")
	want.HostIP = "10.0.0.7"
	want.PortRangeLo, want.PortRangeHi = 40000, 40099
	want.MaxContainers = 12
	want.MemoryBytes, want.DiskBytes = 2048<<20, 4096<<20
	want.StopTimeout = 55 * time.Second
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("windowsBackendConfig =\n%+v\nwant\n%+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("the translated config does not validate: %v", err)
	}

	// Defaults: directories under data_dir, a host address, no capacity override.
	d := windowsBackendConfig(func() Config { c := windowsConfig(); c.Windows.Stacks = nil; return c }())
	if d.Stacks["windows2019"].Mode != isolationwindows.ModeProcess {
		t.Errorf("a stack missing from windows.stacks runs in %q mode, want process", d.Stacks["windows2019"].Mode)
	}
	if d.MemoryBytes != 0 || d.PortRangeLo != isolationwindows.DefaultPortRangeLo || d.HostIP == "" {
		t.Errorf("defaults not kept: %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("the default translation does not validate: %v", err)
	}
}

func TestLoadWindowsConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	yaml := `cell_id: win-1
backend: windows
data_dir: /var/lib/trellis/agent
bbs: {url: "https://bbs:8889", ca_file: pki/ca.crt, cert_file: pki/cell.crt, key_file: pki/cell.key}
rootfs_providers:
  preloaded:windows2016: ""
  preloaded:windows2019: ""
windows:
  stacks:
    windows2016: {mode: process}
    windows2019: {mode: container, layers: ['C:\layers\app', 'C:\layers\servercore']}
  host_port_range: [61001, 61100]
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Windows.Stacks["windows2019"].Layers[1] != `C:\layers\servercore` || c.Windows.HostPortRange != [2]uint32{61001, 61100} {
		t.Fatalf("windows section not read: %+v", c.Windows)
	}
	bad := strings.Replace(yaml, "mode: process", "mode: proces", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); !IsInvalidConfig(err) || !strings.Contains(err.Error(), `windows.stacks["windows2016"].mode`) {
		t.Fatalf("LoadConfig of a bad mode = %v, want the field named", err)
	}
}
