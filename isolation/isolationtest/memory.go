package isolationtest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/trellis-run/trellis/isolation"
)

// MemoryConfig configures an in-memory backend. The zero value is not valid; start from
// DefaultMemoryConfig.
type MemoryConfig struct {
	// Capacity is what the simulated host offers in total; every field must be non-zero.
	// Create fails with ErrInsufficientResources once the containers' Limits.MemoryBytes,
	// Limits.DiskBytes or their count would exceed it (a zero limit reserves nothing).
	Capacity isolation.Capacity
	// Stacks are the "preloaded:<stack>" root filesystems offered.
	Stacks []string
	// RootFSSchemes are the other URI schemes accepted ("docker", "oci"); any image under
	// them is accepted, as a real backend would after pulling it.
	RootFSSchemes []string
	// PortRangeStart and PortRangeEnd bound the host ports allocated to NetIn entries with
	// HostPort 0. Requested host ports may lie outside the range; all are unique per backend.
	PortRangeStart, PortRangeEnd uint32
	// HostIP is reported as ContainerInfo.HostIP.
	HostIP string
	// ContainerSubnet is the IPv4 prefix container addresses are allocated from (network and
	// broadcast addresses excluded). The default is loopback (127.254.0.0/16) so that code
	// probing a simulated container never sends traffic off the machine.
	ContainerSubnet string
	// Logger receives debug records of container lifecycle events; nil discards them.
	Logger *slog.Logger
}

// DefaultMemoryConfig returns a host of 16 GiB memory, 64 GiB disk and 250 containers
// offering preloaded:cflinuxfs4, docker and oci root filesystems.
func DefaultMemoryConfig() MemoryConfig {
	return MemoryConfig{
		Capacity: isolation.Capacity{
			MemoryBytes:   16 << 30,
			DiskBytes:     64 << 30,
			MaxContainers: 250,
		},
		Stacks:          []string{"cflinuxfs4"},
		RootFSSchemes:   []string{"docker", "oci"},
		PortRangeStart:  61001,
		PortRangeEnd:    65534,
		HostIP:          "127.0.0.1",
		ContainerSubnet: "127.254.0.0/16",
	}
}

// Validate reports the first invalid field of c.
func (c MemoryConfig) Validate() error {
	switch {
	case c.Capacity.MemoryBytes == 0:
		return errors.New("memory backend config: Capacity.MemoryBytes must be > 0")
	case c.Capacity.DiskBytes == 0:
		return errors.New("memory backend config: Capacity.DiskBytes must be > 0")
	case c.Capacity.MaxContainers == 0:
		return errors.New("memory backend config: Capacity.MaxContainers must be > 0")
	case c.PortRangeStart == 0 || c.PortRangeEnd > 65535 || c.PortRangeStart > c.PortRangeEnd:
		return fmt.Errorf("memory backend config: port range %d-%d: want 1 <= start <= end <= 65535",
			c.PortRangeStart, c.PortRangeEnd)
	}
	if _, err := netip.ParseAddr(c.HostIP); err != nil {
		return fmt.Errorf("memory backend config: HostIP: %w", err)
	}
	prefix, err := netip.ParsePrefix(c.ContainerSubnet)
	if err != nil {
		return fmt.Errorf("memory backend config: ContainerSubnet: %w", err)
	}
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return fmt.Errorf("memory backend config: ContainerSubnet %s: want an IPv4 prefix of /30 or larger", prefix)
	}
	for _, s := range c.RootFSSchemes {
		if s == "" || s == "preloaded" || strings.Contains(s, ":") {
			return fmt.Errorf("memory backend config: RootFSSchemes entry %q: want a bare scheme other than preloaded", s)
		}
	}
	return nil
}

const numShards = 64

type shard struct {
	mu         sync.RWMutex
	containers map[string]*memContainer
}

// MemoryState is everything an in-memory backend holds: containers, their files and processes,
// reservations and allocations. Several Memory values over one MemoryState behave like
// successive agents over one host: what one created, the next finds (see ReopenMemory).
type MemoryState struct {
	cfg    MemoryConfig
	log    *slog.Logger
	seed   maphash.Seed
	shards [numShards]shard

	progMu   sync.RWMutex
	programs map[string]ProgramFunc

	procSeq atomic.Uint64

	// mu guards the host-wide bookkeeping below. It is held briefly and never while taking a
	// shard or container lock (lock order: shard, container, mu).
	mu             sync.Mutex
	count          uint64
	reservedMemory uint64
	reservedDisk   uint64
	ports          *rangeAllocator
	ips            *rangeAllocator
	subnet         netip.Prefix
	index          map[string]map[string]map[*memContainer]struct{} // property key → value → set
}

// Memory is an in-memory isolation.Backend with real semantics: handles, properties, a
// filesystem per container, processes as Go functions, signals, capacity and port accounting.
// It is safe for concurrent use. Per-container cost is a few hundred bytes until files are
// streamed in or processes run, and operations take one short-held lock shard.
type Memory struct {
	s *MemoryState
}

var _ isolation.Backend = (*Memory)(nil)

// NewMemory returns a backend over fresh state, with the test-program vocabulary registered at
// TestProgramPath.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := netip.MustParsePrefix(cfg.ContainerSubnet).Masked()
	hostBits := 32 - prefix.Bits()
	s := &MemoryState{
		cfg:      cfg,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		programs: map[string]ProgramFunc{TestProgramPath: runTestProgram},
		ports:    newRangeAllocator(cfg.PortRangeStart, cfg.PortRangeEnd),
		// Offsets 1 … 2^hostBits-2: neither the network nor the broadcast address.
		ips:    newRangeAllocator(1, uint32(uint64(1)<<hostBits)-2),
		subnet: prefix,
		index:  make(map[string]map[string]map[*memContainer]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for i := range s.shards {
		s.shards[i].containers = make(map[string]*memContainer)
	}
	return &Memory{s: s}, nil
}

// ReopenMemory returns a new backend over state, as a restarted agent would see the host: every
// container, file and process (running or exited) created through earlier backends is there.
func ReopenMemory(state *MemoryState) *Memory { return &Memory{s: state} }

// State returns the state m works on, for ReopenMemory.
func (m *Memory) State() *MemoryState { return m.s }

// RegisterProgram makes fn runnable as ProcessSpec.Path path in every container of the state,
// replacing any program registered there before.
func (m *Memory) RegisterProgram(path string, fn ProgramFunc) {
	m.s.progMu.Lock()
	defer m.s.progMu.Unlock()
	m.s.programs[path] = fn
}

func (s *MemoryState) program(path string) (ProgramFunc, bool) {
	s.progMu.RLock()
	defer s.progMu.RUnlock()
	fn, ok := s.programs[path]
	return fn, ok
}

func (s *MemoryState) shardFor(handle string) *shard {
	return &s.shards[maphash.String(s.seed, handle)%numShards]
}

func (s *MemoryState) get(handle string) *memContainer {
	sh := s.shardFor(handle)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.containers[handle]
}

// Ping implements isolation.Backend; the in-memory backend is always usable.
func (m *Memory) Ping(ctx context.Context) error { return ctx.Err() }

// Capacity implements isolation.Backend.
func (m *Memory) Capacity(ctx context.Context) (isolation.Capacity, error) {
	return m.s.cfg.Capacity, ctx.Err()
}

// checkRootFS resolves the RootFS URI against the configured stacks and schemes.
func (s *MemoryState) checkRootFS(rootfs string) error {
	scheme, rest, _ := strings.Cut(rootfs, ":")
	if scheme == "preloaded" {
		for _, st := range s.cfg.Stacks {
			if st == rest {
				return nil
			}
		}
		return fmt.Errorf("%w: RootFS %q: stack %q is not preloaded on this host (have %v)",
			isolation.ErrUnsupported, rootfs, rest, s.cfg.Stacks)
	}
	for _, sc := range s.cfg.RootFSSchemes {
		if sc == scheme {
			return nil
		}
	}
	return fmt.Errorf("%w: RootFS %q: scheme %q is not supported (have preloaded, %v)",
		isolation.ErrUnsupported, rootfs, scheme, s.cfg.RootFSSchemes)
}

// Create implements isolation.Backend.
func (m *Memory) Create(ctx context.Context, spec isolation.ContainerSpec) (isolation.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateContainerSpec(spec); err != nil {
		return nil, fmt.Errorf("create container %q: %w", spec.Handle, err)
	}
	if err := m.s.checkRootFS(spec.RootFS); err != nil {
		return nil, fmt.Errorf("create container %q: %w", spec.Handle, err)
	}
	c := newMemContainer(m.s, spec)

	sh := m.s.shardFor(spec.Handle)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.containers[spec.Handle]; ok {
		return nil, fmt.Errorf("create container %q: %w", spec.Handle, isolation.ErrAlreadyExists)
	}
	if err := m.s.reserve(c, spec); err != nil {
		return nil, fmt.Errorf("create container %q: %w", spec.Handle, err)
	}
	sh.containers[spec.Handle] = c
	m.s.log.Debug("container created", "handle", spec.Handle, "rootfs", spec.RootFS)
	return &memRef{s: m.s, c: c}, nil
}

// reserve accounts for c on the host: capacity, address, host ports and property index.
func (s *MemoryState) reserve(c *memContainer, spec isolation.ContainerSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	capy := s.cfg.Capacity
	var short []string
	if s.count+1 > capy.MaxContainers {
		short = append(short, "containers")
	}
	if s.reservedMemory+spec.Limits.MemoryBytes > capy.MemoryBytes {
		short = append(short, "memory")
	}
	if s.reservedDisk+spec.Limits.DiskBytes > capy.DiskBytes {
		short = append(short, "disk")
	}
	if len(short) > 0 {
		return fmt.Errorf("%w: %s (%d of %d containers, %d of %d memory bytes, %d of %d disk bytes in use)",
			isolation.ErrInsufficientResources, strings.Join(short, ", "), s.count, capy.MaxContainers,
			s.reservedMemory, capy.MemoryBytes, s.reservedDisk, capy.DiskBytes)
	}
	if spec.Network == isolation.NetworkBridge {
		off, ok := s.ips.allocate()
		if !ok {
			return fmt.Errorf("%w: no free container address in %s", isolation.ErrInsufficientResources, s.subnet)
		}
		c.ipOffset = off
	}
	for i, n := range spec.NetIn {
		hp := n.HostPort
		if hp == 0 {
			var ok bool
			if hp, ok = s.ports.allocate(); !ok {
				s.releaseNet(c)
				return fmt.Errorf("%w: NetIn[%d]: no free host port in %d-%d", isolation.ErrInsufficientResources,
					i, s.cfg.PortRangeStart, s.cfg.PortRangeEnd)
			}
		} else if !s.ports.claim(hp) {
			s.releaseNet(c)
			return fmt.Errorf("%w: NetIn[%d].HostPort %d: already mapped to another container",
				isolation.ErrInsufficientResources, i, hp)
		}
		c.ports = append(c.ports, isolation.PortMapping{HostPort: hp, ContainerPort: n.ContainerPort})
	}
	s.count++
	s.reservedMemory += spec.Limits.MemoryBytes
	s.reservedDisk += spec.Limits.DiskBytes
	for k, v := range c.props {
		s.indexAdd(c, k, v)
	}
	return nil
}

// releaseNet frees c's address and host ports; s.mu is held.
func (s *MemoryState) releaseNet(c *memContainer) {
	if c.ipOffset != 0 {
		s.ips.release(c.ipOffset)
		c.ipOffset = 0
	}
	for _, p := range c.ports {
		s.ports.release(p.HostPort)
	}
	c.ports = nil
}

// release undoes reserve for a destroyed container.
func (s *MemoryState) release(c *memContainer, props isolation.Properties) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseNet(c)
	s.count--
	s.reservedMemory -= c.limits.MemoryBytes
	s.reservedDisk -= c.limits.DiskBytes
	for k, v := range props {
		s.indexRemove(c, k, v)
	}
}

// indexAdd and indexRemove maintain the property index; s.mu is held.
func (s *MemoryState) indexAdd(c *memContainer, k, v string) {
	byValue := s.index[k]
	if byValue == nil {
		byValue = make(map[string]map[*memContainer]struct{})
		s.index[k] = byValue
	}
	set := byValue[v]
	if set == nil {
		set = make(map[*memContainer]struct{})
		byValue[v] = set
	}
	set[c] = struct{}{}
}

func (s *MemoryState) indexRemove(c *memContainer, k, v string) {
	byValue := s.index[k]
	set := byValue[v]
	delete(set, c)
	if len(set) == 0 {
		delete(byValue, v)
		if len(byValue) == 0 {
			delete(s.index, k)
		}
	}
}

// Lookup implements isolation.Backend.
func (m *Memory) Lookup(ctx context.Context, handle string) (isolation.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := m.s.get(handle)
	if c == nil {
		return nil, fmt.Errorf("lookup container %q: %w", handle, isolation.ErrNotFound)
	}
	return &memRef{s: m.s, c: c}, nil
}

// Destroy implements isolation.Backend.
func (m *Memory) Destroy(ctx context.Context, handle string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := m.s.shardFor(handle)
	sh.mu.Lock()
	c := sh.containers[handle]
	delete(sh.containers, handle)
	sh.mu.Unlock()
	if c == nil {
		return nil
	}
	props := c.destroy()
	m.s.release(c, props)
	m.s.log.Debug("container destroyed", "handle", handle)
	return nil
}

// List implements isolation.Backend. Containers come back sorted by handle.
func (m *Memory) List(ctx context.Context, filter isolation.Properties) ([]isolation.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var candidates []*memContainer
	if len(filter) == 0 {
		for i := range m.s.shards {
			sh := &m.s.shards[i]
			sh.mu.RLock()
			for _, c := range sh.containers {
				candidates = append(candidates, c)
			}
			sh.mu.RUnlock()
		}
	} else {
		candidates = m.s.indexCandidates(filter)
	}
	out := make([]isolation.Container, 0, len(candidates))
	for _, c := range candidates {
		if c.matches(filter) {
			out = append(out, &memRef{s: m.s, c: c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Handle() < out[j].Handle() })
	return out, nil
}

// indexCandidates returns the containers holding the rarest of filter's pairs.
func (s *MemoryState) indexCandidates(filter isolation.Properties) []*memContainer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best map[*memContainer]struct{}
	first := true
	for k, v := range filter {
		set := s.index[k][v]
		if first || len(set) < len(best) {
			best, first = set, false
		}
		if len(best) == 0 {
			return nil
		}
	}
	out := make([]*memContainer, 0, len(best))
	for c := range best {
		out = append(out, c)
	}
	return out
}

// BulkMetrics implements isolation.Backend.
func (m *Memory) BulkMetrics(ctx context.Context, handles []string) (map[string]isolation.Metrics, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]isolation.Metrics, len(handles))
	for _, h := range handles {
		c := m.s.get(h)
		if c == nil {
			continue
		}
		if met, err := c.metrics(); err == nil {
			out[h] = met
		}
	}
	return out, nil
}

// InjectEvent records event in the container's Info.Events, as a real backend does when the
// kernel reports one. isolation.EventOutOfMemory also kills every process of the container
// with exit status 137, as the OOM killer would.
// Errors: ErrNotFound.
func (m *Memory) InjectEvent(ctx context.Context, handle, event string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := m.s.get(handle)
	if c == nil {
		return fmt.Errorf("inject event into container %q: %w", handle, isolation.ErrNotFound)
	}
	if err := c.event(event); err != nil {
		return fmt.Errorf("inject event into container %q: %w", handle, err)
	}
	return nil
}

// Spec returns the spec container handle was created with, as the backend recorded it: Limits,
// Env, BindMounts, RootFS, Network, Privileged. Properties and NetIn are left out (see
// Container.Properties and ContainerInfo.MappedPorts).
// Errors: ErrNotFound.
func (m *Memory) Spec(handle string) (isolation.ContainerSpec, error) {
	c := m.s.get(handle)
	if c == nil {
		return isolation.ContainerSpec{}, fmt.Errorf("spec of container %q: %w", handle, isolation.ErrNotFound)
	}
	spec := c.spec
	spec.Env = append([]string(nil), spec.Env...)
	spec.BindMounts = append([]isolation.BindMount(nil), spec.BindMounts...)
	return spec, nil
}

// Len returns how many containers exist, for tests and simulators.
func (m *Memory) Len() int {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return int(m.s.count)
}

// containerIP renders an allocated address offset inside the subnet.
func (s *MemoryState) containerIP(off uint32) string {
	if off == 0 {
		return ""
	}
	b := s.subnet.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}
