package network

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// iptablesSave returns `iptables-save` output of every table (one process: the filter and nat
// tables are both needed).
func iptablesSave(ctx context.Context) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "iptables-save").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w%s", err, stderrOf(err))
	}
	return out, nil
}

// iptablesRestore applies script as one transaction, leaving every rule it does not name.
func iptablesRestore(ctx context.Context, script []byte) error {
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush", "--wait")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepNAT removes what is left in the nat table for container cid, finding it by comment.
//
// It serves containers attached by the plugins (records without OwnRules, and attachments
// known only to libcni's cache): the bridge plugin removes its masquerade rules on DEL only when
// it finds the container's interface, that is only while the network namespace still exists; a
// container torn down after its namespace is gone would leak a POSTROUTING rule and a
// CNI-<hash> chain. Every per-container rule the plugins write carries the comment
// `name: "<network>" id: "<container id>"` (portmap's adds a "dnat " prefix), and this
// package's DNAT rules carry dnatMarker; the sweep deletes them and flushes and deletes the
// per-container chains they jump to. The shared chains stay. The change is one iptables-restore
// transaction.
func sweepNAT(ctx context.Context, network, cid string) (removed int, err error) {
	save, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return 0, fmt.Errorf("iptables-save -t nat: %w%s", err, stderrOf(err))
	}
	script, n := natSweepScript(save, network, cid)
	if n == 0 {
		return 0, nil
	}
	if err := iptablesRestore(ctx, script); err != nil {
		return 0, err
	}
	return n, nil
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// enableRouteLocalnet lets the bridge carry packets with a 127.0.0.0/8 source, which a
// connection to 127.0.0.1:<hostPort> has between its DNAT (OUTPUT) and its masquerade
// (POSTROUTING). Without it the kernel drops them as martians.
func enableRouteLocalnet(bridge string) error {
	p := "/proc/sys/net/ipv4/conf/" + bridge + "/route_localnet"
	if b, err := os.ReadFile(p); err == nil && string(bytes.TrimSpace(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable route_localnet on %s: %w", bridge, err)
	}
	return nil
}
