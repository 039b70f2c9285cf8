package isolationlinux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// process is a process of a container, identified by its id; what it knows it learns from the
// init or, once the init is gone, from the exit file the init wrote.
type process struct {
	c    *container
	id   string
	pdir string

	// watch is the connection that started the process, on which the init sends its exit
	// code (containerinit.Request.Watch); nil for an attached process.
	watch *net.UnixConn

	once   sync.Once
	exited chan struct{} // closed once code is known
	code   int

	copiers sync.WaitGroup // stdout/stderr followers
}

var _ isolation.Process = (*process)(nil)

func newProcess(c *container, id string, stdio isolation.ProcessIO, watch *net.UnixConn) *process {
	p := &process{c: c, id: id, pdir: filepath.Join(c.dir, dirProcesses, id), watch: watch, exited: make(chan struct{})}
	if watch != nil {
		// A process nobody waits for must not keep the connection, nor the init's side of it,
		// once it is forgotten.
		runtime.AddCleanup(p, func(w *net.UnixConn) { w.Close() }, watch)
	}
	for _, s := range []struct {
		w    io.Writer
		file string
	}{{stdio.Stdout, fileStdout}, {stdio.Stderr, fileStderr}} {
		if s.w == nil {
			continue
		}
		p.watchExit()
		p.copiers.Add(1)
		go func(w io.Writer, file string) {
			defer p.copiers.Done()
			if err := follow(filepath.Join(p.pdir, file), w, p.exited); err != nil {
				c.b.log.Warn("copying process output", "handle", c.handle, "process", id, "stream", file, "err", err)
			}
		}(s.w, s.file)
	}
	return p
}

func (p *process) ID() string { return p.id }

// watchExit starts, once, the goroutine that learns the exit code.
func (p *process) watchExit() {
	p.once.Do(func() {
		go func() {
			p.code = p.waitExit()
			close(p.exited)
		}()
	})
}

// waitExit asks the init to report the exit (retrying a dropped connection) and falls back
// to the exit file; a process the init never recorded died with its container (137).
func (p *process) waitExit() int {
	if p.watch != nil {
		code, err := readExit(p.watch)
		p.watch.Close()
		if err == nil {
			return code
		}
		// An init that predates Request.Watch, or a dropped connection: ask again below.
	}
	for {
		if code, ok := p.exitFile(); ok {
			return code
		}
		resp, err := p.c.call(context.Background(), containerinit.Request{Op: containerinit.OpWait, ID: p.id})
		if err == nil {
			return resp.ExitCode
		}
		if isolation.IsStopped(err) || isolation.IsNotFound(err) {
			if code, ok := p.exitFile(); ok {
				return code
			}
			return 128 + int(unix.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readExit reads the exit code the init sends on a watched run's connection.
func readExit(conn *net.UnixConn) (int, error) {
	buf := make([]byte, 4<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return 0, err
	}
	var resp containerinit.Response
	if err := json.Unmarshal(buf[:n], &resp); err != nil {
		return 0, err
	}
	return resp.ExitCode, resp.Err()
}

func (p *process) exitFile() (int, bool) {
	b, err := os.ReadFile(filepath.Join(p.pdir, fileExit))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	return code, true
}

// Wait returns the exit status once the process has exited and its output has been copied.
func (p *process) Wait(ctx context.Context) (int, error) {
	p.watchExit()
	select {
	case <-p.exited:
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for process %q: %w", p.id, ctx.Err())
	}
	done := make(chan struct{})
	go func() {
		p.copiers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return p.code, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for the output of process %q: %w", p.id, ctx.Err())
	}
}

// Signal delivers sig through the init. Errors: isolation.ErrNotFound once the process exited.
func (p *process) Signal(ctx context.Context, sig isolation.Signal) error {
	var s unix.Signal
	switch sig {
	case isolation.SignalTerminate:
		s = unix.SIGTERM
	case isolation.SignalKill:
		s = unix.SIGKILL
	default:
		return fmt.Errorf("%w: signal %d", isolation.ErrUnsupported, sig)
	}
	if _, err := p.c.call(ctx, containerinit.Request{Op: containerinit.OpSignal, ID: p.id, Signal: int(s)}); err != nil {
		if isolation.IsStopped(err) {
			return fmt.Errorf("%w: process %q: the container's init is gone", isolation.ErrNotFound, p.id)
		}
		return err
	}
	return nil
}

// follow copies the file at path to w as it grows, until exited is closed and the file is
// drained. A shared inotify instance wakes it when the file is written (see watchFile).
func follow(path string, w io.Writer, exited <-chan struct{}) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	changed, stop, err := watchFile(path)
	if err != nil {
		return err
	}
	defer stop()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return discardRest(err)
		}
		select {
		case <-changed:
		case <-exited:
			_, err := io.Copy(w, f)
			return discardRest(err)
		}
	}
}

// discardRest treats a writer that stopped accepting output as the end of copying.
func discardRest(err error) error {
	if err == nil || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}
