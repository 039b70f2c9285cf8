package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/trellis-run/trellis/isolation"
)

// cleanupTimeout bounds the undo of a failed Setup, which runs even when the caller's context
// has ended (a half-attached container must not keep its ports, lease and rules).
const cleanupTimeout = 30 * time.Second

// Network attaches containers' network namespaces to one CNI bridge network. It is safe for
// concurrent use by different handles; Setup, Teardown and Check of one handle must not
// overlap. Several Networks (in one process or several) may share a StateDir if their Configs
// are equal.
type Network struct {
	cfg   Config
	log   *slog.Logger
	state *store
	cni   *libcni.CNIConfig
	list  *libcni.NetworkConfigList
	rules ruleSet
	// hostIP is what Result.HostIP says.
	hostIP string

	// ensureMu guards ensured: the network's shared rules have been made right by this
	// Network (rebuild), so a Setup needs only its own DNAT rules.
	ensureMu sync.Mutex
	ensured  bool

	// portRules group-commits containers' DNAT rule changes (applyPortChanges).
	portRules groupCommit[portChange]
	// restore applies an iptables-restore script (iptablesRestore; tests count and fail it).
	restore func(ctx context.Context, script []byte) error
}

// New checks cfg, finds the plugins and prepares the state directory. It changes nothing on
// the host's network: the bridge appears with the first Setup.
//
// Errors: ErrInvalidConfig (field named; also when Subnet overlaps an address on another
// interface of this host), ErrPluginNotFound (which plugin, where it was looked for),
// ErrState.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, p := range requiredPlugins {
		if _, err := invoke.FindInPath(p, cfg.PluginDirs); err != nil {
			return nil, fmt.Errorf("%w: %q in %s (install containernetworking-plugins): %v",
				ErrPluginNotFound, p, strings.Join(cfg.PluginDirs, ", "), err)
		}
	}
	if err := checkSubnetFree(cfg.Subnet, cfg.BridgeName); err != nil {
		return nil, err
	}
	st := newStore(cfg.StateDir)
	if err := st.init(); err != nil {
		return nil, err
	}
	conf, err := buildConfList(cfg, st.path(ipamDir))
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("%w: parse generated network config: %w", ErrInvalidConfig, err)
	}
	hostIP := cfg.HostIP
	if hostIP == "" {
		hostIP = primaryIPv4()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Network{
		cfg:     cfg,
		log:     log.With("component", "network", "bridge", cfg.BridgeName),
		state:   st,
		cni:     libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, st.path(cniCacheDir), pluginExec()),
		list:    list,
		rules:   newRuleSet(cfg.NetworkName, cfg.BridgeName, cfg.Subnet),
		hostIP:  hostIP,
		restore: iptablesRestore,
	}
	n.portRules.run = n.applyPortChanges
	return n, nil
}

// pluginExec is what libcni would make on first use: given up front, because libcni makes it
// without synchronisation and concurrent Setups would race to.
func pluginExec() invoke.Exec {
	return &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	}
}

// Setup attaches the network namespace at netnsPath to the network as container handle: a
// veth pair with eth0 inside, an address from Config.Subnet, lo up, a default route through
// the bridge, and every netIn mapped from a host port (tcp) to the container port. NetIns with
// HostPort 0 get a port from Config.HostPortRange that no container holds and no host process
// has bound. On failure nothing is left behind.
//
// Errors: isolation.ErrInvalidSpec (bad handle, netnsPath not a network namespace, bad NetIn),
// isolation.ErrAlreadyExists (handle already attached), ErrPortsExhausted and ErrPortInUse
// (both isolation.ErrInsufficientResources), ErrPlugin (a plugin failed; its message is
// included), ErrState.
func (n *Network) Setup(ctx context.Context, handle, netnsPath string, netIn []isolation.NetIn) (Result, error) {
	if err := validateHandle(handle); err != nil {
		return Result{}, err
	}
	if !isNetNS(netnsPath) {
		return Result{}, fmt.Errorf("%w: set up network of %q: %q is not a network namespace", isolation.ErrInvalidSpec, handle, netnsPath)
	}
	if err := validateNetIn(netIn); err != nil {
		return Result{}, fmt.Errorf("set up network of %q: %w", handle, err)
	}
	cid := containerID(handle)

	rec, err := n.reserve(ctx, handle, cid, netnsPath, netIn)
	if err != nil {
		return Result{}, fmt.Errorf("set up network of %q: %w", handle, err)
	}
	log := n.log.With("handle", handle, "netns", netnsPath)

	// The bridge plugin, lo and (on a Network's first Setup) the shared rules are independent:
	// they run at the same time.
	var wg sync.WaitGroup
	var loErr, rulesErr error
	wg.Go(func() { loErr = setLoopbackUp(netnsPath) })
	wg.Go(func() { rulesErr = n.ensureRules(ctx) })
	raw, err := n.cni.AddNetworkList(ctx, n.list, n.runtimeConf(cid, netnsPath))
	wg.Wait()
	switch {
	case err != nil:
		err = fmt.Errorf("%w: set up network of %q: %w", ErrPlugin, handle, err)
	case loErr != nil:
		err = fmt.Errorf("set up network of %q: %w", handle, loErr)
	case rulesErr != nil:
		err = fmt.Errorf("set up network of %q: %w", handle, rulesErr)
	default:
		if err = n.attach(ctx, rec, raw); err != nil {
			err = fmt.Errorf("set up network of %q: %w", handle, err)
		}
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if uerr := n.detach(cctx, rec, netnsPath); uerr != nil {
			log.Warn("undo of failed network setup failed; Teardown will retry", "error", uerr)
			return Result{}, errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
		return Result{}, err
	}
	log.Debug("network attached", "ip", rec.ContainerIP, "ports", rec.Ports)
	return n.result(rec), nil
}

// reserve writes the container's record with its host ports, under the state lock, durably:
// from here on only a Teardown of this record gives the ports, and the lease the CNI ADD is
// about to take, back.
func (n *Network) reserve(ctx context.Context, handle, cid, netnsPath string, netIn []isolation.NetIn) (*record, error) {
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, err := n.state.get(cid)
	if err != nil {
		return nil, err
	}
	if r != nil {
		if r.Handle != handle {
			return nil, fmt.Errorf("%w: container id %q of handle %q is held by handle %q", isolation.ErrAlreadyExists, cid, handle, r.Handle)
		}
		return nil, fmt.Errorf("%w: handle %q is already attached (netns %s)", isolation.ErrAlreadyExists, handle, r.NetNS)
	}
	used, err := n.state.usedPorts()
	if err != nil {
		return nil, err
	}
	next := n.state.cursor()
	alloc := portAllocator{
		min: n.cfg.HostPortRange[0], max: n.cfg.HostPortRange[1],
		next: next, used: used, isFree: hostPortFree,
	}
	ports, err := alloc.assign(netIn)
	if err != nil {
		return nil, err
	}
	rec := &record{
		Handle:      handle,
		ContainerID: cid,
		NetNS:       netnsPath,
		Ports:       portRecords(ports),
		OwnRules:    true,
		CreatedAt:   time.Now().UTC(),
	}
	if err := n.state.put(rec, durableNew); err != nil {
		return nil, err
	}
	if alloc.next != next {
		if err := n.state.setCursor(alloc.next); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// attach stores what the CNI ADD produced and adds the container's DNAT rules (storePorts).
func (n *Network) attach(ctx context.Context, rec *record, raw cnitypes.Result) error {
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		return fmt.Errorf("%w: read result: %w", ErrPlugin, err)
	}
	for _, ip := range res.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(res.Interfaces) ||
			res.Interfaces[*ip.Interface].Sandbox == "" {
			continue
		}
		if ip4 := ip.Address.IP.To4(); ip4 != nil {
			rec.ContainerIP = ip4.String()
			break
		}
	}
	if rec.ContainerIP == "" {
		return fmt.Errorf("%w: result has no IPv4 address inside the namespace: %s", ErrPlugin, res)
	}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != n.cfg.BridgeName {
			rec.HostVeth, rec.HostVethMAC = ifc.Name, ifc.Mac
			break
		}
	}
	if len(rec.Ports) > 0 {
		// Set on every Setup with ports, not once: the bridge may have been recreated.
		if err := enableRouteLocalnet(n.cfg.BridgeName); err != nil {
			return err
		}
	}
	rec.Attached = true
	if err := n.storePorts(ctx, rec, "-A"); err != nil {
		return fmt.Errorf("store attachment and map host ports: %w", err)
	}
	return nil
}

// portChange is a change of a container's record and of its DNAT rules that goes with it:
// op "-A" stores rec (attached) and adds its rules; op "-D" removes rec (an attached one) and
// deletes its rules.
type portChange struct {
	rec *record
	op  string
}

// storePorts stores (op "-A") or removes (op "-D") rec and adds or deletes its DNAT rules, in
// one critical section of the state lock, so that a rebuild (which writes the rules of every
// attached record) never sees the record and the rules disagree. A record without rules is
// just stored or removed. Rule changes of concurrent calls are group-committed
// (applyPortChanges); once queued, a change is carried out even if ctx ends meanwhile.
func (n *Network) storePorts(ctx context.Context, rec *record, op string) error {
	if len(rec.Ports) == 0 || rec.ContainerIP == "" {
		unlock, err := n.state.lockState(ctx)
		if err != nil {
			return err
		}
		defer unlock()
		if op == "-D" {
			return n.state.remove(rec.ContainerID)
		}
		return n.state.put(rec, atomicUpdate)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return n.portRules.do(portChange{rec: rec, op: op})
}

// applyPortChanges runs one batch of portChanges under the state lock: it stores or removes
// every record, then applies every rule change in one iptables-restore transaction. If that
// fails, each change is applied alone, so one bad change cannot fail the others; the changes
// that still fail (most likely a rule to delete is missing, or the network's chain is: a
// firewall reload, an operator) are settled by rebuilding the rules from the records, as a
// single change always was. Errors are per change; a removal that fails puts its record back,
// so that a retried Teardown deletes the rules again.
func (n *Network) applyPortChanges(batch []portChange) []error {
	errs := make([]error, len(batch))
	// Not a caller's context: the batch serves several callers, none of which may cut it short.
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer unlock()
	var stored []int
	var changes []dnatChange
	for i, c := range batch {
		if c.op == "-D" {
			errs[i] = n.state.remove(c.rec.ContainerID)
		} else {
			errs[i] = n.state.put(c.rec, atomicUpdate)
		}
		if errs[i] == nil {
			stored = append(stored, i)
			changes = append(changes, dnatChange{op: c.op, rules: containerPortRules(c.rec.ContainerID, c.rec.ContainerIP, c.rec.Ports)})
		}
	}
	if len(stored) == 0 {
		return errs
	}
	err = n.restore(ctx, n.rules.dnatScript(changes...))
	if err == nil {
		return errs
	}
	failed := stored
	if len(stored) == 1 {
		errs[stored[0]] = err
	} else {
		n.log.Debug("batched port rule changes failed; applying them one by one", "changes", len(stored), "error", err)
		failed = nil
		for j, i := range stored {
			if errs[i] = n.restore(ctx, n.rules.dnatScript(changes[j])); errs[i] != nil {
				failed = append(failed, i)
			}
		}
	}
	if len(failed) == 0 {
		return errs
	}
	for _, i := range failed {
		n.log.Warn("changing port rules failed; rebuilding the network's rules", "handle", batch[i].rec.Handle, "op", batch[i].op, "error", errs[i])
	}
	rerr := n.rebuildLocked(ctx)
	for _, i := range failed {
		if rerr == nil {
			errs[i] = nil
			continue
		}
		errs[i] = fmt.Errorf("%w; then: %w", errs[i], rerr)
		if batch[i].op == "-D" {
			if err := n.state.put(batch[i].rec, atomicUpdate); err != nil {
				errs[i] = errors.Join(errs[i], fmt.Errorf("keep the record for a retry: %w", err))
			}
		}
	}
	return errs
}

// ensureRules makes the network's shared rules right once per Network (the first Setup), by
// rebuild. Later Setups trust them, and rebuild only when adding their own rules fails.
func (n *Network) ensureRules(ctx context.Context) error {
	n.ensureMu.Lock()
	defer n.ensureMu.Unlock()
	if n.ensured {
		return nil
	}
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := n.rebuildLocked(ctx); err != nil {
		return err
	}
	n.ensured = true
	return nil
}

// rebuildLocked makes the network's own chains hold exactly what they must for the attached
// containers of the state directory, and adds missing jumps to them: one iptables-save and one
// iptables-restore, whatever the number of containers. The caller holds the state lock.
func (n *Network) rebuildLocked(ctx context.Context) error {
	recs, err := n.state.all()
	if err != nil {
		return err
	}
	var ports []portRule
	for _, r := range recs {
		if r.Attached && r.OwnRules {
			ports = append(ports, containerPortRules(r.ContainerID, r.ContainerIP, r.Ports)...)
		}
	}
	save, err := iptablesSave(ctx)
	if err != nil {
		return fmt.Errorf("write the network's rules: %w", err)
	}
	if err := n.restore(ctx, n.rules.rebuildScript(parseSave(save), ports)); err != nil {
		return fmt.Errorf("write the network's rules: %w", err)
	}
	return nil
}

// Teardown detaches the container: its veth, its address lease, its port mappings, NAT and
// forwarding rules, and its host ports go. It works after the namespace at netnsPath is gone
// (CNI DEL then runs without a namespace, from libcni's cached result, and we remove what the
// plugins cannot), and by a Network other than the one that ran Setup. An empty netnsPath
// means the path given to Setup. Tearing down a handle that is not attached returns nil.
//
// Errors: isolation.ErrInvalidSpec (bad handle), ErrPlugin (a plugin failed; the record stays
// so that a retry finishes the job), ErrState.
func (n *Network) Teardown(ctx context.Context, handle, netnsPath string) error {
	if err := validateHandle(handle); err != nil {
		return err
	}
	cid := containerID(handle)
	rec, err := n.record(ctx, cid)
	if err != nil {
		return fmt.Errorf("tear down network of %q: %w", handle, err)
	}
	if rec == nil {
		cached, _, err := n.cni.GetNetworkListCachedConfig(n.list, n.runtimeConf(cid, ""))
		if err != nil || cached == nil {
			return nil // never attached, or already torn down
		}
		// libcni remembers an attachment we have no record of (the record was lost or removed
		// by hand): DEL from libcni's cache alone.
		rec = &record{Handle: handle, ContainerID: cid}
	}
	if netnsPath == "" {
		netnsPath = rec.NetNS // used only if it still is a namespace
	}
	if err := n.detach(ctx, rec, netnsPath); err != nil {
		return fmt.Errorf("tear down network of %q: %w", handle, err)
	}
	n.log.Debug("network detached", "handle", handle, "ip", rec.ContainerIP)
	return nil
}

// detach runs the CNI DEL, removes what the plugins may leave, then forgets the container:
// its record and its DNAT rules go together (storePorts), once nothing else needs the record
// for a retry. Until then a mapped port still leads to the container's old address, which
// nothing answers.
func (n *Network) detach(ctx context.Context, rec *record, netnsPath string) error {
	ns := netnsPath
	if !isNetNS(ns) {
		ns = "" // CNI lets DEL run without a namespace; plugins then release what they can
	}
	list := n.list
	if !rec.OwnRules {
		list = n.cachedList(rec.ContainerID)
	}
	if err := n.cni.DelNetworkList(ctx, list, n.runtimeConf(rec.ContainerID, ns)); err != nil {
		return fmt.Errorf("%w: %w", ErrPlugin, err)
	}
	if !rec.OwnRules {
		if removed, err := sweepNAT(ctx, n.cfg.NetworkName, rec.ContainerID); err != nil {
			return fmt.Errorf("remove leftover nat rules: %w", err)
		} else if removed > 0 {
			n.log.Debug("removed leftover nat rules", "handle", rec.Handle, "count", removed)
		}
	}
	if err := removeStaleVeth(ctx, rec); err != nil {
		return err
	}
	if !rec.OwnRules || !rec.Attached {
		// No DNAT rules of ours: the plugins' are gone with the DEL and the sweep, and a
		// record never attached (or detached by an earlier version) has none.
		unlock, err := n.state.lockState(ctx)
		if err != nil {
			return err
		}
		defer unlock()
		return n.state.remove(rec.ContainerID)
	}
	if err := n.storePorts(ctx, rec, "-D"); err != nil {
		return fmt.Errorf("unmap host ports: %w", err)
	}
	return nil
}

// cachedList returns the plugin list libcni cached when container cid was added: for a
// container attached by an older version, the plugins that must run its DEL. Without a cached
// list (the ADD never got that far) it returns the current one.
func (n *Network) cachedList(cid string) *libcni.NetworkConfigList {
	b, _, err := n.cni.GetNetworkListCachedConfig(n.list, n.runtimeConf(cid, ""))
	if err != nil || len(b) == 0 {
		return n.list
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		n.log.Warn("cached network config unreadable; using the current one", "container_id", cid, "error", err)
		return n.list
	}
	return list
}

// Check verifies that the container's network is still as Setup left it: the bridge plugin's
// CNI CHECK (the veth, its address, the routes), lo up, the network's shared rules and the
// container's DNAT rules (read from iptables-save).
//
// Errors: isolation.ErrNotFound (handle not attached), ErrPlugin (what is wrong), ErrState.
func (n *Network) Check(ctx context.Context, handle, netnsPath string) error {
	rec, err := n.attached(ctx, handle)
	if err != nil {
		return err
	}
	list := n.list
	if !rec.OwnRules {
		list = withoutPlugin(n.cachedList(rec.ContainerID), "portmap")
	}
	if err := n.cni.CheckNetworkList(ctx, list, n.runtimeConf(rec.ContainerID, netnsPath)); err != nil {
		return fmt.Errorf("%w: check network of %q: %w", ErrPlugin, handle, err)
	}
	save, err := iptablesSave(ctx)
	if err != nil {
		return fmt.Errorf("check network of %q: %w", handle, err)
	}
	if !rec.OwnRules {
		err = checkPortMappings(save, n.cfg.NetworkName, rec.ContainerID, rec.ContainerIP, rec.Ports)
	} else if err = checkLoopbackUp(netnsPath); err == nil {
		err = n.rules.checkRules(parseSave(save), containerPortRules(rec.ContainerID, rec.ContainerIP, rec.Ports))
	}
	if err != nil {
		return fmt.Errorf("%w: check network of %q: %w", ErrPlugin, handle, err)
	}
	return nil
}

// withoutPlugin returns list without the plugins of type typ. It serves portmap, whose CHECK
// in the Debian 12 plugins (1.1.1) fails on hosts with ip6tables for IPv4-only containers
// ("could not check ipv6 dnat"); checkPortMappings stands in for it.
func withoutPlugin(list *libcni.NetworkConfigList, typ string) *libcni.NetworkConfigList {
	out := *list
	out.Plugins = nil
	for _, p := range list.Plugins {
		if p.Network.Type != typ {
			out.Plugins = append(out.Plugins, p)
		}
	}
	return &out
}

// Uninstall removes what the network's Setups left on the host for every container: the
// network's own chains and the jumps to them, and the bridge. The CNI-FORWARD and CNI-ADMIN
// chains, shared with other CNI users, stay, as do ip_forward and the state directory. It is for
// uninstalling, changing Subnet or BridgeName, and tests; it refuses while any container of the
// state directory is attached or half-way through Setup or Teardown.
//
// Errors: isolation.ErrInvalidSpec (containers remain; their handles are named), ErrState, or
// the failing iptables or ip command.
func (n *Network) Uninstall(ctx context.Context) error {
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := n.state.all()
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		handles := make([]string, len(recs))
		for i, r := range recs {
			handles[i] = r.Handle
		}
		return fmt.Errorf("%w: uninstall network %q: containers remain: %s", isolation.ErrInvalidSpec, n.cfg.NetworkName, strings.Join(handles, ", "))
	}
	save, err := iptablesSave(ctx)
	if err != nil {
		return fmt.Errorf("uninstall network %q: %w", n.cfg.NetworkName, err)
	}
	if script := n.rules.removeScript(parseSave(save)); script != nil {
		if err := n.restore(ctx, script); err != nil {
			return fmt.Errorf("uninstall network %q: %w", n.cfg.NetworkName, err)
		}
	}
	n.ensureMu.Lock()
	n.ensured = false
	n.ensureMu.Unlock()
	if _, err := net.InterfaceByName(n.cfg.BridgeName); err == nil {
		if out, err := exec.CommandContext(ctx, "ip", "link", "delete", "dev", n.cfg.BridgeName).CombinedOutput(); err != nil {
			return fmt.Errorf("uninstall network %q: delete bridge: %w: %s", n.cfg.NetworkName, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Lookup returns what Setup granted handle, from the state directory (so a restarted backend
// can answer Info without touching the network).
//
// Errors: isolation.ErrNotFound (handle not attached), ErrState.
func (n *Network) Lookup(ctx context.Context, handle string) (Result, error) {
	rec, err := n.attached(ctx, handle)
	if err != nil {
		return Result{}, err
	}
	return n.result(rec), nil
}

// Handles lists the handles with a network record, attached or half-way through Setup (a
// crash), so a restarted backend can tear down those it no longer knows.
//
// Errors: ErrState.
func (n *Network) Handles(ctx context.Context) ([]string, error) {
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := n.state.all()
	unlock()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Handle
	}
	return out, nil
}

func (n *Network) attached(ctx context.Context, handle string) (*record, error) {
	if err := validateHandle(handle); err != nil {
		return nil, err
	}
	rec, err := n.record(ctx, containerID(handle))
	if err != nil {
		return nil, err
	}
	if rec == nil || !rec.Attached {
		return nil, fmt.Errorf("%w: no network attached for %q", isolation.ErrNotFound, handle)
	}
	return rec, nil
}

// record returns a copy of the record of container cid, or nil if there is none.
func (n *Network) record(ctx context.Context, cid string) (*record, error) {
	unlock, err := n.state.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return n.state.get(cid)
}

func (n *Network) result(rec *record) Result {
	return Result{HostIP: n.hostIP, ContainerIP: rec.ContainerIP, Ports: portMappings(rec.Ports)}
}

func (n *Network) runtimeConf(cid, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: netns, IfName: containerIfName}
}

// hostPortFree reports whether no host process has TCP port p bound on any IPv4 address.
// (A dual-stack listener on [::] counts: the kernel refuses the bind then too.)
func hostPortFree(p uint32) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.FormatUint(uint64(p), 10)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// primaryIPv4 returns the first IPv4 address of the interface holding the default route with
// the lowest metric, or 127.0.0.1 when there is none.
func primaryIPv4() string {
	const fallback = "127.0.0.1"
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return fallback
	}
	defer f.Close()
	best, bestMetric := "", int64(-1)
	sc := bufio.NewScanner(f)
	sc.Scan() // header: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 || fl[1] != "00000000" || fl[7] != "00000000" {
			continue
		}
		flags, err1 := strconv.ParseUint(fl[3], 16, 32)
		metric, err2 := strconv.ParseInt(fl[6], 10, 64)
		if err1 != nil || err2 != nil || flags&0x1 == 0 { // RTF_UP
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = fl[0], metric
		}
	}
	if best == "" {
		return fallback
	}
	ifc, err := net.InterfaceByName(best)
	if err != nil {
		return fallback
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return fallback
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && !ip.IsLinkLocalUnicast() {
				return ip.Unmap().String()
			}
		}
	}
	return fallback
}

// checkSubnetFree refuses a Subnet that overlaps an address already on an interface other than
// our bridge: containers would be unreachable, or would shadow a host network.
func checkSubnetFree(subnet, bridge string) error {
	p, err := parseSubnet(subnet)
	if err != nil {
		return fmt.Errorf("%w: Subnet: %v", ErrInvalidConfig, err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil // cannot tell; the plugins will complain if it matters
	}
	for _, ifc := range ifs {
		if ifc.Name == bridge {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			other := netip.PrefixFrom(ip.Unmap(), ones).Masked()
			if other.Overlaps(p) {
				return fmt.Errorf("%w: Subnet: %s overlaps %s on interface %s", ErrInvalidConfig, p, ipn, ifc.Name)
			}
		}
	}
	return nil
}

// removeStaleVeth deletes the container's host-side veth if it outlived the DEL: that happens
// when the namespace's bind mount is gone but a process still holds the namespace, so the
// bridge plugin could not find the pair. The name and MAC address must both match what Setup
// recorded, so a veth that reused the name for another container is left alone.
func removeStaleVeth(ctx context.Context, rec *record) error {
	if rec.HostVeth == "" {
		return nil
	}
	ifc, err := net.InterfaceByName(rec.HostVeth)
	if err != nil || !strings.EqualFold(ifc.HardwareAddr.String(), rec.HostVethMAC) {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ip", "link", "delete", "dev", rec.HostVeth).CombinedOutput()
	if err != nil {
		if _, gone := net.InterfaceByName(rec.HostVeth); gone != nil {
			return nil // went away by itself meanwhile
		}
		return fmt.Errorf("delete host veth %s of %q: %w: %s", rec.HostVeth, rec.Handle, err, strings.TrimSpace(string(out)))
	}
	return nil
}
