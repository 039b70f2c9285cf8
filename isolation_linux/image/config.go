package image

import (
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Defaults of Config.
const (
	DefaultDir      = "/var/lib/trellis/images"
	DefaultMaxBytes = 20 << 30
	// DefaultUIDMapStart and DefaultUIDMapSize match the Linux backend's defaults.
	DefaultUIDMapStart = 1_000_000_000
	DefaultUIDMapSize  = 65536
)

// UIDMap is the host id range container ids 0..Size-1 map to (users and groups alike).
// The zero value means no shift: files keep the ids the image gives them.
type UIDMap struct {
	Start uint32
	Size  uint32
}

func (m UIDMap) shifted() bool { return m.Size > 0 }

// Config configures a Store.
type Config struct {
	// Dir holds the cache: index.json, layers/<id>/ (one read-only tree per layer and uid
	// shift) and tmp/ (downloads and unpacks in progress, emptied by NewStore). It and
	// layers/ are made searchable by others (0711), because the overlay is mounted by a
	// user-namespaced container root. It must be absolute and must not contain ',' or ':'
	// (it ends up in overlay mount options).
	Dir string
	// MaxBytes is the size (disk usage of the unpacked layers) past which unreferenced
	// layers are removed, least recently used first. Referenced layers are never removed,
	// so the cache can be larger while they are in use.
	MaxBytes int64
	// Mirrors are registry mirrors tried in order before the origin registry, as "host",
	// "host:port" or with an "http://" or "https://" scheme. A mirror serves the same
	// repository paths as the origin (a pull-through cache). Mirrors get no credentials.
	Mirrors []string
	// UIDMap is the range ownership is shifted into for unprivileged containers (a pull
	// with Unshifted keeps the image's ids, for privileged ones). Zero disables shifting.
	UIDMap UIDMap
	// Platform selects the manifest of a multi-platform image, "os/arch[/variant]".
	// Empty means linux and the architecture this binary was built for.
	Platform string
	// InsecureRegistries are registry hosts reached over plain HTTP. Loopback, localhost
	// and RFC 1918 addresses always are.
	InsecureRegistries []string
	// Transport carries registry requests; nil means go-containerregistry's default.
	Transport http.RoundTripper
	// Logger receives pull and garbage-collection events; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of a production cell: DefaultDir, DefaultMaxBytes,
// the backend's default uid range, and this machine's platform.
func DefaultConfig() Config {
	return Config{
		Dir:      DefaultDir,
		MaxBytes: DefaultMaxBytes,
		UIDMap:   UIDMap{Start: DefaultUIDMapStart, Size: DefaultUIDMapSize},
		Platform: "linux/" + runtime.GOARCH,
	}
}

// Validate checks c. Errors: ErrInvalidConfig naming the field.
func (c Config) Validate() error {
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("%w: Dir %q must be an absolute path", ErrInvalidConfig, c.Dir)
	}
	if strings.ContainsAny(c.Dir, ",:") {
		return fmt.Errorf("%w: Dir %q must not contain ',' or ':' (overlay options)", ErrInvalidConfig, c.Dir)
	}
	if c.MaxBytes <= 0 {
		return fmt.Errorf("%w: MaxBytes must be positive, got %d", ErrInvalidConfig, c.MaxBytes)
	}
	if (c.UIDMap.Start == 0) != (c.UIDMap.Size == 0) {
		return fmt.Errorf("%w: UIDMap start %d and size %d must both be zero or both be set", ErrInvalidConfig, c.UIDMap.Start, c.UIDMap.Size)
	}
	if uint64(c.UIDMap.Start)+uint64(c.UIDMap.Size) > 1<<32-1 {
		return fmt.Errorf("%w: UIDMap %d+%d overflows 32-bit ids", ErrInvalidConfig, c.UIDMap.Start, c.UIDMap.Size)
	}
	for i, m := range c.Mirrors {
		if _, err := parseMirror(m, nil); err != nil {
			return fmt.Errorf("%w: Mirrors[%d]: %v", ErrInvalidConfig, i, err)
		}
	}
	if c.Platform != "" {
		if _, err := v1.ParsePlatform(c.Platform); err != nil {
			return fmt.Errorf("%w: Platform %q: %v", ErrInvalidConfig, c.Platform, err)
		}
	}
	return nil
}

// parseMirror parses a mirror as a registry: "host[:port]" with an optional http:// (plain
// HTTP) or https:// scheme.
func parseMirror(m string, insecure []string) (name.Registry, error) {
	host, opts := m, []name.Option{name.StrictValidation}
	if rest, ok := strings.CutPrefix(m, "http://"); ok {
		host, opts = rest, append(opts, name.Insecure)
	} else if rest, ok := strings.CutPrefix(m, "https://"); ok {
		host = rest
	}
	host = strings.TrimSuffix(host, "/")
	if host == "" || strings.Contains(host, "/") {
		return name.Registry{}, fmt.Errorf("mirror %q: want [http[s]://]host[:port]", m)
	}
	for _, h := range insecure {
		if h == host {
			opts = append(opts, name.Insecure)
		}
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("mirror %q: %v", m, err)
	}
	return reg, nil
}
