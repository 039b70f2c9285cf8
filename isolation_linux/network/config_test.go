package network

import (
	"errors"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		field  string
		mutate func(*Config)
	}{
		{"PluginDirs", func(c *Config) { c.PluginDirs = nil }},
		{"PluginDirs[1]", func(c *Config) { c.PluginDirs = []string{"/usr/lib/cni", "relative/bin"} }},
		{"StateDir", func(c *Config) { c.StateDir = "" }},
		{"StateDir", func(c *Config) { c.StateDir = "var/lib/trellis" }},
		{"BridgeName", func(c *Config) { c.BridgeName = "" }},
		{"BridgeName", func(c *Config) { c.BridgeName = "a-very-long-bridge" }},
		{"BridgeName", func(c *Config) { c.BridgeName = "br/0" }},
		{"BridgeName", func(c *Config) { c.BridgeName = ".." }},
		{"NetworkName", func(c *Config) { c.NetworkName = "" }},
		{"NetworkName", func(c *Config) { c.NetworkName = "-trellis" }},
		{"NetworkName", func(c *Config) { c.NetworkName = "tre llis" }},
		{"Subnet", func(c *Config) { c.Subnet = "" }},
		{"Subnet", func(c *Config) { c.Subnet = "10.254.0.1" }},
		{"Subnet", func(c *Config) { c.Subnet = "10.254.0.1/22" }},
		{"Subnet", func(c *Config) { c.Subnet = "fd00::/64" }},
		{"Subnet", func(c *Config) { c.Subnet = "10.254.0.0/31" }},
		{"Subnet", func(c *Config) { c.Subnet = "10.0.0.0/7" }},
		{"Subnet", func(c *Config) { c.Subnet = "127.0.0.0/8" }},
		{"Subnet", func(c *Config) { c.Subnet = "169.254.0.0/16" }},
		{"Subnet", func(c *Config) { c.Subnet = "224.0.0.0/24" }},
		{"HostPortRange", func(c *Config) { c.HostPortRange = [2]uint32{} }},
		{"HostPortRange", func(c *Config) { c.HostPortRange = [2]uint32{80, 1000} }},
		{"HostPortRange", func(c *Config) { c.HostPortRange = [2]uint32{62000, 61000} }},
		{"HostPortRange", func(c *Config) { c.HostPortRange = [2]uint32{61000, 70000} }},
		{"MTU", func(c *Config) { c.MTU = 67 }},
		{"MTU", func(c *Config) { c.MTU = -1 }},
		{"MTU", func(c *Config) { c.MTU = 70000 }},
		{"HostIP", func(c *Config) { c.HostIP = "localhost" }},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.mutate(&c)
		t.Run(tt.field, func(t *testing.T) {
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !isolation.IsInvalidSpec(err) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), ": "+tt.field+": ") {
				t.Errorf("Validate() = %q, want it to name field %s", err, tt.field)
			}
		})
	}

	valid := []func(*Config){
		func(c *Config) { c.MTU = 1450 },
		func(c *Config) { c.HostIP = "127.0.0.1" },
		func(c *Config) { c.HostIP = "fd00::1" },
		func(c *Config) { c.HostPortRange = [2]uint32{1024, 1024} },
		func(c *Config) { c.Subnet = "172.30.0.0/30" },
		func(c *Config) { c.PluginDirs = []string{"/nonexistent"} }, // New, not Validate, looks for plugins
	}
	for i, mutate := range valid {
		c := DefaultConfig()
		mutate(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("valid config #%d: Validate() = %v", i, err)
		}
	}
}
