package isolationwindows

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// container is one container of a Backend. It implements isolation.Container.
type container struct {
	b      *Backend
	handle string
	dir    string

	// opMu serialises Stop and Destroy.
	opMu sync.Mutex

	mu        sync.Mutex
	rec       *containerRecord
	procs     map[string]*process
	destroyed bool
	// openErr says why a container found in the state dir has no isolation any more.
	openErr error
	// diskUsed is the size of a process-mode container's files at the last disk check.
	diskUsed uint64
}

var _ isolation.Container = (*container)(nil)

// Handle is the container's name.
func (c *container) Handle() string { return c.handle }

func (c *container) driver() driver { return c.b.drivers[c.rec.Mode] }

func (c *container) root() fsRoot { return fsRoot{dir: c.rec.RootDir, mounts: c.rec.Mounts} }

// saveLocked persists the record; c.mu is held (or c is not shared yet).
func (c *container) saveLocked() error {
	return writeJSON(filepath.Join(c.dir, containerFile), c.rec)
}

func (c *container) notFound() error {
	return fmt.Errorf("isolation_windows: container %q: %w", c.handle, isolation.ErrNotFound)
}

func (c *container) matches(filter isolation.Properties) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return false
	}
	for k, v := range filter {
		if got, ok := c.rec.Properties[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// collectEventsLocked moves the driver's new events into the record.
func (c *container) collectEventsLocked() {
	drv := c.driver()
	if drv == nil || c.openErr != nil {
		return
	}
	if evs := drv.events(c.rec); len(evs) > 0 {
		c.rec.Events = append(c.rec.Events, evs...)
		if err := c.saveLocked(); err != nil {
			c.b.log.Warn("isolation_windows: recording events", "handle", c.handle, "err", err)
		}
	}
}

// Info reports the container's state, addresses, ports, events and running processes.
// Errors: ErrNotFound.
func (c *container) Info(ctx context.Context) (isolation.ContainerInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return isolation.ContainerInfo{}, c.notFound()
	}
	c.collectEventsLocked()
	info := isolation.ContainerInfo{
		Handle:        c.handle,
		State:         c.rec.State,
		HostIP:        c.rec.HostIP,
		ContainerIP:   c.rec.ContainerIP,
		MappedPorts:   slices.Clone(c.rec.Ports),
		Events:        slices.Clone(c.rec.Events),
		Properties:    maps.Clone(c.rec.Properties),
		ContainerPath: c.rec.RootDir,
	}
	for id, p := range c.procs {
		if !p.exited() {
			info.ProcessIDs = append(info.ProcessIDs, id)
		}
	}
	sort.Strings(info.ProcessIDs)
	return info, nil
}

// Metrics reports the container's usage from the job object's accounting (process mode) or
// the compute system's statistics (container mode).
// Errors: ErrNotFound.
func (c *container) Metrics(ctx context.Context) (isolation.Metrics, error) {
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return isolation.Metrics{}, c.notFound()
	}
	rec := *c.rec
	openErr := c.openErr
	c.mu.Unlock()
	m := isolation.Metrics{}
	if openErr == nil && rec.State == isolation.StateActive {
		var err error
		if m, err = c.driver().metrics(ctx, &rec); err != nil {
			return isolation.Metrics{}, fmt.Errorf("isolation_windows: metrics of %q: %w", c.handle, err)
		}
	}
	if rec.Mode == ModeProcess {
		c.mu.Lock()
		m.DiskBytes = c.diskUsed
		c.mu.Unlock()
	}
	m.MemoryLimitBytes = rec.Spec.Limits.MemoryBytes
	m.DiskLimitBytes = rec.Spec.Limits.DiskBytes
	m.At = time.Now()
	return m, nil
}

// Properties returns the container's properties.
func (c *container) Properties(ctx context.Context) (isolation.Properties, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil, c.notFound()
	}
	return maps.Clone(c.rec.Properties), nil
}

// SetProperty sets one property and persists it.
// Errors: ErrNotFound, ErrInvalidSpec (empty key).
func (c *container) SetProperty(ctx context.Context, key, value string) error {
	if key == "" {
		return invalidf("property key: empty")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return c.notFound()
	}
	old, had := c.rec.Properties[key]
	c.rec.Properties[key] = value
	if err := c.saveLocked(); err != nil {
		if had {
			c.rec.Properties[key] = old
		} else {
			delete(c.rec.Properties, key)
		}
		return fmt.Errorf("isolation_windows: recording property of %q: %w", c.handle, err)
	}
	return nil
}

// StreamIn unpacks a tar stream into dstPath inside the container.
// Errors: ErrNotFound, ErrStopped, ErrInvalidSpec (bad destination or archive).
func (c *container) StreamIn(ctx context.Context, dstPath string, tarStream io.Reader) error {
	c.mu.Lock()
	switch {
	case c.destroyed:
		c.mu.Unlock()
		return c.notFound()
	case c.rec.State != isolation.StateActive:
		c.mu.Unlock()
		return fmt.Errorf("isolation_windows: StreamIn to %q: %w", c.handle, isolation.ErrStopped)
	}
	root := c.root()
	c.mu.Unlock()
	if !path.IsAbs(dstPath) {
		return invalidf("StreamIn destination %q: must be an absolute container path", dstPath)
	}
	return unpackTar(ctx, root, dstPath, tarStream)
}

// StreamOut returns srcPath inside the container as a tar stream.
// Errors: ErrNotFound (container or path).
func (c *container) StreamOut(ctx context.Context, srcPath string) (io.ReadCloser, error) {
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return nil, c.notFound()
	}
	root := c.root()
	c.mu.Unlock()
	if !path.IsAbs(srcPath) {
		return nil, invalidf("StreamOut source %q: must be an absolute container path", srcPath)
	}
	return packTar(root, srcPath)
}

// Run starts a process in the container.
// Errors: ErrNotFound, ErrStopped, ErrInvalidSpec, ErrAlreadyExists (id in use),
// ErrUnsupported (Rlimits, a user other than the container's).
func (c *container) Run(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	if err := validateProcessSpec(spec); err != nil {
		return nil, err
	}
	if spec.ID == "" {
		spec.ID = newID()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.destroyed:
		return nil, c.notFound()
	case c.rec.State != isolation.StateActive:
		return nil, fmt.Errorf("isolation_windows: Run in %q: %w", c.handle, isolation.ErrStopped)
	case c.procs[spec.ID] != nil:
		return nil, fmt.Errorf("isolation_windows: process %q in %q: %w", spec.ID, c.handle, isolation.ErrAlreadyExists)
	}
	l, err := buildLaunch(c.rec, c.root(), c.b.cfg, spec)
	if err != nil {
		return nil, err
	}
	procs := filepath.Join(c.dir, procsDirName)
	l.stdoutPath = filepath.Join(procs, spec.ID+".stdout")
	l.stderrPath = filepath.Join(procs, spec.ID+".stderr")
	l.stdin = stdio.Stdin
	p := newProcess(c, spec.ID)
	// Followers start before the process so that nothing it writes is missed.
	p.follow(0, stdio)
	osp, err := c.driver().start(ctx, c.rec, l)
	if err != nil {
		p.abandon()
		os.Remove(l.stdoutPath)
		os.Remove(l.stderrPath)
		return nil, fmt.Errorf("isolation_windows: starting %q in %q: %w", spec.Path, c.handle, err)
	}
	p.rec = processRecord{ID: spec.ID, Pid: osp.pid(), CreationTime: osp.creationTime(), Started: time.Now().UTC()}
	if err := p.save(); err != nil {
		osp.kill()
		osp.wait()
		osp.release()
		p.abandon()
		return nil, fmt.Errorf("isolation_windows: recording process %q: %w", spec.ID, err)
	}
	c.procs[spec.ID] = p
	p.watch(osp)
	return p, nil
}

// Attach returns a process started earlier, possibly by an earlier Backend. Output written
// from now on is copied to stdio.
// Errors: ErrNotFound.
func (c *container) Attach(ctx context.Context, processID string, stdio isolation.ProcessIO) (isolation.Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil, c.notFound()
	}
	p := c.procs[processID]
	if p == nil {
		return nil, fmt.Errorf("isolation_windows: process %q in %q: %w", processID, c.handle, isolation.ErrNotFound)
	}
	if !p.exited() {
		p.follow(-1, stdio)
	}
	return p, nil
}

// Stop asks every process to stop (see driver.terminate), waits up to grace for them to
// exit, then kills what is left; with kill it kills at once. The container then refuses Run
// and StreamIn but answers Info and StreamOut until destroyed.
// Errors: ErrNotFound.
func (c *container) Stop(ctx context.Context, grace time.Duration, kill bool) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	return c.stop(ctx, grace, kill)
}

func (c *container) stop(ctx context.Context, grace time.Duration, kill bool) error {
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return c.notFound()
	}
	wasActive := c.rec.State == isolation.StateActive
	c.rec.State = isolation.StateStopped
	if err := c.saveLocked(); err != nil {
		c.b.log.Warn("isolation_windows: recording the stopped state", "handle", c.handle, "err", err)
	}
	procs := slices.Collect(maps.Values(c.procs))
	rec := *c.rec
	openErr := c.openErr
	c.mu.Unlock()
	if !wasActive || openErr != nil {
		return waitAll(ctx, procs, c.b.cfg.StopTimeout)
	}
	drv := c.driver()
	if !kill && grace > 0 {
		if err := drv.terminate(ctx, &rec); err != nil {
			c.b.log.Warn("isolation_windows: graceful stop failed; killing after the grace time", "handle", c.handle, "err", err)
		}
		gctx, cancel := context.WithTimeout(ctx, grace)
		waitAll(gctx, procs, grace)
		cancel()
	}
	if err := drv.kill(ctx, &rec); err != nil {
		return fmt.Errorf("isolation_windows: killing the processes of %q: %w", c.handle, err)
	}
	return waitAll(ctx, procs, c.b.cfg.StopTimeout)
}

// waitAll waits until every process has exited, ctx ends or timeout passes.
func waitAll(ctx context.Context, procs []*process, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("isolation_windows: process %q still running after %v", p.id, timeout)
		}
	}
	return nil
}

// destroy kills everything, releases the isolation and ports, and removes the state.
func (c *container) destroy(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	if err := c.stop(ctx, 0, true); err != nil && !isolation.IsNotFound(err) {
		c.b.log.Warn("isolation_windows: destroy: processes did not all exit", "handle", c.handle, "err", err)
	}
	c.mu.Lock()
	rec := *c.rec
	openErr := c.openErr
	c.mu.Unlock()
	if drv := c.driver(); drv != nil && openErr == nil {
		if err := drv.destroy(ctx, &rec); err != nil {
			return fmt.Errorf("isolation_windows: destroying %q: %w", c.handle, err)
		}
	}
	c.mu.Lock()
	c.destroyed = true
	for _, p := range c.procs {
		p.release()
	}
	c.mu.Unlock()
	c.b.ports.release(rec.Ports)
	// Without its record the directory is a half-made container to the next Backend, which
	// removes it, so a removal that fails here is finished later.
	if err := os.Remove(filepath.Join(c.dir, containerFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("isolation_windows: destroying %q: %w", c.handle, err)
	}
	if err := removeTree(c.dir); err != nil {
		c.b.log.Warn("isolation_windows: destroy: state not fully removed", "handle", c.handle, "err", err)
	}
	return nil
}

// loadProcesses reads the process records of a container found in the state dir and
// reattaches to those still running.
func (c *container) loadProcesses(ctx context.Context) error {
	dir := filepath.Join(c.dir, procsDirName)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validName(id) {
			continue
		}
		p := newProcess(c, id)
		if err := readJSON(filepath.Join(dir, e.Name()), &p.rec); err != nil {
			c.b.log.Warn("isolation_windows: skipping an unreadable process record", "handle", c.handle, "process", id, "err", err)
			continue
		}
		c.procs[id] = p
		switch {
		case p.rec.ExitCode != nil:
			p.finish(*p.rec.ExitCode, nil)
		case p.rec.Lost:
			p.finish(-1, errLost)
		default:
			var osp osProcess
			var err error
			if drv := c.driver(); drv != nil && c.openErr == nil {
				osp, err = drv.reattach(ctx, c.rec, p.rec)
			} else {
				err = c.openErr
			}
			if err != nil {
				c.b.log.Warn("isolation_windows: process exited while no backend watched it; its status is lost",
					"handle", c.handle, "process", id, "pid", p.rec.Pid, "err", err)
				p.rec.Lost = true
				if err := p.save(); err != nil {
					return err
				}
				p.finish(-1, errLost)
				continue
			}
			p.watch(osp)
		}
	}
	return nil
}
