package network

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Reading `iptables-save` output: pure text work, kept untagged so it is tested everywhere.

// natSweepScript turns `iptables-save -t nat` output into an iptables-restore script removing
// container cid's rules and chains, and the number of rules and chains it removes. It finds
// the rules the CNI plugins write (comment `name: "<network>" id: "<cid>"`) and this package's
// DNAT rules (dnatMarker).
func natSweepScript(save []byte, network, cid string) ([]byte, int) {
	cniMarker := fmt.Sprintf(`name: \"%s\" id: \"%s\"`, network, cid)
	ours := dnatMarker(network, cid)
	marked := func(spec string) bool { return strings.Contains(spec, cniMarker) || strings.Contains(spec, ours) }
	type rule struct{ chain, spec, target string }
	var rules []rule
	chains := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, ":"); ok {
			if f := strings.Fields(name); len(f) > 0 {
				chains[f[0]] = true
			}
			continue
		}
		spec, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		chain, _, _ := strings.Cut(spec, " ")
		rules = append(rules, rule{chain: chain, spec: spec, target: jumpTarget(spec)})
	}

	// Per-container chains: those a marked rule jumps to, apart from the shared ones.
	doomed := map[string]bool{}
	for _, r := range rules {
		if marked(r.spec) && perContainerChain(r.target) && chains[r.target] {
			doomed[r.target] = true
		}
	}
	var b bytes.Buffer
	b.WriteString("*nat\n")
	n := 0
	for _, r := range rules {
		if doomed[r.chain] {
			continue // flushed below
		}
		if marked(r.spec) || doomed[r.target] {
			b.WriteString("-D " + r.spec + "\n")
			n++
		}
	}
	for c := range doomed {
		fmt.Fprintf(&b, "-F %s\n-X %s\n", c, c)
		n++
	}
	if n == 0 {
		return nil, 0
	}
	b.WriteString("COMMIT\n")
	return b.Bytes(), n
}

// jumpTarget returns the chain or target after -j (or -g) in an iptables-save rule.
func jumpTarget(spec string) string {
	f := strings.Fields(spec)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			return f[i+1]
		}
	}
	return ""
}

// perContainerChain reports whether a chain is one the plugins create per container (the
// bridge's CNI-<hash>, portmap's CNI-DN-<hash>) rather than a shared one.
func perContainerChain(c string) bool {
	return strings.HasPrefix(c, "CNI-") && !strings.HasPrefix(c, "CNI-HOSTPORT-")
}

// checkPortMappings verifies, for a container attached by the plugins (a record written before
// this package wrote its own rules), in `iptables-save` output, that container cid's DNAT
// chain forwards every host port to ip:container port. It stands in for portmap's own CHECK,
// which in the Debian 12 plugins (1.1.1) fails on hosts with ip6tables for IPv4-only
// containers ("could not check ipv6 dnat").
func checkPortMappings(save []byte, network, cid, ip string, ports []portRecord) error {
	if len(ports) == 0 {
		return nil
	}
	marker := fmt.Sprintf(`dnat name: \"%s\" id: \"%s\"`, network, cid)
	chain := ""
	var rules []string
	for _, line := range strings.Split(string(save), "\n") {
		spec, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		rules = append(rules, spec)
		if strings.HasPrefix(spec, "CNI-HOSTPORT-DNAT ") && strings.Contains(spec, marker) {
			chain = jumpTarget(spec)
		}
	}
	if chain == "" {
		return fmt.Errorf("no port-mapping rule for container %q in CNI-HOSTPORT-DNAT", cid)
	}
	for _, p := range ports {
		want := fmt.Sprintf("--dport %d -j DNAT --to-destination %s:%d", p.HostPort, ip, p.ContainerPort)
		found := false
		for _, r := range rules {
			if strings.HasPrefix(r, chain+" ") && strings.Contains(r, want) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("chain %s has no DNAT of host port %d to %s:%d", chain, p.HostPort, ip, p.ContainerPort)
		}
	}
	return nil
}
