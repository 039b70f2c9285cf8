package network

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// sweepNAT removes what the plugins left in the nat table for container cid.
//
// The bridge plugin removes its masquerade rules on DEL only when it finds the container's
// interface, that is only while the network namespace still exists; a container torn down
// after its namespace is gone would leak a POSTROUTING rule and a CNI-<hash> chain per
// container. Every per-container rule the plugins write carries the comment
// `name: "<network>" id: "<container id>"` (portmap's adds a "dnat " prefix), so we find
// them by that comment, delete them and flush and delete the per-container chains they jump
// to. The shared CNI-HOSTPORT-* chains stay. The change is one iptables-restore transaction.
func sweepNAT(ctx context.Context, network, cid string) (removed int, err error) {
	save, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return 0, fmt.Errorf("iptables-save -t nat: %w%s", err, stderrOf(err))
	}
	script, n := natSweepScript(save, network, cid)
	if n == 0 {
		return 0, nil
	}
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush", "--wait")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("iptables-restore: %w: %s", err, bytes.TrimSpace(out))
	}
	return n, nil
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// ensureMappedPortsAccepted makes sure the filter table accepts connections DNAT'd to the
// subnet on the bridge. The firewall plugin accepts only a container's egress and the replies
// to it; without this rule a host whose FORWARD policy is DROP would drop every connection
// from another host to a mapped port. The rule is shared by the network's containers, goes in
// the firewall plugin's CNI-FORWARD chain (so it exists once that plugin has run) and stays
// when the last container goes.
func ensureMappedPortsAccepted(ctx context.Context, network, bridge, subnet string) error {
	rule := []string{"CNI-FORWARD", "-o", bridge, "-d", subnet,
		"-m", "conntrack", "--ctstate", "DNAT",
		"-m", "comment", "--comment", "trellis " + network + ": mapped ports",
		"-j", "ACCEPT"}
	if exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-C"}, rule...)...).Run() == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-A"}, rule...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("accept forwarded connections to mapped ports: iptables -A %s: %w: %s",
			strings.Join(rule, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
