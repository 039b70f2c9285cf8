package isolationtest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// maxEvents bounds the events a container keeps (the newest win).
const maxEvents = 64

// memContainer is one container. Fields above mu are fixed at creation (ports and ipOffset are
// written under MemoryState.mu before the container is published and after it is destroyed).
type memContainer struct {
	s        *MemoryState
	handle   string
	spec     isolation.ContainerSpec // Properties cleared: props is the live copy
	limits   isolation.Limits
	ipOffset uint32
	ports    []isolation.PortMapping

	mu        sync.Mutex
	state     isolation.State
	destroyed bool
	props     isolation.Properties
	events    []string
	fs        *memFS              // nil until first used
	procs     map[string]*memProc // every process run, exited ones too; nil until the first
	cpuNanos  uint64              // CPU time of exited processes
}

func newMemContainer(s *MemoryState, spec isolation.ContainerSpec) *memContainer {
	props := maps.Clone(spec.Properties)
	spec.Properties = nil
	spec.Env = append([]string(nil), spec.Env...)
	spec.BindMounts = append([]isolation.BindMount(nil), spec.BindMounts...)
	spec.NetIn = nil
	return &memContainer{
		s:      s,
		handle: spec.Handle,
		spec:   spec,
		limits: spec.Limits,
		state:  isolation.StateActive,
		props:  props,
	}
}

// filesystem returns the container's filesystem, creating it on first use; c.mu is held.
func (c *memContainer) filesystem() *memFS {
	if c.fs == nil {
		c.fs = newMemFS(c.limits.DiskBytes, time.Now())
		// Every rootfs offers /tmp, as the images this backend stands in for do.
		_ = c.fs.mkdirAll("/tmp", 0o777, time.Now())
	}
	return c.fs
}

func (c *memContainer) notFound(op string) error {
	return fmt.Errorf("%s: container %q: %w", op, c.handle, isolation.ErrNotFound)
}

// destroy marks c destroyed, kills its processes and returns its final properties.
func (c *memContainer) destroy() isolation.Properties {
	c.mu.Lock()
	c.destroyed = true
	running := c.runningLocked()
	props := c.props
	c.fs = nil
	c.mu.Unlock()
	for _, p := range running {
		p.kill()
	}
	return props
}

// runningLocked returns the processes that have not exited; c.mu is held.
func (c *memContainer) runningLocked() []*memProc {
	var out []*memProc
	for _, p := range c.procs {
		if !p.exited() {
			out = append(out, p)
		}
	}
	return out
}

func (c *memContainer) matches(filter isolation.Properties) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return false
	}
	for k, v := range filter {
		if got, ok := c.props[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// event records ev and applies its consequences.
func (c *memContainer) event(ev string) error {
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return isolation.ErrNotFound
	}
	c.addEventLocked(ev)
	var victims []*memProc
	if ev == isolation.EventOutOfMemory {
		victims = c.runningLocked()
	}
	c.mu.Unlock()
	for _, p := range victims {
		p.kill()
	}
	return nil
}

func (c *memContainer) addEventLocked(ev string) {
	if len(c.events) == maxEvents {
		copy(c.events, c.events[1:])
		c.events = c.events[:maxEvents-1]
	}
	c.events = append(c.events, ev)
}

func (c *memContainer) metrics() (isolation.Metrics, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return isolation.Metrics{}, c.notFound("metrics")
	}
	m := isolation.Metrics{
		MemoryLimitBytes: c.limits.MemoryBytes,
		DiskLimitBytes:   c.limits.DiskBytes,
		CPUNanos:         c.cpuNanos,
		At:               time.Now(),
	}
	if c.fs != nil {
		m.DiskBytes = c.fs.used
	}
	for _, p := range c.procs {
		if !p.exited() {
			m.Pids++
			m.MemoryBytes += p.memory.Load()
			m.CPUNanos += uint64(p.cpu.Load())
		}
	}
	return m, nil
}

// memRef is the isolation.Container handed to callers; it stays valid (reporting ErrNotFound)
// after the container is destroyed, and never aliases a new container of the same handle.
type memRef struct {
	s *MemoryState
	c *memContainer
}

var _ isolation.Container = (*memRef)(nil)

func (r *memRef) Handle() string { return r.c.handle }

// Info implements isolation.Container. ProcessIDs lists the processes that have not exited,
// sorted; ContainerPath is empty (the container has no host directory).
func (r *memRef) Info(ctx context.Context) (isolation.ContainerInfo, error) {
	if err := ctx.Err(); err != nil {
		return isolation.ContainerInfo{}, err
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return isolation.ContainerInfo{}, c.notFound("info")
	}
	info := isolation.ContainerInfo{
		Handle:      c.handle,
		State:       c.state,
		HostIP:      r.s.cfg.HostIP,
		ContainerIP: r.s.containerIP(c.ipOffset),
		MappedPorts: append([]isolation.PortMapping(nil), c.ports...),
		Events:      append([]string(nil), c.events...),
		Properties:  maps.Clone(c.props),
	}
	if info.Properties == nil {
		info.Properties = isolation.Properties{}
	}
	for _, p := range c.runningLocked() {
		info.ProcessIDs = append(info.ProcessIDs, p.id)
	}
	sort.Strings(info.ProcessIDs)
	return info, nil
}

// Metrics implements isolation.Container. MemoryBytes and CPUNanos are what the container's
// programs reported through ProcContext; DiskBytes is what its files hold.
func (r *memRef) Metrics(ctx context.Context) (isolation.Metrics, error) {
	if err := ctx.Err(); err != nil {
		return isolation.Metrics{}, err
	}
	return r.c.metrics()
}

// Properties implements isolation.Container.
func (r *memRef) Properties(ctx context.Context) (isolation.Properties, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil, c.notFound("properties")
	}
	props := maps.Clone(c.props)
	if props == nil {
		props = isolation.Properties{}
	}
	return props, nil
}

// SetProperty implements isolation.Container.
// Errors: ErrNotFound, ErrInvalidSpec (empty key).
func (r *memRef) SetProperty(ctx context.Context, key, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("set property on %q: %w", r.c.handle, invalid("property key: empty"))
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return c.notFound("set property")
	}
	old, had := c.props[key]
	if had && old == value {
		return nil
	}
	if c.props == nil {
		c.props = make(isolation.Properties)
	}
	c.props[key] = value
	r.s.mu.Lock()
	if had {
		r.s.indexRemove(c, key, old)
	}
	r.s.indexAdd(c, key, value)
	r.s.mu.Unlock()
	return nil
}

// StreamIn implements isolation.Container. dstPath is created (with parents) when missing.
// Archive member names are cleaned as if rooted at dstPath, so "../x" and "/x" land at
// dstPath/x; symlinks are resolved inside the container's root.
// Errors: ErrNotFound, ErrStopped, ErrInvalidSpec (bad path or archive),
// ErrInsufficientResources (the disk limit; an EventDiskLimit is recorded).
func (r *memRef) StreamIn(ctx context.Context, dstPath string, tarStream io.Reader) error {
	c := r.c
	op := fmt.Sprintf("stream into %q of container %q", dstPath, c.handle)
	if !path.IsAbs(dstPath) {
		return fmt.Errorf("%s: %w", op, invalid("destination path must be absolute"))
	}
	dst := path.Clean(dstPath)
	if err := c.streamCheck(op, func(f *memFS) error { return f.mkdirAll(dst, 0o755, time.Now()) }); err != nil {
		return err
	}
	tr := tar.NewReader(tarStream)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := readArchiveEntry(tr)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, invalid("reading archive: %v", err))
		}
		if err := c.streamCheck(op, func(f *memFS) error { return f.apply(dst, e) }); err != nil {
			return err
		}
	}
}

// streamCheck runs fn on the filesystem of an active container, classifying its error.
func (c *memContainer) streamCheck(op string, fn func(*memFS) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.destroyed:
		return c.notFound(op)
	case c.state == isolation.StateStopped:
		return fmt.Errorf("%s: %w", op, isolation.ErrStopped)
	}
	err := fn(c.filesystem())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoSpace):
		c.addEventLocked(isolation.EventDiskLimit)
		return fmt.Errorf("%s: %w: %v", op, isolation.ErrInsufficientResources, err)
	default:
		return fmt.Errorf("%s: %w", op, invalid("%v", err))
	}
}

// StreamOut implements isolation.Container. Member names start with the base name of srcPath
// ("." for "/"); a final symlink is archived as a symlink. It works on stopped containers.
// Errors: ErrNotFound (no container, or no such path), ErrInvalidSpec (relative path).
func (r *memRef) StreamOut(ctx context.Context, srcPath string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := r.c
	op := fmt.Sprintf("stream %q out of container %q", srcPath, c.handle)
	if !path.IsAbs(srcPath) {
		return nil, fmt.Errorf("%s: %w", op, invalid("source path must be absolute"))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil, c.notFound(op)
	}
	buf, err := c.filesystem().archive(srcPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w: %v", op, isolation.ErrNotFound, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", op, invalid("%v", err))
	}
	return io.NopCloser(buf), nil
}

// Stop implements isolation.Container. It returns once every process has exited, or with ctx's
// error (the processes then stay signalled but not killed).
// Errors: ErrNotFound.
func (r *memRef) Stop(ctx context.Context, grace time.Duration, kill bool) error {
	c := r.c
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return c.notFound("stop")
	}
	c.state = isolation.StateStopped
	running := c.runningLocked()
	c.mu.Unlock()

	if kill {
		for _, p := range running {
			p.kill()
		}
		return nil
	}
	for _, p := range running {
		p.terminate()
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for i, p := range running {
		select {
		case <-p.done:
		case <-timer.C:
			for _, q := range running[i:] {
				q.kill()
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stop container %q: %w", c.handle, ctx.Err())
		}
	}
	return nil
}
