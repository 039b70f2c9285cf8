package isolationwindows

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// dirDriver stands in for the job-object driver, which needs Windows: a container is a
// directory, and kill is counted. It is enough for the watchdog, which only measures a
// process-mode container's directory and asks the driver to kill.
type dirDriver struct {
	base string

	mu    sync.Mutex
	kills map[string]int
}

func (d *dirDriver) create(ctx context.Context, rec *containerRecord) error {
	rec.RootDir = filepath.Join(d.base, rec.Handle)
	return os.MkdirAll(rec.RootDir, 0o755)
}
func (d *dirDriver) open(context.Context, *containerRecord) error { return nil }
func (d *dirDriver) start(context.Context, *containerRecord, launch) (osProcess, error) {
	return nil, errors.New("dirDriver runs no processes")
}
func (d *dirDriver) reattach(context.Context, *containerRecord, processRecord) (osProcess, error) {
	return nil, isolation.ErrNotFound
}
func (d *dirDriver) terminate(context.Context, *containerRecord) error { return nil }
func (d *dirDriver) kill(_ context.Context, rec *containerRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kills[rec.Handle]++
	return nil
}
func (d *dirDriver) destroy(_ context.Context, rec *containerRecord) error {
	return os.RemoveAll(rec.RootDir)
}
func (d *dirDriver) metrics(context.Context, *containerRecord) (isolation.Metrics, error) {
	return isolation.Metrics{}, nil
}
func (d *dirDriver) events(*containerRecord) []string { return nil }
func (d *dirDriver) close() error                     { return nil }

func (d *dirDriver) killed(handle string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kills[handle]
}

func TestDiskWatchdog(t *testing.T) {
	base := t.TempDir()
	drv := &dirDriver{base: filepath.Join(base, "roots"), kills: map[string]int{}}
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(base, "state")
	cfg.Stacks = map[string]StackConfig{"win": {Mode: ModeProcess}}
	cfg.MemoryBytes, cfg.DiskBytes = 1<<30, 1<<30
	cfg.PortRangeLo, cfg.PortRangeHi = 44000, 44099
	cfg.DiskCheckInterval = time.Hour // the test calls checkDisks itself
	b, err := newBackend(context.Background(), cfg, slog.New(slog.DiscardHandler), deps{
		process:   func(Config, *slog.Logger) (driver, error) { return drv, nil },
		container: func(Config, *slog.Logger) (driver, error) { return nil, isolation.ErrUnsupported },
		portFree:  portFree,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	mk := func(handle string, limit uint64) *container {
		c, err := b.Create(ctx, isolation.ContainerSpec{Handle: handle, RootFS: "preloaded:win", Limits: isolation.Limits{DiskBytes: limit}})
		if err != nil {
			t.Fatalf("Create(%s, disk %d): %v", handle, limit, err)
		}
		return c.(*container)
	}
	write := func(c *container, name string, n int) {
		p := filepath.Join(c.rec.RootDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	events := func(c *container) []string {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Events
	}

	limited, under, unlimited := mk("limited", 64<<10), mk("under", 64<<10), mk("unlimited", 0)
	write(limited, "app/data", 48<<10)
	write(limited, "app/more/data", 48<<10) // 96 KiB, over 64 KiB
	write(under, "app/data", 32<<10)
	write(unlimited, "big", 256<<10)
	// A link to a host directory (a bind mount in process mode) is not counted.
	host := filepath.Join(base, "host")
	if err := os.MkdirAll(host, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "huge"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(under.rec.RootDir, "shared")); err != nil {
		t.Fatal(err)
	}

	b.checkDisks(ctx)
	b.checkDisks(ctx) // a second check neither records nor kills again
	if got := events(limited); !slices.Equal(got, []string{isolation.EventDiskLimit}) {
		t.Errorf("events of the container over its limit = %q, want [%q]", got, isolation.EventDiskLimit)
	}
	if n := drv.killed("limited"); n != 1 {
		t.Errorf("the container over its limit was killed %d times, want 1", n)
	}
	for _, c := range []*container{under, unlimited} {
		if got := events(c); len(got) != 0 {
			t.Errorf("events of %s = %q, want none", c.handle, got)
		}
		if n := drv.killed(c.handle); n != 0 {
			t.Errorf("%s was killed %d times, want 0", c.handle, n)
		}
	}
	for c, want := range map[*container]uint64{limited: 96 << 10, under: 32 << 10, unlimited: 256 << 10} {
		m, err := c.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.DiskBytes != want || m.DiskLimitBytes != c.rec.Spec.Limits.DiskBytes {
			t.Errorf("Metrics of %s: disk %d of %d, want %d of %d", c.handle, m.DiskBytes, m.DiskLimitBytes, want, c.rec.Spec.Limits.DiskBytes)
		}
	}

	// The event is in the record: a new backend over the state dir still reports it.
	b.Close()
	b2, err := newBackend(ctx, cfg, slog.New(slog.DiscardHandler), deps{
		process:   func(Config, *slog.Logger) (driver, error) { return drv, nil },
		container: func(Config, *slog.Logger) (driver, error) { return nil, isolation.ErrUnsupported },
		portFree:  portFree,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	c2, err := b2.Lookup(ctx, "limited")
	if err != nil {
		t.Fatal(err)
	}
	if got := events(c2.(*container)); !slices.Contains(got, isolation.EventDiskLimit) {
		t.Errorf("events after a backend restart = %q, want %q", got, isolation.EventDiskLimit)
	}
}

func TestDiskCheckIntervalValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DiskCheckInterval = 10 * time.Millisecond
	if err := cfg.Validate(); !isolation.IsInvalidSpec(err) {
		t.Fatalf("Validate with a 10ms disk check interval = %v, want ErrInvalidSpec", err)
	}
	cfg.DiskCheckInterval = 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with the default interval: %v", err)
	}
	if got := cfg.diskInterval(); got != DefaultDiskCheckInterval {
		t.Fatalf("diskInterval = %v, want %v", got, DefaultDiskCheckInterval)
	}
}
