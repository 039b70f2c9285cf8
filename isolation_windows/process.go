package isolationwindows

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"

	"github.com/trellis-run/trellis/isolation"
)

// errLost is Wait's error for a process that exited while no Backend watched it.
var errLost = errors.New("exit status lost: the process exited while no backend was running")

// process is one process of a container. It implements isolation.Process.
type process struct {
	c  *container
	id string

	mu  sync.Mutex
	rec processRecord
	osp osProcess
	// followers copy the log files to ProcessIO writers; stopFollow ends them.
	followers  []chan struct{}
	stopFollow chan struct{}

	done chan struct{} // closed once code and err are set
	code int
	err  error
}

var _ isolation.Process = (*process)(nil)

func newProcess(c *container, id string) *process {
	return &process{c: c, id: id, done: make(chan struct{}), stopFollow: make(chan struct{})}
}

// ID is the process's id within its container.
func (p *process) ID() string { return p.id }

func (p *process) logPath(stream string) string {
	return filepath.Join(p.c.dir, procsDirName, p.id+"."+stream)
}

func (p *process) save() error {
	return writeJSON(filepath.Join(p.c.dir, procsDirName, p.id+".json"), p.rec)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// follow starts copying the process's output to stdio's writers, from the start of the logs
// (offset 0) or from their current end (offset -1).
func (p *process) follow(offset int64, stdio isolation.ProcessIO) {
	for stream, w := range map[string]io.Writer{"stdout": stdio.Stdout, "stderr": stdio.Stderr} {
		if w == nil {
			continue
		}
		path := p.logPath(stream)
		off := offset
		if off < 0 {
			off = fileSize(path)
		}
		done := make(chan struct{})
		p.mu.Lock()
		p.followers = append(p.followers, done)
		p.mu.Unlock()
		go follow(path, off, w, p.stopFollow, done)
	}
}

// watch waits for osp in the background and records the exit status.
func (p *process) watch(osp osProcess) {
	p.mu.Lock()
	p.osp = osp
	p.mu.Unlock()
	go func() {
		code, err := osp.wait()
		if err == nil {
			p.mu.Lock()
			p.rec.ExitCode = &code
			serr := p.save()
			p.mu.Unlock()
			if serr != nil {
				p.c.b.log.Warn("isolation_windows: recording an exit status", "handle", p.c.handle, "process", p.id, "err", serr)
			}
		}
		p.finish(code, err)
	}()
}

// finish stops the followers once they copied everything and publishes the status.
func (p *process) finish(code int, err error) {
	close(p.stopFollow)
	p.mu.Lock()
	followers := p.followers
	p.mu.Unlock()
	for _, f := range followers {
		<-f
	}
	p.code, p.err = code, err
	close(p.done)
}

// abandon ends the followers of a process that never started.
func (p *process) abandon() {
	close(p.stopFollow)
}

// release drops the OS handle without affecting the process (Backend.Close).
func (p *process) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.osp != nil && p.exited() {
		p.osp.release()
		p.osp = nil
	}
}

// Wait blocks until the process exits and returns its exit status, or ctx's error.
// Errors: ctx's error (wrapped); a lost status for a process that exited while no Backend
// was running.
func (p *process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		if p.err != nil {
			return -1, fmt.Errorf("isolation_windows: process %q: %w", p.id, p.err)
		}
		return p.code, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("isolation_windows: waiting for process %q: %w", p.id, ctx.Err())
	}
}

// Signal delivers sig: SignalTerminate is a CTRL_BREAK console event to the process's own
// process group (process mode); SignalKill ends it with status 137.
// Errors: ErrNotFound (the process has exited), ErrUnsupported (terminate in container mode).
func (p *process) Signal(ctx context.Context, sig isolation.Signal) error {
	p.mu.Lock()
	osp := p.osp
	p.mu.Unlock()
	if p.exited() || osp == nil {
		return fmt.Errorf("isolation_windows: process %q has exited: %w", p.id, isolation.ErrNotFound)
	}
	var err error
	switch sig {
	case isolation.SignalTerminate:
		err = osp.terminate()
	case isolation.SignalKill:
		err = osp.kill()
	default:
		return invalidf("signal %d: want SignalTerminate or SignalKill", sig)
	}
	if err != nil {
		if p.exited() {
			return fmt.Errorf("isolation_windows: process %q has exited: %w", p.id, isolation.ErrNotFound)
		}
		return fmt.Errorf("isolation_windows: signalling process %q: %w", p.id, err)
	}
	return nil
}
