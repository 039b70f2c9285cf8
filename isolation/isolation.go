package isolation

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Backend creates, finds and destroys containers on one host.
type Backend interface {
	// Ping reports whether the backend can serve requests.
	// Errors: the backend is unusable (the message says why).
	Ping(ctx context.Context) error

	// Capacity reports what the host offers in total.
	Capacity(ctx context.Context) (Capacity, error)

	// Create makes a container and starts its init, but runs no user process.
	// Errors: ErrAlreadyExists (handle taken), ErrInvalidSpec (field named),
	// ErrUnsupported (a request this backend cannot honour), ErrInsufficientResources.
	Create(ctx context.Context, spec ContainerSpec) (Container, error)

	// Lookup finds a container by handle, including one created by an earlier Backend over
	// the same state (a restarted agent).
	// Errors: ErrNotFound.
	Lookup(ctx context.Context, handle string) (Container, error)

	// Destroy kills every process of the container and removes everything it held. It is
	// idempotent: destroying an unknown handle returns nil.
	Destroy(ctx context.Context, handle string) error

	// List returns the containers whose properties include every key/value in filter (all
	// containers for an empty filter).
	List(ctx context.Context, filter Properties) ([]Container, error)

	// BulkMetrics returns the metrics of the named containers; unknown handles are left out.
	BulkMetrics(ctx context.Context, handles []string) (map[string]Metrics, error)
}

// Container is one isolated environment.
type Container interface {
	// Handle is the container's unique name on the host.
	Handle() string

	// Info reports the container's state, addresses, mapped ports and events.
	// Errors: ErrNotFound (destroyed meanwhile).
	Info(ctx context.Context) (ContainerInfo, error)

	// Metrics reports resource usage.
	// Errors: ErrNotFound.
	Metrics(ctx context.Context) (Metrics, error)

	// Run starts a process in the container. stdio may be zero; output of a process that no
	// one attaches to is discarded by the backend unless it keeps logs.
	// Errors: ErrStopped, ErrInvalidSpec, ErrUnsupported (e.g. a user the backend cannot map).
	Run(ctx context.Context, spec ProcessSpec, stdio ProcessIO) (Process, error)

	// Attach returns a process started earlier (possibly by an earlier Backend) by id.
	// Errors: ErrNotFound.
	Attach(ctx context.Context, processID string, stdio ProcessIO) (Process, error)

	// StreamIn unpacks the tar stream into dstPath inside the container. Paths in the archive
	// never escape the container's root (no "..", symlinks resolved inside the container).
	// Errors: ErrStopped, ErrInvalidSpec (bad path or archive).
	StreamIn(ctx context.Context, dstPath string, tarStream io.Reader) error

	// StreamOut returns srcPath inside the container as a tar stream (a file or a directory
	// tree). The caller closes it.
	// Errors: ErrNotFound (no such path).
	StreamOut(ctx context.Context, srcPath string) (io.ReadCloser, error)

	// Properties returns the container's properties.
	Properties(ctx context.Context) (Properties, error)

	// SetProperty sets one property.
	SetProperty(ctx context.Context, key, value string) error

	// Stop signals every process of the container with SIGTERM (or the platform's equivalent)
	// and kills what is left after grace; with kill true it kills at once. The container stays
	// (for Info and StreamOut) until destroyed; it runs no new processes.
	Stop(ctx context.Context, grace time.Duration, kill bool) error
}

// Process is a process running in a container.
type Process interface {
	// ID is unique within the container and stable across a backend restart.
	ID() string

	// Wait blocks until the process exits and returns its exit status (128+signal when
	// killed by a signal), or ctx's error.
	Wait(ctx context.Context) (int, error)

	// Signal delivers sig to the process.
	// Errors: ErrNotFound (the process has exited).
	Signal(ctx context.Context, sig Signal) error
}

// Signal is a platform-neutral signal.
type Signal int

const (
	// SignalTerminate asks the process to stop (SIGTERM; CTRL_SHUTDOWN on Windows).
	SignalTerminate Signal = iota
	// SignalKill ends the process at once (SIGKILL; TerminateProcess on Windows).
	SignalKill
)

// ProcessIO connects a process's standard streams. Nil streams are discarded / empty.
type ProcessIO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Properties are string key/values attached to a container, used to find it again.
type Properties map[string]string

// Capacity is what a host offers.
type Capacity struct {
	MemoryBytes   uint64
	DiskBytes     uint64
	MaxContainers uint64
}

// BindMount makes SrcPath on the host visible at DstPath in the container.
type BindMount struct {
	SrcPath  string
	DstPath  string
	ReadOnly bool
}

// Limits bound a container's resources. A zero field means "no limit".
type Limits struct {
	MemoryBytes uint64
	// CPUWeight is a relative share, 1–100 (Diego's cpu_weight).
	CPUWeight uint32
	Pids      uint64
	DiskBytes uint64
}

// NetworkMode selects a container's networking.
type NetworkMode string

const (
	// NetworkBridge gives the container its own address with outbound NAT and mapped ports
	// (the default).
	NetworkBridge NetworkMode = ""
	// NetworkNone gives the container only a loopback interface.
	NetworkNone NetworkMode = "none"
)

// NetIn asks for ContainerPort to be reachable on the host at HostPort (0 = allocate).
type NetIn struct {
	HostPort      uint32
	ContainerPort uint32
}

// ContainerSpec describes a container to create.
type ContainerSpec struct {
	// Handle names the container; it must be unique on the host and match [A-Za-z0-9_.-]{1,128}.
	Handle string
	// RootFS is a URI: "preloaded:<stack>", "docker:///<image>", "oci://...". Backends
	// resolve the schemes they support and fail with ErrUnsupported for others.
	RootFS     string
	Env        []string
	BindMounts []BindMount
	Limits     Limits
	NetIn      []NetIn
	Network    NetworkMode
	Properties Properties
	// Privileged false (the default) runs the container in a user namespace: its root is an
	// unprivileged user on the host.
	Privileged bool
	// ImageAuth authenticates the pull of a docker:// or oci:// RootFS from a private
	// registry; zero pulls anonymously. Backends never log or return its password.
	ImageAuth ImageAuth
	// Progress, when not nil, receives human-readable lines while the backend prepares the
	// root filesystem (an image pull: "pulling layer 2/5 (12.3 MB/40.1 MB)"). Create writes
	// to it from one goroutine at a time and not after it returns.
	Progress io.Writer
}

// ImageAuth is a registry user and password. String, GoString and LogValue redact the
// password, so a logged ContainerSpec never carries it.
type ImageAuth struct {
	Username string
	Password string
}

// IsZero reports whether a is anonymous.
func (a ImageAuth) IsZero() bool { return a.Username == "" && a.Password == "" }

// String describes a with the password redacted.
func (a ImageAuth) String() string {
	if a.IsZero() {
		return "anonymous"
	}
	return "user " + a.Username + " (password redacted)"
}

// GoString keeps %#v from printing the password.
func (a ImageAuth) GoString() string { return "isolation.ImageAuth{" + a.String() + "}" }

// MarshalText is String: log handlers (slog's text and JSON handlers) and JSON encoders,
// which prefer it to the fields, never see the password. (A slog.LogValuer would do for
// slog alone, but package isolation stays clear of log/slog: the container init imports it,
// see isolation_linux/containerinit.)
func (a ImageAuth) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads what MarshalText wrote, the user name without the password.
func (a *ImageAuth) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case s == "anonymous" || s == "":
		*a = ImageAuth{}
	case strings.HasPrefix(s, "user ") && strings.HasSuffix(s, " (password redacted)"):
		*a = ImageAuth{Username: strings.TrimSuffix(strings.TrimPrefix(s, "user "), " (password redacted)")}
	default:
		return fmt.Errorf("image auth %q: not anonymous nor \"user NAME (password redacted)\"", s)
	}
	return nil
}

// ImageConfig is what an image's configuration says about running it, for a container whose
// RootFS is a registry image (see ContainerInfo.Image).
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	// Env holds NAME=value entries.
	Env        []string
	WorkingDir string
	// User is a user name or uid[:gid] inside the container; empty means root.
	User string
	// ExposedPorts are the TCP ports the image declares, ascending.
	ExposedPorts []uint32
}

// Rlimits are per-process resource limits; nil means the backend's default.
type Rlimits struct {
	Nofile *uint64
	Nproc  *uint64
	Core   *uint64
}

// ProcessSpec describes a process to run.
type ProcessSpec struct {
	// ID names the process; empty asks the backend to assign one.
	ID   string
	Path string
	Args []string
	Env  []string
	// Dir is the working directory inside the container (default "/").
	Dir string
	// User is a user name or uid[:gid] inside the container (default root).
	User    string
	Rlimits Rlimits
}

// State is a container's lifecycle state.
type State string

const (
	StateActive  State = "active"
	StateStopped State = "stopped"
)

// Event texts reported in ContainerInfo.Events.
const (
	EventOutOfMemory = "out of memory"
	EventDiskLimit   = "disk limit exceeded"
)

// PortMapping is a NetIn as granted.
type PortMapping struct {
	HostPort      uint32
	ContainerPort uint32
}

// ContainerInfo describes a container.
type ContainerInfo struct {
	Handle        string
	State         State
	HostIP        string
	ContainerIP   string
	MappedPorts   []PortMapping
	Events        []string
	Properties    Properties
	ProcessIDs    []string
	ContainerPath string
	// Image is the run configuration of the container's image when its RootFS is a registry
	// image (docker://, oci://); nil otherwise.
	Image *ImageConfig
}

// Metrics are a container's resource usage.
type Metrics struct {
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	// CPUNanos is cumulative CPU time used.
	CPUNanos       uint64
	DiskBytes      uint64
	DiskLimitBytes uint64
	Pids           uint64
	At             time.Time
}
