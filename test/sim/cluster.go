package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain"
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

// simCell is one simulated cell as the cluster tracks it; its host runs it.
type simCell struct {
	id    string
	class int
	host  cellHost
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
	rngMu    sync.Mutex
	rng      *rand.Rand
	startErr error

	mu      sync.Mutex
	hosts   []cellHost
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
	c := &Cluster{cfg: cfg, lat: newLatencies(),
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
	// Diego's lock TTL (locket's 15 s) rather than the brain's 5 s: on this shared 2-core
	// machine a renewal through an overloaded BBS can take longer than 5 s, and each lost term
	// costs a full re-read of the BBS (see docs/scale.md).
	cfg.LockTTL = c.cfg.BrainLockTTL
	cfg.LockRetryInterval = cfg.LockTTL / 10
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

// startCells starts every cell — in this process, or CellsPerWorker to a worker process —
// and waits for their presences.
func (c *Cluster) startCells(ctx context.Context) error {
	start := time.Now()
	classOf := classAssignment(c.cfg.Cells, c.cfg.Classes)
	hc := hostConfig{Classes: c.cfg.Classes, Zones: c.cfg.Zones, PresenceTTL: c.cfg.PresenceTTL,
		Transport: c.cfg.Transport, BBSURL: c.bbs.URL(), DataDir: c.dir, Seed: c.cfg.Seed,
		Verbose: c.cfg.Logger.Enabled(ctx, slog.LevelWarn)}
	per := c.cfg.CellsPerWorker
	if per <= 0 {
		per = c.cfg.Cells
	}
	var groups [][]cellSpec
	for i := 0; i < c.cfg.Cells; i += per {
		var g []cellSpec
		for j := i; j < min(i+per, c.cfg.Cells); j++ {
			g = append(g, cellSpec{Index: j, Class: classOf[j]})
		}
		groups = append(groups, g)
	}
	hosts := make([]cellHost, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for gi, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.cfg.CellsPerWorker <= 0 {
				h := newLocalHost(hc, c.bbs.Store, c.lat, c.cfg.Logger)
				hosts[gi], errs[gi] = h, h.start(ctx, g)
				return
			}
			seed := hc
			seed.Seed += int64(gi)
			h, err := startRemoteHost(ctx, c.cfg.WorkerCommand, seed, g)
			if err == nil {
				hosts[gi] = h
			}
			errs[gi] = err
		}()
	}
	wg.Wait()
	c.mu.Lock()
	for gi, h := range hosts {
		if h == nil {
			continue
		}
		c.hosts = append(c.hosts, h)
		for _, sp := range groups[gi] {
			c.cells = append(c.cells, &simCell{id: cellID(sp.Index), class: sp.Class, host: h, state: cellAlive})
		}
	}
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	err := waitFor(ctx, 2*c.cfg.PresenceTTL+time.Duration(c.cfg.Cells)*20*time.Millisecond, func() bool {
		return c.obs.cellCount() >= c.cfg.Cells
	})
	if err != nil {
		return fmt.Errorf("sim: %d of %d cells present: %w", c.obs.cellCount(), c.cfg.Cells, err)
	}
	c.cfg.Progress("%d cells present after %v (%d hosts)", c.cfg.Cells, time.Since(start).Round(time.Millisecond), len(hosts))
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
				if err := c.desire(ctx, desiredLRP(apps[i], kinds[i])); err != nil {
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

// desire pushes one app as an operator would: a request that fails for want of an answer
// (timeout, BBS unavailable) is sent again, and AlreadyExists after such a retry means the
// first attempt went through.
func (c *Cluster) desire(ctx context.Context, lrp *models.DesiredLRP) error {
	var err error
	for attempt := range 5 {
		_, err = c.operator.DesireLRP(ctx, lrp)
		switch {
		case err == nil:
			return nil
		case attempt > 0 && models.IsAlreadyExists(err):
			return nil
		case models.IsInvalidRecord(err) || models.IsAlreadyExists(err) || ctx.Err() != nil:
			return err
		}
		c.cfg.Logger.Warn("push failed; retrying", "process_guid", lrp.ProcessGuid, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		}
	}
	return err
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

// pickCells chooses fraction of the live cells of every zone and class, so that the
// cells left stay equal in number across zones (the auctioneer balances zones first).
func (c *Cluster) pickCells(fraction float64) []*simCell {
	groups := map[string][]*simCell{}
	var keys []string
	for _, sc := range c.liveCells() {
		k := c.zoneOf(sc) + "/" + strconv.Itoa(sc.class)
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], sc)
	}
	slices.Sort(keys)
	var out []*simCell
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	for _, k := range keys {
		g := groups[k]
		n := int(float64(len(g))*fraction + 0.5)
		if n == 0 && fraction > 0 && len(out) == 0 && k == keys[len(keys)-1] {
			n = 1
		}
		c.rng.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		out = append(out, g[:n]...)
	}
	return out
}

// zoneOf is the zone a cell announces (see localHost.newCell).
func (c *Cluster) zoneOf(sc *simCell) string {
	i, _ := strconv.Atoi(strings.TrimPrefix(sc.id, "cell-"))
	return fmt.Sprintf("z%d", i%c.cfg.Zones+1)
}

// kill ends cells as a machine failure would: the agent stops heartbeating at once and every
// container dies with it.
func (c *Cluster) kill(ctx context.Context, cells []*simCell) error {
	byHost := map[cellHost][]string{}
	c.mu.Lock()
	for _, sc := range cells {
		sc.state = cellKilled
		byHost[sc.host] = append(byHost[sc.host], sc.id)
	}
	c.mu.Unlock()
	errs := make(chan error, len(byHost))
	for h, ids := range byHost {
		go func() { errs <- h.kill(ctx, ids) }()
	}
	var all []error
	for range byHost {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// doubleRunning counts instances (process guid and index) with more than one running ORDINARY
// container across the live cells, and EVACUATING containers still running.
func (c *Cluster) doubleRunning(ctx context.Context) (doubles, evacuating int, err error) {
	seen := map[string]int{}
	c.mu.Lock()
	hosts := slices.Clone(c.hosts)
	c.mu.Unlock()
	for _, h := range hosts {
		conts, err := h.containers(ctx)
		if err != nil {
			return 0, 0, err
		}
		for _, st := range conts {
			if st.Kind != agent.KindLRP || st.State != agent.StateRunning {
				continue
			}
			if st.Evacuating || st.Presence == models.PresenceEvacuating {
				evacuating++
				continue
			}
			seen[st.ProcessGuid+"/"+strconv.Itoa(int(st.Index))]++
		}
	}
	for _, n := range seen {
		if n > 1 {
			doubles++
		}
	}
	return doubles, evacuating, nil
}

// latSnapshot returns the cumulative latencies of every caller, workers' cells included.
func (c *Cluster) latSnapshot(ctx context.Context) window {
	w := c.lat.mark()
	c.mu.Lock()
	hosts := slices.Clone(c.hosts)
	c.mu.Unlock()
	for _, h := range hosts {
		if d, err := h.latencies(ctx); err == nil && d != nil {
			w.merge(d)
		}
	}
	return w
}

// crashOn starts the crashy apps' crashes on every host.
func (c *Cluster) crashOn(ctx context.Context) error {
	c.mu.Lock()
	hosts := slices.Clone(c.hosts)
	c.mu.Unlock()
	var errs []error
	for _, h := range hosts {
		errs = append(errs, h.crashOn(ctx))
	}
	return errors.Join(errs...)
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
	hosts := c.hosts
	c.hosts = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.close()
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
