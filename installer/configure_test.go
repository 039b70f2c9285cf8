package installer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/installer/deb"
)

func full() Settings {
	return Settings{
		CellID: "cell-1", Zone: "z2", BBSURL: "https://bbs.example:8889",
		CAFile: "/pki/ca.crt", CertFile: "/pki/cell.crt", KeyFile: "/pki/cell.key",
		PlacementTags:   []string{"ssd", " gpu ", ""},
		RootFSProviders: []string{"preloaded:cflinuxfs4=/var/lib/trellis/rootfs/cflinuxfs4", "docker"},
	}
}

func TestConfigureNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "trellis", "agent.yaml")
	if err := Configure(context.Background(), path, full(), ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CellID != "cell-1" || cfg.Zone != "z2" || cfg.BBS.URL != "https://bbs.example:8889" ||
		cfg.BBS.CAFile != "/pki/ca.crt" || cfg.BBS.CertFile != "/pki/cell.crt" || cfg.BBS.KeyFile != "/pki/cell.key" {
		t.Errorf("config = %+v", cfg)
	}
	if !slices.Equal(cfg.PlacementTags, []string{"ssd", "gpu"}) {
		t.Errorf("placement tags = %q", cfg.PlacementTags)
	}
	if len(cfg.RootFSProviders) != 2 || cfg.RootFSProviders["preloaded:cflinuxfs4"] != "/var/lib/trellis/rootfs/cflinuxfs4" || cfg.RootFSProviders["docker"] != "" {
		t.Errorf("rootfs providers = %v", cfg.RootFSProviders)
	}
	if cfg.DataDir != defaultDataDir() {
		t.Errorf("data_dir = %q, want the platform default %q", cfg.DataDir, defaultDataDir())
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte(ConfigHeader)) {
		t.Errorf("file lacks the header:\n%s", data)
	}
}

// TestConfigurePackagedDefault fills in the file the .deb ships, as an operator does after
// installing it; the default certificate paths it names are kept.
func TestConfigurePackagedDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(deb.DefaultAgentConfig), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := agent.DefaultConfig().Validate(); err == nil {
		t.Fatal("the default agent config validates by itself; the test below proves nothing")
	}
	if _, err := agent.LoadConfig(path); err == nil {
		t.Fatal("the packaged default validates before configure; the agent would start unconfigured")
	}
	s := Settings{CellID: "cell-9", BBSURL: "https://bbs:8889", RootFSProviders: []string{"docker"}}
	if err := Configure(context.Background(), path, s, ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CellID != "cell-9" || cfg.BBS.CAFile != "/etc/trellis/pki/ca.crt" || cfg.Zone != "z1" || cfg.Backend != "linux" {
		t.Errorf("config = %+v", cfg)
	}
}

func TestConfigureMergeKeepsWhatIsNotGiven(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	ctx := context.Background()
	if err := Configure(ctx, path, full(), ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	// An operator adds a key configure has no flag for.
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(data, []byte("presence_ttl: 20s\n")...), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Configure(ctx, path, Settings{Zone: "z3", PlacementTags: []string{""}}, ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Zone != "z3" || cfg.CellID != "cell-1" || cfg.BBS.KeyFile != "/pki/cell.key" ||
		!slices.Equal(cfg.PlacementTags, []string{"ssd", "gpu"}) || len(cfg.RootFSProviders) != 2 ||
		time.Duration(cfg.PresenceTTL) != 20*time.Second {
		t.Errorf("merge lost settings: %+v", cfg)
	}
}

func TestConfigureRefusesInvalid(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		s    Settings
		want error
	}{
		{"plain http", Settings{BBSURL: "http://bbs:8889"}, ErrInvalidConfig},
		{"bad cell id", Settings{CellID: "cell/1"}, ErrInvalidConfig},
		{"unknown backend", Settings{Backend: "solaris-zones"}, ErrInvalidConfig},
		{"scheme with a path", Settings{RootFSProviders: []string{"docker=/x"}}, ErrInvalidConfig},
		{"provider without name", Settings{RootFSProviders: []string{"=/x"}}, ErrInvalidOptions},
		{"provider twice", Settings{RootFSProviders: []string{"docker", "docker"}}, ErrInvalidOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.yaml")
			if err := Configure(ctx, path, full(), ValidateAgentConfig); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			err := Configure(ctx, path, tc.s, ValidateAgentConfig)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Configure = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrInvalidConfig) && !errors.Is(err, agent.ErrInvalidConfig) {
				t.Errorf("%v does not carry the agent's reason", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Errorf("a refused configure changed the file:\n%s", after)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("left files behind: %v", entries)
			}
		})
	}
	if err := Configure(ctx, "agent.yaml", full(), ValidateAgentConfig); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("relative path: %v", err)
	}
	if err := Configure(ctx, filepath.Join(t.TempDir(), "a.yaml"), full(), nil); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("nil validator: %v", err)
	}
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	write := func(t *testing.T, path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("data inside the config dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "trellis")
		path := filepath.Join(dir, "agent.yaml")
		data := filepath.Join(dir, "agent")
		write(t, path, "data_dir: "+data+"\n")
		write(t, filepath.Join(data, "logs", "x.log"), "log")
		if err := Purge(ctx, path); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left: %v", dir, err)
		}
	})
	t.Run("relative data dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "trellis")
		path := filepath.Join(dir, "agent.yaml")
		write(t, path, "data_dir: data\n")
		write(t, filepath.Join(dir, "data", "cache", "blob"), "x")
		if err := Purge(ctx, path); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left: %v", dir, err)
		}
	})
	t.Run("shared data dir and operator files stay", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "trellis")
		path := filepath.Join(dir, "agent.yaml")
		shared := t.TempDir()
		write(t, path, "data_dir: "+shared+"\n")
		write(t, filepath.Join(shared, "keep"), "x")
		write(t, filepath.Join(dir, "pki", "ca.crt"), "x")
		if err := Purge(ctx, path); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{filepath.Join(shared, "keep"), filepath.Join(dir, "pki", "ca.crt")} {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("purge removed %s: %v", p, err)
			}
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("config left: %v", err)
		}
	})
	t.Run("nothing there", func(t *testing.T) {
		if err := Purge(ctx, filepath.Join(t.TempDir(), "absent", "agent.yaml")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		dir, path string
		want      bool
	}{
		{"/etc/trellis", "/etc/trellis/agent", true},
		{"/etc/trellis", "/etc/trellis", false},
		{"/etc/trellis", "/etc/trellis-other", false},
		{"/etc/trellis", "/etc", false},
		{"/etc/trellis", "/etc/trellis/../passwd", false},
		{"/etc/trellis", "/etc/trellis/..data", true},
	} {
		if got := within(tc.dir, filepath.Clean(tc.path)); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.dir, tc.path, got, tc.want)
		}
	}
}
