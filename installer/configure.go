package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/trellis-run/trellis/agent"
)

// Settings are the configuration values `trellis agent configure` sets. An empty field
// keeps what the file says (or the default, for a new file).
type Settings struct {
	CellID string
	Zone   string
	BBSURL string
	// CAFile, CertFile and KeyFile are the BBS CA and the cell's client certificate.
	CAFile, CertFile, KeyFile string
	// PlacementTags replaces the cell's required placement tags when non-empty.
	PlacementTags []string
	// RootFSProviders replaces the providers when non-empty: each is "preloaded:<stack>=<path>"
	// or a bare scheme such as "docker".
	RootFSProviders []string
	DataDir         string
	Backend         string
}

// empty reports whether s sets nothing.
func (s Settings) empty() bool {
	return s.CellID == "" && s.Zone == "" && s.BBSURL == "" && s.CAFile == "" && s.CertFile == "" &&
		s.KeyFile == "" && len(s.PlacementTags) == 0 && len(s.RootFSProviders) == 0 && s.DataDir == "" &&
		s.Backend == ""
}

// providers parses RootFSProviders into the configuration's map. Errors: ErrInvalidOptions.
func (s Settings) providers() (map[string]any, error) {
	out := map[string]any{}
	for _, p := range s.RootFSProviders {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		name, src, _ := strings.Cut(p, "=")
		if name == "" {
			return nil, fmt.Errorf("%w: --rootfs %q: want preloaded:<stack>=<path> or a scheme such as docker", ErrInvalidOptions, p)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: --rootfs %q is given twice", ErrInvalidOptions, name)
		}
		out[name] = src
	}
	return out, nil
}

// ConfigHeader starts every file Configure writes.
const ConfigHeader = "# trellis cell agent configuration, written by `trellis agent configure`.\n" +
	"# Edit it by hand or run configure again; restart the agent to apply changes.\n"

// newConfig is the configuration a first configure starts from: the platform's data
// directory and certificate paths beside the file.
func newConfig(path string) map[string]any {
	pki := filepath.Join(filepath.Dir(path), "pki")
	return map[string]any{
		"zone": agent.DefaultZone,
		"bbs": map[string]any{
			"ca_file":   filepath.Join(pki, "ca.crt"),
			"cert_file": filepath.Join(pki, "cell.crt"),
			"key_file":  filepath.Join(pki, "cell.key"),
		},
		"data_dir": defaultDataDir(),
	}
}

// Configure merges s into the YAML configuration at path (creating it, and its directory,
// when absent), checks the result with validate (agent.LoadConfig's rules) and replaces the
// file atomically, mode 0640. Keys it does not set, including ones it does not know, are
// kept. When validation fails the file is left untouched. Errors: ErrInvalidOptions,
// ErrInvalidConfig (wrapping the validator's error), or the file system's.
func Configure(ctx context.Context, path string, s Settings, validate func(path string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if validate == nil {
		return fmt.Errorf("%w: configure needs a validator", ErrInvalidOptions)
	}
	if path == "" || !filepath.IsAbs(path) {
		return fmt.Errorf("%w: config path %q must be absolute", ErrInvalidOptions, path)
	}
	providers, err := s.providers()
	if err != nil {
		return err
	}
	cfg := newConfig(path)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		cfg = map[string]any{}
		if err := yaml.Unmarshal(data, &cfg); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidConfig, path, err)
		}
		if cfg == nil {
			cfg = map[string]any{}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("installer: read %s: %w", path, err)
	}
	set := func(key, v string) {
		if v != "" {
			cfg[key] = v
		}
	}
	set("cell_id", s.CellID)
	set("zone", s.Zone)
	set("data_dir", s.DataDir)
	set("backend", s.Backend)
	if s.BBSURL != "" || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" {
		bbs, _ := cfg["bbs"].(map[string]any)
		if bbs == nil {
			bbs = map[string]any{}
		}
		for k, v := range map[string]string{"url": s.BBSURL, "ca_file": s.CAFile, "cert_file": s.CertFile, "key_file": s.KeyFile} {
			if v != "" {
				bbs[k] = v
			}
		}
		cfg["bbs"] = bbs
	}
	if len(providers) > 0 {
		cfg["rootfs_providers"] = providers
	}
	if tags := nonEmpty(s.PlacementTags); len(tags) > 0 {
		cfg["placement_tags"] = tags
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("installer: encode configuration: %w", err)
	}
	out = append([]byte(ConfigHeader), out...)

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("installer: create %s: %w", dir, err)
	}
	// The candidate sits beside the file so relative paths in it resolve the same way.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(out)
	if werr == nil {
		werr = tmp.Chmod(0o640)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("installer: write %s: %w", tmp.Name(), werr)
	}
	if err := validate(tmp.Name()); err != nil {
		return fmt.Errorf("%w: %s left unchanged: %w", ErrInvalidConfig, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("installer: replace %s: %w", path, err)
	}
	return nil
}

func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ValidateAgentConfig checks the file at path as the agent will when it starts.
func ValidateAgentConfig(path string) error {
	_, err := agent.LoadConfig(path)
	return err
}

// Purge deletes the agent's configuration file at path and its data directory, then the
// configuration's directory if that is left empty. The data directory (data_dir in the file,
// else the platform default) is deleted only when it is the platform default or lies inside
// the configuration's directory, so a data_dir pointing somewhere shared is never removed.
// Stop and uninstall the service first. Nothing to delete is not an error. Errors: the file
// system's.
func Purge(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if path == "" || !filepath.IsAbs(path) {
		return fmt.Errorf("%w: config path %q must be absolute", ErrInvalidOptions, path)
	}
	dir := filepath.Dir(path)
	dataDir := defaultDataDir()
	if data, err := os.ReadFile(path); err == nil {
		var cfg struct {
			DataDir string `json:"data_dir"`
		}
		if yaml.Unmarshal(data, &cfg) == nil && cfg.DataDir != "" {
			dataDir = cfg.DataDir
			if !filepath.IsAbs(dataDir) {
				dataDir = filepath.Join(dir, dataDir)
			}
		}
	}
	dataDir = filepath.Clean(dataDir)
	if dataDir == filepath.Clean(defaultDataDir()) || within(dir, dataDir) {
		if err := removeTree(dataDir); err != nil {
			return fmt.Errorf("installer: purge %s: %w", dataDir, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("installer: purge %s: %w", path, err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("installer: purge %s: %w", dir, err)
		}
	}
	return nil
}

// removeTree removes path and everything under it. os.RemoveAll comes first; where it fails
// (under wine its Windows implementation does), the tree is removed entry by entry, deepest
// first, with plain deletes. Symbolic links are removed, never followed.
func removeTree(path string) error {
	err := os.RemoveAll(path)
	if err == nil {
		return nil
	}
	var entries []string
	walkErr := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entries = append(entries, p)
		return nil
	})
	if walkErr != nil && !errors.Is(walkErr, fs.ErrNotExist) {
		return fmt.Errorf("%w (walking it: %v)", err, walkErr)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if rerr := os.Remove(entries[i]); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("%w (then %v)", err, rerr)
		}
	}
	return nil
}

// within reports whether path lies strictly inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
