// Package network gives Linux containers their own network: an address on a host bridge with
// outbound NAT, and host ports mapped to container ports. The veth pair and the address come
// from the standard CNI bridge plugin with host-local IPAM (Debian's
// containernetworking-plugins in /usr/lib/cni), run through libcni. Outbound NAT and forwarding
// accepts are rules shared by the whole bridge, installed once per network; each mapped port is
// a DNAT rule, added and removed by iptables-restore transactions that concurrent Setups and
// Teardowns share (rules.go, batch.go); lo is brought up in-process. The portmap, firewall and loopback plugins did the same with a
// process per iptables rule, which made networking ten times the cost of a container start.
//
// A Network owns one state directory. In it live the IP leases (host-local's data directory),
// libcni's cached results (so a container can be torn down after its network namespace is
// gone, or by a restarted backend), one record per attached container and the host ports it
// holds. Every decision that must survive a restart is on disk before it takes effect, and all
// changes to the directory are serialised by a file lock, so two backends over the same state
// directory never hand out one host port twice. A Network keeps a copy of the records in memory
// and re-reads them only when another writer changed the directory (state_linux.go).
//
// Typical use by the Linux backend:
//
//	nw, err := network.New(cfg)                                // once, at start
//	res, err := nw.Setup(ctx, handle, netnsPath, spec.NetIn)  // after the netns exists
//	...                                                        // res.ContainerIP, res.Ports
//	err = nw.Teardown(ctx, handle, netnsPath)                 // on destroy; idempotent
//
// CreateNetNS and DeleteNetNS make and remove a named network namespace (a bind mount of a
// namespace file), for callers that create the namespace before the container's processes.
//
// The bridge is shared by every container of the Network and stays when the last container
// goes; see docs/isolation-linux-network.md for what the plugins leave on the host and how an
// operator removes it.
package network
