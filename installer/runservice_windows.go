//go:build windows

package installer

import (
	"context"
	"fmt"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
)

// RunService runs p as the named Windows service under the service control manager and
// returns when it has stopped. Call it from `trellis agent run --service`: it does not ask
// Windows whether the process is a service (wine answers that wrongly), so it must only be
// used on the command line the service is registered with. A non-nil error from p.Run
// makes the service exit with code 1, which the recovery actions (SetRecovery) restart.
//
// A service starts without a console, and Windows delivers console control events
// (CTRL_BREAK, with which the backend asks a container's processes to stop) only to processes
// attached to one: RunService first gives the process a hidden console, which the
// containers' processes inherit. Without one, containers' processes are killed after the
// grace time instead of being asked to stop.
// Errors: p.Run's, or ErrService when the service manager cannot be reached.
func RunService(ctx context.Context, name string, p Program) error {
	allocHiddenConsole()
	h := &handler{ctx: ctx, p: p}
	if err := svc.Run(name, h); err != nil {
		return fmt.Errorf("%w: run %s under the service manager: %v", ErrService, name, err)
	}
	return h.err
}

type handler struct {
	ctx context.Context
	p   Program
	err error
}

// Execute implements svc.Handler by forwarding requests to serve and its reports back.
func (h *handler) Execute(_ []string, in <-chan svc.ChangeRequest, out chan<- svc.Status) (bool, uint32) {
	reqs := make(chan request)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		for {
			select {
			case c := <-in:
				var r request
				switch c.Cmd {
				case svc.Interrogate:
					r = reqInterrogate
				case svc.Stop, svc.Shutdown:
					r = reqStop
				default:
					continue
				}
				select {
				case reqs <- r:
				case <-finished:
					return
				}
			case <-finished:
				return
			}
		}
	}()
	send := func(r report) {
		st := svc.Status{CheckPoint: r.checkpoint, WaitHint: uint32(r.waitHint.Milliseconds())}
		switch r.phase {
		case phaseStarting:
			st.State = svc.StartPending
		case phaseRunning:
			st.State, st.Accepts = svc.Running, svc.AcceptStop|svc.AcceptShutdown
		case phaseStopping:
			st.State = svc.StopPending
		case phaseStopped:
			st.State = svc.Stopped
		}
		out <- st
	}
	h.err = serve(h.ctx, h.p, reqs, send, StopProgress)
	if h.err != nil {
		return true, 1
	}
	return false, 0
}

var (
	kernel32             = windows.NewLazySystemDLL("kernel32.dll")
	user32               = windows.NewLazySystemDLL("user32.dll")
	procAllocConsole     = kernel32.NewProc("AllocConsole")
	procGetConsoleWindow = kernel32.NewProc("GetConsoleWindow")
	procShowWindow       = user32.NewProc("ShowWindow")
)

// allocHiddenConsole attaches the process to a new console and hides its window. It does
// nothing when the process already has a console (AllocConsole then fails).
func allocHiddenConsole() bool {
	if r, _, _ := procAllocConsole.Call(); r == 0 {
		return false
	}
	if hwnd, _, _ := procGetConsoleWindow.Call(); hwnd != 0 && procShowWindow.Find() == nil {
		procShowWindow.Call(hwnd, windows.SW_HIDE)
	}
	return true
}
