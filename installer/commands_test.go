package installer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/installer/systemd"
)

// testOptions points the service commands at a file system tree under a temporary root,
// with systemd chosen explicitly, as on a machine where systemd is not PID 1.
func testOptions(t *testing.T) (Options, string) {
	t.Helper()
	root := t.TempDir()
	o := DefaultOptions()
	o.Executable = "/usr/bin/trellis"
	o.ConfigPath = filepath.Join(root, "etc", "trellis", "agent.yaml")
	o.SystemdRoot = root
	o.InitSystem = InitSystemd
	o.Version = "1.0.0"
	o.Log = slog.New(slog.DiscardHandler)
	return o, root
}

// runCommand runs one of ServiceCommands(o) the way `trellis agent <name> args…` would.
func runCommand(t *testing.T, o Options, args ...string) (string, error) {
	t.Helper()
	parent := &cobra.Command{Use: "agent", SilenceErrors: true, SilenceUsage: true}
	parent.AddCommand(ServiceCommands(o)...)
	var out bytes.Buffer
	parent.SetOut(&out)
	parent.SetErr(&out)
	parent.SetArgs(args)
	err := parent.ExecuteContext(context.Background())
	return out.String(), err
}

func TestServiceCommandsNames(t *testing.T) {
	var names []string
	for _, c := range ServiceCommands(DefaultOptions()) {
		names = append(names, c.Name())
	}
	want := []string{"install", "uninstall", "start", "stop", "status", "configure", "purge", "recovery"}
	if !slices.Equal(names, want) {
		t.Fatalf("commands %q, want %q", names, want)
	}
}

// TestServiceLifecycleSystemdOffline configures, installs, inspects, uninstalls and purges
// through the commands, with systemctl working on a tree instead of a running systemd.
func TestServiceLifecycleSystemdOffline(t *testing.T) {
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("systemctl not found: install the Debian package systemd")
	}
	o, root := testOptions(t)
	unit := filepath.Join(root, systemd.LocalUnitDir, systemd.AgentName+".service")
	wants := filepath.Join(root, systemd.LocalUnitDir, "multi-user.target.wants", systemd.AgentName+".service")

	out, err := runCommand(t, o, "status")
	if err != nil || !strings.Contains(out, "trellis-agent\tnot-installed\t-\tsystemd") {
		t.Fatalf("status before install: %q, %v", out, err)
	}
	out, err = runCommand(t, o, "install")
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if !strings.Contains(out, "does not exist yet") {
		t.Errorf("install did not warn about the missing config: %q", out)
	}
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	wantExec := "ExecStart=/usr/bin/trellis agent run --config " + o.ConfigPath + "\n"
	if !strings.Contains(string(data), wantExec) || !strings.Contains(string(data), "KillMode=process\n") {
		t.Errorf("unit:\n%s\nwant %q", data, wantExec)
	}
	if _, err := os.Lstat(wants); err != nil {
		t.Errorf("not enabled: %v", err)
	}
	out, err = runCommand(t, o, "status")
	if err != nil || !strings.Contains(out, "trellis-agent\tunknown\tenabled\tsystemd") {
		t.Fatalf("status after install: %q, %v", out, err)
	}
	if _, err := runCommand(t, o, "start"); !errors.Is(err, systemd.ErrNotRunning) {
		t.Errorf("start without systemd = %v, want ErrNotRunning", err)
	}

	out, err = runCommand(t, o, "configure", "--cell-id", "cell-1", "--bbs-url", "https://bbs:8889",
		"--rootfs", "preloaded:cflinuxfs4=/rootfs/cflinuxfs4,docker", "--tags", "a,b")
	if err != nil {
		t.Fatalf("configure: %v\n%s", err, out)
	}
	cfg, err := agent.LoadConfig(o.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CellID != "cell-1" || len(cfg.RootFSProviders) != 2 || !slices.Equal(cfg.PlacementTags, []string{"a", "b"}) {
		t.Errorf("configured %+v", cfg)
	}
	// The MSI's upgrade runs configure with every property empty: the file stays.
	before, _ := os.ReadFile(o.ConfigPath)
	out, err = runCommand(t, o, "configure", "--bbs-url", "", "--cell-id", "", "--tags", "", "--rootfs", "")
	if err != nil || !strings.Contains(out, "nothing to change") {
		t.Fatalf("empty configure: %q, %v", out, err)
	}
	if after, _ := os.ReadFile(o.ConfigPath); !bytes.Equal(before, after) {
		t.Errorf("an empty configure changed the file")
	}
	if _, err := runCommand(t, o, "configure", "--bbs-url", "ftp://bbs"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("configure with a bad URL = %v, want ErrInvalidConfig", err)
	}

	if _, err := runCommand(t, o, "purge"); !errors.Is(err, ErrStillInstalled) {
		t.Errorf("purge while installed = %v, want ErrStillInstalled", err)
	}
	if _, err := os.Stat(o.ConfigPath); err != nil {
		t.Fatalf("a refused purge removed the config: %v", err)
	}
	if out, err := runCommand(t, o, "uninstall"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	for _, p := range []string{unit, wants} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after uninstall: %v", p, err)
		}
	}
	if _, err := os.Stat(o.ConfigPath); err != nil {
		t.Errorf("uninstall removed the config: %v", err)
	}
	if out, err := runCommand(t, o, "purge"); err != nil {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Dir(o.ConfigPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("purge left %s: %v", filepath.Dir(o.ConfigPath), err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"no name", func(o *Options) { o.Name = "" }},
		{"relative executable", func(o *Options) { o.Executable = "trellis" }},
		{"relative config", func(o *Options) { o.ConfigPath = "agent.yaml" }},
		{"no validator", func(o *Options) { o.ValidateConfig = nil }},
		{"unknown init", func(o *Options) { o.InitSystem = "upstart" }},
		{"no unit dir", func(o *Options) { o.UnitDir = "" }},
		{"no logger", func(o *Options) { o.Log = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := testOptions(t)
			tc.edit(&o)
			if _, err := NewService(o); !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("NewService = %v, want ErrInvalidOptions", err)
			}
			if _, err := runCommand(t, o, "status"); !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("status = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestServiceArgs(t *testing.T) {
	o := DefaultOptions()
	o.ConfigPath = `C:\ProgramData\trellis\agent.yaml`
	if got := o.serviceArgs("windows"); !slices.Equal(got, []string{"agent", "run", "--service", "--config", o.ConfigPath}) {
		t.Errorf("windows args %q", got)
	}
	if got := o.serviceArgs("linux"); !slices.Equal(got, []string{"agent", "run", "--config", o.ConfigPath}) {
		t.Errorf("linux args %q", got)
	}
}

// TestNativeServiceOnLinux: --init native hands the service to kardianos/service, which picks
// the init system it detects (System V here, where systemd is not PID 1). Only the read-only
// status is exercised: installing would change this machine's init scripts.
func TestNativeServiceOnLinux(t *testing.T) {
	o, _ := testOptions(t)
	o.InitSystem = InitNative
	o.Name = "trellis-agent-test-absent"
	s, err := NewService(o)
	if err != nil {
		t.Fatal(err)
	}
	if s.Manager() == "" || s.Manager() == "systemd" {
		t.Fatalf("native manager = %q", s.Manager())
	}
	st, err := s.Status(context.Background())
	if err != nil || st.State != StateNotInstalled {
		t.Fatalf("status of an absent service = %+v, %v; want not-installed", st, err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("starting an absent service succeeded")
	}
}
