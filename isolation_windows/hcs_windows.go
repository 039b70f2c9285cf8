package isolationwindows

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/Microsoft/hcsshim"
	"github.com/Microsoft/hcsshim/hcn"

	"github.com/trellis-run/trellis/isolation"
)

// hcsshimAPI implements hcsAPI with hcsshim's public (schema1) API.
type hcsshimAPI struct {
	mu      sync.Mutex
	systems map[string]hcsshim.Container
}

func newHcsshimAPI() *hcsshimAPI { return &hcsshimAPI{systems: map[string]hcsshim.Container{}} }

func (a *hcsshimAPI) system(id string) (hcsshim.Container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.systems[id]
	if c == nil {
		return nil, fmt.Errorf("compute system %s: %w", id, isolation.ErrNotFound)
	}
	return c, nil
}

func (a *hcsshimAPI) LayerID(layerPath string) (string, error) {
	g, err := hcsshim.NameToGuid(filepath.Base(layerPath))
	if err != nil {
		return "", err
	}
	return g.ToString(), nil
}

func (a *hcsshimAPI) PrepareScratch(ctx context.Context, scratchDir, id string, parents []string) (string, error) {
	info := hcsshim.DriverInfo{HomeDir: scratchDir}
	if err := hcsshim.CreateScratchLayer(info, id, parents[0], parents); err != nil {
		return "", fmt.Errorf("CreateScratchLayer: %w", err)
	}
	if err := hcsshim.ActivateLayer(info, id); err != nil {
		hcsshim.DestroyLayer(info, id)
		return "", fmt.Errorf("ActivateLayer: %w", err)
	}
	if err := hcsshim.PrepareLayer(info, id, parents); err != nil {
		hcsshim.DeactivateLayer(info, id)
		hcsshim.DestroyLayer(info, id)
		return "", fmt.Errorf("PrepareLayer: %w", err)
	}
	vol, err := hcsshim.GetLayerMountPath(info, id)
	if err != nil {
		a.ReleaseScratch(ctx, scratchDir, id)
		return "", fmt.Errorf("GetLayerMountPath: %w", err)
	}
	return vol, nil
}

func (a *hcsshimAPI) ReleaseScratch(ctx context.Context, scratchDir, id string) error {
	info := hcsshim.DriverInfo{HomeDir: scratchDir}
	hcsshim.UnprepareLayer(info, id)
	hcsshim.DeactivateLayer(info, id)
	return hcsshim.DestroyLayer(info, id)
}

func (a *hcsshimAPI) CreateComputeSystem(ctx context.Context, id string, doc []byte) error {
	var cfg hcsshim.ContainerConfig
	if err := json.Unmarshal(doc, &cfg); err != nil {
		return fmt.Errorf("decoding the container document: %w", err)
	}
	c, err := hcsshim.CreateContainer(id, &cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.systems[id] = c
	a.mu.Unlock()
	return nil
}

func (a *hcsshimAPI) OpenComputeSystem(ctx context.Context, id string) error {
	c, err := hcsshim.OpenContainer(id)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.systems[id] = c
	a.mu.Unlock()
	return nil
}

func (a *hcsshimAPI) Start(ctx context.Context, id string) error {
	c, err := a.system(id)
	if err != nil {
		return err
	}
	return c.Start()
}

func (a *hcsshimAPI) CreateProcess(ctx context.Context, id string, doc []byte) (hcsProcess, error) {
	c, err := a.system(id)
	if err != nil {
		return nil, err
	}
	var pc hcsshim.ProcessConfig
	if err := json.Unmarshal(doc, &pc); err != nil {
		return nil, fmt.Errorf("decoding the process document: %w", err)
	}
	return c.CreateProcess(&pc)
}

func (a *hcsshimAPI) OpenProcess(ctx context.Context, id string, pid int) (hcsProcess, error) {
	c, err := a.system(id)
	if err != nil {
		return nil, err
	}
	return c.OpenProcess(pid)
}

func (a *hcsshimAPI) Shutdown(ctx context.Context, id string) error {
	c, err := a.system(id)
	if err != nil {
		return err
	}
	if err := c.Shutdown(); err != nil && !hcsshim.IsPending(err) && !hcsshim.IsAlreadyStopped(err) {
		return err
	}
	return nil
}

func (a *hcsshimAPI) Terminate(ctx context.Context, id string) error {
	c, err := a.system(id)
	if err != nil {
		return err
	}
	if err := c.Terminate(); err != nil && !hcsshim.IsPending(err) && !hcsshim.IsAlreadyStopped(err) {
		return err
	}
	return nil
}

func (a *hcsshimAPI) Statistics(ctx context.Context, id string) (hcsStats, error) {
	c, err := a.system(id)
	if err != nil {
		return hcsStats{}, err
	}
	st, err := c.Statistics()
	if err != nil {
		return hcsStats{}, err
	}
	procs, err := c.ProcessList()
	if err != nil {
		return hcsStats{}, err
	}
	return hcsStats{
		MemoryPrivateWorkingSetBytes: st.Memory.UsagePrivateWorkingSetBytes,
		CPUTotalRuntime100ns:         st.Processor.TotalRuntime100ns,
		Processes:                    uint64(len(procs)),
	}, nil
}

func (a *hcsshimAPI) Close(id string) error {
	a.mu.Lock()
	c := a.systems[id]
	delete(a.systems, id)
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}

// hcnAPI implements hnsAPI with hcn (HNS schema v2).
type hcnAPI struct{}

func (hcnAPI) CreateEndpoint(ctx context.Context, network string, doc []byte) (string, string, error) {
	nw, err := hcn.GetNetworkByName(network)
	if err != nil {
		return "", "", fmt.Errorf("HNS network %q: %w", network, err)
	}
	var ep hcn.HostComputeEndpoint
	if err := json.Unmarshal(doc, &ep); err != nil {
		return "", "", fmt.Errorf("decoding the endpoint document: %w", err)
	}
	created, err := nw.CreateEndpoint(&ep)
	if err != nil {
		return "", "", err
	}
	ip := ""
	if len(created.IpConfigurations) > 0 {
		ip = created.IpConfigurations[0].IpAddress
	}
	return created.Id, ip, nil
}

func (hcnAPI) DeleteEndpoint(ctx context.Context, id string) error {
	ep, err := hcn.GetEndpointByID(id)
	if hcn.IsNotFoundError(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return ep.Delete()
}
