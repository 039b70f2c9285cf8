package isolationlinux

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/image"
	"github.com/trellis-run/trellis/isolation_linux/network"
)

// Default locations and sizes.
const (
	DefaultStateDir      = "/var/lib/trellis/containers"
	DefaultLayerCacheDir = "/var/lib/trellis/layers"
	DefaultImageDir      = image.DefaultDir
	DefaultDiskDir       = "/var/lib/trellis/disk"
	DefaultCgroupParent  = "trellis"
	// DefaultUIDMapStart is the first host uid (and gid) of the range every unprivileged
	// container's ids 0..DefaultUIDMapSize-1 map to. It is far above the ids distributions
	// hand out to people and services.
	DefaultUIDMapStart   = 1_000_000_000
	DefaultUIDMapSize    = 65536
	DefaultMaxContainers = 250
	DefaultStartTimeout  = 10 * time.Second
	DefaultInitPoolSize  = 2
	maxInitPoolSize      = 64
)

// Config configures a Backend. Start from DefaultConfig and change what differs.
type Config struct {
	// StateDir holds one directory per container (config.json, state.json, the init's
	// socket, process logs and exit codes). The container's root user must be able to
	// traverse it and its parents (mode o+x), as with every directory below.
	StateDir string
	// Stacks maps a stack name (the <stack> of a "preloaded:<stack>" RootFS) to a directory
	// or a tarball (.tar, .tar.gz, .tgz) holding the root filesystem.
	Stacks map[string]string
	// LayerCacheDir holds each stack unpacked once, read-only, as the overlay's lower layer.
	LayerCacheDir string
	// Images configures the cache of registry images that docker:// and oci:// root
	// filesystems are pulled into (package image): its directory, size bound, registry
	// mirrors and insecure registries. Its UIDMap is always the backend's. An empty
	// Images.Dir makes this backend refuse image root filesystems (ErrUnsupported).
	Images image.Config
	// DiskDir is where the disk-limited overlay upper directories live (see
	// resources.NewDiskQuota).
	DiskDir string
	// CgroupParent is the cgroup under which each container gets a cgroup named by its handle.
	CgroupParent string
	// UIDMapStart and UIDMapSize: an unprivileged container's uids and gids 0..UIDMapSize-1
	// are the host's UIDMapStart.. (one range shared by all unprivileged containers, which
	// never see each other's processes or files). UIDMapSize must cover uid 2000 (vcap).
	UIDMapStart, UIDMapSize uint32
	// Network configures bridge networking (CNI bridge, host-local and portmap).
	Network network.Config
	// InitBinary is the executable re-executed as each container's init; it must link this
	// package (whose containerinit dependency takes over in an init), as the trellis binary
	// does. Empty means the running executable (os.Executable). It is copied once into a
	// sealed memory file; the file on disk is never executed.
	InitBinary string
	// MaxContainers is reported by Capacity; Create refuses more.
	MaxContainers uint64
	// StartTimeout bounds how long Create waits for a container's init to be ready.
	StartTimeout time.Duration
	// InitPoolSize is how many container inits the backend keeps started ahead of Create,
	// per flavour (unprivileged; privileged, from the first privileged Create on), so that a
	// container start does not pay for the init's exec and runtime start. 0 disables the
	// pool. The pool is also off when StateDir or DiskDir is not on a shared mount (see
	// docs/isolation-linux.md).
	InitPoolSize int
}

// DefaultConfig returns the configuration a cell uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		StateDir:      DefaultStateDir,
		Stacks:        map[string]string{},
		LayerCacheDir: DefaultLayerCacheDir,
		Images:        image.DefaultConfig(),
		DiskDir:       DefaultDiskDir,
		CgroupParent:  DefaultCgroupParent,
		UIDMapStart:   DefaultUIDMapStart,
		UIDMapSize:    DefaultUIDMapSize,
		Network:       network.DefaultConfig(),
		MaxContainers: DefaultMaxContainers,
		StartTimeout:  DefaultStartTimeout,
		InitPoolSize:  DefaultInitPoolSize,
	}
}

// Validate checks every field. Errors wrap isolation.ErrInvalidSpec and name the field.
func (c Config) Validate() error {
	for _, d := range []struct{ name, path string }{
		{"StateDir", c.StateDir},
		{"LayerCacheDir", c.LayerCacheDir},
		{"DiskDir", c.DiskDir},
	} {
		if d.path == "" || !filepath.IsAbs(d.path) {
			return fmt.Errorf("%w: Config.%s %q must be an absolute path", isolation.ErrInvalidSpec, d.name, d.path)
		}
		if strings.ContainsAny(d.path, ",:") {
			return fmt.Errorf("%w: Config.%s %q must not contain ',' or ':' (overlay options)", isolation.ErrInvalidSpec, d.name, d.path)
		}
	}
	for name, src := range c.Stacks {
		if name == "" || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("%w: Config.Stacks: stack name %q is not valid", isolation.ErrInvalidSpec, name)
		}
		if !filepath.IsAbs(src) {
			return fmt.Errorf("%w: Config.Stacks[%q] %q must be an absolute path", isolation.ErrInvalidSpec, name, src)
		}
	}
	if strings.Trim(c.CgroupParent, "/") == "" {
		return fmt.Errorf("%w: Config.CgroupParent must be set; containers never live in the root cgroup", isolation.ErrInvalidSpec)
	}
	if c.UIDMapStart == 0 {
		return fmt.Errorf("%w: Config.UIDMapStart must not be 0: container root would be host root", isolation.ErrInvalidSpec)
	}
	if c.UIDMapSize <= 2000 {
		return fmt.Errorf("%w: Config.UIDMapSize %d must exceed 2000 so that vcap (uid 2000) is mapped", isolation.ErrInvalidSpec, c.UIDMapSize)
	}
	if uint64(c.UIDMapStart)+uint64(c.UIDMapSize) > 1<<32-1 {
		return fmt.Errorf("%w: Config.UIDMapStart+UIDMapSize overflows the uid space", isolation.ErrInvalidSpec)
	}
	if c.InitBinary != "" && !filepath.IsAbs(c.InitBinary) {
		return fmt.Errorf("%w: Config.InitBinary %q must be an absolute path", isolation.ErrInvalidSpec, c.InitBinary)
	}
	if c.MaxContainers == 0 {
		return fmt.Errorf("%w: Config.MaxContainers must be > 0", isolation.ErrInvalidSpec)
	}
	if c.StartTimeout <= 0 {
		return fmt.Errorf("%w: Config.StartTimeout must be > 0", isolation.ErrInvalidSpec)
	}
	if c.InitPoolSize < 0 || c.InitPoolSize > maxInitPoolSize {
		return fmt.Errorf("%w: Config.InitPoolSize %d must be between 0 and %d", isolation.ErrInvalidSpec, c.InitPoolSize, maxInitPoolSize)
	}
	if c.Images.Dir != "" {
		ic := c.Images
		ic.UIDMap = image.UIDMap{Start: c.UIDMapStart, Size: c.UIDMapSize}
		if err := ic.Validate(); err != nil {
			return fmt.Errorf("%w: Config.Images: %v", isolation.ErrInvalidSpec, err)
		}
	}
	if err := c.Network.Validate(); err != nil {
		return fmt.Errorf("Config.Network: %w", err)
	}
	return nil
}
