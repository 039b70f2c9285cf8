package network

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// The iptables rules this package writes itself, as iptables-restore text. Pure text work,
// kept untagged so it is tested everywhere.
//
// A network has three chains of its own, named after a hash of its name:
//
//   - filter TRELLIS-FWD-<h>, jumped to from CNI-FORWARD (after the CNI-ADMIN overrides):
//     accepts what the containers send, the replies to it, and connections DNAT'd to them;
//   - nat TRELLIS-SNAT-<h>, jumped to from POSTROUTING: masquerades what leaves the subnet,
//     connections from 127.0.0.1 to a mapped port, and hairpin connections (a container
//     reaching a mapped port of itself or a neighbour through a host address);
//   - nat TRELLIS-DNAT-<h>, jumped to from PREROUTING and OUTPUT for local destinations: one
//     DNAT rule per mapped host port, each commented with the container's id.
//
// The first two never change with containers; the third changes by iptables-restore
// transactions, each carrying the changes of the Setups and Teardowns that ran at the same
// time (dnatScript).

// Shared chains of the CNI firewall plugin, created the same way it creates them, so a host
// where other CNI users run that plugin ends up with one FORWARD jump, not two.
const (
	cniForwardChain = "CNI-FORWARD"
	cniAdminChain   = "CNI-ADMIN"
	cniForwardJump  = `-m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD`
	cniAdminJump    = `-m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN`
	multicastRange  = "224.0.0.0/4"
	loopbackRange   = "127.0.0.0/8"
)

// ruleSet renders the rules of one network.
type ruleSet struct {
	network, bridge, subnet string
	fwd, snat, dnat         string // the network's own chains
}

// newRuleSet derives the chain names from the network name: a NetworkName owns its chains, so
// two state directories must never share one (the doc says so).
func newRuleSet(network, bridge, subnet string) ruleSet {
	sum := sha256.Sum256([]byte(network))
	h := strings.ToUpper(hex.EncodeToString(sum[:5]))
	return ruleSet{
		network: network, bridge: bridge, subnet: subnet,
		fwd: "TRELLIS-FWD-" + h, snat: "TRELLIS-SNAT-" + h, dnat: "TRELLIS-DNAT-" + h,
	}
}

// Rules are written exactly as iptables-save prints them (addresses, then interfaces, then
// matches in order, then the target), so presence is a string comparison.

func (r ruleSet) comment(what string) string {
	return fmt.Sprintf(`-m comment --comment "trellis %s: %s"`, r.network, what)
}

// fwdRules is the content of the filter chain.
func (r ruleSet) fwdRules() []string {
	return []string{
		fmt.Sprintf("-s %s -i %s %s -j ACCEPT", r.subnet, r.bridge, r.comment("from containers")),
		fmt.Sprintf("-d %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED %s -j ACCEPT", r.subnet, r.bridge, r.comment("replies to containers")),
		fmt.Sprintf("-d %s -o %s -m conntrack --ctstate DNAT %s -j ACCEPT", r.subnet, r.bridge, r.comment("mapped ports")),
	}
}

// snatRules is the content of the POSTROUTING chain. The first two make 127.0.0.1:<hostPort>
// and hairpin connections answerable (the reply must come back through the host to be
// un-DNAT'd); the rest is the bridge plugin's ipMasq, for the whole subnet at once.
func (r ruleSet) snatRules() []string {
	return []string{
		fmt.Sprintf("-s %s -o %s %s -j MASQUERADE", loopbackRange, r.bridge, r.comment("loopback to mapped ports")),
		fmt.Sprintf("-s %s -d %s -o %s -m conntrack --ctstate DNAT %s -j MASQUERADE", r.subnet, r.subnet, r.bridge, r.comment("hairpin to mapped ports")),
		fmt.Sprintf("-d %s -j RETURN", r.subnet),
		fmt.Sprintf("-d %s -j RETURN", multicastRange),
		fmt.Sprintf("-s %s %s -j MASQUERADE", r.subnet, r.comment("outbound")),
	}
}

// jump is a rule in a chain we do not own that leads to one we do (or, for the CNI chains,
// to the next CNI chain).
type jump struct {
	table, chain, spec, target string
	insert                     bool // -I <chain> 1 rather than -A
}

func (r ruleSet) jumps() []jump {
	local := "-m addrtype --dst-type LOCAL " + r.comment("mapped ports") + " -j " + r.dnat
	return []jump{
		{"filter", "FORWARD", cniForwardJump, cniForwardChain, true},
		{"filter", cniForwardChain, cniAdminJump, cniAdminChain, true},
		{"filter", cniForwardChain, r.comment("containers") + " -j " + r.fwd, r.fwd, false},
		{"nat", "PREROUTING", local, r.dnat, false},
		{"nat", "OUTPUT", local, r.dnat, false},
		{"nat", "POSTROUTING", r.comment("nat") + " -j " + r.snat, r.snat, false},
	}
}

// portRule is one container's DNAT of host port p.
type portRule struct {
	cid, ip string
	port    portRecord
}

// dnatMarker is the comment of a container's DNAT rules, quotes included so that id "c1"
// never matches id "c10".
func dnatMarker(network, cid string) string {
	return fmt.Sprintf(`"trellis %s %s"`, network, cid)
}

func (r ruleSet) dnatRule(p portRule) string {
	return fmt.Sprintf("-p tcp -m tcp --dport %d -m comment --comment %s -j DNAT --to-destination %s:%d",
		p.port.HostPort, dnatMarker(r.network, p.cid), p.ip, p.port.ContainerPort)
}

func containerPortRules(cid, ip string, ports []portRecord) []portRule {
	out := make([]portRule, len(ports))
	for i, p := range ports {
		out[i] = portRule{cid: cid, ip: ip, port: p}
	}
	return out
}

// dnatChange adds (op "-A") or deletes (op "-D") one container's DNAT rules.
type dnatChange struct {
	op    string
	rules []portRule
}

// dnatScript applies changes, in order, in one transaction: they all take effect or none
// does. A "-D" of a rule that is not there fails the whole transaction; the caller then applies
// the changes one by one, and rebuilds the chain from the records (rebuildScript) for those
// that still fail.
func (r ruleSet) dnatScript(changes ...dnatChange) []byte {
	var b bytes.Buffer
	b.WriteString("*nat\n")
	for _, c := range changes {
		for _, p := range c.rules {
			fmt.Fprintf(&b, "%s %s %s\n", c.op, r.dnat, r.dnatRule(p))
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	chains map[string]bool
	rules  []string // "<chain> <spec>", in order
}

// parseSave reads iptables-save output (any tables).
func parseSave(save []byte) map[string]*savedTable {
	tables := map[string]*savedTable{}
	var cur *savedTable
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{chains: map[string]bool{}}
			tables[line[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 {
				cur.chains[f[0]] = true
			}
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line[3:])
		}
	}
	return tables
}

func (t *savedTable) hasChain(c string) bool { return t != nil && t.chains[c] }

// hasJump reports whether chain has a rule whose target is target.
func (t *savedTable) hasJump(chain, target string) bool {
	if t == nil {
		return false
	}
	for _, r := range t.rules {
		if strings.HasPrefix(r, chain+" ") && jumpTarget(r) == target {
			return true
		}
	}
	return false
}

// chainRules returns the specs of chain's rules, in order.
func (t *savedTable) chainRules(chain string) []string {
	if t == nil {
		return nil
	}
	var out []string
	for _, r := range t.rules {
		if spec, ok := strings.CutPrefix(r, chain+" "); ok {
			out = append(out, spec)
		}
	}
	return out
}

// rebuildScript makes the network's rules what they must be, given the host's current rules
// (saved) and every attached container's port rules: the network's own chains are (re)created
// and filled — declaring a chain in an iptables-restore --noflush script flushes it — and the
// jumps to them and the CNI chains are added where missing. Nothing else is touched: the
// CNI-FORWARD and CNI-ADMIN chains may hold other CNI users' rules.
func (r ruleSet) rebuildScript(saved map[string]*savedTable, ports []portRule) []byte {
	var b bytes.Buffer
	b.WriteString("*filter\n")
	for _, c := range []string{cniForwardChain, cniAdminChain} {
		if !saved["filter"].hasChain(c) {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
	}
	fmt.Fprintf(&b, ":%s - [0:0]\n", r.fwd)
	r.writeJumps(&b, saved, "filter")
	for _, rule := range r.fwdRules() {
		fmt.Fprintf(&b, "-A %s %s\n", r.fwd, rule)
	}
	b.WriteString("COMMIT\n*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", r.snat, r.dnat)
	r.writeJumps(&b, saved, "nat")
	for _, rule := range r.snatRules() {
		fmt.Fprintf(&b, "-A %s %s\n", r.snat, rule)
	}
	for _, p := range ports {
		fmt.Fprintf(&b, "-A %s %s\n", r.dnat, r.dnatRule(p))
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

func (r ruleSet) writeJumps(b *bytes.Buffer, saved map[string]*savedTable, table string) {
	for _, j := range r.jumps() {
		if j.table != table || saved[table].hasJump(j.chain, j.target) {
			continue
		}
		if j.insert {
			fmt.Fprintf(b, "-I %s 1 %s\n", j.chain, j.spec)
		} else {
			fmt.Fprintf(b, "-A %s %s\n", j.chain, j.spec)
		}
	}
}

// checkRules verifies, in iptables-save output, the network's shared rules and one
// container's DNAT rules.
func (r ruleSet) checkRules(saved map[string]*savedTable, ports []portRule) error {
	for _, j := range r.jumps() {
		if !saved[j.table].hasJump(j.chain, j.target) {
			return fmt.Errorf("%s table: chain %s does not jump to %s", j.table, j.chain, j.target)
		}
	}
	for _, c := range []struct {
		table, chain string
		want         []string
	}{
		{"filter", r.fwd, r.fwdRules()},
		{"nat", r.snat, r.snatRules()},
	} {
		if got := saved[c.table].chainRules(c.chain); !slices.Equal(got, c.want) {
			return fmt.Errorf("%s table: chain %s holds %q, want %q", c.table, c.chain, got, c.want)
		}
	}
	dnat := saved["nat"].chainRules(r.dnat)
	for _, p := range ports {
		if !slices.Contains(dnat, r.dnatRule(p)) {
			return fmt.Errorf("nat table: chain %s has no DNAT of host port %d to %s:%d",
				r.dnat, p.port.HostPort, p.ip, p.port.ContainerPort)
		}
	}
	return nil
}

// removeScript deletes the network's own chains and every rule jumping to them, or returns nil
// if there are none.
func (r ruleSet) removeScript(saved map[string]*savedTable) []byte {
	var b bytes.Buffer
	n := 0
	for _, table := range []string{"filter", "nat"} {
		t := saved[table]
		if t == nil {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", table)
		for _, rule := range t.rules {
			if target := jumpTarget(rule); target == r.fwd || target == r.snat || target == r.dnat {
				fmt.Fprintf(&b, "-D %s\n", rule)
				n++
			}
		}
		for _, c := range []string{r.fwd, r.snat, r.dnat} {
			if t.hasChain(c) {
				fmt.Fprintf(&b, "-F %s\n-X %s\n", c, c)
				n++
			}
		}
		b.WriteString("COMMIT\n")
	}
	if n == 0 {
		return nil
	}
	return b.Bytes()
}
