package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrInvalidConfig is returned for an unusable Config.
var ErrInvalidConfig = errors.New("invalid simulator configuration")

// Transports between the simulated cells (and the brain) and the BBS.
const (
	// TransportHTTP sends every call through the BBS HTTP server (plain HTTP on loopback).
	TransportHTTP = "http"
	// TransportInProcess calls the BBS's store directly: the same etcd transactions and
	// event stream without the HTTP and JSON layer.
	TransportInProcess = "inproc"
)

// CellClass is one kind of simulated cell. Cells of one class are "equal": the balance
// figures compare them with each other.
type CellClass struct {
	// Name labels the class in the figures.
	Name string
	// Fraction of the cells in this class; the fractions of all classes add up to 1.
	Fraction float64
	// MemoryMB, DiskMB and Containers are each cell's capacity.
	MemoryMB, DiskMB, Containers int32
	// Stacks are the preloaded root filesystems the cell offers ("cflinuxfs4" for
	// preloaded:cflinuxfs4); Schemes the other rootfs schemes ("docker").
	Stacks  []string
	Schemes []string
	// PlacementTags and OptionalPlacementTags are announced in the presence.
	PlacementTags         []string
	OptionalPlacementTags []string
}

// AppKind is one kind of application in the pushed mix.
type AppKind struct {
	// Weight is the kind's share of the pushed apps relative to the other kinds.
	Weight float64
	// RootFS is the DesiredLRP's rootfs ("preloaded:cflinuxfs4", "docker:///nginx").
	RootFS string
	// PlacementTags the app requests.
	PlacementTags []string
	// MemoryMB and DiskMB per instance.
	MemoryMB, DiskMB int32
}

// Config configures a simulated fleet.
type Config struct {
	// Cells is the number of simulated cells; Zones the number of zones they spread over.
	Cells, Zones int
	// Classes are the kinds of cells; empty means DefaultClass for every cell.
	Classes []CellClass
	// Apps is the mix of pushed applications; empty means DefaultApp only.
	Apps []AppKind
	// PresenceTTL is each cell's presence lease (heartbeat every third of it).
	PresenceTTL time.Duration
	// BrainLockTTL is the brain's leader lock TTL.
	BrainLockTTL time.Duration
	// Transport is TransportHTTP or TransportInProcess.
	Transport string
	// DataDir holds etcd's data and the cells' data directories. Empty: a temporary
	// directory (on /dev/shm when it exists, so that the disk of the machine running the
	// simulator is not what is measured), removed by Close.
	DataDir string
	// EtcdEndpoints, when set, use an external etcd cluster instead of the embedded member.
	EtcdEndpoints []string
	// CellsPerWorker, when positive, runs the cells in worker processes of that many cells
	// each (started with WorkerCommand), talking HTTP to the BBS; zero runs every cell in
	// this process. An agent keeps each instance's log file open, so a process holds at most
	// its open-file limit of instances.
	CellsPerWorker int
	// WorkerCommand starts one worker process: a program that calls RunWorker on its
	// standard input and output.
	WorkerCommand []string
	// Seed makes the pushed mix and crash times reproducible.
	Seed int64
	// Logger receives the components' logs; nil discards them (they are voluminous at scale).
	Logger *slog.Logger
	// Detail adds the latency of each BBS method to the figures.
	Detail bool
	// Progress, when set, receives one line per milestone of a scenario.
	Progress func(format string, args ...any)
}

// DefaultClass is a Linux cell of 64 GiB, 128 GiB disk and 400 containers offering
// cflinuxfs4 and docker images.
func DefaultClass() CellClass {
	return CellClass{Name: "linux", Fraction: 1, MemoryMB: 64 << 10, DiskMB: 128 << 10, Containers: 400,
		Stacks: []string{"cflinuxfs4"}, Schemes: []string{"docker"}}
}

// DefaultApp is a buildpack app of 128 MB and 256 MB disk.
func DefaultApp() AppKind {
	return AppKind{Weight: 1, RootFS: "preloaded:cflinuxfs4", MemoryMB: 128, DiskMB: 256}
}

// DefaultConfig returns a fleet of 1,000 default cells over 3 zones, talking HTTP, with
// the agent's default presence TTL of 10 s.
func DefaultConfig() Config {
	return Config{
		Cells:        1000,
		Zones:        3,
		Classes:      []CellClass{DefaultClass()},
		Apps:         []AppKind{DefaultApp()},
		PresenceTTL:  10 * time.Second,
		BrainLockTTL: 15 * time.Second,
		Transport:    TransportHTTP,
		Seed:         1,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Cells < 1:
		return bad("cells %d must be at least 1", c.Cells)
	case c.Zones < 1:
		return bad("zones %d must be at least 1", c.Zones)
	case c.PresenceTTL < time.Second:
		return bad("presence ttl %v must be at least 1s (the BBS's minimum)", c.PresenceTTL)
	case c.BrainLockTTL < time.Second:
		return bad("brain lock ttl %v must be at least 1s", c.BrainLockTTL)
	case c.Transport != TransportHTTP && c.Transport != TransportInProcess:
		return bad("transport %q must be %q or %q", c.Transport, TransportHTTP, TransportInProcess)
	case c.CellsPerWorker > 0 && len(c.WorkerCommand) == 0:
		return bad("cells per worker needs a worker command")
	case c.CellsPerWorker > 0 && c.Transport != TransportHTTP:
		return bad("cells in worker processes reach the BBS over %q only", TransportHTTP)
	}
	sum := 0.0
	for i, cl := range c.Classes {
		if cl.Fraction <= 0 || cl.MemoryMB <= 0 || cl.DiskMB <= 0 || cl.Containers <= 0 {
			return bad("classes[%d] (%s): fraction and capacities must be positive", i, cl.Name)
		}
		if len(cl.Stacks)+len(cl.Schemes) == 0 {
			return bad("classes[%d] (%s): offers no root filesystem", i, cl.Name)
		}
		sum += cl.Fraction
	}
	if len(c.Classes) > 0 && (sum < 0.999 || sum > 1.001) {
		return bad("class fractions add up to %.3f, not 1", sum)
	}
	for i, a := range c.Apps {
		if a.Weight <= 0 || a.RootFS == "" || a.MemoryMB < 0 || a.DiskMB < 0 {
			return bad("apps[%d]: weight must be positive, rootfs set and resources non-negative", i)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Classes) == 0 {
		c.Classes = []CellClass{DefaultClass()}
	}
	if len(c.Apps) == 0 {
		c.Apps = []AppKind{DefaultApp()}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = func(string, ...any) {}
	}
	return c
}
