package network

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
)

// Defaults used by DefaultConfig.
const (
	// DefaultBridgeName is the host bridge every container's veth is attached to.
	DefaultBridgeName = "trellis0"
	// DefaultNetworkName names the CNI network; it appears in iptables comments and chain
	// hashes, and in libcni's cache file names.
	DefaultNetworkName = "trellis"
	// DefaultSubnet is Garden's default container pool: 1,021 container addresses (the first
	// address is the bridge's, the gateway), far above any cell's container limit, inside
	// 10.254.0.0/16 which few hosts route anywhere.
	DefaultSubnet = "10.254.0.0/22"
	// DefaultStateDir is where leases, cached CNI results and port records live.
	DefaultStateDir = "/var/lib/trellis/network"
	// DefaultHostPortMin and DefaultHostPortMax bound allocated host ports. They sit above
	// Linux's default ephemeral range (32768–60999, net.ipv4.ip_local_port_range), so
	// outgoing connections never take a port a container is about to be given; the same
	// range Garden uses.
	DefaultHostPortMin = 61001
	DefaultHostPortMax = 65000
)

// DefaultPluginDirs are searched, in order, for CNI plugin binaries: Debian's package puts them
// in /usr/lib/cni, upstream release tarballs in /opt/cni/bin.
var DefaultPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Config configures a Network. Start from DefaultConfig and change what differs.
type Config struct {
	// PluginDirs are searched in order for the bridge, host-local, portmap and loopback
	// plugins. Every entry must be an absolute path; missing directories are skipped.
	PluginDirs []string
	// StateDir holds the IP leases, libcni's cached results and the host-port records. It is
	// created if missing. Two Networks must not share it unless they have the same Config.
	StateDir string
	// BridgeName is the host bridge (at most 15 bytes, a Linux interface name). It is created
	// on the first Setup and left in place afterwards.
	BridgeName string
	// NetworkName is the CNI network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*.
	NetworkName string
	// Subnet is the IPv4 CIDR containers get addresses from (prefix /8 to /30). The first
	// usable address becomes the bridge's address and the containers' default gateway.
	Subnet string
	// HostPortRange is the inclusive range host ports are allocated from when a NetIn asks
	// for host port 0. 1024 <= HostPortRange[0] <= HostPortRange[1] <= 65535.
	HostPortRange [2]uint32
	// MTU of the bridge and the veth pairs; 0 leaves the plugin's default (1500).
	MTU int
	// HostIP is the address reported in Result.HostIP, at which mapped ports are reached from
	// outside the container. Empty means the host's primary IPv4 address (the address of the
	// interface holding the default route), falling back to 127.0.0.1 on a host without one.
	// Mapped ports answer on every local address, 127.0.0.1 included, whatever this says.
	HostIP string
	// Logger receives debug and warning logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the configuration a cell uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		PluginDirs:    append([]string(nil), DefaultPluginDirs...),
		StateDir:      DefaultStateDir,
		BridgeName:    DefaultBridgeName,
		NetworkName:   DefaultNetworkName,
		Subnet:        DefaultSubnet,
		HostPortRange: [2]uint32{DefaultHostPortMin, DefaultHostPortMax},
	}
}

// cniName is the CNI specification's pattern for container IDs and network names.
var cniName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Validate checks every field and returns an error wrapping ErrInvalidConfig that names the
// first field found wrong.
func (c Config) Validate() error {
	if len(c.PluginDirs) == 0 {
		return invalid("PluginDirs", "must list at least one directory")
	}
	for i, d := range c.PluginDirs {
		if !filepath.IsAbs(d) {
			return invalid(fmt.Sprintf("PluginDirs[%d]", i), "%q is not an absolute path", d)
		}
	}
	if c.StateDir == "" {
		return invalid("StateDir", "must be set")
	}
	if !filepath.IsAbs(c.StateDir) {
		return invalid("StateDir", "%q is not an absolute path", c.StateDir)
	}
	if err := validIfName(c.BridgeName); err != nil {
		return invalid("BridgeName", "%q %v", c.BridgeName, err)
	}
	if !cniName.MatchString(c.NetworkName) {
		return invalid("NetworkName", "%q must match %s", c.NetworkName, cniName)
	}
	if _, err := parseSubnet(c.Subnet); err != nil {
		return invalid("Subnet", "%v", err)
	}
	lo, hi := c.HostPortRange[0], c.HostPortRange[1]
	if lo < 1024 || hi > 65535 || lo > hi {
		return invalid("HostPortRange", "[%d, %d] must satisfy 1024 <= min <= max <= 65535", lo, hi)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalid("MTU", "%d must be 0 (plugin default) or between 68 and 65535", c.MTU)
	}
	if c.HostIP != "" {
		if _, err := netip.ParseAddr(c.HostIP); err != nil {
			return invalid("HostIP", "%q is not an IP address", c.HostIP)
		}
	}
	return nil
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("must be set")
	case len(name) > 15:
		return fmt.Errorf("is longer than 15 bytes")
	case name == "." || name == "..":
		return fmt.Errorf("is not a valid interface name")
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("must not contain '/', ':' or white space")
	}
	return nil
}

// parseSubnet parses an IPv4 CIDR that can hold a gateway and at least one container.
func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", s)
	}
	a := p.Addr()
	switch {
	case !a.Is4():
		return netip.Prefix{}, fmt.Errorf("%q is not IPv4 (IPv6 container networks are not supported)", s)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	case p.Bits() < 8 || p.Bits() > 30:
		return netip.Prefix{}, fmt.Errorf("%q prefix length must be between /8 and /30", s)
	case a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified():
		return netip.Prefix{}, fmt.Errorf("%q is a loopback, multicast, link-local or unspecified range", s)
	}
	return p, nil
}
