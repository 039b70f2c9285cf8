package network

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
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
