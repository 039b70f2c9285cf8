package network

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/trellis-run/trellis/isolation"
)

// Result is what Setup granted a container.
type Result struct {
	// HostIP is the address at which the mapped host ports are reached (Config.HostIP, or the
	// host's primary address). Every local address answers, 127.0.0.1 included.
	HostIP string
	// ContainerIP is the container's address on the bridge.
	ContainerIP string
	// Ports are the granted mappings, in the order of the NetIn they answer, with allocated
	// host ports filled in.
	Ports []isolation.PortMapping
}

const (
	// containerIfName is the container side of the veth pair.
	containerIfName = "eth0"
	// cniVersion is the newest CNI specification Debian 12's plugins (1.1.1) speak.
	cniVersion = "1.0.0"
)

// requiredPlugins are the plugin binaries New insists on. Port mappings, NAT, forwarding and
// lo are this package's own work (rules.go, netns_linux.go); records of containers attached by
// an older version also name portmap, firewall and loopback, which their Teardown runs if found.
var requiredPlugins = []string{"bridge", "host-local"}

// handlePattern is isolation.ContainerSpec's rule for handles.
var handlePattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,128}$`)

func validateHandle(handle string) error {
	if !handlePattern.MatchString(handle) {
		return fmt.Errorf("%w: handle %q must match %s", isolation.ErrInvalidSpec, handle, handlePattern)
	}
	return nil
}

// containerID maps a handle to a CNI container ID. Handles are used as they are when the CNI
// pattern allows (so iptables comments and lease files name the container an operator knows);
// the few handles it rejects (a leading '_', '.' or '-') get a stable hash. The ID also names
// the container's record file, so it never is "." or "..". Setup refuses an ID held by another
// handle.
func containerID(handle string) string {
	if cniName.MatchString(handle) {
		return handle
	}
	sum := sha256.Sum256([]byte(handle))
	return "trellis-" + hex.EncodeToString(sum[:12])
}

// validateNetIn checks a request before anything is allocated.
func validateNetIn(netIn []isolation.NetIn) error {
	explicit := make(map[uint32]int, len(netIn))
	for i, n := range netIn {
		if n.ContainerPort == 0 || n.ContainerPort > 65535 {
			return fmt.Errorf("%w: NetIn[%d].ContainerPort %d must be between 1 and 65535", isolation.ErrInvalidSpec, i, n.ContainerPort)
		}
		if n.HostPort > 65535 {
			return fmt.Errorf("%w: NetIn[%d].HostPort %d must be between 0 (allocate) and 65535", isolation.ErrInvalidSpec, i, n.HostPort)
		}
		if n.HostPort == 0 {
			continue
		}
		if j, dup := explicit[n.HostPort]; dup {
			return fmt.Errorf("%w: NetIn[%d].HostPort %d is also asked for by NetIn[%d]", isolation.ErrInvalidSpec, i, n.HostPort, j)
		}
		explicit[n.HostPort] = i
	}
	return nil
}

// portAllocator hands out host ports. used maps held ports to the container holding them;
// isFree reports whether no host process has the port bound.
type portAllocator struct {
	min, max uint32
	next     uint32
	used     map[uint32]string
	isFree   func(port uint32) bool
}

// assign grants netIn. Explicit host ports must be neither held nor bound; zero ones are
// taken round-robin from [min, max] starting at next, so a port just released is the last to
// be handed out again (late packets and conntrack entries for it have time to die). The
// allocator's used set and next are updated only on success.
func (a *portAllocator) assign(netIn []isolation.NetIn) ([]isolation.PortMapping, error) {
	ports := make([]isolation.PortMapping, len(netIn))
	taken := make(map[uint32]bool, len(netIn))
	for i, n := range netIn {
		ports[i] = isolation.PortMapping{HostPort: n.HostPort, ContainerPort: n.ContainerPort}
		if n.HostPort == 0 {
			continue
		}
		if holder, ok := a.used[n.HostPort]; ok {
			return nil, fmt.Errorf("%w: NetIn[%d].HostPort %d is mapped to container %q", ErrPortInUse, i, n.HostPort, holder)
		}
		if !a.isFree(n.HostPort) {
			return nil, fmt.Errorf("%w: NetIn[%d].HostPort %d is bound by a host process", ErrPortInUse, i, n.HostPort)
		}
		taken[n.HostPort] = true
	}
	next := a.next
	if next < a.min || next > a.max {
		next = a.min
	}
	size := a.max - a.min + 1
	for i := range ports {
		if ports[i].HostPort != 0 {
			continue
		}
		found := false
		for tried := uint32(0); tried < size; tried++ {
			p := next
			next++
			if next > a.max {
				next = a.min
			}
			if _, held := a.used[p]; held || taken[p] || !a.isFree(p) {
				continue
			}
			ports[i].HostPort, taken[p], found = p, true, true
			break
		}
		if !found {
			return nil, fmt.Errorf("%w: no free port in [%d, %d] for NetIn[%d]", ErrPortsExhausted, a.min, a.max, i)
		}
	}
	a.next = next
	return ports, nil
}

// The CNI network configuration list. Only the fields we set are modelled.
type (
	confList struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []any  `json:"plugins"`
	}
	bridgeConf struct {
		Type        string   `json:"type"`
		Bridge      string   `json:"bridge"`
		IsGateway   bool     `json:"isGateway"`
		IPMasq      bool     `json:"ipMasq"`
		HairpinMode bool     `json:"hairpinMode"`
		MTU         int      `json:"mtu,omitempty"`
		IPAM        ipamConf `json:"ipam"`
	}
	ipamConf struct {
		Type    string        `json:"type"`
		Ranges  [][]ipamRange `json:"ranges"`
		Routes  []ipamRoute   `json:"routes"`
		DataDir string        `json:"dataDir"`
	}
	ipamRange struct {
		Subnet string `json:"subnet"`
	}
	ipamRoute struct {
		Dst string `json:"dst"`
	}
)

// buildConfList renders the network configuration list for cfg, which must be valid: the
// bridge plugin alone, with
//
//   - a veth per container on cfg.BridgeName, the bridge as gateway (which turns on
//     net.ipv4.ip_forward), hairpin mode so a container reaches its own mapped ports through
//     the host;
//   - host-local IPAM over cfg.Subnet, its leases in ipamDir so they are ours and survive a
//     restart.
//
// Masquerading (the plugin's ipMasq), port mappings (portmap) and forwarding accepts
// (firewall) are shared iptables rules written by this package (rules.go): the plugins would
// write them per container, one iptables process per rule.
func buildConfList(cfg Config, ipamDir string) ([]byte, error) {
	subnet, err := parseSubnet(cfg.Subnet)
	if err != nil {
		return nil, fmt.Errorf("%w: Subnet: %v", ErrInvalidConfig, err)
	}
	list := confList{
		CNIVersion: cniVersion,
		Name:       cfg.NetworkName,
		Plugins: []any{
			bridgeConf{
				Type:        "bridge",
				Bridge:      cfg.BridgeName,
				IsGateway:   true,
				IPMasq:      false,
				HairpinMode: true,
				MTU:         cfg.MTU,
				IPAM: ipamConf{
					Type:    "host-local",
					Ranges:  [][]ipamRange{{{Subnet: subnet.String()}}},
					Routes:  []ipamRoute{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0).String()}},
					DataDir: ipamDir,
				},
			},
		},
	}
	return json.MarshalIndent(list, "", "  ")
}

// portRecord is a granted mapping as kept on disk.
type portRecord struct {
	HostPort      uint32 `json:"host_port"`
	ContainerPort uint32 `json:"container_port"`
}

func portMappings(ports []portRecord) []isolation.PortMapping {
	out := make([]isolation.PortMapping, len(ports))
	for i, p := range ports {
		out[i] = isolation.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort}
	}
	return out
}

func portRecords(ports []isolation.PortMapping) []portRecord {
	out := make([]portRecord, len(ports))
	for i, p := range ports {
		out[i] = portRecord{HostPort: p.HostPort, ContainerPort: p.ContainerPort}
	}
	return out
}
