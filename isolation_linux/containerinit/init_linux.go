package containerinit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// init takes over when this process is a container's init, before the packages that are
// not dependencies of this one initialise: Go initialises a package once its imports are, and
// among ready packages in import-path order, so what runs before this is this package's
// (small, standard-library) dependencies and the few packages that sort before it and are
// ready no later. The rest of the program — etcd, gRPC, OpenTelemetry and the like — never
// initialises in a container's init, which saves milliseconds per container start and
// hundreds of kilobytes per running container. This package must therefore keep its imports
// to the standard library's lower layers (no net, log/slog, runtime/debug, path/filepath,
// os/user or archive/tar, nor what imports them), x/sys/unix, the runtime-spec types and
// package isolation (TestInitImportsStayEarly); measure with GODEBUG=inittrace=1 after
// changing them: about 100 small packages initialise ahead of this one.
func init() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case Argv0:
		os.Exit(Main())
	case SpawnerArgv0:
		os.Exit(spawnerMain())
	}
}

// IsInit reports whether this process is a container's init. It never is once main runs:
// the init does not return from this package's initialisation.
func IsInit() bool { return len(os.Args) > 0 && os.Args[0] == Argv0 }

// logger writes the init's own log (its stderr, <state>/init.log) as text lines.
type logger struct{ handle string }

func (l logger) log(level, msg string, kv ...any) {
	var b strings.Builder
	b.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	b.WriteString(" level=" + level + " handle=" + l.handle + " msg=" + strconv.Quote(msg))
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%q", kv[i], fmt.Sprint(kv[i+1]))
	}
	b.WriteByte('\n')
	_, _ = os.Stderr.WriteString(b.String())
}

func (l logger) Error(msg string, kv ...any) { l.log("ERROR", msg, kv...) }
func (l logger) Warn(msg string, kv ...any)  { l.log("WARN", msg, kv...) }

// Main runs the container init and returns its exit code; it returns only if the init fails
// or its socket is gone. The backend starts the init as Argv0 with the descriptors Fd*.
func Main() int {
	log := logger{handle: argOr(1, "?")}
	// SIGCHLD feeds the reaper. Signals a container process may send to its pid 1 are caught
	// and dropped: the init keeps handlers for them, so the kernel's pid-1 protection does
	// not apply, and the Go runtime's default for them would end the container. None of this
	// depends on the container, so a pooled init has it done before its start.
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	ignored := make(chan os.Signal, 16)
	signal.Notify(ignored, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE, unix.SIGALRM)
	go func() {
		for range ignored {
		}
	}()
	if log.handle == PoolLabel {
		warmUp()
		if dir := argOr(2, ""); dir != "" {
			if err := prepareStage(dir); err != nil {
				log.Warn("building the container's file system layout ahead failed; it is built at start", "err", err)
			}
		}
	}
	start, err := awaitStart()
	if errors.Is(err, errNotStarted) {
		return 0
	}
	if err != nil {
		log.Error("not started by the backend", "err", err)
		return 1
	}
	log.handle = start.Handle
	// Every inherited descriptor is close-on-exec from here on; the ones the init keeps are
	// used by number, and none reaches a container process.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Error("close_range", "err", err)
		return 1
	}
	syncPipe := os.NewFile(FdSync, "sync")
	fail := func(err error) int {
		log.Error("container init failed", "err", err)
		b, _ := json.Marshal(SyncMessage{Error: err.Error()})
		_, _ = syncPipe.Write(append(b, '\n'))
		return 1
	}
	// Not dumpable: container processes, which run as the same uid, cannot open the init's
	// /proc entries (its descriptors lead to the host's state dir).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err))
	}
	cfgFile := os.NewFile(FdConfig, "config.json")
	var spec Config
	if err := json.NewDecoder(cfgFile).Decode(&spec); err != nil {
		return fail(fmt.Errorf("reading config.json: %w", err))
	}
	cfgFile.Close()
	if spec.Linux == nil || spec.Process == nil || spec.Root == nil {
		return fail(errors.New("config.json lacks linux, process or root"))
	}
	var filter []unix.SockFilter
	if spec.Linux.hasSeccomp() {
		// The backend compiled the default profile once; any other is compiled here.
		if len(start.Seccomp) > 0 {
			filter, err = decodeSeccomp(start.Seccomp)
		} else {
			var profile *specs.LinuxSeccomp
			if profile, err = spec.Linux.seccompProfile(); err != nil {
				return fail(fmt.Errorf("config.json: linux.seccomp: %w", err))
			}
			filter, err = CompileSeccomp(profile)
		}
		if err != nil {
			return fail(err)
		}
	}
	s := &initServer{
		log:      log,
		spec:     &spec,
		procDir:  FdProcesses,
		byPid:    map[int]*initProc{},
		byID:     map[string]*initProc{},
		spawnReq: make(chan spawnRequest),
	}
	go s.reap(sigchld)

	// The spawner thread confines itself while this one builds the mount tree; both only
	// need the other at the first fork.
	hardened := make(chan error, 1)
	go s.spawner(filter, lastCap(), hardened)
	if err := setupRootfs(&spec); err != nil {
		return fail(err)
	}
	if err := <-hardened; err != nil {
		return fail(err)
	}

	l, err := newListener(FdListener)
	if err != nil {
		return fail(fmt.Errorf("init socket: %w", err))
	}
	b, _ := json.Marshal(SyncMessage{Ready: true})
	if _, err := syncPipe.Write(append(b, '\n')); err != nil {
		log.Error("reporting ready", "err", err)
		return 1
	}
	syncPipe.Close()
	s.serve(l)
	return 0
}

func argOr(i int, def string) string {
	if len(os.Args) > i {
		return os.Args[i]
	}
	return def
}

// initServer is the state of a running init.
type initServer struct {
	log     logger
	spec    *Config
	procDir int

	// mu guards the process tables and is held from fork to registration, so the reaper
	// never reaps a pid it cannot attribute.
	mu      sync.Mutex
	byPid   map[int]*initProc
	byID    map[string]*initProc
	stopped bool

	spawnReq chan spawnRequest
}

type initProc struct {
	id   string
	pid  int
	done chan struct{}
	code int
}

type spawnRequest struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	reply chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

// spawner owns the one OS thread processes are forked from. The thread drops to the
// container's capabilities and seccomp filter, and children inherit exactly that.
func (s *initServer) spawner(filter []unix.SockFilter, lastCap uint, hardened chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread's credentials are not the init's
	if err := hardenThread(s.spec.Process, filter, lastCap); err != nil {
		hardened <- err
		return
	}
	hardened <- nil
	for req := range s.spawnReq {
		// Nothing the init holds may reach the child; the init opens everything
		// close-on-exec, and this makes sure of it just before the fork.
		if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
			req.reply <- spawnResult{err: fmt.Errorf("close_range: %w", err)}
			continue
		}
		pid, err := syscall.ForkExec(req.argv0, req.argv, req.attr)
		req.reply <- spawnResult{pid: pid, err: err}
	}
}

// reap collects every child and orphan of the container and records tracked exit codes.
func (s *initServer) reap(sigchld <-chan os.Signal) {
	for range sigchld {
		for {
			s.mu.Lock()
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				s.mu.Unlock()
				break
			}
			p := s.byPid[pid]
			if p != nil {
				delete(s.byPid, pid)
				p.code = exitCode(ws)
			}
			s.mu.Unlock()
			if p != nil {
				// The exit file first: a waiter told of the exit may look at the container
				// next (Info lists as running every process without one).
				s.recordExit(p)
				close(p.done)
			}
		}
	}
}

func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 255
}

// recordExit writes processes/<id>/exit atomically, so a backend started later learns the
// exit code even after the init is gone.
func (s *initServer) recordExit(p *initProc) {
	tmp := p.id + "/exit.tmp"
	fd, err := unix.Openat(s.procDir, tmp, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		s.log.Error("recording exit code", "id", p.id, "err", err)
		return
	}
	_, werr := unix.Write(fd, []byte(strconv.Itoa(p.code)+"\n"))
	unix.Close(fd)
	if werr == nil {
		werr = unix.Renameat(s.procDir, tmp, s.procDir, p.id+"/exit")
	}
	if werr != nil {
		s.log.Error("recording exit code", "id", p.id, "err", werr)
	}
}

func (s *initServer) serve(l *listener) {
	for {
		c, err := l.accept()
		if err != nil {
			s.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(c)
	}
}

func (s *initServer) handle(c *conn) {
	defer c.Close()
	buf := make([]byte, MaxPacket)
	oob := make([]byte, unix.CmsgSpace(4*8))
	n, oobn, err := c.recvmsg(buf, oob)
	if err != nil {
		return
	}
	files, err := receivedFiles(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	reply := func(r Response) {
		b, _ := json.Marshal(r)
		_, _ = c.Write(b)
	}
	defer func() {
		// A bug in one request must not take the container down with the init.
		if r := recover(); r != nil {
			stack := make([]byte, 16<<10)
			stack = stack[:runtime.Stack(stack, false)]
			s.log.Error("request handler panicked", "panic", r, "stack", string(stack))
			reply(ErrorResponse(fmt.Errorf("%w: init failed serving the request: %v", ErrInit, r)))
		}
	}()
	if err != nil {
		reply(ErrorResponse(err))
		return
	}
	var req Request
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		reply(ErrorResponse(fmt.Errorf("%w: decoding request: %v", isolation.ErrInvalidSpec, err)))
		return
	}
	switch req.Op {
	case OpPing:
		reply(Response{})
	case OpRun:
		pid, err := s.run(req.Process, files)
		if err != nil {
			reply(ErrorResponse(err))
			return
		}
		reply(Response{Pid: pid})
		if req.Watch {
			// The process has its descriptors; the init must not hold its stdin open for it
			// while it waits (a writer would then never see the process close it).
			for _, f := range files {
				f.Close()
			}
			files = nil
			code, err := s.wait(c, req.Process.ID)
			if err != nil {
				reply(ErrorResponse(err))
				return
			}
			reply(Response{ExitCode: code})
		}
	case OpWait:
		code, err := s.wait(c, req.ID)
		if err != nil {
			reply(ErrorResponse(err))
			return
		}
		reply(Response{ExitCode: code})
	case OpSignal:
		reply(ErrorResponse(s.signal(req.ID, unix.Signal(req.Signal))))
	case OpStop:
		s.stop(time.Duration(req.GraceMillis)*time.Millisecond, req.Kill)
		reply(Response{})
	case OpStreamIn:
		if len(files) != 1 && len(files) != 2 {
			reply(ErrorResponse(fmt.Errorf("%w: stream-in needs the stream's descriptor and, optionally, the archive's", isolation.ErrInvalidSpec)))
			return
		}
		var archive *os.File
		if len(files) == 2 {
			archive = files[1]
		}
		reply(ErrorResponse(extractEntries(bufio.NewReaderSize(files[0], 64<<10), archive, req.Path)))
	case OpStreamOut:
		if len(files) != 1 {
			reply(ErrorResponse(fmt.Errorf("%w: stream-out needs one descriptor", isolation.ErrInvalidSpec)))
			return
		}
		a, err := newArchiver(req.Path)
		if err != nil {
			reply(ErrorResponse(err))
			return
		}
		reply(Response{})
		w := bufio.NewWriterSize(files[0], 64<<10)
		if err := a.writeTo(flushCloser{w, files[0]}); err != nil {
			s.log.Warn("stream-out", "path", req.Path, "err", err)
		}
	default:
		reply(ErrorResponse(fmt.Errorf("%w: unknown operation %q", isolation.ErrInvalidSpec, req.Op)))
	}
}

func receivedFiles(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", isolation.ErrInvalidSpec, err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "fd"+strconv.Itoa(fd)))
		}
	}
	return files, nil
}

// run starts a process from the spawner thread and registers it.
func (s *initServer) run(p *ProcessRequest, files []*os.File) (int, error) {
	if p == nil || !ValidID(p.ID) {
		return 0, fmt.Errorf("%w: process id missing or not [A-Za-z0-9_.-]", isolation.ErrInvalidSpec)
	}
	if len(files) != 3 {
		return 0, fmt.Errorf("%w: run needs stdin, stdout and stderr descriptors, got %d", isolation.ErrInvalidSpec, len(files))
	}
	u, err := s.resolveUser(p.User)
	if err != nil {
		return 0, err
	}
	env := MergeEnv(s.spec.Process.Env, []string{"HOME=" + u.Home, "USER=" + u.Name})
	if u.Name == "" {
		env = MergeEnv(s.spec.Process.Env, []string{"HOME=" + u.Home})
	}
	env = MergeEnv(env, p.Env)
	dir := p.Dir
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) {
		return 0, fmt.Errorf("%w: Dir %q is not absolute", isolation.ErrInvalidSpec, dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return 0, fmt.Errorf("%w: Dir %q is not a directory in the container", isolation.ErrInvalidSpec, dir)
	}
	argv0, err := lookPath(p.Path, env)
	if err != nil {
		return 0, err
	}
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{files[0].Fd(), files[1].Fd(), files[2].Fd()},
		Sys: &syscall.SysProcAttr{
			Setsid:     true,
			Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups},
		},
	}
	argv := append([]string{p.Path}, p.Args...)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return 0, fmt.Errorf("%w: the container was stopped", isolation.ErrStopped)
	}
	if _, dup := s.byID[p.ID]; dup {
		return 0, fmt.Errorf("%w: process %q", isolation.ErrAlreadyExists, p.ID)
	}
	restore, err := applyRlimits(s.spec.Process.Rlimits, p.Rlimits)
	if err != nil {
		return 0, err
	}
	reply := make(chan spawnResult, 1)
	s.spawnReq <- spawnRequest{argv0: argv0, argv: argv, attr: attr, reply: reply}
	res := <-reply
	restore()
	if res.err != nil {
		return 0, fmt.Errorf("%w: starting %s: %v", isolation.ErrInvalidSpec, p.Path, res.err)
	}
	proc := &initProc{id: p.ID, pid: res.pid, done: make(chan struct{})}
	s.byPid[res.pid] = proc
	s.byID[p.ID] = proc
	return res.pid, nil
}

func (s *initServer) resolveUser(spec string) (ExecUser, error) {
	var passwd, group io.Reader
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		passwd = bytes.NewReader(b)
	}
	if b, err := os.ReadFile("/etc/group"); err == nil {
		group = bytes.NewReader(b)
	}
	return ResolveUser(spec, passwd, group)
}

// lookPath finds file in the PATH of env, inside the container (the init's root).
func lookPath(file string, env []string) (string, error) {
	if file == "" {
		return "", fmt.Errorf("%w: Path is empty", isolation.ErrInvalidSpec)
	}
	isExec := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
	}
	if strings.Contains(file, "/") {
		if isExec(file) {
			return file, nil
		}
		return "", fmt.Errorf("%w: %s is not an executable file in the container", isolation.ErrInvalidSpec, file)
	}
	pathEnv := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, d := range strings.Split(pathEnv, ":") {
		if d == "" {
			d = "."
		}
		if p := path.Join(d, file); isExec(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found in the container's PATH", isolation.ErrInvalidSpec, file)
}

var rlimitNames = map[string]int{
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":  unix.RLIMIT_NPROC,
	"RLIMIT_CORE":   unix.RLIMIT_CORE,
}

// applyRlimits sets the process-wide rlimits a child is to inherit (the template's, then the
// process's own) and returns a function restoring the init's. The caller holds s.mu, so
// forks are serialised.
func applyRlimits(template []specs.POSIXRlimit, own []Rlimit) (func(), error) {
	want := map[int]unix.Rlimit{}
	for _, r := range template {
		if res, ok := rlimitNames[r.Type]; ok {
			want[res] = unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		}
	}
	for _, r := range own {
		want[r.Resource] = unix.Rlimit{Cur: r.Soft, Max: r.Hard}
	}
	saved := map[int]unix.Rlimit{}
	restore := func() {
		for res, lim := range saved {
			l := syscall.Rlimit{Cur: lim.Cur, Max: lim.Max}
			_ = syscall.Setrlimit(res, &l)
		}
	}
	for res, lim := range want {
		var old unix.Rlimit
		if err := unix.Getrlimit(res, &old); err != nil {
			restore()
			return nil, fmt.Errorf("getrlimit %d: %w", res, err)
		}
		saved[res] = old
		// syscall.Setrlimit (not unix's) also stops os/exec from resetting NOFILE in the child.
		l := syscall.Rlimit{Cur: lim.Cur, Max: lim.Max}
		if err := syscall.Setrlimit(res, &l); err != nil {
			restore()
			return nil, fmt.Errorf("%w: rlimit %d to %d/%d: %v", isolation.ErrInvalidSpec, res, lim.Cur, lim.Max, err)
		}
	}
	return restore, nil
}

// wait blocks until process id exits, or until the client hangs up.
func (s *initServer) wait(c *conn, id string) (int, error) {
	s.mu.Lock()
	p := s.byID[id]
	s.mu.Unlock()
	if p == nil {
		return 0, fmt.Errorf("%w: process %q", isolation.ErrNotFound, id)
	}
	gone := make(chan struct{})
	go func() {
		// The client sends nothing more; a read returns when it hangs up.
		var b [1]byte
		_, _ = c.Read(b[:])
		close(gone)
	}()
	select {
	case <-p.done:
		return p.code, nil
	case <-gone:
		return 0, fmt.Errorf("%w: waiter hung up", isolation.ErrNotFound)
	}
}

func (s *initServer) signal(id string, sig unix.Signal) error {
	s.mu.Lock()
	p := s.byID[id]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: process %q", isolation.ErrNotFound, id)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%w: process %q has exited", isolation.ErrNotFound, id)
	default:
	}
	if err := unix.Kill(p.pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("%w: process %q has exited", isolation.ErrNotFound, id)
		}
		return fmt.Errorf("signalling process %q: %w", id, err)
	}
	return nil
}

// stop refuses new processes, sends SIGTERM to every process of the container, and SIGKILL
// to what is left after grace (at once with kill). It returns when only the init is left or
// after a bounded wait for the kernel to finish the kills.
func (s *initServer) stop(grace time.Duration, kill bool) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	if !kill {
		_ = unix.Kill(-1, unix.SIGTERM)
		if waitAlone(grace) {
			return
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	waitAlone(5 * time.Second)
}

// waitAlone waits up to d for every process but the init to be gone from the pid namespace.
func waitAlone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if onlyInitLeft() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func onlyInitLeft() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != 1 {
			// A zombie awaiting the reaper counts as gone.
			if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
				if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
					continue
				}
			}
			return false
		}
	}
	return true
}

// flushCloser flushes w, then closes c.
type flushCloser struct {
	w *bufio.Writer
	c io.Closer
}

func (f flushCloser) Write(p []byte) (int, error) { return f.w.Write(p) }

func (f flushCloser) Close() error {
	err := f.w.Flush()
	if cerr := f.c.Close(); err == nil {
		err = cerr
	}
	return err
}
