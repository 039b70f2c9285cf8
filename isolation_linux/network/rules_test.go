package network

import (
	"fmt"
	"strings"
	"testing"
)

// applyScript plays an iptables-restore --noflush script onto iptables-save text, as the
// kernel would for the commands rebuildScript and dnatScript use (chain declarations flush or
// create, -I <chain> 1, -A, -D), and prints the result as iptables-save does.
func applyScript(t *testing.T, save, script string) string {
	t.Helper()
	tables := parseSave([]byte(save))
	order := map[string][]string{} // table -> chains in order of appearance
	for name, tb := range tables {
		for c := range tb.chains {
			order[name] = append(order[name], c)
		}
	}
	var cur *savedTable
	var table string
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			if tables[table] == nil {
				tables[table] = &savedTable{chains: map[string]bool{}}
			}
			cur = tables[table]
		case line == "COMMIT":
		case strings.HasPrefix(line, ":"):
			c := strings.Fields(line[1:])[0]
			if !cur.chains[c] {
				order[table] = append(order[table], c)
			}
			cur.chains[c] = true
			cur.rules = removeRules(cur.rules, func(r string) bool { return strings.HasPrefix(r, c+" ") })
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line[3:])
		case strings.HasPrefix(line, "-I "):
			f := strings.SplitN(line[3:], " ", 3)
			cur.rules = append([]string{f[0] + " " + f[2]}, cur.rules...)
		case strings.HasPrefix(line, "-D "):
			n := len(cur.rules)
			cur.rules = removeRules(cur.rules, func(r string) bool { return r == line[3:] })
			if len(cur.rules) == n {
				t.Fatalf("script deletes a rule that is not there: %q", line)
			}
		default:
			t.Fatalf("unexpected script line %q", line)
		}
	}
	var b strings.Builder
	for name, tb := range tables {
		fmt.Fprintf(&b, "*%s\n", name)
		for _, c := range order[name] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, r := range tb.rules {
			fmt.Fprintf(&b, "-A %s\n", r)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func removeRules(rules []string, drop func(string) bool) []string {
	var out []string
	for _, r := range rules {
		if !drop(r) {
			out = append(out, r)
		}
	}
	return out
}

func TestRuleSetNames(t *testing.T) {
	a := newRuleSet("trellis", "trellis0", "10.254.0.0/22")
	b := newRuleSet("trellis-other-network-with-a-long-name", "trellis0", "10.254.0.0/22")
	for _, c := range []string{a.fwd, a.snat, a.dnat, b.fwd, b.snat, b.dnat} {
		if len(c) > 28 {
			t.Errorf("chain %q is longer than iptables' 28 characters", c)
		}
	}
	if a.dnat == b.dnat || a.fwd == b.fwd || a.snat == b.snat {
		t.Errorf("two networks share chains: %+v %+v", a, b)
	}
}

func TestRebuildScript(t *testing.T) {
	rs := newRuleSet("trellis", "trellis0", "10.254.0.0/22")
	c1 := containerPortRules("c1", "10.254.0.2", []portRecord{{61001, 8080}, {61002, 9090}})
	c2 := containerPortRules("c2", "10.254.0.3", []portRecord{{61003, 8080}})

	// Another CNI user's rules in the shared chains, and a stale rule in our DNAT chain.
	host := `*filter
:FORWARD DROP [0:0]
:CNI-FORWARD - [0:0]
:CNI-ADMIN - [0:0]
:DOCKER - [0:0]
-A FORWARD -j DOCKER
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:` + rs.dnat + ` - [0:0]
-A ` + rs.dnat + ` -p tcp -m tcp --dport 61999 -j DNAT --to-destination 10.254.0.9:80
COMMIT
`
	tests := []struct {
		name string
		save string
	}{
		{"empty host", ""},
		{"host with other rules", host},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := rs.rebuildScript(parseSave([]byte(tt.save)), append(c1, c2...))
			after := applyScript(t, tt.save, string(script))
			saved := parseSave([]byte(after))
			if err := rs.checkRules(saved, c1); err != nil {
				t.Errorf("after rebuild: %v\nscript:\n%s", err, script)
			}
			if err := rs.checkRules(saved, c2); err != nil {
				t.Errorf("after rebuild: %v", err)
			}
			if strings.Contains(after, "61999") {
				t.Errorf("stale DNAT rule survived the rebuild:\n%s", after)
			}
			if tt.save == host && !strings.Contains(after, "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT") {
				t.Errorf("rebuild removed another CNI user's rule:\n%s", after)
			}
			// A second rebuild over the result adds no jump twice.
			again := applyScript(t, after, string(rs.rebuildScript(saved, append(c1, c2...))))
			for _, j := range rs.jumps() {
				n := 0
				for _, r := range parseSave([]byte(again))[j.table].rules {
					if strings.HasPrefix(r, j.chain+" ") && jumpTarget(r) == j.target {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d jumps from %s to %s after two rebuilds, want 1", n, j.chain, j.target)
				}
			}
			// Removing c1's rules leaves c2's and the shared ones.
			removed := parseSave([]byte(applyScript(t, again, string(rs.dnatScript(dnatChange{op: "-D", rules: c1})))))
			if err := rs.checkRules(removed, c2); err != nil {
				t.Errorf("after removing c1: %v", err)
			}
			if err := rs.checkRules(removed, c1); err == nil || !strings.Contains(err.Error(), "no DNAT of host port 61001") {
				t.Errorf("check of removed c1 = %v, want a missing DNAT", err)
			}
		})
	}
}

func TestCheckRulesReportsDamage(t *testing.T) {
	rs := newRuleSet("trellis", "trellis0", "10.254.0.0/22")
	good := applyScript(t, "", string(rs.rebuildScript(nil, nil)))
	tests := []struct {
		name, drop, want string
	}{
		{"no POSTROUTING jump", "-A POSTROUTING ", "POSTROUTING does not jump"},
		{"no FORWARD jump", "-A FORWARD ", "FORWARD does not jump"},
		{"masquerade gone", "outbound", "chain " + rs.snat},
		{"mapped-ports accept gone", "--ctstate DNAT -m comment --comment \"trellis trellis: mapped ports\" -j ACCEPT", "chain " + rs.fwd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var kept []string
			for _, l := range strings.Split(good, "\n") {
				if !strings.Contains(l, tt.drop) {
					kept = append(kept, l)
				}
			}
			err := rs.checkRules(parseSave([]byte(strings.Join(kept, "\n"))), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("checkRules = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNATSweepScriptFindsOwnDNAT(t *testing.T) {
	rs := newRuleSet("trellis", "trellis0", "10.254.0.0/22")
	save := "*nat\n:" + rs.dnat + " - [0:0]\n"
	for _, p := range append(containerPortRules("c1", "10.254.0.2", []portRecord{{61001, 80}}),
		containerPortRules("c10", "10.254.0.3", []portRecord{{61002, 80}})...) {
		save += "-A " + rs.dnat + " " + rs.dnatRule(p) + "\n"
	}
	script, n := natSweepScript([]byte(save+"COMMIT\n"), "trellis", "c1")
	if n != 1 || !strings.Contains(string(script), "--dport 61001") || strings.Contains(string(script), "61002") {
		t.Errorf("sweep of c1 (%d changes):\n%s", n, script)
	}
}
