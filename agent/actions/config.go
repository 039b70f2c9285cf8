package actions

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/agent/cache"
	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// DefaultGracePeriod is how long a cancelled process has between SignalTerminate and
// SignalKill (Diego's 10 s).
const DefaultGracePeriod = 10 * time.Second

// killWait bounds the wait for a process to report its exit after SignalKill; a backend that
// cannot kill within it has lost track of the process.
const killWait = 30 * time.Second

// Config is what a Runner needs. Container is required; Cache is required when the tree
// holds a download action.
type Config struct {
	// Container runs the actions.
	Container isolation.Container
	// Cache fetches download actions' artifacts.
	Cache *cache.Cache
	// HTTPClient makes upload requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Env is the work's environment as NAME=value (the DesiredLRP's or Task's env, unless the
	// agent put it in the ContainerSpec already). Run actions get Env, then Instance.Vars(),
	// then their own env; later entries win.
	Env []string
	// Instance supplies the instance variables of an LRP instance; nil (a task) adds none.
	Instance *InstanceEnv
	// Output receives the stdout/stderr of run actions; nil discards it. When it is a
	// logs.Forker each process gets its own fork. It must be safe for concurrent use.
	Output logs.Sink
	// Progress receives emit_progress messages; nil means Output.
	Progress logs.Sink
	// Logger receives the runner's own records (try failures, signals); nil discards them.
	Logger *slog.Logger
	// GracePeriod is the time between SignalTerminate and SignalKill when a run action is
	// cancelled; zero means DefaultGracePeriod.
	GracePeriod time.Duration
	// ProcessIDPrefix, when set, gives every run action a deterministic process id: the
	// prefix plus the node's position in the tree (see the package doc). Since a container
	// refuses a second process of one id, a tree run with a prefix runs once per container:
	// use one prefix per tree ("setup", "action"). Empty lets the backend choose ids, and a
	// Runner may then run any number of trees. Up to 64 bytes of [A-Za-z0-9_-].
	ProcessIDPrefix string
	// Resume makes run actions attach to an existing process of their id before starting
	// one. It requires ProcessIDPrefix.
	Resume bool
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Container == nil {
		return fmt.Errorf("action runner config: Container is required: %w", ErrInvalidAction)
	}
	if c.GracePeriod < 0 {
		return fmt.Errorf("action runner config: GracePeriod %v is negative: %w", c.GracePeriod, ErrInvalidAction)
	}
	if c.Resume && c.ProcessIDPrefix == "" {
		return fmt.Errorf("action runner config: Resume requires a ProcessIDPrefix: %w", ErrInvalidAction)
	}
	if p := c.ProcessIDPrefix; p != "" {
		if len(p) > 64 {
			return fmt.Errorf("action runner config: ProcessIDPrefix is %d bytes long; the limit is 64: %w", len(p), ErrInvalidAction)
		}
		for i := 0; i < len(p); i++ {
			b := p[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
				return fmt.Errorf("action runner config: ProcessIDPrefix %q: byte %q is not one of [A-Za-z0-9_-]: %w", p, b, ErrInvalidAction)
			}
		}
	}
	return nil
}

// InstanceEnv are the values of the instance variables of an LRP instance.
type InstanceEnv struct {
	// GUID is the instance guid (INSTANCE_GUID, CF_INSTANCE_GUID).
	GUID string
	// Index is the instance index (INSTANCE_INDEX, CF_INSTANCE_INDEX).
	Index int
	// HostIP is the cell's address the instance is reached at (CF_INSTANCE_IP).
	HostIP string
	// ContainerIP is the container's own address (CF_INSTANCE_INTERNAL_IP); empty omits it.
	ContainerIP string
	// Ports are the instance's port mappings in the DesiredLRP's port order. The first gives
	// PORT (its container port), CF_INSTANCE_PORT (its host port) and CF_INSTANCE_ADDR
	// (HostIP:host port); all of them give CF_INSTANCE_PORTS.
	Ports []models.PortMapping
}

// Vars returns the instance variables as NAME=value:
//
//	INSTANCE_GUID, INSTANCE_INDEX, CF_INSTANCE_GUID, CF_INSTANCE_INDEX, CF_INSTANCE_IP,
//	CF_INSTANCE_INTERNAL_IP (when ContainerIP is set), PORT, CF_INSTANCE_PORT and
//	CF_INSTANCE_ADDR (when there is a port; the last two only with a host port), and
//	CF_INSTANCE_PORTS, a JSON array [{"external":61001,"internal":8080}] ("[]" without ports).
func (e InstanceEnv) Vars() []string {
	index := strconv.Itoa(e.Index)
	vars := []string{
		"INSTANCE_GUID=" + e.GUID,
		"INSTANCE_INDEX=" + index,
		"CF_INSTANCE_GUID=" + e.GUID,
		"CF_INSTANCE_INDEX=" + index,
		"CF_INSTANCE_IP=" + e.HostIP,
	}
	if e.ContainerIP != "" {
		vars = append(vars, "CF_INSTANCE_INTERNAL_IP="+e.ContainerIP)
	}
	if len(e.Ports) > 0 {
		first := e.Ports[0]
		vars = append(vars, "PORT="+strconv.FormatUint(uint64(first.ContainerPort), 10))
		if first.HostPort != 0 {
			hostPort := strconv.FormatUint(uint64(first.HostPort), 10)
			vars = append(vars,
				"CF_INSTANCE_PORT="+hostPort,
				"CF_INSTANCE_ADDR="+net.JoinHostPort(e.HostIP, hostPort))
		}
	}
	type portJSON struct {
		External uint32 `json:"external"`
		Internal uint32 `json:"internal"`
	}
	ports := make([]portJSON, len(e.Ports))
	for i, p := range e.Ports {
		ports[i] = portJSON{External: p.HostPort, Internal: p.ContainerPort}
	}
	data, _ := json.Marshal(ports) // a slice of plain structs always encodes
	return append(vars, "CF_INSTANCE_PORTS="+string(data))
}
