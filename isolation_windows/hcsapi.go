package isolationwindows

import (
	"context"
	"io"
)

// hcsAPI is the part of the Host Compute Service container mode uses. Documents are the JSON
// of hcsContainerDoc and hcsProcessDoc. The windows implementation (hcs_windows.go) calls
// hcsshim; hcsFake (hcsfake.go) implements it in memory over host directories and processes,
// so that the mode's logic runs and is tested on any system.
type hcsAPI interface {
	// LayerID returns the GUID HCS knows a layer folder by.
	LayerID(layerPath string) (string, error)
	// PrepareScratch creates the scratch layer id in scratchDir over parents (topmost first)
	// and mounts it; it returns the volume path, which is also where the host sees the
	// container's C:\.
	PrepareScratch(ctx context.Context, scratchDir, id string, parents []string) (string, error)
	// ReleaseScratch unmounts and deletes the scratch layer (idempotent).
	ReleaseScratch(ctx context.Context, scratchDir, id string) error
	// CreateComputeSystem creates (but does not start) a compute system from doc.
	CreateComputeSystem(ctx context.Context, id string, doc []byte) error
	// OpenComputeSystem finds a compute system created earlier (by an earlier Backend).
	OpenComputeSystem(ctx context.Context, id string) error
	Start(ctx context.Context, id string) error
	// CreateProcess starts a process in the compute system from doc.
	CreateProcess(ctx context.Context, id string, doc []byte) (hcsProcess, error)
	// OpenProcess finds a process of the compute system by pid.
	OpenProcess(ctx context.Context, id string, pid int) (hcsProcess, error)
	// Shutdown asks the container's processes to stop (CTRL_SHUTDOWN to its console
	// processes) and returns without waiting.
	Shutdown(ctx context.Context, id string) error
	// Terminate ends the compute system at once.
	Terminate(ctx context.Context, id string) error
	// Statistics reads the compute system's usage.
	Statistics(ctx context.Context, id string) (hcsStats, error)
	// Close releases the handle to the compute system without ending it (idempotent).
	Close(id string) error
}

// hcsProcess is a process in a compute system (hcsshim's Process).
type hcsProcess interface {
	Pid() int
	Stdio() (io.WriteCloser, io.ReadCloser, io.ReadCloser, error)
	CloseStdin() error
	Wait() error
	ExitCode() (int, error)
	Kill() error
	Close() error
}

// hcsStats are the figures of schema1 Statistics container mode reports.
type hcsStats struct {
	MemoryPrivateWorkingSetBytes uint64
	CPUTotalRuntime100ns         uint64
	Processes                    uint64
}

// hnsAPI is the part of the Host Networking Service container mode uses. doc is the JSON of
// hnsEndpointDoc without HostComputeNetwork, which CreateEndpoint fills from network.
type hnsAPI interface {
	// CreateEndpoint creates an endpoint on the named network and returns its id and IP.
	CreateEndpoint(ctx context.Context, network string, doc []byte) (id, ip string, err error)
	// DeleteEndpoint deletes an endpoint (idempotent: an unknown id is not an error).
	DeleteEndpoint(ctx context.Context, id string) error
}
