package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// cellSpec is what a host needs to start one cell.
type cellSpec struct {
	Index int `json:"index"`
	Class int `json:"class"`
}

// cellHost runs simulated cells: in this process (localHost) or in a worker process
// (remoteHost). Cells of one host share nothing but the process.
type cellHost interface {
	// kill ends cells as a machine failure would: no more heartbeats, every container gone.
	kill(ctx context.Context, ids []string) error
	// containers lists the containers of the host's live cells.
	containers(ctx context.Context) ([]agent.ContainerStatus, error)
	// crashOn starts the crashy apps' crashes.
	crashOn(ctx context.Context) error
	// latencies returns the host's cumulative BBS call latencies (nil: they are the
	// cluster's own).
	latencies(ctx context.Context) (*latDump, error)
	// heap returns the live heap of the host's process after a GC; ok is false for cells in
	// the simulator's own process, whose heap heapByComponent attributes.
	heap(ctx context.Context) (bytes uint64, ok bool, err error)
	close() error
}

// hostConfig is what every host of a cluster shares.
type hostConfig struct {
	Classes     []CellClass   `json:"classes"`
	Zones       int           `json:"zones"`
	PresenceTTL time.Duration `json:"presence_ttl"`
	Transport   string        `json:"transport"`
	BBSURL      string        `json:"bbs_url"`
	DataDir     string        `json:"data_dir"`
	Seed        int64         `json:"seed"`
	Verbose     bool          `json:"verbose"`
}

// localCell is one simulated cell: a real agent on its own in-memory backend.
type localCell struct {
	id    string
	agent *agent.Agent
	mem   *isolationtest.Memory
	stop  context.CancelFunc
	done  chan struct{}
	dead  bool
}

// localHost runs cells in this process.
type localHost struct {
	cfg hostConfig
	log *slog.Logger
	// direct, when set, is the BBS's store for the in-process transport.
	direct store.Interface
	lat    *latencies

	crashOnce sync.Once
	crashCh   chan struct{}
	rngMu     sync.Mutex
	rng       *rand.Rand

	mu    sync.Mutex
	cells map[string]*localCell
}

func newLocalHost(cfg hostConfig, direct store.Interface, lat *latencies, logger *slog.Logger) *localHost {
	return &localHost{cfg: cfg, log: logger, direct: direct, lat: lat, crashCh: make(chan struct{}),
		rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0xce11)), cells: map[string]*localCell{}}
}

// cellConns bounds each simulated cell's connections to the BBS (its event stream and
// requests): a thousand cells must stay within the BBS process's open-file limit.
const cellConns = 8

func cellID(i int) string { return fmt.Sprintf("cell-%04d", i) }

// start creates the cells (a few at a time) and runs them; it does not wait for their
// presences.
func (h *localHost) start(ctx context.Context, specs []cellSpec) error {
	cells := make([]*localCell, len(specs))
	errs := make([]error, len(specs))
	sem := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, sp := range specs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cells[i], errs[i] = h.newCell(ctx, sp)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, lc := range cells {
			if lc != nil {
				lc.agent.Close()
			}
		}
		return err
	}
	h.mu.Lock()
	for _, lc := range cells {
		h.cells[lc.id] = lc
	}
	h.mu.Unlock()
	for _, lc := range cells {
		h.run(lc)
	}
	return nil
}

func (h *localHost) storeFor(identity string) (store.Interface, error) {
	s := h.direct
	if h.cfg.Transport == TransportHTTP {
		cc := client.DefaultConfig()
		cc.URL, cc.Insecure, cc.Identity = h.cfg.BBSURL, true, identity
		cc.MaxConns = cellConns
		cl, err := client.New(cc)
		if err != nil {
			return nil, fmt.Errorf("sim: BBS client for %s: %w", identity, err)
		}
		s = cl
	}
	return &timedStore{Interface: s, h: h.lat.role("cell")}, nil
}

func (h *localHost) newCell(ctx context.Context, sp cellSpec) (*localCell, error) {
	cl := h.cfg.Classes[sp.Class]
	id := cellID(sp.Index)
	mc := isolationtest.DefaultMemoryConfig()
	mc.Capacity = isolation.Capacity{MemoryBytes: uint64(cl.MemoryMB) << 20, DiskBytes: uint64(cl.DiskMB) << 20,
		MaxContainers: uint64(cl.Containers)}
	mc.Stacks, mc.RootFSSchemes = cl.Stacks, cl.Schemes
	mem, err := isolationtest.NewMemory(mc)
	if err != nil {
		return nil, fmt.Errorf("sim: cell %s backend: %w", id, err)
	}
	mem.RegisterProgram(programApp, h.appProgram)

	cfg := agent.DefaultConfig()
	cfg.CellID = id
	cfg.Zone = fmt.Sprintf("z%d", sp.Index%h.cfg.Zones+1)
	cfg.BBS = agent.BBSConfig{URL: h.cfg.BBSURL, Insecure: true}
	cfg.Backend = agent.BackendMemory
	cfg.RootFSProviders = map[string]string{}
	for _, s := range cl.Stacks {
		cfg.RootFSProviders["preloaded:"+s] = ""
	}
	for _, s := range cl.Schemes {
		cfg.RootFSProviders[s] = ""
	}
	cfg.PlacementTags, cfg.OptionalPlacementTags = cl.PlacementTags, cl.OptionalPlacementTags
	cfg.DataDir = filepath.Join(h.cfg.DataDir, "cells", id)
	cfg.Capacity = agent.CapacityConfig{MemoryMB: cl.MemoryMB, DiskMB: cl.DiskMB, Containers: cl.Containers}
	cfg.PresenceTTL = agent.Duration(h.cfg.PresenceTTL)
	cfg.GracefulStop = agent.Duration(time.Second)
	cfg.LogBytesPerInstance = 64 << 10
	cfg.CacheBytes = 1 << 20
	st, err := h.storeFor("cell:" + id)
	if err != nil {
		return nil, err
	}
	a, err := agent.New(ctx, cfg, agent.Options{Store: st, Backend: mem, Logger: h.log.With("component", "agent")})
	if err != nil {
		return nil, fmt.Errorf("sim: cell %s: %w", id, err)
	}
	return &localCell{id: id, agent: a, mem: mem}, nil
}

func (h *localHost) run(lc *localCell) {
	ctx, cancel := context.WithCancel(context.Background())
	lc.stop, lc.done = cancel, make(chan struct{})
	go func() {
		defer close(lc.done)
		if err := lc.agent.Run(ctx); err != nil {
			h.log.Error("cell agent failed", "cell", lc.id, "error", err)
		}
	}()
}

// appProgram is what every simulated instance runs: it serves until stopped, or, for a
// crashy app once crashes are on, exits 1 after 30–360 s (Diego's crash rates).
func (h *localHost) appProgram(ctx context.Context, pc *isolationtest.ProcContext) int {
	crashy := false
	for _, e := range pc.Env {
		if e == envCrashy+"=1" {
			crashy = true
		}
	}
	if !crashy {
		<-ctx.Done()
		return 0
	}
	select {
	case <-ctx.Done():
		return 0
	case <-h.crashCh:
	}
	h.rngMu.Lock()
	after := 30*time.Second + time.Duration(h.rng.Int64N(int64(330*time.Second)))
	h.rngMu.Unlock()
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0
	case <-t.C:
		return 1
	}
}

func (h *localHost) kill(_ context.Context, ids []string) error {
	var wg sync.WaitGroup
	h.mu.Lock()
	for _, id := range ids {
		lc := h.cells[id]
		if lc == nil || lc.dead {
			continue
		}
		lc.dead = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.stop()
			<-lc.done
			ctx := context.Background()
			conts, _ := lc.mem.List(ctx, nil)
			for _, ct := range conts {
				_ = lc.mem.Destroy(ctx, ct.Handle())
			}
			lc.agent.Close()
		}()
	}
	h.mu.Unlock()
	wg.Wait()
	return nil
}

func (h *localHost) containers(context.Context) ([]agent.ContainerStatus, error) {
	h.mu.Lock()
	cells := make([]*localCell, 0, len(h.cells))
	for _, lc := range h.cells {
		if !lc.dead {
			cells = append(cells, lc)
		}
	}
	h.mu.Unlock()
	var out []agent.ContainerStatus
	for _, lc := range cells {
		select {
		case <-lc.done:
			continue // drained and gone
		default:
		}
		out = append(out, lc.agent.Containers()...)
	}
	return out, nil
}

func (h *localHost) crashOn(context.Context) error {
	h.crashOnce.Do(func() { close(h.crashCh) })
	return nil
}

func (h *localHost) latencies(context.Context) (*latDump, error) { return nil, nil }

func (h *localHost) heap(context.Context) (uint64, bool, error) { return 0, false, nil }

func (h *localHost) close() error {
	h.mu.Lock()
	cells := make([]*localCell, 0, len(h.cells))
	for _, lc := range h.cells {
		cells = append(cells, lc)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, lc := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.stop()
			<-lc.done
			lc.agent.Close()
		}()
	}
	wg.Wait()
	return nil
}

// The worker protocol: JSON lines. The parent sends a request and reads one response.
type workerRequest struct {
	Op    string      `json:"op"` // start, kill, containers, crash_on, latencies, heap
	Host  *hostConfig `json:"host,omitempty"`
	Cells []cellSpec  `json:"cells,omitempty"`
	IDs   []string    `json:"ids,omitempty"`
}

type workerResponse struct {
	Error      string                  `json:"error,omitempty"`
	Containers []agent.ContainerStatus `json:"containers,omitempty"`
	Latencies  *latDump                `json:"latencies,omitempty"`
	HeapBytes  uint64                  `json:"heap_bytes,omitempty"`
}

// remoteHost runs cells in a worker process (see RunWorker).
type remoteHost struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	mu   sync.Mutex
	done chan struct{}
}

// startRemoteHost starts a worker with command and asks it to start cells.
func startRemoteHost(ctx context.Context, command []string, cfg hostConfig, specs []cellSpec) (*remoteHost, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("sim: worker: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("sim: worker: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sim: start worker %v: %w", command, err)
	}
	h := &remoteHost{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(h.done)
	}()
	if _, err := h.call(ctx, workerRequest{Op: "start", Host: &cfg, Cells: specs}); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *remoteHost) call(ctx context.Context, req workerRequest) (*workerResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("sim: worker request: %w", err)
	}
	if _, err := h.in.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("sim: worker %s: %w", req.Op, err)
	}
	type result struct {
		resp *workerResponse
		err  error
	}
	rc := make(chan result, 1)
	go func() {
		line, err := h.out.ReadBytes('\n')
		if err != nil {
			rc <- result{err: fmt.Errorf("sim: worker %s: %w", req.Op, err)}
			return
		}
		var resp workerResponse
		if err := json.Unmarshal(line, &resp); err != nil {
			rc <- result{err: fmt.Errorf("sim: worker %s: answer: %w", req.Op, err)}
			return
		}
		rc <- result{resp: &resp}
	}()
	select {
	case r := <-rc:
		if r.err != nil {
			return nil, r.err
		}
		if r.resp.Error != "" {
			return nil, fmt.Errorf("sim: worker %s: %s", req.Op, r.resp.Error)
		}
		return r.resp, nil
	case <-ctx.Done():
		// The answer is abandoned; the host is unusable from here on.
		h.cmd.Process.Kill()
		return nil, ctx.Err()
	}
}

func (h *remoteHost) kill(ctx context.Context, ids []string) error {
	_, err := h.call(ctx, workerRequest{Op: "kill", IDs: ids})
	return err
}

func (h *remoteHost) containers(ctx context.Context) ([]agent.ContainerStatus, error) {
	resp, err := h.call(ctx, workerRequest{Op: "containers"})
	if err != nil {
		return nil, err
	}
	return resp.Containers, nil
}

func (h *remoteHost) crashOn(ctx context.Context) error {
	_, err := h.call(ctx, workerRequest{Op: "crash_on"})
	return err
}

func (h *remoteHost) latencies(ctx context.Context) (*latDump, error) {
	resp, err := h.call(ctx, workerRequest{Op: "latencies"})
	if err != nil {
		return nil, err
	}
	return resp.Latencies, nil
}

func (h *remoteHost) heap(ctx context.Context) (uint64, bool, error) {
	resp, err := h.call(ctx, workerRequest{Op: "heap"})
	if err != nil {
		return 0, false, err
	}
	return resp.HeapBytes, true, nil
}

// close ends the worker: closing its input stops its cells; it is killed if it lingers.
func (h *remoteHost) close() error {
	h.in.Close()
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
	return nil
}

// RunWorker serves one worker process of a simulator: it reads requests from in, answers on
// out, and runs its cells until in is closed. A program that can be a worker calls it when
// started as one (simbench's -sim-worker flag).
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReaderSize(in, 1<<20))
	enc := json.NewEncoder(out)
	var host *localHost
	defer func() {
		if host != nil {
			host.close()
		}
	}()
	for {
		var req workerRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("sim worker: read request: %w", err)
		}
		var resp workerResponse
		var err error
		switch {
		case req.Op == "start" && host == nil && req.Host != nil:
			logger := slog.New(slog.DiscardHandler)
			if req.Host.Verbose {
				logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			}
			host = newLocalHost(*req.Host, nil, newLatencies(), logger)
			err = host.start(ctx, req.Cells)
		case host == nil:
			err = fmt.Errorf("request %q before start", req.Op)
		case req.Op == "kill":
			err = host.kill(ctx, req.IDs)
		case req.Op == "containers":
			resp.Containers, err = host.containers(ctx)
		case req.Op == "crash_on":
			err = host.crashOn(ctx)
		case req.Op == "latencies":
			resp.Latencies = host.lat.dump()
		case req.Op == "heap":
			resp.HeapBytes = liveHeap()
		default:
			err = fmt.Errorf("unknown request %q", req.Op)
		}
		if err != nil {
			resp.Error = err.Error()
		}
		if err := enc.Encode(&resp); err != nil {
			return fmt.Errorf("sim worker: answer: %w", err)
		}
	}
}
