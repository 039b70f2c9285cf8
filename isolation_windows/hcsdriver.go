package isolationwindows

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/trellis-run/trellis/isolation"
)

// hcsDriver runs container-mode containers: a Windows Server container (process-isolated
// compute system) per container over the stack's layers and a scratch layer, with bind
// mounts as mapped directories and NetIn as port mappings of an HNS NAT endpoint.
type hcsDriver struct {
	cfg Config
	log *slog.Logger
	hcs hcsAPI
	hns hnsAPI

	mu    sync.Mutex
	procs map[string]map[*hcsProc]struct{} // running processes by container handle
}

func newHCSDriver(cfg Config, log *slog.Logger, hcs hcsAPI, hns hnsAPI) *hcsDriver {
	return &hcsDriver{cfg: cfg, log: log, hcs: hcs, hns: hns, procs: map[string]map[*hcsProc]struct{}{}}
}

// systemID names a container's compute system, scratch layer and endpoint: unique per state
// dir and handle.
func systemID(stateDir, handle string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return "trellis-" + hex.EncodeToString(sum[:6]) + "-" + handle
}

func (d *hcsDriver) create(ctx context.Context, rec *containerRecord) (err error) {
	st := d.cfg.Stacks[rec.Stack]
	id := systemID(d.cfg.StateDir, rec.Handle)
	cleanup := context.WithoutCancel(ctx)
	layers := make([]hcsLayer, 0, len(st.Layers))
	for _, p := range st.Layers {
		lid, err := d.hcs.LayerID(p)
		if err != nil {
			return fmt.Errorf("layer %s: %w", p, err)
		}
		layers = append(layers, hcsLayer{ID: lid, Path: p})
	}
	vol, err := d.hcs.PrepareScratch(ctx, d.cfg.ScratchDir, id, st.Layers)
	if err != nil {
		return fmt.Errorf("preparing the scratch layer: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := d.hcs.ReleaseScratch(cleanup, d.cfg.ScratchDir, id); rerr != nil {
				d.log.Warn("isolation_windows: releasing the scratch layer of a failed create", "id", id, "err", rerr)
			}
		}
	}()
	var epID, ip string
	if rec.Spec.Network != isolation.NetworkNone {
		epDoc, err := buildEndpointDoc(id, "", rec.Ports)
		if err != nil {
			return err
		}
		data, err := json.Marshal(epDoc)
		if err != nil {
			return err
		}
		if epID, ip, err = d.hns.CreateEndpoint(ctx, d.cfg.NATNetwork, data); err != nil {
			return fmt.Errorf("creating the HNS endpoint on %q: %w", d.cfg.NATNetwork, err)
		}
		defer func() {
			if err != nil {
				d.hns.DeleteEndpoint(cleanup, epID)
			}
		}()
	}
	doc := buildContainerDoc(id, rec.Spec, layers, vol, filepath.Join(d.cfg.ScratchDir, id), epID)
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := d.hcs.CreateComputeSystem(ctx, id, data); err != nil {
		return fmt.Errorf("creating compute system %s: %w", id, err)
	}
	if err := d.hcs.Start(ctx, id); err != nil {
		d.hcs.Terminate(cleanup, id)
		d.hcs.Close(id)
		return fmt.Errorf("starting compute system %s: %w", id, err)
	}
	rec.SystemID, rec.EndpointID, rec.ContainerIP, rec.RootDir = id, epID, ip, vol
	for _, bm := range rec.Spec.BindMounts {
		rec.Mounts = append(rec.Mounts, mountPoint{Dst: cleanContainerPath(bm.DstPath), Src: bm.SrcPath})
	}
	return nil
}

func (d *hcsDriver) open(ctx context.Context, rec *containerRecord) error {
	if err := d.hcs.OpenComputeSystem(ctx, rec.SystemID); err != nil {
		return fmt.Errorf("reopening compute system %s: %w", rec.SystemID, err)
	}
	return nil
}

func (d *hcsDriver) track(handle string, p *hcsProc, add bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if add {
		if d.procs[handle] == nil {
			d.procs[handle] = map[*hcsProc]struct{}{}
		}
		d.procs[handle][p] = struct{}{}
		return
	}
	delete(d.procs[handle], p)
}

func (d *hcsDriver) start(ctx context.Context, rec *containerRecord, l launch) (osProcess, error) {
	data, err := json.Marshal(buildProcessDoc(l))
	if err != nil {
		return nil, err
	}
	stdoutF, err := os.Create(l.stdoutPath)
	if err != nil {
		return nil, err
	}
	stderrF, err := os.Create(l.stderrPath)
	if err != nil {
		stdoutF.Close()
		return nil, err
	}
	hp, err := d.hcs.CreateProcess(ctx, rec.SystemID, data)
	if err != nil {
		stdoutF.Close()
		stderrF.Close()
		return nil, err
	}
	stdin, stdout, stderr, err := hp.Stdio()
	if err != nil {
		hp.Kill()
		hp.Close()
		stdoutF.Close()
		stderrF.Close()
		return nil, fmt.Errorf("process stdio: %w", err)
	}
	p := &hcsProc{d: d, handle: rec.Handle, hp: hp}
	for _, c := range []struct {
		dst *os.File
		src io.ReadCloser
	}{{stdoutF, stdout}, {stderrF, stderr}} {
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			io.Copy(c.dst, c.src)
			c.src.Close()
			c.dst.Close()
		}()
	}
	go func() {
		if l.stdin != nil {
			io.Copy(stdin, l.stdin)
		}
		stdin.Close()
		hp.CloseStdin()
	}()
	d.track(rec.Handle, p, true)
	return p, nil
}

func (d *hcsDriver) reattach(ctx context.Context, rec *containerRecord, pr processRecord) (osProcess, error) {
	hp, err := d.hcs.OpenProcess(ctx, rec.SystemID, pr.Pid)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w (%v)", pr.Pid, isolation.ErrNotFound, err)
	}
	p := &hcsProc{d: d, handle: rec.Handle, hp: hp}
	d.track(rec.Handle, p, true)
	return p, nil
}

// terminate shuts the container down: HCS delivers CTRL_SHUTDOWN to its processes.
func (d *hcsDriver) terminate(ctx context.Context, rec *containerRecord) error {
	return d.hcs.Shutdown(ctx, rec.SystemID)
}

func (d *hcsDriver) kill(ctx context.Context, rec *containerRecord) error {
	d.mu.Lock()
	for p := range d.procs[rec.Handle] {
		p.killed.Store(true)
	}
	d.mu.Unlock()
	return d.hcs.Terminate(ctx, rec.SystemID)
}

func (d *hcsDriver) destroy(ctx context.Context, rec *containerRecord) error {
	var errs []error
	if err := d.kill(ctx, rec); err != nil && !isolation.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := d.hcs.Close(rec.SystemID); err != nil {
		errs = append(errs, err)
	}
	if rec.EndpointID != "" {
		if err := d.hns.DeleteEndpoint(ctx, rec.EndpointID); err != nil {
			errs = append(errs, fmt.Errorf("deleting endpoint %s: %w", rec.EndpointID, err))
		}
	}
	if err := d.hcs.ReleaseScratch(ctx, d.cfg.ScratchDir, rec.SystemID); err != nil {
		errs = append(errs, fmt.Errorf("releasing the scratch layer: %w", err))
	}
	d.mu.Lock()
	delete(d.procs, rec.Handle)
	d.mu.Unlock()
	return errors.Join(errs...)
}

func (d *hcsDriver) metrics(ctx context.Context, rec *containerRecord) (isolation.Metrics, error) {
	st, err := d.hcs.Statistics(ctx, rec.SystemID)
	if err != nil {
		return isolation.Metrics{}, err
	}
	return isolation.Metrics{MemoryBytes: st.MemoryPrivateWorkingSetBytes, CPUNanos: st.CPUTotalRuntime100ns * 100, Pids: st.Processes}, nil
}

// events: schema1 HCS reports no memory-limit event for a process-isolated container.
func (d *hcsDriver) events(rec *containerRecord) []string { return nil }

func (d *hcsDriver) close() error { return nil }

// hcsProc is a container-mode process.
type hcsProc struct {
	d      *hcsDriver
	handle string
	hp     hcsProcess
	copies sync.WaitGroup
	killed atomic.Bool
}

func (p *hcsProc) pid() int             { return p.hp.Pid() }
func (p *hcsProc) creationTime() uint64 { return 0 }

func (p *hcsProc) wait() (int, error) {
	defer p.d.track(p.handle, p, false)
	werr := p.hp.Wait()
	p.copies.Wait()
	if p.killed.Load() {
		return exitKilled, nil
	}
	if werr != nil {
		return -1, fmt.Errorf("waiting for process %d: %w", p.hp.Pid(), werr)
	}
	return p.hp.ExitCode()
}

// terminate: hcsshim's public API has no per-process signal; Container.Stop (an HCS
// shutdown) is the graceful stop of container mode.
func (p *hcsProc) terminate() error {
	return unsupportedf("container mode: SignalTerminate of one process: HCS offers no per-process console event through hcsshim's public API; stop the container (HCS shutdown) instead")
}

func (p *hcsProc) kill() error {
	p.killed.Store(true)
	return p.hp.Kill()
}

func (p *hcsProc) release() { p.hp.Close() }
