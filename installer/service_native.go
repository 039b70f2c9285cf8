package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/kardianos/service"
)

// Windows recovery: restart after RecoveryDelay, and forget earlier failures after
// RecoveryResetPeriod without one.
const (
	RecoveryDelay       = 5 * time.Second
	RecoveryResetPeriod = 24 * time.Hour
)

// nativeService registers the agent through kardianos/service.
type nativeService struct {
	o   Options
	svc service.Service
}

// controlOnly satisfies service.Interface, which kardianos requires even to install or
// control a service. This process never runs the agent through kardianos (RunService
// does that), so Start and Stop are never called by it; they refuse if they ever are.
type controlOnly struct{}

func (controlOnly) Start(service.Service) error {
	return fmt.Errorf("%w: the service commands cannot run the agent", errors.ErrUnsupported)
}

func (controlOnly) Stop(service.Service) error { return nil }

func newNativeService(o Options) (*nativeService, error) {
	cfg := &service.Config{
		Name:        o.Name,
		DisplayName: o.DisplayName,
		Description: o.Description,
		Executable:  o.Executable,
		Arguments:   o.serviceArgs(runtime.GOOS),
		Option: service.KeyValue{
			// Windows: start at boot; restart on failure (SetRecovery then sets the full
			// set of actions).
			// kardianos defines these keys only in its Windows build.
			"StartType":              "automatic",
			"OnFailure":              "restart",
			"OnFailureDelayDuration": RecoveryDelay.String(),
			"OnFailureResetPeriod":   int(RecoveryResetPeriod / time.Second),
			// Unix init systems other than systemd.
			"Restart": "always",
		},
	}
	s, err := service.New(controlOnly{}, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrService, err)
	}
	return &nativeService{o: o, svc: s}, nil
}

func (n *nativeService) Manager() string { return n.svc.Platform() }

func (n *nativeService) wrap(verb string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, service.ErrNotInstalled):
		return fmt.Errorf("%s %s: %w", verb, n.o.Name, ErrNotInstalled)
	default:
		return fmt.Errorf("%w: %s %s (%s): %v", ErrService, verb, n.o.Name, n.Manager(), err)
	}
}

func (n *nativeService) Install(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.wrap("install", n.svc.Install()); err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return SetRecovery(n.o.Name)
	}
	return nil
}

func (n *nativeService) Uninstall(ctx context.Context) error {
	if st, err := n.svc.Status(); err == nil && st == service.StatusRunning {
		if err := n.Stop(ctx); err != nil {
			return err
		}
	}
	return n.wrap("uninstall", n.svc.Uninstall())
}

func (n *nativeService) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.wrap("start", n.svc.Start())
}

func (n *nativeService) Stop(ctx context.Context) error { return stopNative(ctx, n) }

func (n *nativeService) Status(ctx context.Context) (Status, error) {
	out := Status{Manager: n.Manager()}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	if f := n.unixScript(); f != "" {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			// The init script's absence says it plainly; the service command's exit
			// status for an unknown service does not.
			out.State = StateNotInstalled
			return out, nil
		}
	}
	st, err := n.svc.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		out.State = StateNotInstalled
		return out, nil
	case err != nil:
		return out, n.wrap("status", err)
	}
	switch st {
	case service.StatusRunning:
		out.State, out.Enabled = StateRunning, true
	case service.StatusStopped:
		out.State, out.Enabled = StateStopped, true
	default:
		out.State = StateUnknown
	}
	return out, nil
}

// unixScript returns the file kardianos/service writes for the Unix init systems it knows
// by path, or "" for the others (Windows keeps services in its service manager).
func (n *nativeService) unixScript() string {
	switch n.Manager() {
	case "unix-systemv", "linux-openrc":
		return "/etc/init.d/" + n.o.Name
	case "linux-upstart":
		return "/etc/init/" + n.o.Name + ".conf"
	}
	return ""
}

// formatSeconds is used in messages about the recovery settings.
func formatSeconds(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }
