package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// Domain is the domain of every simulated app.
const Domain = "sim"

// programApp is the one program of the in-memory backend the simulated apps run: it serves
// until stopped, or, for an app marked crashy, crashes at Diego's rates once crashes are on.
const programApp = "/bin/app"

// envCrashy marks a crashy app in its DesiredLRP's env.
const envCrashy = "SIM_CRASHY"

// Cell states.
const (
	cellAlive   = "alive"
	cellKilled  = "killed"
	cellDrained = "drained"
)

// simCell is one simulated cell: a real agent on its own in-memory backend.
type simCell struct {
	id    string
	class int
	agent *agent.Agent
	mem   *isolationtest.Memory
	stop  context.CancelFunc
	done  chan struct{}
	state string // guarded by Cluster.mu
}

// app is one pushed DesiredLRP.
type app struct {
	guid      string
	instances int32
	crashy    bool
}

// Cluster is a running simulated fleet: BBS, etcd, brain and cells in this process.
type Cluster struct {
	cfg    Config
	dir    string
	ownDir bool

	bbs      *standalone.BBS
	operator store.Interface
	reg      *prometheus.Registry
	brain    *brain.Brain
	stopBr   context.CancelFunc
	brDone   chan struct{}
	lat      *latencies
	obs      *observer
	stopObs  context.CancelFunc
	obsDone  chan struct{}
	crashOn  chan struct{}
	crashMu  sync.Once
	rngMu    sync.Mutex
	rng      *rand.Rand
	startErr error

	mu      sync.Mutex
	cells   []*simCell
	apps    []*app
	nextApp int
}

// Start starts etcd, the BBS, the brain and cfg.Cells cells, and returns once every cell's
// presence is in the BBS.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Cluster{cfg: cfg, lat: newLatencies(), crashOn: make(chan struct{}),
		rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5eed))}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.dir = cfg.DataDir
	if c.dir == "" {
		base := ""
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
		dir, err := os.MkdirTemp(base, "trellis-sim-")
		if err != nil {
			return nil, fmt.Errorf("sim: data dir: %w", err)
		}
		c.dir, c.ownDir = dir, true
	}

	bc := standalone.DefaultConfig()
	bc.DataDir = c.dir
	bc.Etcd.Endpoints = cfg.EtcdEndpoints
	bc.Server.ListenAddress = "127.0.0.1:0"
	bc.Server.Insecure = true
	b, err := standalone.Start(ctx, bc, cfg.Logger.With("component", "bbs"))
	if err != nil {
		return nil, fmt.Errorf("sim: start the BBS: %w", err)
	}
	c.bbs = b
	if c.operator, err = c.storeFor("operator", "operator"); err != nil {
		return nil, err
	}
	if err := c.operator.UpsertDomain(ctx, Domain, 0); err != nil {
		return nil, fmt.Errorf("sim: domain: %w", err)
	}

	// The observer follows the BBS in-process: it is the simulator's eyes, not a component
	// under test, and must not compete with the cells for HTTP connections.
	c.obs = newObserver()
	octx, ocancel := context.WithCancel(context.Background())
	c.stopObs, c.obsDone = ocancel, make(chan struct{})
	rev, err := c.obs.load(ctx, b.Store)
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(c.obsDone)
		c.obs.follow(octx, b.Store, rev)
	}()

	if err := c.startBrain(); err != nil {
		return nil, err
	}
	if err := c.startCells(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// storeFor returns the BBS as the role identity sees it, through the configured transport,
// timing every call under label.
func (c *Cluster) storeFor(label, identity string) (store.Interface, error) {
	var s store.Interface = c.bbs.Store
	if c.cfg.Transport == TransportHTTP {
		cc := client.DefaultConfig()
		cc.URL, cc.Insecure, cc.Identity = c.bbs.URL(), true, identity
		cl, err := client.New(cc)
		if err != nil {
			return nil, fmt.Errorf("sim: BBS client for %s: %w", identity, err)
		}
		s = cl
	}
	return &timedStore{Interface: s, h: c.lat.role(label)}, nil
}

func (c *Cluster) startBrain() error {
	bs, err := c.storeFor("brain", "brain")
	if err != nil {
		return err
	}
	cfg := brain.DefaultConfig()
	cfg.OwnerID = "sim-brain"
	c.reg = prometheus.NewRegistry()
	br, err := brain.New(cfg, bs, c.cfg.Logger.With("component", "brain"), c.reg)
	if err != nil {
		return fmt.Errorf("sim: brain: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.brain, c.stopBr, c.brDone = br, cancel, make(chan struct{})
	go func() {
		defer close(c.brDone)
		_ = br.Run(ctx)
	}()
	return nil
}

// startCells creates and runs every cell, a few at a time, and waits for their presences.
func (c *Cluster) startCells(ctx context.Context) error {
	start := time.Now()
	classOf := classAssignment(c.cfg.Cells, c.cfg.Classes)
	cells := make([]*simCell, c.cfg.Cells)
	errs := make([]error, c.cfg.Cells)
	sem := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range cells {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cells[i], errs[i] = c.newCell(ctx, i, classOf[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, sc := range cells {
			if sc != nil {
				sc.agent.Close()
			}
		}
		return err
	}
	c.mu.Lock()
	c.cells = cells
	c.mu.Unlock()
	for _, sc := range cells {
		c.runCell(sc)
	}
	err := waitFor(ctx, 2*c.cfg.PresenceTTL+time.Duration(c.cfg.Cells)*10*time.Millisecond, func() bool {
		return c.obs.cellCount() >= c.cfg.Cells
	})
	if err != nil {
		return fmt.Errorf("sim: %d of %d cells present: %w", c.obs.cellCount(), c.cfg.Cells, err)
	}
	c.cfg.Progress("%d cells present after %v", c.cfg.Cells, time.Since(start).Round(time.Millisecond))
	return nil
}

// classAssignment spreads the classes over n cells in proportion to their fractions,
// interleaved so that every zone gets its share.
func classAssignment(n int, classes []CellClass) []int {
	out := make([]int, n)
	credit := make([]float64, len(classes))
	for i := range out {
		best := 0
		for k, cl := range classes {
			credit[k] += cl.Fraction
			if credit[k] > credit[best] {
				best = k
			}
		}
		credit[best]--
		out[i] = best
	}
	return out
}

func (c *Cluster) newCell(ctx context.Context, i, class int) (*simCell, error) {
	cl := c.cfg.Classes[class]
	id := fmt.Sprintf("cell-%04d", i)
	mc := isolationtest.DefaultMemoryConfig()
	mc.Capacity = isolation.Capacity{MemoryBytes: uint64(cl.MemoryMB) << 20, DiskBytes: uint64(cl.DiskMB) << 20,
		MaxContainers: uint64(cl.Containers)}
	mc.Stacks, mc.RootFSSchemes = cl.Stacks, cl.Schemes
	mem, err := isolationtest.NewMemory(mc)
	if err != nil {
		return nil, fmt.Errorf("sim: cell %s backend: %w", id, err)
	}
	mem.RegisterProgram(programApp, c.appProgram)

	cfg := agent.DefaultConfig()
	cfg.CellID = id
	cfg.Zone = fmt.Sprintf("z%d", i%c.cfg.Zones+1)
	cfg.BBS = agent.BBSConfig{URL: c.bbs.URL(), Insecure: true}
	cfg.Backend = agent.BackendMemory
	cfg.RootFSProviders = map[string]string{}
	for _, s := range cl.Stacks {
		cfg.RootFSProviders["preloaded:"+s] = ""
	}
	for _, s := range cl.Schemes {
		cfg.RootFSProviders[s] = ""
	}
	cfg.PlacementTags, cfg.OptionalPlacementTags = cl.PlacementTags, cl.OptionalPlacementTags
	cfg.DataDir = filepath.Join(c.dir, "cells", id)
	cfg.Capacity = agent.CapacityConfig{MemoryMB: cl.MemoryMB, DiskMB: cl.DiskMB, Containers: cl.Containers}
	cfg.PresenceTTL = agent.Duration(c.cfg.PresenceTTL)
	cfg.GracefulStop = agent.Duration(time.Second)
	cfg.LogBytesPerInstance = 64 << 10
	cfg.CacheBytes = 1 << 20
	st, err := c.storeFor("cell", "cell:"+id)
	if err != nil {
		return nil, err
	}
	a, err := agent.New(ctx, cfg, agent.Options{Store: st, Backend: mem, Logger: c.cfg.Logger.With("component", "agent")})
	if err != nil {
		return nil, fmt.Errorf("sim: cell %s: %w", id, err)
	}
	return &simCell{id: id, class: class, agent: a, mem: mem, state: cellAlive}, nil
}

func (c *Cluster) runCell(sc *simCell) {
	ctx, cancel := context.WithCancel(context.Background())
	sc.stop, sc.done = cancel, make(chan struct{})
	go func() {
		defer close(sc.done)
		if err := sc.agent.Run(ctx); err != nil {
			c.cfg.Logger.Error("cell agent failed", "cell", sc.id, "error", err)
		}
	}()
}

// appProgram is what every simulated instance runs.
func (c *Cluster) appProgram(ctx context.Context, pc *isolationtest.ProcContext) int {
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
	case <-c.crashOn:
	}
	// Diego's crash rate: every 30–360 s.
	c.rngMu.Lock()
	after := 30*time.Second + time.Duration(c.rng.Int64N(int64(330*time.Second)))
	c.rngMu.Unlock()
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0
	case <-t.C:
		return 1
	}
}

// push desires n apps of the given instance count and returns their guids. crashy marks
// them as crashing apps. Apps are pushed by workers concurrent writers.
func (c *Cluster) push(ctx context.Context, n int, instances int32, crashy bool, workers int) ([]*app, error) {
	apps := make([]*app, n)
	kinds := make([]AppKind, n)
	c.mu.Lock()
	for i := range apps {
		apps[i] = &app{guid: fmt.Sprintf("app-%07d", c.nextApp), instances: instances, crashy: crashy}
		c.nextApp++
		kinds[i] = c.pickKind()
	}
	c.mu.Unlock()
	for _, a := range apps {
		c.obs.expect(a.guid, a.instances)
	}
	errs := make(chan error, workers)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := c.operator.DesireLRP(ctx, desiredLRP(apps[i], kinds[i])); err != nil {
					select {
					case errs <- fmt.Errorf("sim: push %s: %w", apps[i].guid, err):
					default:
					}
					return
				}
			}
		}()
	}
feed:
	for i := range apps {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return nil, err
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.apps = append(c.apps, apps...)
	c.mu.Unlock()
	return apps, nil
}

// pickKind draws an app kind by weight; callers hold c.mu.
func (c *Cluster) pickKind() AppKind {
	total := 0.0
	for _, k := range c.cfg.Apps {
		total += k.Weight
	}
	c.rngMu.Lock()
	x := c.rng.Float64() * total
	c.rngMu.Unlock()
	for _, k := range c.cfg.Apps {
		if x < k.Weight {
			return k
		}
		x -= k.Weight
	}
	return c.cfg.Apps[len(c.cfg.Apps)-1]
}

func desiredLRP(a *app, k AppKind) *models.DesiredLRP {
	env := []models.EnvironmentVariable{{Name: "APP", Value: a.guid}}
	if a.crashy {
		env = append(env, models.EnvironmentVariable{Name: envCrashy, Value: "1"})
	}
	return &models.DesiredLRP{
		ProcessGuid: a.guid, Domain: Domain, RootFS: k.RootFS, Instances: a.instances,
		MemoryMB: k.MemoryMB, DiskMB: k.DiskMB, Ports: []uint32{8080}, PlacementTags: k.PlacementTags,
		Env:    env,
		Action: &models.Action{Run: &models.RunAction{Path: programApp, Args: []string{"--port", "8080"}}},
	}
}

// liveCells returns the cells in state alive.
func (c *Cluster) liveCells() []*simCell {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*simCell
	for _, sc := range c.cells {
		if sc.state == cellAlive {
			out = append(out, sc)
		}
	}
	return out
}

// pickCells chooses fraction of the live cells, spread over the zones and classes.
func (c *Cluster) pickCells(fraction float64) []*simCell {
	live := c.liveCells()
	n := int(float64(len(live))*fraction + 0.5)
	if n == 0 && fraction > 0 && len(live) > 0 {
		n = 1
	}
	c.rngMu.Lock()
	c.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	c.rngMu.Unlock()
	return live[:n]
}

// kill ends cells as a machine failure would: the agent stops heartbeating at once and every
// container dies with it.
func (c *Cluster) kill(cells []*simCell) {
	c.mu.Lock()
	for _, sc := range cells {
		sc.state = cellKilled
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, sc := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.stop()
			<-sc.done
			ctx := context.Background()
			conts, _ := sc.mem.List(ctx, nil)
			for _, ct := range conts {
				_ = sc.mem.Destroy(ctx, ct.Handle())
			}
			sc.agent.Close()
		}()
	}
	wg.Wait()
}

// doubleRunning counts instances (process guid and index) with more than one running ORDINARY
// container across the live cells, and EVACUATING containers still running.
func (c *Cluster) doubleRunning() (doubles, evacuating int) {
	seen := map[string]int{}
	for _, sc := range c.liveCells() {
		for _, st := range sc.agent.Containers() {
			if st.Kind != agent.KindLRP || st.State != agent.StateRunning {
				continue
			}
			if st.Evacuating || st.Presence == models.PresenceEvacuating {
				evacuating++
				continue
			}
			seen[st.ProcessGuid+"/"+fmt.Sprint(st.Index)]++
		}
	}
	for _, n := range seen {
		if n > 1 {
			doubles++
		}
	}
	return doubles, evacuating
}

// desiredInstances is the number of instances the pushed apps ask for.
func (c *Cluster) desiredInstances() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.apps {
		n += int(a.instances)
	}
	return n
}

// Close stops everything and removes the data directory the simulator created.
func (c *Cluster) Close() error {
	c.mu.Lock()
	cells := c.cells
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, sc := range cells {
		if sc.stop == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.stop()
			<-sc.done
			sc.agent.Close()
		}()
	}
	wg.Wait()
	if c.stopBr != nil {
		c.stopBr()
		<-c.brDone
	}
	if c.stopObs != nil {
		c.stopObs()
		<-c.obsDone
	}
	var err error
	if c.bbs != nil {
		err = c.bbs.Close()
	}
	if c.ownDir {
		if rerr := os.RemoveAll(c.dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// waitFor polls cond every 20 ms until it holds, timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
