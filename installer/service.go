package installer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"github.com/trellis-run/trellis/installer/systemd"
)

// Init systems Options.InitSystem names.
const (
	// InitAuto picks systemd where systemctl exists (whether or not systemd runs now), and
	// the native service manager otherwise.
	InitAuto = "auto"
	// InitSystemd writes trellis's own unit and uses systemctl.
	InitSystemd = "systemd"
	// InitNative uses kardianos/service: the Windows service manager, or whatever init
	// system it detects on Unix.
	InitNative = "native"
)

// Options configure the service commands and NewService.
type Options struct {
	// Name is the service name. Default "trellis-agent".
	Name string
	// DisplayName and Description are shown by the service manager.
	DisplayName, Description string
	// Executable is the trellis binary the service runs. Default: this program.
	Executable string
	// ConfigPath is the agent's configuration. Default DefaultConfigPath().
	ConfigPath string
	// ValidateConfig checks a configuration file as the agent would. Default
	// ValidateAgentConfig (agent.LoadConfig).
	ValidateConfig func(path string) error
	// InitSystem is InitAuto, InitSystemd or InitNative. Default InitAuto.
	InitSystem string
	// SystemdRoot, when set, installs units into that file system tree with systemctl
	// --root and never touches the running system (image builds, tests).
	SystemdRoot string
	// UnitDir is where the systemd unit goes (inside SystemdRoot when set). Default
	// /etc/systemd/system.
	UnitDir string
	// Version is written into the unit's header.
	Version string
	Log     *slog.Logger
}

// DefaultOptions returns the defaults, with Executable resolved to this program.
func DefaultOptions() Options {
	exe, err := os.Executable()
	if err == nil {
		if resolved, rerr := filepath.EvalSymlinks(exe); rerr == nil {
			exe = resolved
		}
	}
	return Options{
		Name:           systemd.AgentName,
		DisplayName:    "trellis cell agent",
		Description:    "Runs the work the trellis BBS places on this cell. Stopping it drains the cell.",
		Executable:     exe,
		ConfigPath:     DefaultConfigPath(),
		ValidateConfig: ValidateAgentConfig,
		InitSystem:     InitAuto,
		UnitDir:        systemd.LocalUnitDir,
		Version:        "dev",
		Log:            slog.New(slog.DiscardHandler),
	}
}

// Validate reports the first unusable field. Errors: ErrInvalidOptions.
func (o Options) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Name == "":
		return bad("name", "must be set")
	case o.Executable == "" || !filepath.IsAbs(o.Executable):
		return bad("executable", "%q must be an absolute path", o.Executable)
	case o.ConfigPath == "" || !filepath.IsAbs(o.ConfigPath):
		return bad("config_path", "%q must be an absolute path", o.ConfigPath)
	case o.ValidateConfig == nil:
		return bad("validate_config", "must be set")
	case o.UnitDir == "":
		return bad("unit_dir", "must be set")
	case o.Log == nil:
		return bad("log", "must be set")
	}
	switch o.InitSystem {
	case InitAuto, InitSystemd, InitNative:
	default:
		return bad("init_system", "%q is not %s, %s or %s", o.InitSystem, InitAuto, InitSystemd, InitNative)
	}
	return nil
}

// serviceArgs is the command line the service manager starts the agent with. On Windows it
// carries --service, so the agent runs under the service control manager without asking
// Windows whether it is a service (see RunService).
func (o Options) serviceArgs(goos string) []string {
	args := []string{"agent", "run"}
	if goos == "windows" {
		args = append(args, "--service")
	}
	return append(args, "--config", o.ConfigPath)
}

// State is a service's state.
type State string

// States every Service reports; systemd may report its own words besides ("activating",
// "deactivating" while a drain runs, "failed").
const (
	StateRunning      State = "running"
	StateStopped      State = "stopped"
	StateNotInstalled State = "not-installed"
	// StateUnknown: installed, but the service manager cannot be asked (systemd not PID 1).
	StateUnknown State = "unknown"
)

// Status is what `trellis agent status` prints.
type Status struct {
	State State
	// Enabled is whether it starts at boot, when the service manager says.
	Enabled bool
	// Manager names the service manager ("systemd", "windows-service", "unix-systemv", …).
	Manager string
}

// Service controls the agent's system service.
type Service interface {
	// Install registers the service to start at boot; it does not start it. Installing
	// over an existing systemd unit replaces it; the Windows service manager refuses a
	// second install (ErrService).
	Install(ctx context.Context) error
	// Uninstall stops the service (a drain, waited for) and removes it. Errors:
	// ErrNotInstalled (native managers), ErrService.
	Uninstall(ctx context.Context) error
	// Start starts it. Errors: ErrNotInstalled, ErrService, systemd.ErrNotRunning.
	Start(ctx context.Context) error
	// Stop stops it and waits; for the agent a stop is a drain. Errors as Start.
	Stop(ctx context.Context) error
	// Status reports its state. Errors: ErrService.
	Status(ctx context.Context) (Status, error)
	// Manager names the service manager in use.
	Manager() string
}

// NewService returns the Service for this machine according to o.InitSystem. Errors:
// ErrInvalidOptions, ErrService.
func NewService(o Options) (Service, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	init := o.InitSystem
	if init == InitAuto {
		init = InitNative
		if runtime.GOOS == "linux" {
			in := o.systemdInstaller()
			if in.Available() {
				init = InitSystemd
			}
		}
	}
	if init == InitSystemd {
		if runtime.GOOS == "windows" {
			return nil, fmt.Errorf("%w: init_system: systemd on Windows", ErrInvalidOptions)
		}
		return &systemdService{o: o, in: o.systemdInstaller()}, nil
	}
	return newNativeService(o)
}

func (o Options) systemdInstaller() *systemd.Installer {
	in := systemd.NewInstaller(o.Log)
	in.UnitDir = o.UnitDir
	in.Root = o.SystemdRoot
	return in
}

// systemdService installs trellis's own unit.
type systemdService struct {
	o  Options
	in *systemd.Installer
}

func (s *systemdService) unit() systemd.Unit {
	u := systemd.AgentUnit(s.o.Executable, s.o.ConfigPath, s.o.Version)
	u.Name = s.o.Name
	u.Description = s.o.Description
	return u
}

func (s *systemdService) Manager() string { return "systemd" }

func (s *systemdService) Install(ctx context.Context) error { return s.in.Install(ctx, s.unit()) }

func (s *systemdService) Uninstall(ctx context.Context) error { return s.in.Uninstall(ctx, s.o.Name) }

func (s *systemdService) Start(ctx context.Context) error { return s.in.Start(ctx, s.o.Name) }

func (s *systemdService) Stop(ctx context.Context) error { return s.in.Stop(ctx, s.o.Name) }

func (s *systemdService) Status(ctx context.Context) (Status, error) {
	st, enabled, err := s.in.Status(ctx, s.o.Name)
	out := Status{Enabled: enabled, Manager: s.Manager()}
	switch {
	case err != nil && !s.in.Running() && st == "":
		out.State = StateUnknown
		return out, nil
	case err != nil:
		return out, err
	}
	switch st {
	case systemd.StateNotInstalled:
		out.State = StateNotInstalled
	case "active", "reloading":
		out.State = StateRunning
	case "inactive":
		out.State = StateStopped
	default:
		out.State = State(st)
	}
	return out, nil
}
