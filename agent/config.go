package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-run/trellis/bbs/models"
)

// Backends the agent can run work through.
const (
	// BackendLinux is isolation_linux: namespaces, cgroups, overlay root filesystems, CNI.
	BackendLinux = "linux"
	// BackendMemory is isolation/isolationtest's in-memory backend, for tests and simulators.
	BackendMemory = "memory"
)

// Defaults of Config.
const (
	DefaultZone              = "z1"
	DefaultDataDir           = "/var/lib/trellis/agent"
	DefaultPresenceTTL       = 10 * time.Second
	DefaultReconcileInterval = 30 * time.Second
	DefaultEvacuationTimeout = 10 * time.Minute
	DefaultGracefulStop      = 10 * time.Second
	// DefaultLogBytesPerInstance bounds each instance's log file (it rotates once past it).
	DefaultLogBytesPerInstance = 4 << 20
	// DefaultCacheBytes bounds the download cache.
	DefaultCacheBytes = 10 << 30
)

// Duration is a time.Duration written as a Go duration string ("10s", "1m30s") in YAML and
// JSON; a bare number is read as seconds.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration %s: want a string such as \"10s\" or a number of seconds", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// BBSConfig is how the agent reaches the BBS: over HTTPS with the cell's client certificate,
// whose CommonName is "cell:<cell_id>".
type BBSConfig struct {
	URL      string `json:"url"`
	CAFile   string `json:"ca_file,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// Insecure talks plain HTTP to a BBS in insecure mode (loopback development only).
	Insecure bool `json:"insecure,omitempty"`
}

// CapacityConfig is what the cell offers; a zero field is taken from the backend's Capacity.
type CapacityConfig struct {
	MemoryMB   int32 `json:"memory_mb,omitempty"`
	DiskMB     int32 `json:"disk_mb,omitempty"`
	Containers int32 `json:"containers,omitempty"`
}

// APIConfig is the agent's own HTTPS API (logs, metrics, containers). Clients must present a
// certificate of the BBS CA with CommonName "operator".
type APIConfig struct {
	// Listen is host:port; empty disables the API.
	Listen string `json:"listen,omitempty"`
	// Advertise is the host:port announced in the presence for clients to dial; empty means
	// Listen, with an unspecified or zero host replaced by the machine's hostname.
	Advertise string `json:"advertise,omitempty"`
	CertFile  string `json:"cert_file,omitempty"`
	KeyFile   string `json:"key_file,omitempty"`
	// CAFile verifies client certificates (the BBS CA).
	CAFile string `json:"ca_file,omitempty"`
}

// LinuxConfig tunes the Linux backend. Empty fields take isolation_linux's defaults, with the
// state directories placed under the agent's data_dir.
type LinuxConfig struct {
	StateDir      string `json:"state_dir,omitempty"`
	LayerCacheDir string `json:"layer_cache_dir,omitempty"`
	DiskDir       string `json:"disk_dir,omitempty"`
	CgroupParent  string `json:"cgroup_parent,omitempty"`
	// Network: the CNI bridge, network name and subnet; give each cell on one machine its own.
	BridgeName     string    `json:"bridge_name,omitempty"`
	NetworkName    string    `json:"network_name,omitempty"`
	Subnet         string    `json:"subnet,omitempty"`
	NetworkDir     string    `json:"network_dir,omitempty"`
	HostIP         string    `json:"host_ip,omitempty"`
	HostPortRange  [2]uint32 `json:"host_port_range,omitempty"`
	CNIPluginDirs  []string  `json:"cni_plugin_dirs,omitempty"`
	MaxContainers  uint64    `json:"max_containers,omitempty"`
	InitBinaryPath string    `json:"init_binary,omitempty"`
}

// ImagesConfig tunes how a cell that announces the docker or oci scheme pulls images. Empty
// fields take the image store's defaults (package isolation_linux/image).
type ImagesConfig struct {
	// Dir is the layer cache; default <data_dir>/images.
	Dir string `json:"dir,omitempty"`
	// MaxBytes is the cache size past which unused layers are removed; default 20 GiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// Mirrors are registry mirrors ("host[:port]", optionally http:// or https://) tried in
	// order before the image's own registry; they get no credentials.
	Mirrors []string `json:"mirrors,omitempty"`
	// InsecureRegistries are registry hosts reached over plain HTTP (loopback and private
	// addresses always are).
	InsecureRegistries []string `json:"insecure_registries,omitempty"`
}

// Config configures an agent. Start from DefaultConfig (LoadConfig does) and set at least
// CellID, BBS and RootFSProviders.
type Config struct {
	// CellID names the cell: 1–128 bytes of [A-Za-z0-9_.-]. Required.
	CellID string `json:"cell_id"`
	// Zone is the failure zone the auctioneer balances across. Default "z1".
	Zone string    `json:"zone,omitempty"`
	BBS  BBSConfig `json:"bbs"`
	// Capacity overrides the backend's capacity (0 = auto).
	Capacity CapacityConfig `json:"capacity,omitempty"`
	// RootFSProviders maps what the cell announces to where it comes from: a key
	// "preloaded:<stack>" maps to the stack's directory or tarball (required by the Linux
	// backend), a bare scheme such as "docker" maps to "". Required (at least one).
	RootFSProviders map[string]string `json:"rootfs_providers"`
	// PlacementTags the cell requires work to ask for; OptionalPlacementTags it also accepts.
	PlacementTags         []string `json:"placement_tags,omitempty"`
	OptionalPlacementTags []string `json:"optional_placement_tags,omitempty"`
	// DataDir holds the logs, the download cache and (by default) the backend's state.
	DataDir string `json:"data_dir,omitempty"`
	// Backend is "linux", "windows" or "memory". Default: "windows" on Windows, else "linux".
	Backend string `json:"backend,omitempty"`
	// PresenceTTL is the presence lease; the agent heartbeats every third of it. Default 10s.
	PresenceTTL Duration `json:"presence_ttl,omitempty"`
	// ReconcileInterval is how often the agent compares its containers with a full read of
	// its work, besides following the event stream. Default 30s.
	ReconcileInterval Duration `json:"reconcile_interval,omitempty"`
	// EvacuationTimeout bounds how long an evacuating instance waits for its replacement to
	// be RUNNING before it stops anyway. Default 10m.
	EvacuationTimeout Duration `json:"evacuation_timeout,omitempty"`
	// GracefulStop is the time between SIGTERM and SIGKILL when a container stops. Default 10s.
	GracefulStop Duration `json:"graceful_stop,omitempty"`
	// LogBytesPerInstance bounds each instance's captured log (rotated once past it).
	LogBytesPerInstance int64 `json:"log_bytes_per_instance,omitempty"`
	// CacheBytes bounds the download cache.
	CacheBytes int64 `json:"cache_bytes,omitempty"`
	// MaxConcurrentCreates bounds how many containers the cell creates at once (root
	// filesystem, disk volume, cgroups, network); more placed at once wait their turn, so a
	// burst of placements cannot starve the agent's heartbeat. 0 means twice the CPUs, at least
	// 8: a create mostly waits on plugin processes and the kernel (namespaces, mounts), not on
	// the agent's CPU, so a small host gains from overlapping more of them (1 -> 300 instances
	// on 2 cores, loaded by other work: 37-59 s with 4, 31-53 s with 8 in paired runs, 41 s with 16).
	MaxConcurrentCreates int       `json:"max_concurrent_creates,omitempty"`
	API                  APIConfig `json:"api,omitempty"`
	// Images configures image pulls (docker:// and oci:// rootfs).
	Images ImagesConfig `json:"images,omitempty"`
	Linux  LinuxConfig  `json:"linux,omitempty"`
	// Windows tunes the windows backend: each preloaded stack's mode (process or container).
	Windows WindowsConfig `json:"windows,omitempty"`
}

// DefaultConfig returns the defaults; CellID, BBS and RootFSProviders still need setting. On
// Windows the backend is "windows" and the data directory DefaultWindowsDataDir.
func DefaultConfig() Config {
	dataDir, backend := DefaultDataDir, BackendLinux
	if runtime.GOOS == "windows" {
		dataDir, backend = DefaultWindowsDataDir, BackendWindows
	}
	return Config{
		Zone:                DefaultZone,
		DataDir:             dataDir,
		Backend:             backend,
		PresenceTTL:         Duration(DefaultPresenceTTL),
		ReconcileInterval:   Duration(DefaultReconcileInterval),
		EvacuationTimeout:   Duration(DefaultEvacuationTimeout),
		GracefulStop:        Duration(DefaultGracefulStop),
		LogBytesPerInstance: DefaultLogBytesPerInstance,
		CacheBytes:          DefaultCacheBytes,
	}
}

// LoadConfig reads a YAML (or JSON) configuration over DefaultConfig and validates it.
// Relative file names are resolved against the file's directory. Unknown fields are refused.
// Errors: ErrInvalidConfig (naming the field), or the file system's.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("agent: read config: %w", err)
	}
	cfg := DefaultConfig()
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, path, err)
	}
	dir := filepath.Dir(path)
	for _, f := range []*string{&cfg.BBS.CAFile, &cfg.BBS.CertFile, &cfg.BBS.KeyFile,
		&cfg.API.CertFile, &cfg.API.KeyFile, &cfg.API.CAFile, &cfg.DataDir, &cfg.Images.Dir} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	for k, v := range cfg.RootFSProviders {
		if v != "" && !filepath.IsAbs(v) {
			cfg.RootFSProviders[k] = filepath.Join(dir, v)
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// invalid returns an ErrInvalidConfig error naming field.
func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// maxConcurrentCreates is MaxConcurrentCreates with its default applied.
func (c Config) maxConcurrentCreates() int {
	if c.MaxConcurrentCreates > 0 {
		return c.MaxConcurrentCreates
	}
	return max(8, 2*runtime.NumCPU())
}

// Validate reports the first invalid field. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	if err := models.ValidateCellID("cell_id", c.CellID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.Zone == "" {
		return invalid("zone", "must not be empty")
	}
	if c.BBS.URL == "" {
		return invalid("bbs.url", "must be set")
	}
	if !c.BBS.Insecure {
		if !strings.HasPrefix(c.BBS.URL, "https://") {
			return invalid("bbs.url", "%q must be https:// (or set bbs.insecure for a loopback BBS)", c.BBS.URL)
		}
		for _, f := range []struct{ name, v string }{
			{"bbs.ca_file", c.BBS.CAFile}, {"bbs.cert_file", c.BBS.CertFile}, {"bbs.key_file", c.BBS.KeyFile},
		} {
			if f.v == "" {
				return invalid(f.name, "must be set: the agent authenticates as cell:%s with its certificate", c.CellID)
			}
		}
	}
	for _, f := range []struct {
		name string
		v    int32
	}{{"capacity.memory_mb", c.Capacity.MemoryMB}, {"capacity.disk_mb", c.Capacity.DiskMB}, {"capacity.containers", c.Capacity.Containers}} {
		if f.v < 0 {
			return invalid(f.name, "must not be negative, got %d", f.v)
		}
	}
	if len(c.RootFSProviders) == 0 {
		return invalid("rootfs_providers", "must list at least one provider (\"preloaded:<stack>\": path, or a scheme such as docker)")
	}
	for _, p := range c.providers() {
		field := "rootfs_providers[" + strconv.Quote(p) + "]"
		if err := models.ValidateRootFSProvider(field, p); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		src := c.RootFSProviders[p]
		stack, preloaded := strings.CutPrefix(p, "preloaded:")
		switch {
		case !preloaded && src != "":
			return invalid(field, "a bare scheme takes no path, got %q", src)
		case preloaded && c.Backend == BackendLinux && src == "":
			return invalid(field, "the linux backend needs the directory or tarball of stack %q", stack)
		case src != "" && !filepath.IsAbs(src):
			return invalid(field, "%q must be an absolute path", src)
		}
	}
	if c.MaxConcurrentCreates < 0 {
		return invalid("max_concurrent_creates", "must not be negative, got %d", c.MaxConcurrentCreates)
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		return invalid("data_dir", "%q must be an absolute path", c.DataDir)
	}
	switch c.Backend {
	case BackendLinux, BackendMemory:
	case BackendWindows:
		if err := c.validateWindows(); err != nil {
			return err
		}
	default:
		return invalid("backend", "must be %q, %q or %q, got %q", BackendLinux, BackendWindows, BackendMemory, c.Backend)
	}
	for _, d := range []struct {
		name string
		v    Duration
		min  time.Duration
	}{
		{"presence_ttl", c.PresenceTTL, time.Second},
		{"reconcile_interval", c.ReconcileInterval, 100 * time.Millisecond},
		{"evacuation_timeout", c.EvacuationTimeout, 0},
		{"graceful_stop", c.GracefulStop, 0},
	} {
		if time.Duration(d.v) < d.min || (d.min == 0 && d.v < 0) {
			return invalid(d.name, "%s is below the minimum %s", time.Duration(d.v), d.min)
		}
	}
	if c.LogBytesPerInstance < 4<<10 {
		return invalid("log_bytes_per_instance", "%d is below the minimum 4096", c.LogBytesPerInstance)
	}
	if c.Images.Dir != "" && !filepath.IsAbs(c.Images.Dir) {
		return invalid("images.dir", "%q must be an absolute path", c.Images.Dir)
	}
	if c.Images.MaxBytes < 0 {
		return invalid("images.max_bytes", "must not be negative, got %d", c.Images.MaxBytes)
	}
	for i, m := range c.Images.Mirrors {
		if strings.TrimSpace(m) == "" || strings.ContainsAny(m, " \t") {
			return invalid(fmt.Sprintf("images.mirrors[%d]", i), "%q is not [http[s]://]host[:port]", m)
		}
	}
	if c.CacheBytes <= 0 {
		return invalid("cache_bytes", "must be positive, got %d", c.CacheBytes)
	}
	if c.API.Listen != "" {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			return invalid("api.listen", "must be host:port: %v", err)
		}
		if c.API.Advertise != "" {
			if _, _, err := net.SplitHostPort(c.API.Advertise); err != nil {
				return invalid("api.advertise", "must be host:port: %v", err)
			}
		}
		for _, f := range []struct{ name, v string }{
			{"api.cert_file", c.API.CertFile}, {"api.key_file", c.API.KeyFile}, {"api.ca_file", c.API.CAFile},
		} {
			if f.v == "" {
				return invalid(f.name, "must be set when api.listen is: the API is HTTPS with operator client certificates")
			}
		}
	}
	return nil
}

// providers returns the announced rootfs providers, sorted.
func (c Config) providers() []string {
	out := make([]string, 0, len(c.RootFSProviders))
	for p := range c.RootFSProviders {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// stacks returns the "preloaded:<stack>" providers as stack → source.
func (c Config) stacks() map[string]string {
	out := map[string]string{}
	for p, src := range c.RootFSProviders {
		if stack, ok := strings.CutPrefix(p, "preloaded:"); ok {
			out[stack] = src
		}
	}
	return out
}

// schemes returns the bare-scheme providers.
func (c Config) schemes() []string {
	var out []string
	for _, p := range c.providers() {
		if !strings.HasPrefix(p, "preloaded:") {
			out = append(out, p)
		}
	}
	return out
}
