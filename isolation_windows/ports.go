package isolationwindows

import (
	"fmt"
	"net"
	"sync"

	"github.com/trellis-run/trellis/isolation"
)

// portAllocator hands out host ports for NetIn: the next free port of a range after the
// last one handed out (a released port is not reused at once), skipping ports the host
// already uses (free reports whether a port can be bound now), or a requested one.
type portAllocator struct {
	mu     sync.Mutex
	lo, hi uint32
	next   uint32
	used   map[uint32]bool
	free   func(port uint32) bool
}

func newPortAllocator(lo, hi uint32, free func(uint32) bool) *portAllocator {
	if free == nil {
		free = func(uint32) bool { return true }
	}
	return &portAllocator{lo: lo, hi: hi, next: lo, used: map[uint32]bool{}, free: free}
}

// grant maps every NetIn to a host port, all or nothing.
// Errors: ErrInsufficientResources (a requested port is in use, or the range is
// exhausted).
func (a *portAllocator) grant(netIn []isolation.NetIn) ([]isolation.PortMapping, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []isolation.PortMapping
	undo := func() {
		for _, m := range out {
			delete(a.used, m.HostPort)
		}
	}
	for i, n := range netIn {
		hp := n.HostPort
		if hp != 0 {
			if a.used[hp] || !a.free(hp) {
				undo()
				return nil, fmt.Errorf("isolation_windows: NetIn[%d].HostPort %d is in use: %w", i, hp, isolation.ErrInsufficientResources)
			}
		} else {
			var ok bool
			if hp, ok = a.allocateLocked(); !ok {
				undo()
				return nil, fmt.Errorf("isolation_windows: %w: no free host port in %d-%d", isolation.ErrInsufficientResources, a.lo, a.hi)
			}
		}
		a.used[hp] = true
		out = append(out, isolation.PortMapping{HostPort: hp, ContainerPort: n.ContainerPort})
	}
	return out, nil
}

func (a *portAllocator) allocateLocked() (uint32, bool) {
	for range a.hi - a.lo + 1 {
		p := a.next
		if a.next == a.hi {
			a.next = a.lo
		} else {
			a.next++
		}
		if !a.used[p] && a.free(p) {
			return p, true
		}
	}
	return 0, false
}

// claim marks a port as used (a container found in the state dir).
func (a *portAllocator) claim(port uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.used[port] = true
}

func (a *portAllocator) release(ms []isolation.PortMapping) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ms {
		delete(a.used, m.HostPort)
	}
}

// portFree reports whether TCP port p can be bound on every address now.
func portFree(p uint32) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
