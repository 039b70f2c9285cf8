package isolationwindows

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// The disk watchdog. A process-mode container's files are a private directory on the host
// volume, which has no per-container quota, so the limit is enforced by measuring: every
// Config.DiskCheckInterval the backend sums the sizes of the files under each process-mode
// container's directory and, once a container holds more than its Limits.DiskBytes, records
// the event "disk limit exceeded" and kills its processes (exit status 137), as the memory
// limit's kill does with "out of memory". Between two checks a container may write past its
// limit. Container mode needs none of this: its scratch layer has the limit as its size.
// The sizes are also what Metrics reports as DiskBytes for process mode.

// diskInterval is Config.DiskCheckInterval with its default applied.
func (c Config) diskInterval() time.Duration {
	if c.DiskCheckInterval > 0 {
		return c.DiskCheckInterval
	}
	return DefaultDiskCheckInterval
}

// watchDisks runs the checks until stop is closed.
func (b *Backend) watchDisks(stop <-chan struct{}) {
	t := time.NewTicker(b.cfg.diskInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			b.checkDisks(context.Background())
		}
	}
}

// checkDisks measures every active process-mode container and acts on those over their limit.
func (b *Backend) checkDisks(ctx context.Context) {
	b.mu.Lock()
	cs := slices.Collect(maps.Values(b.containers))
	b.mu.Unlock()
	for _, c := range cs {
		c.checkDisk(ctx)
	}
}

// checkDisk measures c (process mode only) and, the first time it is over its limit, records
// EventDiskLimit and kills its processes.
func (c *container) checkDisk(ctx context.Context) {
	c.mu.Lock()
	if c.destroyed || c.openErr != nil || c.rec.Mode != ModeProcess || c.rec.State != isolation.StateActive {
		c.mu.Unlock()
		return
	}
	root, limit := c.rec.RootDir, c.rec.Spec.Limits.DiskBytes
	c.mu.Unlock()

	used, err := dirUsage(root)
	if err != nil {
		c.b.log.Warn("isolation_windows: measuring a container's disk", "handle", c.handle, "err", err)
		return
	}
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return
	}
	c.diskUsed = used
	over := limit > 0 && used > limit && !slices.Contains(c.rec.Events, isolation.EventDiskLimit)
	if !over {
		c.mu.Unlock()
		return
	}
	c.rec.Events = append(c.rec.Events, isolation.EventDiskLimit)
	if err := c.saveLocked(); err != nil {
		c.b.log.Warn("isolation_windows: recording events", "handle", c.handle, "err", err)
	}
	rec := *c.rec
	c.mu.Unlock()
	c.b.log.Warn("isolation_windows: container over its disk limit; killing its processes", "handle", c.handle, "used", used, "limit", limit)
	if err := c.driver().kill(ctx, &rec); err != nil {
		c.b.log.Error("isolation_windows: killing a container over its disk limit", "handle", c.handle, "err", err)
	}
}

// dirUsage sums the sizes of the regular files under root. Links are not followed: a bind
// mount (a directory link to a host directory) is not the container's to count.
func dirUsage(root string) (uint64, error) {
	var total uint64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += uint64(info.Size())
		return nil
	})
	return total, err
}
