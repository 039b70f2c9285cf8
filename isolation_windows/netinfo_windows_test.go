package isolationwindows

import (
	"context"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// TestProcessModeNetInfo: a process-mode container has no address of its own. Its port
// answers at HostIP on the allocated host port, so ContainerIP is empty and callers (the
// agent's health checks, netinfo) use the mapping rather than the nominal container port.
func TestProcessModeNetInfo(t *testing.T) {
	cfg := processConfig(scratchDir(t))
	b := newProcessBackend(t, cfg)
	t.Cleanup(func() { destroyAll(t, b) })
	ctx := context.Background()
	c, err := b.Create(ctx, isolation.ContainerSpec{
		Handle: "netinfo", RootFS: "preloaded:" + processStack,
		NetIn: []isolation.NetIn{{ContainerPort: 8080}},
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.ContainerIP != "" || info.HostIP != cfg.HostIP {
		t.Errorf("HostIP %q, ContainerIP %q: want %q and none", info.HostIP, info.ContainerIP, cfg.HostIP)
	}
	if len(info.MappedPorts) != 1 || info.MappedPorts[0].ContainerPort != 8080 ||
		info.MappedPorts[0].HostPort < cfg.PortRangeLo || info.MappedPorts[0].HostPort > cfg.PortRangeHi {
		t.Errorf("MappedPorts %+v: want 8080 mapped into %d-%d", info.MappedPorts, cfg.PortRangeLo, cfg.PortRangeHi)
	}
}
