package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNotRunning is returned by the verbs that need a running systemd (start, stop, status,
// daemon-reload) on a machine where systemd is not PID 1.
var ErrNotRunning = errors.New("systemd is not running on this machine")

// ErrSystemctl wraps a failed systemctl invocation.
var ErrSystemctl = errors.New("systemctl failed")

// Installer installs and controls units. The zero value is not usable; use NewInstaller.
type Installer struct {
	// UnitDir receives unit files. Default LocalUnitDir.
	UnitDir string
	// Systemctl is the systemctl binary. Default "systemctl" from PATH.
	Systemctl string
	// RunDir is where systemd leaves its runtime marker (RunDir/systemd/system exists only
	// while systemd is PID 1). Default "/run".
	RunDir string
	// Root, when set, makes systemctl act on the file system tree under it (systemctl
	// --root) and never on the running system: for image builds and tests. UnitDir is then
	// a path inside Root.
	Root string
	Log  *slog.Logger
}

// NewInstaller returns an Installer with the defaults above; log may be nil.
func NewInstaller(log *slog.Logger) *Installer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Installer{UnitDir: LocalUnitDir, Systemctl: "systemctl", RunDir: "/run", Log: log}
}

// Running reports whether systemd manages this machine (the check sd_booted(3) makes).
func (in *Installer) Running() bool {
	if in.Root != "" {
		return false
	}
	fi, err := os.Stat(filepath.Join(in.RunDir, "systemd", "system"))
	return err == nil && fi.IsDir()
}

// Available reports whether systemctl can be found, which is all Install and Uninstall need.
func (in *Installer) Available() bool {
	_, err := exec.LookPath(in.Systemctl)
	return err == nil
}

// UnitPath returns where Install writes u.
func (in *Installer) UnitPath(u Unit) string {
	return filepath.Join(in.Root, in.UnitDir, u.FileName())
}

// Install writes u into UnitDir (atomically, mode 0644), reloads systemd when it runs, and
// enables the unit so it starts at boot. It does not start it. Installing over an existing
// file replaces it. Errors: ErrInvalidUnit, ErrSystemctl, or the file system's.
func (in *Installer) Install(ctx context.Context, u Unit) error {
	data, err := u.Render()
	if err != nil {
		return err
	}
	dst := in.UnitPath(u)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("systemd: create unit directory: %w", err)
	}
	if err := writeFileAtomic(dst, data, 0o644); err != nil {
		return fmt.Errorf("systemd: write %s: %w", dst, err)
	}
	in.Log.Info("wrote unit", "path", dst)
	if in.Running() {
		if err := in.systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
	}
	if err := in.systemctl(ctx, "enable", u.FileName()); err != nil {
		return err
	}
	in.Log.Info("enabled unit", "unit", u.FileName())
	return nil
}

// Uninstall stops the unit when systemd runs (for the agent a stop is a drain, so this can
// take up to its TimeoutStopSec), disables it and removes the unit file. A unit that is not
// installed is not an error. Errors: ErrSystemctl, or the file system's.
func (in *Installer) Uninstall(ctx context.Context, name string) error {
	u := Unit{Name: name}
	if in.Running() {
		if err := in.systemctl(ctx, "stop", u.FileName()); err != nil {
			return err
		}
	}
	if _, err := os.Stat(in.UnitPath(u)); err == nil {
		if err := in.systemctl(ctx, "disable", u.FileName()); err != nil {
			return err
		}
	}
	if err := os.Remove(in.UnitPath(u)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("systemd: remove %s: %w", in.UnitPath(u), err)
	}
	if in.Running() {
		return in.systemctl(ctx, "daemon-reload")
	}
	return nil
}

// Start starts the unit. Errors: ErrNotRunning, ErrSystemctl.
func (in *Installer) Start(ctx context.Context, name string) error {
	if !in.Running() {
		return fmt.Errorf("systemd: start %s: %w", name, ErrNotRunning)
	}
	return in.systemctl(ctx, "start", name+".service")
}

// Stop stops the unit and waits for it; for the agent this is a drain. Errors:
// ErrNotRunning, ErrSystemctl.
func (in *Installer) Stop(ctx context.Context, name string) error {
	if !in.Running() {
		return fmt.Errorf("systemd: stop %s: %w", name, ErrNotRunning)
	}
	return in.systemctl(ctx, "stop", name+".service")
}

// State is a unit's state as `systemctl is-active` prints it ("active", "inactive",
// "failed", "activating", "deactivating", …), plus "not-installed" when there is no unit.
type State string

// StateNotInstalled is the State of a unit whose file is absent.
const StateNotInstalled State = "not-installed"

// Status returns the unit's state and whether it is enabled. Without a running systemd only
// Enabled is known and State is ErrNotRunning's. Errors: ErrNotRunning (with Enabled set),
// ErrSystemctl.
func (in *Installer) Status(ctx context.Context, name string) (state State, enabled bool, err error) {
	file := name + ".service"
	// is-enabled exits non-zero for disabled or unknown units; its output says which, and it
	// prints nothing (only an error on stderr) for a unit systemd does not know.
	out, err := in.output(ctx, "is-enabled", file)
	if err != nil {
		return "", false, err
	}
	switch strings.TrimSpace(out) {
	case "":
		return StateNotInstalled, false, nil
	case "enabled", "enabled-runtime", "static", "alias", "generated":
		enabled = true
	}
	if !in.Running() {
		return "", enabled, fmt.Errorf("systemd: status of %s: %w", name, ErrNotRunning)
	}
	// is-active exits 3 for anything but active; the state word is what matters.
	out, _ = in.output(ctx, "is-active", file)
	s := State(strings.TrimSpace(out))
	if s == "" {
		return "", enabled, fmt.Errorf("%w: is-active %s printed nothing", ErrSystemctl, file)
	}
	return s, enabled, nil
}

// args prefixes systemctl's arguments with --root when Root is set.
func (in *Installer) args(args []string) []string {
	if in.Root == "" {
		return args
	}
	return append([]string{"--root=" + in.Root}, args...)
}

func (in *Installer) systemctl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, in.Systemctl, in.args(args)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: systemctl %s: %v: %s", ErrSystemctl, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// output runs systemctl and returns its stdout whatever the exit status; the error is
// returned only when systemctl could not run at all.
func (in *Installer) output(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, in.Systemctl, in.args(args)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return "", fmt.Errorf("%w: systemctl %s: %v", ErrSystemctl, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it into place, so
// a reader never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
