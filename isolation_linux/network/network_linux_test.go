package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// testNet is one test's private network: its own bridge, subnet, port window and state.
type testNet struct {
	cfg Config
	nw  *Network
	dir string // for namespaces
}

func randInt(t testing.TB, n int64) int64 {
	t.Helper()
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return v.Int64()
}

// newTestNet needs root and the plugins. Other engineers run tests on this host at the same
// time, so the bridge, the subnet (10.200.0.0/13, one /24 not on any interface) and a 200-port
// window below the ephemeral range are chosen at random.
func newTestNet(t testing.TB, ports uint32) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, bridges, iptables)")
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("needs iptables")
	}
	cfg := DefaultConfig()
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	cfg.BridgeName = "trt" + id
	cfg.NetworkName = "trellis-test-" + id
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	for range 20 {
		cfg.Subnet = fmt.Sprintf("10.%d.%d.0/24", 200+randInt(t, 8), randInt(t, 256))
		if checkSubnetFree(cfg.Subnet, cfg.BridgeName) == nil {
			break
		}
	}
	lo := uint32(20000 + randInt(t, 12000))
	cfg.HostPortRange = [2]uint32{lo, lo + ports - 1}
	nw, err := New(cfg)
	if err != nil {
		if IsPluginNotFound(err) {
			t.Skip(err)
		}
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// The bridge and the network's rules are shared by design and outlive containers;
		// a test's are its own.
		if err := nw.Uninstall(context.Background()); err != nil {
			t.Errorf("Uninstall: %v", err)
		}
		if linkExists(cfg.BridgeName) {
			t.Errorf("bridge %s left by Uninstall", cfg.BridgeName)
		}
		if save, _ := iptablesSave(context.Background()); strings.Contains(string(save), nw.rules.dnat[len("TRELLIS-DNAT-"):]) {
			t.Errorf("rules of %s left by Uninstall", cfg.NetworkName)
		}
	})
	return &testNet{cfg: cfg, nw: nw, dir: t.TempDir()}
}

// netns creates a namespace removed at cleanup.
func (tn *testNet) netns(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(tn.dir, name)
	if err := CreateNetNS(p); err != nil {
		t.Fatalf("CreateNetNS: %v", err)
	}
	t.Cleanup(func() {
		if err := DeleteNetNS(p); err != nil {
			t.Errorf("DeleteNetNS: %v", err)
		}
	})
	return p
}

// serve listens on port inside the namespace and answers each connection with reply.
func serve(t *testing.T, netns string, port int, reply string) net.Listener {
	t.Helper()
	var l net.Listener
	err := RunInNetNS(netns, func() error {
		var err error
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", netns, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, reply)
			c.Close()
		}
	}()
	return l
}

func fetch(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func hostPort(ip string, port uint32) string {
	return net.JoinHostPort(ip, strconv.FormatUint(uint64(port), 10))
}

// natMentions returns the nat and filter rules naming the container id or IP.
func natMentions(t *testing.T, cid, ip string) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	re := regexp.MustCompile(`id: \\"` + regexp.QuoteMeta(cid) + `\\"|(^|[^0-9.])` + regexp.QuoteMeta(ip) + `([^0-9]|$)`)
	var hits []string
	for _, l := range strings.Split(string(out), "\n") {
		if re.MatchString(l) {
			hits = append(hits, l)
		}
	}
	return hits
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func leaseFile(tn *testNet, ip string) string {
	return filepath.Join(tn.cfg.StateDir, ipamDir, tn.cfg.NetworkName, ip)
}

// assertDetached checks that nothing of the container is left on the host.
func assertDetached(t *testing.T, tn *testNet, handle string, rec *record) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(rec.HostVeth) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // a destroyed namespace takes its veth asynchronously
	}
	if linkExists(rec.HostVeth) {
		t.Errorf("host veth %s still exists", rec.HostVeth)
	}
	if hits := natMentions(t, rec.ContainerID, rec.ContainerIP); len(hits) > 0 {
		t.Errorf("iptables still mentions %s / %s:\n%s", rec.ContainerID, rec.ContainerIP, strings.Join(hits, "\n"))
	}
	if _, err := os.Stat(leaseFile(tn, rec.ContainerIP)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lease file of %s: stat err = %v, want not exist", rec.ContainerIP, err)
	}
	if _, err := tn.nw.Lookup(context.Background(), handle); !isolation.IsNotFound(err) {
		t.Errorf("Lookup after Teardown: err = %v, want not found", err)
	}
}

func TestNetworkLifecycle(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 200)
	nsA, nsB, nsC := tn.netns(t, "a"), tn.netns(t, "b"), tn.netns(t, "c")

	resA, err := tn.nw.Setup(ctx, "handle-a", nsA, []isolation.NetIn{{ContainerPort: 8080}, {ContainerPort: 9090}})
	if err != nil {
		t.Fatalf("Setup a: %v", err)
	}
	resB, err := tn.nw.Setup(ctx, "handle-b", nsB, []isolation.NetIn{{ContainerPort: 8080}})
	if err != nil {
		t.Fatalf("Setup b: %v", err)
	}
	resC, err := tn.nw.Setup(ctx, "handle-c", nsC, []isolation.NetIn{{ContainerPort: 7070}})
	if err != nil {
		t.Fatalf("Setup c: %v", err)
	}
	recA, _ := tn.nw.record(ctx, "handle-a")
	recB, _ := tn.nw.record(ctx, "handle-b")
	recC, _ := tn.nw.record(ctx, "handle-c")
	subnet := netip.MustParsePrefix(tn.cfg.Subnet)
	gateway := subnet.Addr().Next()

	t.Run("addresses and ports", func(t *testing.T) {
		ips := map[string]bool{}
		for _, r := range []Result{resA, resB, resC} {
			ip, err := netip.ParseAddr(r.ContainerIP)
			if err != nil || !subnet.Contains(ip) || ip == gateway {
				t.Errorf("ContainerIP %q: want an address in %s other than the gateway", r.ContainerIP, subnet)
			}
			ips[r.ContainerIP] = true
			if r.HostIP != primaryIPv4() {
				t.Errorf("HostIP = %q, want the primary address %q", r.HostIP, primaryIPv4())
			}
		}
		if len(ips) != 3 {
			t.Errorf("containers share addresses: %v %v %v", resA.ContainerIP, resB.ContainerIP, resC.ContainerIP)
		}
		ports := map[uint32]bool{}
		for _, p := range append(append(append([]isolation.PortMapping(nil), resA.Ports...), resB.Ports...), resC.Ports...) {
			if p.HostPort < tn.cfg.HostPortRange[0] || p.HostPort > tn.cfg.HostPortRange[1] {
				t.Errorf("host port %d outside %v", p.HostPort, tn.cfg.HostPortRange)
			}
			ports[p.HostPort] = true
		}
		if len(ports) != 4 || resA.Ports[0].ContainerPort != 8080 || resA.Ports[1].ContainerPort != 9090 {
			t.Errorf("ports: a=%v b=%v c=%v, want 4 distinct host ports in NetIn order", resA.Ports, resB.Ports, resC.Ports)
		}
		if got, err := tn.nw.Lookup(ctx, "handle-a"); err != nil || got.ContainerIP != resA.ContainerIP || len(got.Ports) != 2 || got.Ports[1] != resA.Ports[1] {
			t.Errorf("Lookup = %+v, %v; want %+v", got, err, resA)
		}
	})

	t.Run("shared rules are in place once", func(t *testing.T) {
		out, err := exec.Command("iptables", "-w", "-t", "filter", "-S", tn.nw.rules.fwd).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -S %s: %v: %s", tn.nw.rules.fwd, err, out)
		}
		want := fmt.Sprintf("-A %s -d %s -o %s -m conntrack --ctstate DNAT", tn.nw.rules.fwd, tn.cfg.Subnet, tn.cfg.BridgeName)
		if n := strings.Count(string(out), want); n != 1 {
			t.Errorf("%s has %d rules %q, want 1:\n%s", tn.nw.rules.fwd, n, want, out)
		}
		out, err = exec.Command("iptables", "-w", "-t", "nat", "-S", "POSTROUTING").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -S POSTROUTING: %v: %s", err, out)
		}
		if n := strings.Count(string(out), "-j "+tn.nw.rules.snat); n != 1 {
			t.Errorf("POSTROUTING jumps %d times to %s, want 1", n, tn.nw.rules.snat)
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + tn.cfg.BridgeName + "/route_localnet"); err != nil || strings.TrimSpace(string(b)) != "1" {
			t.Errorf("route_localnet on the bridge = %q, %v; want 1", b, err)
		}
	})

	t.Run("container reaches its gateway", func(t *testing.T) {
		l, err := net.Listen("tcp4", net.JoinHostPort(gateway.String(), "0"))
		if err != nil {
			t.Fatalf("listen on bridge address: %v", err)
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				io.WriteString(c, "gateway")
				c.Close()
			}
		}()
		var got string
		err = RunInNetNS(nsA, func() error {
			var err error
			got, err = fetch(l.Addr().String())
			return err
		})
		if err != nil || got != "gateway" {
			t.Fatalf("from the container to %s: %q, %v", l.Addr(), got, err)
		}
	})

	serve(t, nsA, 8080, "a:8080")
	serve(t, nsA, 9090, "a:9090")
	lB := serve(t, nsB, 8080, "b:8080")

	t.Run("mapped ports answer on loopback and HostIP", func(t *testing.T) {
		cases := []struct{ addr, want string }{
			{hostPort("127.0.0.1", resA.Ports[0].HostPort), "a:8080"},
			{hostPort("127.0.0.1", resA.Ports[1].HostPort), "a:9090"},
			{hostPort("127.0.0.1", resB.Ports[0].HostPort), "b:8080"},
			{hostPort(resA.HostIP, resA.Ports[0].HostPort), "a:8080"},
			{hostPort(resB.HostIP, resB.Ports[0].HostPort), "b:8080"},
			{hostPort(resA.ContainerIP, 8080), "a:8080"},
		}
		for _, c := range cases {
			t.Run(c.addr, func(t *testing.T) {
				if got, err := fetch(c.addr); err != nil || got != c.want {
					t.Errorf("fetch %s = %q, %v; want %q", c.addr, got, err, c.want)
				}
			})
		}
	})

	t.Run("containers reach mapped ports through the host", func(t *testing.T) {
		cases := []struct {
			name, netns, addr, want string
		}{
			{"own port via HostIP (hairpin)", nsA, hostPort(resA.HostIP, resA.Ports[0].HostPort), "a:8080"},
			{"neighbour's port via HostIP", nsB, hostPort(resA.HostIP, resA.Ports[1].HostPort), "a:9090"},
			{"own loopback", nsA, "127.0.0.1:8080", "a:8080"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var got string
				err := RunInNetNS(c.netns, func() error {
					var err error
					got, err = fetch(c.addr)
					return err
				})
				if err != nil || got != c.want {
					t.Errorf("fetch %s from %s = %q, %v; want %q", c.addr, c.netns, got, err, c.want)
				}
			})
		}
	})

	t.Run("check", func(t *testing.T) {
		if err := tn.nw.Check(ctx, "handle-a", nsA); err != nil {
			t.Errorf("Check a: %v", err)
		}
		if err := tn.nw.Check(ctx, "handle-none", nsA); !isolation.IsNotFound(err) {
			t.Errorf("Check of unknown handle: %v, want not found", err)
		}
		// Break c's port mapping behind the Network's back: Check must notice, and Teardown
		// (whose deletion of the rule then fails) must still clean up.
		rule := tn.nw.rules.dnatRule(containerPortRules("handle-c", resC.ContainerIP, portRecords(resC.Ports))[0])
		if out, err := exec.Command("sh", "-c", "iptables -w -t nat -D "+tn.nw.rules.dnat+" "+rule).CombinedOutput(); err != nil {
			t.Fatalf("delete c's DNAT rule: %v: %s", err, out)
		}
		if err := tn.nw.Check(ctx, "handle-c", nsC); !errors.Is(err, ErrPlugin) {
			t.Errorf("Check with c's DNAT rules gone: %v, want ErrPlugin", err)
		}
	})

	t.Run("setup twice is refused", func(t *testing.T) {
		_, err := tn.nw.Setup(ctx, "handle-a", nsA, nil)
		if !isolation.IsAlreadyExists(err) {
			t.Errorf("second Setup: %v, want already exists", err)
		}
	})

	t.Run("teardown with the namespace", func(t *testing.T) {
		for i := range 2 {
			if err := tn.nw.Teardown(ctx, "handle-a", nsA); err != nil {
				t.Fatalf("Teardown #%d: %v", i+1, err)
			}
		}
		assertDetached(t, tn, "handle-a", recA)
		if _, err := fetch(hostPort("127.0.0.1", resA.Ports[0].HostPort)); err == nil {
			t.Errorf("port %d still answers after Teardown", resA.Ports[0].HostPort)
		}
		if got, err := fetch(hostPort("127.0.0.1", resB.Ports[0].HostPort)); err != nil || got != "b:8080" {
			t.Errorf("b after a's Teardown: %q, %v", got, err)
		}
	})

	t.Run("teardown after the namespace file is gone but a socket holds it", func(t *testing.T) {
		if err := DeleteNetNS(nsB); err != nil {
			t.Fatal(err)
		}
		if !linkExists(recB.HostVeth) {
			t.Fatalf("veth %s vanished although the listener holds the namespace", recB.HostVeth)
		}
		for i := range 2 {
			if err := tn.nw.Teardown(ctx, "handle-b", nsB); err != nil {
				t.Fatalf("Teardown #%d: %v", i+1, err)
			}
		}
		lB.Close()
		assertDetached(t, tn, "handle-b", recB)
	})

	t.Run("teardown after the namespace is destroyed", func(t *testing.T) {
		if err := DeleteNetNS(nsC); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := tn.nw.Teardown(ctx, "handle-c", ""); err != nil {
				t.Fatalf("Teardown #%d: %v", i+1, err)
			}
		}
		assertDetached(t, tn, "handle-c", recC)
	})

	t.Run("bridge stays", func(t *testing.T) {
		if !linkExists(tn.cfg.BridgeName) {
			t.Errorf("bridge %s removed with the last container", tn.cfg.BridgeName)
		}
	})
}

func TestHostPortsPersistAcrossNew(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 3)
	lo := tn.cfg.HostPortRange[0]
	// A host process holds the middle port: allocation must skip it.
	busy, err := net.Listen("tcp4", hostPort("0.0.0.0", lo+1))
	if err != nil {
		t.Skipf("port %d taken by someone else: %v", lo+1, err)
	}
	defer busy.Close()

	setup := func(nw *Network, handle string, netIn ...isolation.NetIn) (Result, error) {
		return nw.Setup(ctx, handle, tn.netns(t, handle), netIn)
	}
	x, err := setup(tn.nw, "x", isolation.NetIn{ContainerPort: 80})
	if err != nil || x.Ports[0].HostPort != lo {
		t.Fatalf("Setup x = %+v, %v; want host port %d", x, err, lo)
	}

	// A restarted backend: a new Network over the same state directory.
	nw2, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	y, err := setup(nw2, "y", isolation.NetIn{ContainerPort: 80})
	if err != nil || y.Ports[0].HostPort != lo+2 {
		t.Fatalf("Setup y = %+v, %v; want host port %d (x holds %d, a host process %d)", y, err, lo+2, lo, lo+1)
	}
	if y.ContainerIP == x.ContainerIP {
		t.Errorf("x and y share %s across New", x.ContainerIP)
	}

	zNS := tn.netns(t, "z")
	_, err = nw2.Setup(ctx, "z", zNS, []isolation.NetIn{{ContainerPort: 80}})
	if !IsPortsExhausted(err) || !isolation.IsInsufficientResources(err) {
		t.Fatalf("Setup z with the range full: %v, want ErrPortsExhausted", err)
	}
	_, err = nw2.Setup(ctx, "z", zNS, []isolation.NetIn{{HostPort: lo, ContainerPort: 80}})
	if !IsPortInUse(err) || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("Setup z asking for x's port: %v, want ErrPortInUse naming x", err)
	}
	_, err = nw2.Setup(ctx, "z", zNS, []isolation.NetIn{{HostPort: lo + 1, ContainerPort: 80}})
	if !IsPortInUse(err) {
		t.Fatalf("Setup z asking for a port a host process holds: %v, want ErrPortInUse", err)
	}
	if _, err := nw2.Lookup(ctx, "z"); !isolation.IsNotFound(err) {
		t.Fatalf("failed Setups left a record for z: %v", err)
	}

	// x's port comes free only through Teardown, whichever Network runs it.
	if err := nw2.Teardown(ctx, "x", ""); err != nil {
		t.Fatal(err)
	}
	z, err := nw2.Setup(ctx, "z", zNS, []isolation.NetIn{{ContainerPort: 80}})
	if err != nil || z.Ports[0].HostPort != lo {
		t.Fatalf("Setup z after x's Teardown = %+v, %v; want host port %d", z, err, lo)
	}
	for _, h := range []string{"y", "z"} {
		if err := tn.nw.Teardown(ctx, h, ""); err != nil {
			t.Errorf("Teardown %s: %v", h, err)
		}
	}
}

func TestSetupRejects(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 10)
	ns := tn.netns(t, "ns")
	notNS := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(notNS, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		handle string
		netns  string
		netIn  []isolation.NetIn
		want   func(error) bool
	}{
		{"empty handle", "", ns, nil, isolation.IsInvalidSpec},
		{"handle with slash", "a/b", ns, nil, isolation.IsInvalidSpec},
		{"netns missing", "h", filepath.Join(tn.dir, "missing"), nil, isolation.IsInvalidSpec},
		{"netns a plain file", "h", notNS, nil, isolation.IsInvalidSpec},
		{"container port 0", "h", ns, []isolation.NetIn{{HostPort: 0, ContainerPort: 0}}, isolation.IsInvalidSpec},
		{"host port too big", "h", ns, []isolation.NetIn{{HostPort: 70000, ContainerPort: 80}}, isolation.IsInvalidSpec},
		{"host port twice", "h", ns, []isolation.NetIn{{HostPort: 30000, ContainerPort: 80}, {HostPort: 30000, ContainerPort: 81}}, isolation.IsInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tn.nw.Setup(ctx, tt.handle, tt.netns, tt.netIn)
			if !tt.want(err) {
				t.Errorf("Setup: %v", err)
			}
		})
	}
	if links, _ := net.Interfaces(); linkExists(tn.cfg.BridgeName) {
		t.Errorf("rejected Setups created the bridge (%d links)", len(links))
	}

	// A handle CNI would refuse as a container ID still works, under a hashed ID.
	res, err := tn.nw.Setup(ctx, "-dash.first", ns, []isolation.NetIn{{ContainerPort: 80}})
	if err != nil {
		t.Fatalf("Setup of handle with leading '-': %v", err)
	}
	rec, _ := tn.nw.record(ctx, containerID("-dash.first"))
	if rec == nil || rec.ContainerIP != res.ContainerIP {
		t.Fatalf("record of hashed handle: %+v", rec)
	}
	if err := tn.nw.Teardown(ctx, "-dash.first", ns); err != nil {
		t.Fatal(err)
	}
	assertDetached(t, tn, "-dash.first", rec)
}

func TestNewMissingPlugins(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.PluginDirs = []string{t.TempDir()}
	_, err := New(cfg)
	if !IsPluginNotFound(err) || !isolation.IsUnsupported(err) || !strings.Contains(err.Error(), `"bridge"`) {
		t.Fatalf("New without plugins: %v; want ErrPluginNotFound naming bridge", err)
	}
}

func TestNewRefusesOverlappingSubnet(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.Subnet = "127.0.0.0/8"
	if _, err := New(cfg); !isolation.IsInvalidSpec(err) || !strings.Contains(err.Error(), "Subnet") {
		t.Errorf("loopback subnet: %v", err)
	}
	if p := primaryIPv4(); p != "127.0.0.1" {
		cfg.Subnet = netip.MustParsePrefix(p + "/30").Masked().String()
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("subnet over the host's own address %s: %v", p, err)
		}
	}
}

func TestNetNS(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "ns")
	if err := CreateNetNS(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeleteNetNS(p) })
	if !isNetNS(p) {
		t.Fatalf("%s is not a network namespace after CreateNetNS", p)
	}
	if err := CreateNetNS(p); !isolation.IsAlreadyExists(err) {
		t.Errorf("CreateNetNS over an existing one: %v", err)
	}
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	var inside string
	err := RunInNetNS(p, func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" {
			return fmt.Errorf("new namespace has interfaces %v, want only lo", ifs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Errorf("RunInNetNS ran in the caller's namespace %s", self)
	}
	if err := RunInNetNS(os.Args[0], func() error { return nil }); !isolation.IsInvalidSpec(err) {
		t.Errorf("RunInNetNS on a regular file: %v", err)
	}
	for i := range 2 {
		if err := DeleteNetNS(p); err != nil {
			t.Fatalf("DeleteNetNS #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file still there: %v", err)
	}
}

func TestConcurrentSetup(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 50)
	const n = 6
	paths := make([]string, n)
	for i := range paths {
		paths[i] = tn.netns(t, fmt.Sprintf("c%d", i))
	}
	results := make([]Result, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			var err error
			results[i], err = tn.nw.Setup(ctx, fmt.Sprintf("c%d", i), paths[i], []isolation.NetIn{{ContainerPort: 80}, {ContainerPort: 81}})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Setup: %v", err)
		}
	}
	if t.Failed() {
		return
	}
	ips, ports := map[string]bool{}, map[uint32]bool{}
	for _, r := range results {
		ips[r.ContainerIP] = true
		for _, p := range r.Ports {
			ports[p.HostPort] = true
		}
	}
	if len(ips) != n || len(ports) != 2*n {
		t.Errorf("%d containers got %d addresses and %d host ports: %+v", n, len(ips), len(ports), results)
	}
	handles, err := tn.nw.Handles(ctx)
	if err != nil || len(handles) != n {
		t.Errorf("Handles = %v, %v; want %d", handles, err, n)
	}
	for i := range n {
		go func() { errs <- tn.nw.Teardown(ctx, fmt.Sprintf("c%d", i), paths[i]) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Teardown: %v", err)
		}
	}
	if handles, err := tn.nw.Handles(ctx); err != nil || len(handles) != 0 {
		t.Errorf("Handles after Teardown = %v, %v", handles, err)
	}
}

func TestFailedSetupLeavesNothing(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 1)
	ns := tn.netns(t, "taken")
	// An eth0 already in the namespace makes the bridge plugin fail after the host port is
	// reserved (and possibly after host-local leased an address).
	err := RunInNetNS(ns, func() error {
		out, err := exec.Command("ip", "link", "add", containerIfName, "type", "veth", "peer", "name", "eth1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("add a veth named eth0: %v", err)
	}
	_, err = tn.nw.Setup(ctx, "broken", ns, []isolation.NetIn{{ContainerPort: 80}})
	if !errors.Is(err, ErrPlugin) {
		t.Fatalf("Setup into a namespace with eth0: %v, want ErrPlugin", err)
	}
	if handles, _ := tn.nw.Handles(ctx); len(handles) != 0 {
		t.Errorf("failed Setup left records: %v", handles)
	}
	if hits := natMentions(t, "broken", "255.255.255.255"); len(hits) > 0 {
		t.Errorf("failed Setup left rules:\n%s", strings.Join(hits, "\n"))
	}
	leases, _ := os.ReadDir(filepath.Join(tn.cfg.StateDir, ipamDir, tn.cfg.NetworkName))
	for _, l := range leases {
		if _, err := netip.ParseAddr(l.Name()); err == nil {
			t.Errorf("failed Setup left lease %s", l.Name())
		}
	}
	// The single host port of the range is free again.
	ok := tn.netns(t, "ok")
	res, err := tn.nw.Setup(ctx, "ok", ok, []isolation.NetIn{{ContainerPort: 80}})
	if err != nil || res.Ports[0].HostPort != tn.cfg.HostPortRange[0] {
		t.Fatalf("Setup after a failed one = %+v, %v", res, err)
	}
	if err := tn.nw.Teardown(ctx, "ok", ok); err != nil {
		t.Fatal(err)
	}
}

func TestTeardownWithoutRecord(t *testing.T) {
	ctx := context.Background()
	tn := newTestNet(t, 5)
	ns := tn.netns(t, "lost")
	if _, err := tn.nw.Setup(ctx, "lost", ns, []isolation.NetIn{{ContainerPort: 80}}); err != nil {
		t.Fatal(err)
	}
	rec, err := tn.nw.record(ctx, "lost")
	if err != nil || rec == nil {
		t.Fatalf("record: %v, %v", rec, err)
	}
	// The record is lost (an operator cleaned the wrong directory): libcni's cache still
	// knows the attachment, and Teardown must use it.
	if err := os.Remove(tn.nw.state.recordPath("lost")); err != nil {
		t.Fatal(err)
	}
	if err := tn.nw.Teardown(ctx, "lost", ns); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	assertDetached(t, tn, "lost", rec)
	if err := tn.nw.Teardown(ctx, "lost", ns); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

// BenchmarkSetupTeardown measures one container's network lifecycle (Setup and Teardown of a
// fresh namespace) with no mapped port and with two.
func BenchmarkSetupTeardown(b *testing.B) {
	ctx := context.Background()
	for _, ports := range []int{0, 2} {
		b.Run(fmt.Sprintf("ports=%d", ports), func(b *testing.B) {
			tn := newTestNet(b, 50)
			netIn := make([]isolation.NetIn, ports)
			for i := range netIn {
				netIn[i].ContainerPort = uint32(8080 + i)
			}
			for i := 0; b.Loop(); i++ {
				ns := filepath.Join(tn.dir, fmt.Sprintf("bench-%d", i))
				if err := CreateNetNS(ns); err != nil {
					b.Fatal(err)
				}
				if _, err := tn.nw.Setup(ctx, "bench", ns, netIn); err != nil {
					b.Fatal(err)
				}
				if err := tn.nw.Teardown(ctx, "bench", ns); err != nil {
					b.Fatal(err)
				}
				if err := DeleteNetNS(ns); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
