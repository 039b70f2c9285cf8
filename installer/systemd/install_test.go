package systemd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestInstallerOffline installs, inspects and removes the agent unit with systemctl --root,
// the way a package build or a machine without systemd as PID 1 does.
func TestInstallerOffline(t *testing.T) {
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("systemctl not found: install the Debian package systemd")
	}
	ctx := context.Background()
	in := NewInstaller(nil)
	in.Root = t.TempDir()
	u := AgentUnit(Binary, AgentConfig, "dev")
	wants := filepath.Join(in.Root, LocalUnitDir, "multi-user.target.wants", u.FileName())

	if state, _, err := in.Status(ctx, u.Name); err != nil || state != StateNotInstalled {
		t.Fatalf("Status before install = %q, %v; want %q", state, err, StateNotInstalled)
	}
	if err := in.Install(ctx, u); err != nil {
		t.Fatal(err)
	}
	want, _ := u.Render()
	got, err := os.ReadFile(in.UnitPath(u))
	if err != nil || string(got) != string(want) {
		t.Fatalf("unit file = %q, %v; want the rendered unit", got, err)
	}
	if fi, err := os.Stat(in.UnitPath(u)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("unit file mode: %v %v", fi.Mode(), err)
	}
	if target, err := os.Readlink(wants); err != nil || filepath.Base(target) != u.FileName() {
		t.Fatalf("enable did not link %s: %q, %v", wants, target, err)
	}
	// Installing again (an upgrade) replaces the file and keeps it enabled.
	if err := in.Install(ctx, u); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	_, enabled, err := in.Status(ctx, u.Name)
	if !errors.Is(err, ErrNotRunning) || !enabled {
		t.Fatalf("Status offline = enabled %v, %v; want enabled and ErrNotRunning", enabled, err)
	}
	for _, verb := range []func(context.Context, string) error{in.Start, in.Stop} {
		if err := verb(ctx, u.Name); !errors.Is(err, ErrNotRunning) {
			t.Fatalf("start/stop offline = %v, want ErrNotRunning", err)
		}
	}
	if err := in.Uninstall(ctx, u.Name); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{in.UnitPath(u), wants} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Uninstall: %v", p, err)
		}
	}
	if err := in.Uninstall(ctx, u.Name); err != nil {
		t.Fatalf("Uninstall of an absent unit: %v", err)
	}
}

func TestInstallRefusesInvalidUnit(t *testing.T) {
	in := NewInstaller(nil)
	in.Root = t.TempDir()
	u := AgentUnit("trellis", AgentConfig, "dev")
	if err := in.Install(context.Background(), u); !errors.Is(err, ErrInvalidUnit) {
		t.Fatalf("Install = %v, want ErrInvalidUnit", err)
	}
	if _, err := os.Stat(in.UnitPath(u)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an invalid unit was written: %v", err)
	}
}
