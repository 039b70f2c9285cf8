package isolationtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// TestProgramPath is where NewMemory registers the test-program vocabulary: a process with this
// Path runs the Program that ParseArgv makes of its Args (see MemoryProgram).
const TestProgramPath = "/usr/local/bin/trellis-testprog"

// Exit statuses the in-memory backend reports for signals, as a shell reports them on Linux.
const (
	ExitTerminated = 128 + 15 // a program that honours terminate by exiting
	ExitKilled     = 128 + 9  // killed: by SignalKill, Stop after grace, Destroy or OOM
)

// ProgramFunc is a program of the in-memory backend. It runs in its own goroutine and returns
// its exit status. ctx is cancelled when the process is sent SignalTerminate (the program
// chooses how to exit, conventionally ExitTerminated) and when it is killed. A kill ends the
// process at once with ExitKilled whatever the function does; the function should still return
// soon (watch ctx or pc.Killed), since its goroutine cannot be stopped from outside and its
// later output is discarded.
type ProgramFunc func(ctx context.Context, pc *ProcContext) int

// ProcContext is what a ProgramFunc sees of its process and container.
type ProcContext struct {
	Handle string   // the container's handle
	ID     string   // the process id
	Args   []string // ProcessSpec.Args
	Env    []string // container env, then process env (later entries override earlier ones)
	Dir    string   // absolute working directory (created if it was missing)
	User   string   // ProcessSpec.User, recorded but not enforced
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	p *memProc
}

// Getenv returns the value of name in pc.Env and whether it is set.
func (pc *ProcContext) Getenv(name string) (string, bool) {
	for i := len(pc.Env) - 1; i >= 0; i-- {
		if k, v, _ := strings.Cut(pc.Env[i], "="); k == name {
			return v, true
		}
	}
	return "", false
}

// Killed is closed when the process is killed.
func (pc *ProcContext) Killed() <-chan struct{} { return pc.p.killed }

func (pc *ProcContext) abs(name string) string {
	if path.IsAbs(name) {
		return name
	}
	return path.Join(pc.Dir, name)
}

// withFS runs fn on the container's filesystem; fs errors come back as *fs.PathError.
func (pc *ProcContext) withFS(fn func(*memFS) error) error {
	c := pc.p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return &fs.PathError{Op: "open", Path: "/", Err: fs.ErrNotExist}
	}
	err := fn(c.filesystem())
	if errors.Is(err, errNoSpace) {
		c.addEventLocked(isolation.EventDiskLimit)
	}
	return err
}

// ReadFile reads a file of the container (relative names resolve against Dir).
func (pc *ProcContext) ReadFile(name string) ([]byte, error) {
	var data []byte
	err := pc.withFS(func(f *memFS) (err error) {
		data, err = f.readFile(pc.abs(name))
		return err
	})
	return data, err
}

// WriteFile creates or truncates a file of the container; its parent must exist.
func (pc *ProcContext) WriteFile(name string, data []byte, perm fs.FileMode) error {
	data = append([]byte(nil), data...)
	return pc.withFS(func(f *memFS) error { return f.writeFile(pc.abs(name), data, perm, time.Now()) })
}

// ReadDir returns the sorted entry names of a directory of the container.
func (pc *ProcContext) ReadDir(name string) ([]string, error) {
	var names []string
	err := pc.withFS(func(f *memFS) (err error) {
		names, err = f.readDir(pc.abs(name))
		return err
	})
	return names, err
}

// MkdirAll makes a directory of the container and its missing parents.
func (pc *ProcContext) MkdirAll(name string, perm fs.FileMode) error {
	return pc.withFS(func(f *memFS) error { return f.mkdirAll(pc.abs(name), perm, time.Now()) })
}

// SetMemoryUsage reports the process's memory use. When the container's processes together use
// more than its Limits.MemoryBytes, the container gets an EventOutOfMemory and every process
// of it is killed, as the kernel's OOM killer would.
func (pc *ProcContext) SetMemoryUsage(bytes uint64) {
	pc.p.memory.Store(bytes)
	c := pc.p.c
	if c.limits.MemoryBytes == 0 {
		return
	}
	var total uint64
	c.mu.Lock()
	for _, p := range c.runningLocked() {
		total += p.memory.Load()
	}
	c.mu.Unlock()
	if total > c.limits.MemoryBytes {
		_ = c.event(isolation.EventOutOfMemory)
	}
}

// AddCPUTime adds d to the CPU time the process has used, for Metrics.CPUNanos.
func (pc *ProcContext) AddCPUTime(d time.Duration) { pc.p.cpu.Add(int64(d)) }

var errProcessExited = errors.New("process has exited")

// fanout copies a process's output to every attached writer. After the process exits, writes
// fail as they would on a closed pipe.
type fanout struct {
	closed atomic.Bool
	mu     sync.Mutex
	ws     []io.Writer
}

func (f *fanout) Write(b []byte) (int, error) {
	if f.closed.Load() {
		return 0, errProcessExited
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < len(f.ws); i++ {
		if _, err := f.ws[i].Write(b); err != nil {
			// A failing reader detaches; the process keeps running, as with a dropped attach.
			f.ws = append(f.ws[:i], f.ws[i+1:]...)
			i--
		}
	}
	return len(b), nil
}

func (f *fanout) attach(w io.Writer) {
	if w == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ws = append(f.ws, w)
}

// memProc is one process. id and c are fixed; the channels carry its lifecycle.
type memProc struct {
	id     string
	c      *memContainer
	cancel context.CancelFunc // delivers terminate (and frees the context)
	stdin  *io.PipeReader     // nil without stdin
	stdout fanout
	stderr fanout
	killed chan struct{}
	done   chan struct{}
	once   sync.Once
	exit   int // written once before done is closed

	memory atomic.Uint64
	cpu    atomic.Int64
}

func (p *memProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// finish records the exit status of the process, once.
func (p *memProc) finish(code int) bool {
	first := false
	p.once.Do(func() {
		first = true
		p.exit = code
		p.stdout.closed.Store(true)
		p.stderr.closed.Store(true)
		if p.stdin != nil {
			p.stdin.CloseWithError(errProcessExited)
		}
		p.cancel()
		c := p.c
		c.mu.Lock()
		c.cpuNanos += uint64(p.cpu.Load())
		close(p.done)
		c.mu.Unlock()
	})
	return first
}

func (p *memProc) terminate() { p.cancel() }

// kill ends the process at once with ExitKilled; it reports false when it had already exited.
func (p *memProc) kill() bool {
	if p.exited() {
		return false
	}
	if !p.finish(ExitKilled) {
		return false
	}
	close(p.killed)
	return true
}

// Run implements isolation.Container. ctx bounds the start only, not the process's life.
// Errors: ErrNotFound, ErrStopped, ErrInvalidSpec (bad field, or Path names no registered
// program), ErrAlreadyExists (ID in use in this container).
func (r *memRef) Run(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := r.c
	op := fmt.Sprintf("run %q in container %q", spec.Path, c.handle)
	if err := validateProcessSpec(spec); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	fn, ok := r.s.program(spec.Path)
	if !ok {
		return nil, fmt.Errorf("%s: %w", op, invalid("Path %q: no such program in the container", spec.Path))
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	dir = path.Clean(dir)

	pctx, cancel := context.WithCancel(context.Background())
	p := &memProc{
		id:     spec.ID,
		c:      c,
		cancel: cancel,
		killed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if p.id == "" {
		p.id = "proc-" + strconv.FormatUint(r.s.procSeq.Add(1), 10)
	}
	p.stdout.attach(stdio.Stdout)
	p.stderr.attach(stdio.Stderr)

	c.mu.Lock()
	switch {
	case c.destroyed:
		c.mu.Unlock()
		cancel()
		return nil, c.notFound(op)
	case c.state == isolation.StateStopped:
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%s: %w", op, isolation.ErrStopped)
	case c.procs[p.id] != nil:
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%s: process id %q: %w", op, p.id, isolation.ErrAlreadyExists)
	}
	if err := c.filesystem().mkdirAll(dir, 0o755, time.Now()); err != nil {
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%s: %w", op, invalid("Dir %q: %v", spec.Dir, err))
	}
	if c.procs == nil {
		c.procs = make(map[string]*memProc)
	}
	c.procs[p.id] = p
	env := make([]string, 0, len(c.spec.Env)+len(spec.Env))
	env = append(append(env, c.spec.Env...), spec.Env...)
	c.mu.Unlock()

	pc := &ProcContext{
		Handle: c.handle,
		ID:     p.id,
		Args:   append([]string(nil), spec.Args...),
		Env:    env,
		Dir:    dir,
		User:   spec.User,
		Stdin:  strings.NewReader(""),
		Stdout: &p.stdout,
		Stderr: &p.stderr,
		p:      p,
	}
	if stdio.Stdin != nil {
		pr, pw := io.Pipe()
		p.stdin = pr
		pc.Stdin = pr
		go func() {
			_, err := io.Copy(pw, stdio.Stdin)
			pw.CloseWithError(err)
		}()
	}
	go func() {
		code := fn(pctx, pc)
		p.finish(code)
	}()
	return &procRef{p: p}, nil
}

// Attach implements isolation.Container. It works for exited processes too (Wait then returns
// the exit status at once) and adds stdio's writers to the process's output.
// Errors: ErrNotFound, ErrUnsupported (stdio.Stdin: stdin belongs to the process's Run).
func (r *memRef) Attach(ctx context.Context, processID string, stdio isolation.ProcessIO) (isolation.Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := r.c
	op := fmt.Sprintf("attach to process %q of container %q", processID, c.handle)
	if stdio.Stdin != nil {
		return nil, fmt.Errorf("%s: stdin: %w", op, isolation.ErrUnsupported)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.destroyed {
		return nil, c.notFound(op)
	}
	p := c.procs[processID]
	if p == nil {
		return nil, fmt.Errorf("%s: %w", op, isolation.ErrNotFound)
	}
	p.stdout.attach(stdio.Stdout)
	p.stderr.attach(stdio.Stderr)
	return &procRef{p: p}, nil
}

// procRef is the isolation.Process handed to callers.
type procRef struct{ p *memProc }

var _ isolation.Process = (*procRef)(nil)

func (r *procRef) ID() string { return r.p.id }

// Wait implements isolation.Process. When it returns an exit status, all the output the
// program wrote has been written to the attached writers.
func (r *procRef) Wait(ctx context.Context) (int, error) {
	select {
	case <-r.p.done:
		return r.p.exit, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("wait for process %q: %w", r.p.id, ctx.Err())
	}
}

// Signal implements isolation.Process.
// Errors: ErrNotFound (exited), ErrInvalidSpec (unknown signal).
func (r *procRef) Signal(ctx context.Context, sig isolation.Signal) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	notFound := fmt.Errorf("signal process %q: %w (it has exited)", r.p.id, isolation.ErrNotFound)
	if r.p.exited() {
		return notFound
	}
	switch sig {
	case isolation.SignalTerminate:
		r.p.terminate()
	case isolation.SignalKill:
		if !r.p.kill() {
			return notFound
		}
	default:
		return fmt.Errorf("signal process %q: %w", r.p.id, invalid("signal %d", sig))
	}
	return nil
}

// MemoryProgram maps a Program of the vocabulary to the ProcessSpec that runs it on the
// in-memory backend.
func MemoryProgram(p Program) isolation.ProcessSpec {
	return isolation.ProcessSpec{Path: TestProgramPath, Args: p.Argv()}
}

// runTestProgram is the ProgramFunc registered at TestProgramPath.
func runTestProgram(ctx context.Context, pc *ProcContext) int {
	prog, err := ParseArgv(pc.Args)
	if err != nil {
		fmt.Fprintln(pc.Stderr, err)
		return 2
	}
	switch prog.Kind {
	case KindExit:
		return prog.Code
	case KindEcho:
		io.WriteString(pc.Stdout, prog.Stdout)
		io.WriteString(pc.Stderr, prog.Stderr)
		return 0
	case KindSleep:
		io.WriteString(pc.Stdout, ReadyLine)
		<-ctx.Done()
		return ExitTerminated
	case KindIgnoreTerm:
		io.WriteString(pc.Stdout, ReadyLine)
		<-pc.Killed()
		return ExitKilled
	case KindCat:
		if _, err := io.Copy(pc.Stdout, pc.Stdin); err != nil {
			fmt.Fprintln(pc.Stderr, "cat:", err)
			return 1
		}
		return 0
	case KindPrintEnv:
		v, ok := pc.Getenv(prog.Name)
		if !ok {
			return 1
		}
		io.WriteString(pc.Stdout, v+"\n")
		return 0
	case KindPrintCwd:
		io.WriteString(pc.Stdout, pc.Dir+"\n")
		return 0
	case KindWriteFile:
		if err := pc.WriteFile(prog.Path, []byte(prog.Content), 0o644); err != nil {
			fmt.Fprintln(pc.Stderr, "write-file:", err)
			return 1
		}
		return 0
	case KindReadFile:
		data, err := pc.ReadFile(prog.Path)
		if err != nil {
			fmt.Fprintln(pc.Stderr, "read-file:", err)
			return 1
		}
		pc.Stdout.Write(data)
		return 0
	case KindListDir:
		names, err := pc.ReadDir(prog.Path)
		if err != nil {
			fmt.Fprintln(pc.Stderr, "list-dir:", err)
			return 1
		}
		for _, n := range names {
			io.WriteString(pc.Stdout, n+"\n")
		}
		return 0
	}
	fmt.Fprintf(pc.Stderr, "test program: kind %q has no implementation\n", prog.Kind)
	return 2
}
