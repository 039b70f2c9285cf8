package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// TestTwoNetworksShareState: two Networks over one state directory (an agent and `trellis
// agent destroy-containers`, or an agent and its restarted self), each with its copy of the
// records, see each other's changes: neither hands out what the other holds, and what one
// tears down the other can reuse.
func TestTwoNetworksShareState(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 10)
	nw1 := tn.nw
	nw2, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	lo := tn.cfg.HostPortRange[0]
	nsX, nsY, nsZ := tn.netns(t, "x"), tn.netns(t, "y"), tn.netns(t, "z")

	x, err := nw1.Setup(ctx, "x", nsX, []isolation.NetIn{{ContainerPort: 80}})
	if err != nil {
		t.Fatalf("nw1 Setup x: %v", err)
	}
	if _, err := nw2.Lookup(ctx, "x"); err != nil {
		t.Errorf("nw2 Lookup of nw1's x: %v", err)
	}
	if _, err := nw2.Setup(ctx, "x", nsY, nil); !isolation.IsAlreadyExists(err) {
		t.Errorf("nw2 Setup of nw1's handle x: %v, want already exists", err)
	}
	if _, err := nw2.Setup(ctx, "y", nsY, []isolation.NetIn{{HostPort: x.Ports[0].HostPort, ContainerPort: 80}}); !IsPortInUse(err) || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("nw2 Setup asking for x's port: %v, want ErrPortInUse naming x", err)
	}
	y, err := nw2.Setup(ctx, "y", nsY, []isolation.NetIn{{ContainerPort: 80}})
	if err != nil {
		t.Fatalf("nw2 Setup y: %v", err)
	}
	if y.Ports[0].HostPort == x.Ports[0].HostPort || y.ContainerIP == x.ContainerIP {
		t.Errorf("x %+v and y %+v share a port or an address", x, y)
	}
	if h, err := nw1.Handles(ctx); err != nil || len(h) != 2 {
		t.Errorf("nw1 Handles = %v, %v; want x and y", h, err)
	}

	// nw2 tears down nw1's container; nw1 sees the port free and maps it again.
	if err := nw2.Teardown(ctx, "x", nsX); err != nil {
		t.Fatalf("nw2 Teardown x: %v", err)
	}
	if _, err := nw1.Lookup(ctx, "x"); !isolation.IsNotFound(err) {
		t.Errorf("nw1 Lookup of x torn down by nw2: %v, want not found", err)
	}
	z, err := nw1.Setup(ctx, "z", nsZ, []isolation.NetIn{{HostPort: x.Ports[0].HostPort, ContainerPort: 80}})
	if err != nil {
		t.Fatalf("nw1 Setup z on x's old port: %v", err)
	}
	serve(t, nsY, 80, "y")
	serve(t, nsZ, 80, "z")
	for _, c := range []struct {
		port uint32
		want string
	}{{z.Ports[0].HostPort, "z"}, {y.Ports[0].HostPort, "y"}} {
		if got, err := fetch(hostPort("127.0.0.1", c.port)); err != nil || got != c.want {
			t.Errorf("fetch port %d = %q, %v; want %q", c.port, got, err, c.want)
		}
	}
	if z.Ports[0].HostPort != lo {
		t.Errorf("z got port %d, want %d", z.Ports[0].HostPort, lo)
	}
	if err := nw1.Teardown(ctx, "y", ""); err != nil {
		t.Errorf("nw1 Teardown y: %v", err)
	}
	if err := nw2.Teardown(ctx, "z", ""); err != nil {
		t.Errorf("nw2 Teardown z: %v", err)
	}
	for _, nw := range []*Network{nw1, nw2} {
		if h, err := nw.Handles(ctx); err != nil || len(h) != 0 {
			t.Errorf("Handles after all Teardowns = %v, %v", h, err)
		}
	}
}

// restoreSpy wraps the real iptables-restore: it counts the DNAT scripts (not the rebuilds),
// can hold the first one until enough changes queue behind it, and fails every script that
// mentions a poisoned container.
type restoreSpy struct {
	nw       *Network
	dnatRuns atomic.Int32
	all      atomic.Int32
	holdFor  int // hold the first DNAT script until it and the queued changes number this many
	held     sync.Once
	poison   atomic.Pointer[string]
}

func (s *restoreSpy) restore(ctx context.Context, script []byte) error {
	s.all.Add(1)
	if p := s.poison.Load(); p != nil && bytes.Contains(script, []byte(dnatMarker(s.nw.cfg.NetworkName, *p))) {
		return fmt.Errorf("iptables-restore: poisoned %s", *p)
	}
	if !bytes.Contains(script, []byte("*filter")) {
		s.dnatRuns.Add(1)
		s.held.Do(func() {
			// Every change of these tests is one container with one port: one line.
			first := bytes.Count(script, []byte("\n-A ")) + bytes.Count(script, []byte("\n-D "))
			deadline := time.Now().Add(10 * time.Second)
			for first+s.nw.portRules.queued() < s.holdFor && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		})
	}
	return iptablesRestore(ctx, script)
}

// TestPortRulesBatched drives storePorts as concurrent Setups and Teardowns do, on records of
// made-up containers (no namespaces: the rules are what is tested), against the real
// iptables.
func TestPortRulesBatched(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 20)
	nw := tn.nw
	if err := nw.ensureRules(ctx); err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix(tn.cfg.Subnet)
	const n = 6
	recs := make([]*record, n)
	ip := subnet.Addr().Next()
	for i := range recs {
		ip = ip.Next()
		recs[i] = &record{
			Handle: fmt.Sprintf("b%d", i), ContainerID: fmt.Sprintf("b%d", i), OwnRules: true, Attached: true,
			ContainerIP: ip.String(),
			Ports:       []portRecord{{HostPort: tn.cfg.HostPortRange[0] + uint32(i), ContainerPort: 80}},
		}
	}
	spy := &restoreSpy{nw: nw}
	nw.restore = spy.restore
	t.Cleanup(func() {
		nw.restore = iptablesRestore
		unlock, err := nw.state.lockState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		for _, r := range recs {
			nw.state.remove(r.ContainerID)
		}
	})
	// run stores ("-A") or removes ("-D") every record, all at once, and returns each one's
	// error.
	run := func(op string) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, r := range recs {
			r := r.clone()
			wg.Go(func() { errs[i] = nw.storePorts(ctx, r, op) })
		}
		wg.Wait()
		return errs
	}
	check := func(t *testing.T, want []*record) {
		t.Helper()
		save, err := iptablesSave(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ports []portRule
		for _, r := range want {
			ports = append(ports, containerPortRules(r.ContainerID, r.ContainerIP, r.Ports)...)
		}
		got := parseSave(save)["nat"].chainRules(nw.rules.dnat)
		if len(got) != len(ports) {
			t.Errorf("chain %s holds %d rules, want %d:\n%s", nw.rules.dnat, len(got), len(ports), strings.Join(got, "\n"))
		}
		if err := nw.rules.checkRules(parseSave(save), ports); err != nil {
			t.Error(err)
		}
	}

	t.Run("one restore for the changes queued behind the first", func(t *testing.T) {
		spy.holdFor = n
		for i, err := range run("-A") {
			if err != nil {
				t.Errorf("add b%d: %v", i, err)
			}
		}
		// One if all were queued before the first ran, else the first, then the rest.
		if got := spy.dnatRuns.Load(); got > 2 {
			t.Errorf("%d DNAT restores for %d concurrent changes, want at most 2 (the first, then the rest together)", got, n)
		}
		check(t, recs)
	})

	t.Run("one failing change does not fail the others", func(t *testing.T) {
		poisoned := "b3"
		spy.poison.Store(&poisoned)
		errs := run("-D")
		for i, err := range errs {
			if err != nil {
				t.Errorf("delete b%d: %v", i, err)
			}
		}
		// The deletion of b3's rules failed every way; the rebuild, which leaves out b3 (its
		// record is gone), took them away.
		check(t, nil)

		// An addition that fails even in the rebuild fails alone.
		errs = run("-A")
		for i, err := range errs {
			if (err != nil) != (recs[i].ContainerID == poisoned) {
				t.Errorf("add b%d: %v", i, err)
			}
		}
		var good []*record
		for _, r := range recs {
			if r.ContainerID != poisoned {
				good = append(good, r)
			}
		}
		check(t, good)
		spy.poison.Store(nil)
		// b3's rules are not there to delete: its deletion fails, and the rebuild settles it.
		for i, err := range run("-D") {
			if err != nil {
				t.Errorf("delete b%d: %v", i, err)
			}
		}
		check(t, nil)
		if h, err := nw.Handles(ctx); err != nil || len(h) != 0 {
			t.Errorf("records left: %v, %v", h, err)
		}
	})

	t.Run("a removal that fails keeps its record for a retry", func(t *testing.T) {
		for i, err := range run("-A") {
			if err != nil {
				t.Fatalf("add b%d: %v", i, err)
			}
		}
		// Every restore fails, the rebuild's too.
		nw.restore = func(context.Context, []byte) error { return errors.New("iptables-restore: broken") }
		errs := run("-D")
		nw.restore = iptablesRestore
		for i, err := range errs {
			if err == nil {
				t.Errorf("delete b%d with iptables broken: nil error", i)
			}
		}
		if h, err := nw.Handles(ctx); err != nil || len(h) != n {
			t.Errorf("records after failed removals: %v, %v; want all %d", h, err, n)
		}
		for i, err := range run("-D") {
			if err != nil {
				t.Errorf("retried delete b%d: %v", i, err)
			}
		}
		check(t, nil)
	})
}

// TestConcurrentSetupPortsAnswer: eight Setups with ports at once (the agent's concurrency)
// all get working port mappings, and eight Teardowns take them all away.
func TestConcurrentSetupPortsAnswer(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 20)
	spy := &restoreSpy{nw: tn.nw}
	tn.nw.restore = spy.restore
	const n = 8
	paths := make([]string, n)
	for i := range paths {
		paths[i] = tn.netns(t, fmt.Sprintf("p%d", i))
	}
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = tn.nw.Setup(ctx, fmt.Sprintf("p%d", i), paths[i], []isolation.NetIn{{ContainerPort: 8080}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Setup p%d: %v", i, err)
		}
	}
	for i := range n {
		serve(t, paths[i], 8080, fmt.Sprintf("p%d", i))
	}
	for i, r := range results {
		if got, err := fetch(hostPort("127.0.0.1", r.Ports[0].HostPort)); err != nil || got != fmt.Sprintf("p%d", i) {
			t.Errorf("fetch p%d's port %d = %q, %v", i, r.Ports[0].HostPort, got, err)
		}
	}
	t.Logf("%d Setups ran %d DNAT restores", n, spy.dnatRuns.Load())
	for i := range n {
		wg.Go(func() { errs[i] = tn.nw.Teardown(ctx, fmt.Sprintf("p%d", i), paths[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Teardown p%d: %v", i, err)
		}
	}
	t.Logf("%d Setups and Teardowns ran %d DNAT restores", n, spy.dnatRuns.Load())
	for _, r := range results {
		if _, err := fetch(hostPort("127.0.0.1", r.Ports[0].HostPort)); err == nil {
			t.Errorf("port %d answers after Teardown", r.Ports[0].HostPort)
		}
	}
	if save, err := iptablesSave(ctx); err != nil || len(parseSave(save)["nat"].chainRules(tn.nw.rules.dnat)) != 0 {
		t.Errorf("DNAT rules left after Teardown (%v)", err)
	}
}
