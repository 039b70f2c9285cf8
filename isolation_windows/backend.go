package isolationwindows

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// Backend is the Windows isolation backend. It implements isolation.Backend.
type Backend struct {
	cfg     Config
	log     *slog.Logger
	drivers map[Mode]driver
	// driverErrs says why a mode has no driver on this host (Create then fails with it).
	driverErrs map[Mode]error
	ports      *portAllocator
	capacity   func(Config) (isolation.Capacity, error)

	mu         sync.Mutex
	containers map[string]*container
	creating   map[string]bool
	closed     bool
	// stopWatch ends the disk watchdog (nil without process mode).
	stopWatch chan struct{}
}

var _ isolation.Backend = (*Backend)(nil)

// deps are the per-platform implementations a Backend is built over.
type deps struct {
	process   func(cfg Config, log *slog.Logger) (driver, error)
	container func(cfg Config, log *slog.Logger) (driver, error)
	// portFree reports whether a host port can be bound now.
	portFree func(port uint32) bool
	// capacity measures the host.
	capacity func(cfg Config) (isolation.Capacity, error)
}

// New returns a Backend over cfg. Containers recorded in cfg.StateDir by an earlier Backend
// are found again: their isolation is reopened and running processes are reattached.
// Errors: ErrInvalidSpec (cfg does not validate), or the state dir cannot be used.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Backend, error) {
	return newBackend(ctx, cfg, logger, platformDeps())
}

func newBackend(ctx context.Context, cfg Config, logger *slog.Logger, d deps) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("isolation_windows: making the state dir: %w", err)
	}
	b := &Backend{
		cfg:        cfg,
		log:        logger,
		drivers:    map[Mode]driver{},
		driverErrs: map[Mode]error{},
		ports:      newPortAllocator(cfg.PortRangeLo, cfg.PortRangeHi, d.portFree),
		containers: map[string]*container{},
		creating:   map[string]bool{},
	}
	b.capacity = d.capacity
	used := map[Mode]bool{}
	for _, s := range cfg.Stacks {
		used[s.Mode] = true
	}
	for mode, mk := range map[Mode]func(Config, *slog.Logger) (driver, error){ModeProcess: d.process, ModeContainer: d.container} {
		if !used[mode] {
			continue
		}
		drv, err := mk(cfg, logger)
		if err != nil {
			b.driverErrs[mode] = err
			logger.Warn("isolation_windows: mode unavailable", "mode", mode, "err", err)
			continue
		}
		b.drivers[mode] = drv
	}
	if err := b.reload(ctx); err != nil {
		b.Close()
		return nil, err
	}
	if b.drivers[ModeProcess] != nil {
		b.stopWatch = make(chan struct{})
		go b.watchDisks(b.stopWatch)
	}
	return b, nil
}

// reload finds the containers recorded in the state dir.
func (b *Backend) reload(ctx context.Context) error {
	recs, broken, err := loadRecords(b.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("isolation_windows: reading the state dir: %w", err)
	}
	for _, h := range broken {
		b.log.Warn("isolation_windows: removing a container whose Create never finished", "handle", h)
		removeTree(filepath.Join(b.cfg.StateDir, h))
	}
	for _, rec := range recs {
		c := &container{b: b, handle: rec.Handle, rec: rec, dir: filepath.Join(b.cfg.StateDir, rec.Handle), procs: map[string]*process{}}
		for _, p := range rec.Ports {
			b.ports.claim(p.HostPort)
		}
		drv := b.drivers[rec.Mode]
		if drv == nil {
			c.openErr = fmt.Errorf("mode %s unavailable: %w", rec.Mode, b.driverErrs[rec.Mode])
		} else if err := drv.open(ctx, rec); err != nil {
			c.openErr = err
		}
		if c.openErr != nil && rec.State == isolation.StateActive {
			b.log.Warn("isolation_windows: container isolation is gone; reporting it stopped", "handle", rec.Handle, "err", c.openErr)
			rec.State = isolation.StateStopped
			if err := c.saveLocked(); err != nil {
				return err
			}
		}
		if err := c.loadProcesses(ctx); err != nil {
			return err
		}
		b.containers[rec.Handle] = c
	}
	return nil
}

// Close releases the Backend's handles. Containers and their processes keep running (see
// Config.KeepAcrossRestart); a new Backend over the same StateDir finds them.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	cs := slices.Collect(maps.Values(b.containers))
	if b.stopWatch != nil {
		close(b.stopWatch)
	}
	b.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		for _, p := range c.procs {
			p.release()
		}
		c.mu.Unlock()
	}
	var errs []error
	for _, d := range b.drivers {
		errs = append(errs, d.close())
	}
	return errors.Join(errs...)
}

// Ping reports whether the backend can serve requests: the state dir is writable and every
// configured mode has a driver.
func (b *Backend) Ping(ctx context.Context) error {
	f, err := os.CreateTemp(b.cfg.StateDir, ".ping-*")
	if err != nil {
		return fmt.Errorf("isolation_windows: state dir not writable: %w", err)
	}
	f.Close()
	os.Remove(f.Name())
	for mode, err := range b.driverErrs {
		return fmt.Errorf("isolation_windows: %s mode unavailable: %w", mode, err)
	}
	return nil
}

// Capacity reports the host's memory and disk (or the configured values) and MaxContainers.
func (b *Backend) Capacity(ctx context.Context) (isolation.Capacity, error) {
	c := isolation.Capacity{MemoryBytes: b.cfg.MemoryBytes, DiskBytes: b.cfg.DiskBytes, MaxContainers: b.cfg.MaxContainers}
	if c.MemoryBytes == 0 || c.DiskBytes == 0 {
		host, err := b.capacity(b.cfg)
		if err != nil {
			return isolation.Capacity{}, fmt.Errorf("isolation_windows: measuring the host: %w", err)
		}
		if c.MemoryBytes == 0 {
			c.MemoryBytes = host.MemoryBytes
		}
		if c.DiskBytes == 0 {
			c.DiskBytes = host.DiskBytes
		}
	}
	return c, nil
}

// Create makes a container. The stack named by spec.RootFS decides the mode.
// Errors: ErrInvalidSpec, ErrAlreadyExists, ErrUnsupported (unknown stack or scheme, or a
// request the stack's mode cannot honour), ErrInsufficientResources (MaxContainers, ports).
func (b *Backend) Create(ctx context.Context, spec isolation.ContainerSpec) (isolation.Container, error) {
	if err := validateContainerSpec(spec); err != nil {
		return nil, err
	}
	stack, st, err := resolveStack(b.cfg.Stacks, spec.RootFS)
	if err != nil {
		return nil, err
	}
	if err := checkModeSupport(st.Mode, spec); err != nil {
		return nil, err
	}
	drv := b.drivers[st.Mode]
	if drv == nil {
		return nil, fmt.Errorf("isolation_windows: stack %q needs %s mode: %w", stack, st.Mode, b.driverErrs[st.Mode])
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, fmt.Errorf("isolation_windows: backend closed")
	case b.containers[spec.Handle] != nil || b.creating[spec.Handle]:
		b.mu.Unlock()
		return nil, fmt.Errorf("isolation_windows: container %q: %w", spec.Handle, isolation.ErrAlreadyExists)
	case uint64(len(b.containers)+len(b.creating)) >= b.cfg.MaxContainers:
		b.mu.Unlock()
		return nil, fmt.Errorf("isolation_windows: %w: %d containers (Config.MaxContainers)", isolation.ErrInsufficientResources, b.cfg.MaxContainers)
	}
	b.creating[spec.Handle] = true
	b.mu.Unlock()
	c, err := b.create(ctx, drv, stack, st, spec)
	b.mu.Lock()
	delete(b.creating, spec.Handle)
	if err == nil {
		b.containers[spec.Handle] = c
	}
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (b *Backend) create(ctx context.Context, drv driver, stack string, st StackConfig, spec isolation.ContainerSpec) (_ *container, err error) {
	dir := filepath.Join(b.cfg.StateDir, spec.Handle)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("isolation_windows: container %q: state directory %s exists: %w", spec.Handle, dir, isolation.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("isolation_windows: container %q: %w", spec.Handle, err)
	}
	defer func() {
		if err != nil {
			removeTree(dir)
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, procsDirName), 0o700); err != nil {
		return nil, fmt.Errorf("isolation_windows: container %q: %w", spec.Handle, err)
	}
	ports, err := b.ports.grant(spec.NetIn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.ports.release(ports)
		}
	}()
	rec := &containerRecord{
		Handle:     spec.Handle,
		Mode:       st.Mode,
		Stack:      stack,
		Spec:       spec,
		State:      isolation.StateActive,
		Properties: maps.Clone(spec.Properties),
		Ports:      ports,
		HostIP:     b.cfg.HostIP,
		Created:    time.Now().UTC(),
	}
	if rec.Properties == nil {
		rec.Properties = isolation.Properties{}
	}
	rec.Spec.Properties = nil
	if err := drv.create(ctx, rec); err != nil {
		return nil, fmt.Errorf("isolation_windows: creating %q (%s mode): %w", spec.Handle, st.Mode, err)
	}
	c := &container{b: b, handle: spec.Handle, rec: rec, dir: dir, procs: map[string]*process{}}
	if err := c.saveLocked(); err != nil {
		drv.destroy(context.WithoutCancel(ctx), rec)
		return nil, fmt.Errorf("isolation_windows: recording %q: %w", spec.Handle, err)
	}
	b.log.Info("isolation_windows: created container", "handle", spec.Handle, "mode", st.Mode, "stack", stack, "root", rec.RootDir)
	return c, nil
}

// Lookup finds a container, including one created by an earlier Backend.
// Errors: ErrNotFound.
func (b *Backend) Lookup(ctx context.Context, handle string) (isolation.Container, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.containers[handle]
	if c == nil {
		return nil, fmt.Errorf("isolation_windows: container %q: %w", handle, isolation.ErrNotFound)
	}
	return c, nil
}

// Destroy kills every process of the container and removes its isolation, ports and state.
// Destroying an unknown handle returns nil.
func (b *Backend) Destroy(ctx context.Context, handle string) error {
	b.mu.Lock()
	c := b.containers[handle]
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	if err := c.destroy(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	if b.containers[handle] == c {
		delete(b.containers, handle)
	}
	b.mu.Unlock()
	return nil
}

// List returns the containers whose properties include every pair of filter.
func (b *Backend) List(ctx context.Context, filter isolation.Properties) ([]isolation.Container, error) {
	b.mu.Lock()
	cs := slices.Collect(maps.Values(b.containers))
	b.mu.Unlock()
	var out []isolation.Container
	for _, c := range cs {
		if c.matches(filter) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b isolation.Container) int {
		if a.Handle() < b.Handle() {
			return -1
		}
		if a.Handle() > b.Handle() {
			return 1
		}
		return 0
	})
	return out, nil
}

// BulkMetrics returns the metrics of the named containers; unknown handles are left out.
func (b *Backend) BulkMetrics(ctx context.Context, handles []string) (map[string]isolation.Metrics, error) {
	out := make(map[string]isolation.Metrics, len(handles))
	for _, h := range handles {
		b.mu.Lock()
		c := b.containers[h]
		b.mu.Unlock()
		if c == nil {
			continue
		}
		m, err := c.Metrics(ctx)
		if isolation.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[h] = m
	}
	return out, nil
}

// newID returns a process id for a ProcessSpec without one.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "p-" + hex.EncodeToString(b[:])
}

// removeTree removes dir and everything below it. os.RemoveAll is tried first; where it
// fails (wine implements too little of the NT file API it uses) the tree is walked and
// removed entry by entry.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	var paths []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	var errs []error
	for i := len(paths) - 1; i >= 0; i-- {
		if err := os.Remove(paths[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
