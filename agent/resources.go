package agent

import (
	"fmt"
	"strings"
	"sync"

	"github.com/trellis-run/trellis/bbs/models"
)

// ledger accounts for what the cell has reserved out of its capacity. Every container holds
// one reservation from the moment its work is accepted until it is destroyed.
type ledger struct {
	mu       sync.Mutex
	capacity models.Resources
	used     models.Resources
	held     map[string]models.Resources // by container handle
}

func newLedger(capacity models.Resources) *ledger {
	return &ledger{capacity: capacity, held: map[string]models.Resources{}}
}

// reserve holds r (containers forced to 1) for handle. Errors: ErrInsufficientResources naming
// what is short in Diego's words ("insufficient resources: memory, disk"). Reserving an
// already held handle is a no-op.
func (l *ledger) reserve(handle string, r models.Resources) error {
	r.Containers = 1
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[handle]; ok {
		return nil
	}
	var short []string
	if l.used.MemoryMB+r.MemoryMB > l.capacity.MemoryMB {
		short = append(short, "memory")
	}
	if l.used.DiskMB+r.DiskMB > l.capacity.DiskMB {
		short = append(short, "disk")
	}
	if l.used.Containers+r.Containers > l.capacity.Containers {
		short = append(short, "containers")
	}
	if len(short) > 0 {
		return fmt.Errorf("%w: %s", ErrInsufficientResources, strings.Join(short, ", "))
	}
	l.held[handle] = r
	l.used.MemoryMB += r.MemoryMB
	l.used.DiskMB += r.DiskMB
	l.used.Containers += r.Containers
	return nil
}

// force holds r for handle even past capacity: a container found running after a restart is
// there whether or not it fits.
func (l *ledger) force(handle string, r models.Resources) {
	r.Containers = 1
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[handle]; ok {
		return
	}
	l.held[handle] = r
	l.used.MemoryMB += r.MemoryMB
	l.used.DiskMB += r.DiskMB
	l.used.Containers += r.Containers
}

// release returns handle's reservation; releasing an unknown handle does nothing.
func (l *ledger) release(handle string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.held[handle]
	if !ok {
		return
	}
	delete(l.held, handle)
	l.used.MemoryMB -= r.MemoryMB
	l.used.DiskMB -= r.DiskMB
	l.used.Containers -= r.Containers
}

// available is capacity minus reservations, floored at zero.
func (l *ledger) available() models.Resources {
	l.mu.Lock()
	defer l.mu.Unlock()
	return models.Resources{
		MemoryMB:   max(0, l.capacity.MemoryMB-l.used.MemoryMB),
		DiskMB:     max(0, l.capacity.DiskMB-l.used.DiskMB),
		Containers: max(0, l.capacity.Containers-l.used.Containers),
	}
}
