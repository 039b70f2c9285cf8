package isolationtest

import (
	"context"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// MemoryRootFS is the rootfs URI MemoryHarness creates containers with.
const MemoryRootFS = "preloaded:cflinuxfs4"

// MemoryHarness adapts the in-memory backend (DefaultMemoryConfig) to the conformance suite.
// Reopen returns a new Memory over the same MemoryState; Program is MemoryProgram.
func MemoryHarness() Harness {
	return Harness{
		New: func(t *testing.T) isolation.Backend {
			m, err := NewMemory(DefaultMemoryConfig())
			if err != nil {
				t.Fatalf("NewMemory: %v", err)
			}
			t.Cleanup(func() { destroyAll(t, m) })
			return m
		},
		Reopen: func(t *testing.T, b isolation.Backend) isolation.Backend {
			m, ok := b.(*Memory)
			if !ok {
				t.Fatalf("MemoryHarness.Reopen: backend is a %T, not a *Memory", b)
			}
			return ReopenMemory(m.State())
		},
		RootFS:  MemoryRootFS,
		Program: MemoryProgram,
	}
}

// destroyAll destroys every container of m, ending their programs' goroutines.
func destroyAll(t *testing.T, m *Memory) {
	ctx := context.Background()
	all, err := m.List(ctx, nil)
	if err != nil {
		t.Errorf("cleanup: List: %v", err)
		return
	}
	for _, c := range all {
		if err := m.Destroy(ctx, c.Handle()); err != nil {
			t.Errorf("cleanup: Destroy(%q): %v", c.Handle(), err)
		}
	}
}
