package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/trellis-run/trellis/agent/cache"
	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/isolation"
)

// Options are the agent's collaborators.
type Options struct {
	// Store is the BBS, normally a *client.Client holding the cell's certificate. Required.
	Store store.Interface
	// Backend runs the containers; nil builds the one Config.Backend names (and Close closes
	// it).
	Backend isolation.Backend
	// HTTPClient makes download and upload requests; nil means the cache's default client.
	HTTPClient *http.Client
	// Logger receives the agent's records; nil discards them.
	Logger *slog.Logger
}

// Agent is a cell agent. New prepares it; Run announces the cell and runs its work until the
// context ends (containers keep running) or a drain completes.
type Agent struct {
	cfg     Config
	store   store.Interface
	backend isolation.Backend
	closers []func() error
	log     *slog.Logger
	logs    *logs.Store
	cache   *cache.Cache
	http    *http.Client
	ledger  *ledger
	cap     models.Resources
	os      string

	mu         sync.Mutex
	containers map[string]*container // by handle
	finished   map[string]time.Time  // handles destroyed recently, so stale reads do not resurrect them
	draining   bool
	// evacPending counts evacuations that have not removed their EVACUATING record yet.
	evacPending int
	advertise   string
	logOwners   map[string]logSource // log key → whose log it is
	// desired caches the DesiredLRPs of the apps on the cell, by process guid; desiredEpoch
	// counts the drops (desired.go).
	desired      map[string]*models.DesiredLRP
	desiredEpoch uint64

	drainOnce sync.Once
	drainReq  chan struct{} // closed when a drain is asked for
	drained   chan struct{} // closed when the drain has finished
	beat      chan struct{} // asks for a heartbeat now
	creates   chan struct{} // a slot per container being created (Config.MaxConcurrentCreates)
	reconcile sync.Mutex    // one reconcile at a time

	runCtx context.Context // the Run context: BBS calls end with it
	closed chan struct{}   // closed when Run returns: work goroutines stop reporting
	// work counts the goroutines that run, resume, evacuate or return containers; Run waits
	// for them (bounded by workStopTimeout) so that none touches the backend after it returns.
	work sync.WaitGroup

	metrics *metricsSampler
}

// New validates cfg, opens the cell's log store and download cache under cfg.DataDir, builds
// the backend when opts.Backend is nil, and works out the capacity (cfg.Capacity, zero fields
// from the backend). Errors: ErrInvalidConfig, or the backend's or file system's.
func New(ctx context.Context, cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		return nil, fmt.Errorf("%w: Options.Store is required", ErrInvalidConfig)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg: cfg, store: opts.Store, log: logger.With("cell", cfg.CellID), http: opts.HTTPClient,
		containers: map[string]*container{}, finished: map[string]time.Time{}, logOwners: map[string]logSource{},
		desired:  map[string]*models.DesiredLRP{},
		drainReq: make(chan struct{}), drained: make(chan struct{}), beat: make(chan struct{}, 1),
		creates: make(chan struct{}, cfg.maxConcurrentCreates()), closed: make(chan struct{}), os: runtime.GOOS,
	}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: data dir: %w", err)
	}
	ls, err := logs.NewStore(filepath.Join(cfg.DataDir, "logs"), cfg.LogBytesPerInstance)
	if err != nil {
		return nil, fmt.Errorf("agent: log store: %w", err)
	}
	a.logs = ls
	a.closers = append(a.closers, ls.Close)
	cc := cache.DefaultConfig()
	cc.Dir, cc.MaxBytes, cc.HTTPClient, cc.Logger = filepath.Join(cfg.DataDir, "cache"), cfg.CacheBytes, opts.HTTPClient, logger.With("component", "cache")
	if a.cache, err = cache.New(cc); err != nil {
		return nil, fmt.Errorf("agent: download cache: %w", err)
	}
	a.backend = opts.Backend
	if a.backend == nil {
		b, closeFn, err := newBackend(ctx, cfg, logger.With("component", "backend"))
		if err != nil {
			return nil, err
		}
		a.backend = b
		a.closers = append(a.closers, closeFn)
	}
	if err := a.backend.Ping(ctx); err != nil {
		return nil, fmt.Errorf("agent: backend: %w", err)
	}
	hc, err := a.backend.Capacity(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: backend capacity: %w", err)
	}
	a.cap = models.Resources{
		MemoryMB: pick(cfg.Capacity.MemoryMB, hc.MemoryBytes>>20), DiskMB: pick(cfg.Capacity.DiskMB, hc.DiskBytes>>20),
		Containers: pick(cfg.Capacity.Containers, hc.MaxContainers),
	}
	a.ledger = newLedger(a.cap)
	a.metrics = newMetricsSampler(a.backend)
	a.metrics.handles = a.liveHandles
	ok = true
	return a, nil
}

// pick returns configured, or auto (clamped to int32) when configured is 0.
func pick(configured int32, auto uint64) int32 {
	if configured > 0 {
		return configured
	}
	return int32(min(auto, 1<<31-1))
}

// Close releases what New opened (the backend only when New built it). Containers keep
// running. Call it after Run has returned.
func (a *Agent) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// Capacity is what the cell offers.
func (a *Agent) Capacity() models.Resources { return a.cap }

// Backend is the backend the agent runs containers through.
func (a *Agent) Backend() isolation.Backend { return a.backend }

// Logs is the store of the instances' captured output.
func (a *Agent) Logs() *logs.Store { return a.logs }

// Cache is the cell's download cache.
func (a *Agent) Cache() *cache.Cache { return a.cache }

// Containers lists the agent's containers and their executor states, by handle.
func (a *Agent) Containers() []ContainerStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ContainerStatus, 0, len(a.containers))
	for _, c := range a.containers {
		out = append(out, c.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Handle < out[j].Handle })
	return out
}

// Drain asks the agent to evacuate: the cell announces draining, its RUNNING instances are
// evacuated (each keeps serving until its replacement runs elsewhere or EvacuationTimeout
// passes), its tasks finish, then its presence is removed and Run returns nil. It returns at
// once; Drained is closed when the drain is over.
func (a *Agent) Drain() {
	a.drainOnce.Do(func() { close(a.drainReq) })
}

// Drained is closed once a drain has finished.
func (a *Agent) Drained() <-chan struct{} { return a.drained }

// Draining reports whether the cell is draining.
func (a *Agent) Draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// Run restores the containers a previous agent left, announces the cell, serves the API and
// runs the cell's work. It returns nil when ctx ends — the containers keep running, for the
// next agent to re-attach — or when a drain has finished. Errors: the API cannot listen, or
// the backend cannot list its containers.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.runCtx = ctx
	defer func() {
		close(a.closed)
		a.waitWork(workStopTimeout)
	}()

	if err := a.restore(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	if a.cfg.API.Listen != "" {
		srv, ln, err := a.listenAPI()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveAPI(ctx, srv, ln)
		}()
	}
	for _, loop := range []func(context.Context){a.presenceLoop, a.syncLoop, a.reconcileLoop, a.metrics.loop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	select {
	case <-ctx.Done():
	case <-a.drainReq:
		a.evacuate(ctx)
	}
	cancel()
	wg.Wait()
	return nil
}

// workStopTimeout bounds how long Run waits, after it has stopped, for the work goroutines to
// notice: one in the middle of a long create (an image pull) keeps going on its own.
const workStopTimeout = 10 * time.Second

// waitWork waits until the work goroutines have returned, or d has passed.
func (a *Agent) waitWork(d time.Duration) {
	done := make(chan struct{})
	go func() {
		a.work.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		a.log.Warn("stopped while container work is still in progress; it continues without reporting", "waited", d)
	}
}

// APIAddress is the host:port the agent announces for its API ("" without an API). It is
// known once Run has started listening.
func (a *Agent) APIAddress() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.advertise
}

// isClosed reports whether Run has returned; work goroutines then stop reporting to the BBS.
func (a *Agent) isClosed() bool {
	select {
	case <-a.closed:
		return true
	default:
		return false
	}
}

// reservation returns the resources of a piece of work.
func reservation(memoryMB, diskMB int32) models.Resources {
	return models.Resources{MemoryMB: memoryMB, DiskMB: diskMB, Containers: 1}
}

// advertiseAddress is cfg.API.Advertise, or the listener's address with an unspecified host
// replaced by the hostname.
func advertiseAddress(cfg APIConfig, ln net.Addr) string {
	if cfg.Advertise != "" {
		return cfg.Advertise
	}
	host, port, _ := net.SplitHostPort(ln.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// forget removes c from the table once its container is gone and remembers its handle for a
// while, so that a read older than its destruction does not start it again or report it
// vanished.
func (a *Agent) forget(c *container) {
	a.ledger.release(c.handle)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.containers[c.handle] == c {
		delete(a.containers, c.handle)
	}
	if c.kind == KindLRP {
		a.dropUnusedDesiredLocked(c.key.ProcessGuid)
	}
	now := time.Now()
	a.finished[c.handle] = now
	for h, t := range a.finished {
		if now.Sub(t) > finishedMemory {
			delete(a.finished, h)
		}
	}
}

// finishedMemory is how long a destroyed container's handle is remembered.
const finishedMemory = 5 * time.Minute

// recentlyFinished reports whether handle was destroyed recently. Callers hold a.mu.
func (a *Agent) recentlyFinished(handle string) bool {
	_, ok := a.finished[handle]
	return ok
}

// bbsCtx is the context of a BBS call made on behalf of work: it ends with Run, and each call
// is bounded.
func (a *Agent) bbsCtx() (context.Context, context.CancelFunc) {
	parent := a.runCtx
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, bbsCallTimeout)
}

// bbsCallTimeout bounds one BBS call made for a piece of work.
const bbsCallTimeout = 30 * time.Second

// sleepCtx waits d or until ctx ends, reporting whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// liveHandles lists the handles of the containers that exist on the backend.
func (a *Agent) liveHandles() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.containers))
	for h, c := range a.containers {
		if c.state != StateReserved && c.state != StateInitializing {
			out = append(out, h)
		}
	}
	return out
}

// addLocked enters c into the table and indexes its log. Callers hold a.mu.
func (a *Agent) addLocked(c *container) {
	a.containers[c.handle] = c
	o := logSource{index: int(c.key.Index), taskGuid: c.taskGuid}
	if c.kind == KindLRP {
		o.processGuid, o.instanceGuid = c.key.ProcessGuid, c.handle
	} else {
		o.index = logs.NoIndex
	}
	a.logOwners[c.handle] = o
}
