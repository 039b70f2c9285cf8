package isolationlinux

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// container is a handle on a container's state dir; it holds nothing the dir does not.
type container struct {
	b          *Backend
	handle     string
	dir        string
	privileged bool
}

var _ isolation.Container = (*container)(nil)

func (c *container) Handle() string { return c.handle }

func (c *container) record() (containerRecord, error) {
	rec, err := readRecord(c.dir)
	if err != nil {
		return rec, fmt.Errorf("%w: container %q", isolation.ErrNotFound, c.handle)
	}
	return rec, nil
}

// updateRecord applies fn to state.json under an exclusive lock on the state dir, so two
// backends (or goroutines) never lose each other's changes.
func (c *container) updateRecord(fn func(*containerRecord)) error {
	d, err := os.Open(c.dir)
	if err != nil {
		return fmt.Errorf("%w: container %q", isolation.ErrNotFound, c.handle)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	rec, err := c.record()
	if err != nil {
		return err
	}
	fn(&rec)
	return writeJSON(filepath.Join(c.dir, fileState), &rec)
}

// initAlive reports whether the container's init still runs.
func initAlive(rec containerRecord) bool {
	st, err := processStartTime(rec.InitPid)
	return err == nil && st == rec.InitStart
}

func (c *container) cgroup() (*resources.Cgroup, error) {
	return resources.Load(c.b.cfg.CgroupParent, c.handle)
}

// Info reports state, addresses, events and the processes that have not exited.
func (c *container) Info(ctx context.Context) (isolation.ContainerInfo, error) {
	rec, err := c.record()
	if err != nil {
		return isolation.ContainerInfo{}, err
	}
	info := isolation.ContainerInfo{
		Handle:        c.handle,
		State:         isolation.StateActive,
		HostIP:        rec.HostIP,
		ContainerIP:   rec.ContainerIP,
		MappedPorts:   append([]isolation.PortMapping(nil), rec.MappedPorts...),
		Properties:    copyProperties(rec.Properties),
		ContainerPath: c.dir,
		ProcessIDs:    []string{},
		Events:        []string{},
	}
	if rec.Image != nil {
		img := *rec.Image
		info.Image = &img
	}
	if rec.Stopped || !initAlive(rec) {
		info.State = isolation.StateStopped
	}
	if cg, err := c.cgroup(); err == nil {
		if n, err := cg.OOMKills(); err == nil && n > 0 {
			info.Events = append(info.Events, isolation.EventOutOfMemory)
		}
	}
	if rec.Limits.DiskBytes > 0 {
		if used, err := c.b.disk.usage(c.handle); err == nil && used >= rec.Limits.DiskBytes {
			info.Events = append(info.Events, isolation.EventDiskLimit)
		}
	}
	entries, err := os.ReadDir(filepath.Join(c.dir, dirProcesses))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return info, err
	}
	alive := info.State == isolation.StateActive
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(c.dir, dirProcesses, e.Name(), fileExit)); err == nil || !alive {
			continue
		}
		info.ProcessIDs = append(info.ProcessIDs, e.Name())
	}
	sort.Strings(info.ProcessIDs)
	return info, nil
}

// Metrics reports the cgroup's memory, CPU and task counts and the disk used by the overlay.
func (c *container) Metrics(ctx context.Context) (isolation.Metrics, error) {
	rec, err := c.record()
	if err != nil {
		return isolation.Metrics{}, err
	}
	cg, err := c.cgroup()
	if err != nil {
		return isolation.Metrics{}, fmt.Errorf("isolation_linux: metrics of %q: %w", c.handle, err)
	}
	st, err := cg.Stats()
	if err != nil {
		return isolation.Metrics{}, fmt.Errorf("isolation_linux: metrics of %q: %w", c.handle, err)
	}
	m := isolation.Metrics{
		MemoryBytes:      st.MemoryBytes,
		MemoryLimitBytes: st.MemoryLimitBytes,
		CPUNanos:         st.CPUNanos,
		Pids:             st.Pids,
		DiskLimitBytes:   rec.Limits.DiskBytes,
		At:               time.Now(),
	}
	if used, err := c.b.disk.usage(c.handle); err == nil {
		m.DiskBytes = used
	}
	return m, nil
}

// call sends one request to the init and reads its reply. files go along as SCM_RIGHTS.
// Errors: isolation.ErrStopped when the init is gone; the init's own error otherwise.
func (c *container) call(ctx context.Context, req containerinit.Request, files ...*os.File) (containerinit.Response, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return containerinit.Response{}, err
	}
	defer conn.Close()
	return exchange(ctx, conn, req, files...)
}

func (c *container) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", filepath.Join(c.dir, fileSocket))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: container %q has no running init: %v", isolation.ErrStopped, c.handle, err)
	}
	return conn.(*net.UnixConn), nil
}

func exchange(ctx context.Context, conn *net.UnixConn, req containerinit.Request, files ...*os.File) (containerinit.Response, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return containerinit.Response{}, err
	}
	if len(b) > containerinit.MaxPacket {
		return containerinit.Response{}, fmt.Errorf("%w: request of %d bytes exceeds %d", isolation.ErrInvalidSpec, len(b), containerinit.MaxPacket)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
		return containerinit.Response{}, ctxOr(ctx, fmt.Errorf("%w: sending %s: %v", ErrInit, req.Op, err))
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return containerinit.Response{}, ctxOr(ctx, fmt.Errorf("%w: reading reply to %s: %v", ErrInit, req.Op, err))
	}
	var resp containerinit.Response
	if err := json.Unmarshal(buf[:n], &resp); err != nil {
		return containerinit.Response{}, fmt.Errorf("%w: decoding reply to %s: %v", ErrInit, req.Op, err)
	}
	return resp, resp.Err()
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// newProcessID makes an id for a process whose spec names none.
func newProcessID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "p-" + hex.EncodeToString(b[:])
}

var rlimitResources = []struct {
	res int
	get func(isolation.Rlimits) *uint64
}{
	{unix.RLIMIT_NOFILE, func(r isolation.Rlimits) *uint64 { return r.Nofile }},
	{unix.RLIMIT_NPROC, func(r isolation.Rlimits) *uint64 { return r.Nproc }},
	{unix.RLIMIT_CORE, func(r isolation.Rlimits) *uint64 { return r.Core }},
}

// Run starts a process. Its stdout and stderr go to files in the state dir
// (processes/<id>/stdout and stderr), which the returned Process copies to stdio as they grow;
// stdin is a pipe from stdio.Stdin (or /dev/null).
// Errors: isolation.ErrStopped, ErrInvalidSpec (naming the field), ErrAlreadyExists (the id is
// taken).
func (c *container) Run(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	id := spec.ID
	if id == "" {
		id = newProcessID()
	}
	if !containerinit.ValidID(id) {
		return nil, fmt.Errorf("%w: ID %q must match %s", isolation.ErrInvalidSpec, id, handlePattern)
	}
	if spec.Path == "" {
		return nil, fmt.Errorf("%w: Path is empty", isolation.ErrInvalidSpec)
	}
	for i, e := range spec.Env {
		if !envPattern.MatchString(e) {
			return nil, fmt.Errorf("%w: Env[%d] %q is not NAME=value", isolation.ErrInvalidSpec, i, e)
		}
	}
	if spec.Dir != "" && !filepath.IsAbs(spec.Dir) {
		return nil, fmt.Errorf("%w: Dir %q is not absolute", isolation.ErrInvalidSpec, spec.Dir)
	}
	rec, err := c.record()
	if err != nil {
		return nil, err
	}
	if rec.Stopped || !initAlive(rec) {
		return nil, fmt.Errorf("%w: container %q", isolation.ErrStopped, c.handle)
	}
	pdir := filepath.Join(c.dir, dirProcesses, id)
	if err := os.Mkdir(pdir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: process %q in container %q", isolation.ErrAlreadyExists, id, c.handle)
		}
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(pdir)
		}
	}()
	if err := os.Lchown(pdir, c.b.rootUID(c.privileged), c.b.rootUID(c.privileged)); err != nil {
		return nil, err
	}
	stdout, err := os.OpenFile(filepath.Join(pdir, fileStdout), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(filepath.Join(pdir, fileStderr), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	var stdin, stdinW *os.File
	if stdio.Stdin != nil {
		if stdin, stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
	} else if stdin, err = os.Open(os.DevNull); err != nil {
		return nil, err
	}
	defer stdin.Close()
	req := &containerinit.ProcessRequest{ID: id, Path: spec.Path, Args: spec.Args, Env: spec.Env, Dir: spec.Dir, User: spec.User}
	for _, r := range rlimitResources {
		if v := r.get(spec.Rlimits); v != nil {
			req.Rlimits = append(req.Rlimits, containerinit.Rlimit{Resource: r.res, Soft: *v, Hard: *v})
		}
	}
	// The connection that starts the process stays open for its exit code (Request.Watch),
	// which spares Wait a connection of its own.
	watch, err := c.dial(ctx)
	if err == nil {
		if _, err = exchange(ctx, watch, containerinit.Request{Op: containerinit.OpRun, Process: req, Watch: true}, stdin, stdout, stderr); err != nil {
			watch.Close()
		}
	}
	if err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return nil, fmt.Errorf("isolation_linux: run in %q: %w", c.handle, err)
	}
	ok = true
	p := newProcess(c, id, stdio, watch)
	if stdinW != nil {
		go func() {
			_, _ = io.Copy(stdinW, stdio.Stdin)
			stdinW.Close()
		}()
	}
	return p, nil
}

// Attach returns a process started earlier, possibly by another Backend, running or exited.
// Its output is replayed from the start of the log files. Errors: isolation.ErrNotFound;
// isolation.ErrUnsupported for stdin, which is not re-attachable.
func (c *container) Attach(ctx context.Context, processID string, stdio isolation.ProcessIO) (isolation.Process, error) {
	if !containerinit.ValidID(processID) {
		return nil, fmt.Errorf("%w: process %q", isolation.ErrNotFound, processID)
	}
	if _, err := c.record(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dir, dirProcesses, processID)); err != nil {
		return nil, fmt.Errorf("%w: process %q in container %q", isolation.ErrNotFound, processID, c.handle)
	}
	if stdio.Stdin != nil {
		return nil, fmt.Errorf("%w: attaching stdin to an existing process", isolation.ErrUnsupported)
	}
	return newProcess(c, processID, stdio, nil), nil
}

// StreamIn unpacks a tar stream at dstPath inside the container, in the container's mount
// namespace (the init creates every file), so nothing in the archive or the container can
// direct a write to the host. Errors: isolation.ErrStopped, ErrInvalidSpec.
func (c *container) StreamIn(ctx context.Context, dstPath string, tarStream io.Reader) error {
	if !filepath.IsAbs(dstPath) {
		return fmt.Errorf("%w: destination %q is not absolute", isolation.ErrInvalidSpec, dstPath)
	}
	rec, err := c.record()
	if err != nil {
		return err
	}
	if rec.Stopped {
		return fmt.Errorf("%w: container %q", isolation.ErrStopped, c.handle)
	}
	// This process reads the archive and hands the init its entries through a pipe; from an
	// archive in a regular file, the init copies each file's content itself, from where the
	// entry says it starts.
	archive, err := regularFileOf(tarStream)
	if err != nil {
		return fmt.Errorf("isolation_linux: stream into %q:%s: %w", c.handle, dstPath, err)
	}
	files := []*os.File{nil}
	if archive != nil {
		defer archive.Close()
		tarStream = archive
		files = append(files, archive)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	files[0] = r
	written := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(w, 64<<10)
		err := writeEntries(tarStream, archive, bw)
		if err == nil {
			err = bw.Flush()
		}
		w.Close()
		written <- err
	}()
	_, err = c.call(ctx, containerinit.Request{Op: containerinit.OpStreamIn, Path: dstPath}, files...)
	r.Close() // a writer the init stopped reading early gets EPIPE
	var werr error
	if err == nil {
		werr = <-written // the init read the end frame: the writer is done
	} else {
		// The archive's own fault (which cut the stream) is known by now; a writer still
		// waiting on a stalled source is not waited for.
		select {
		case werr = <-written:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if werr != nil && isolation.IsInvalidSpec(werr) {
		err = werr // the archive's own fault, which cut the stream the init read
	} else if err == nil && werr != nil && !errors.Is(werr, syscall.EPIPE) {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("isolation_linux: stream into %q:%s: %w", c.handle, dstPath, err)
	}
	return nil
}

// other reader. The duplicate shares the file's offset, so reading it consumes r.
func regularFileOf(r io.Reader) (*os.File, error) {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	dup, regular := -1, false
	var dupErr error
	if err := raw.Control(func(fd uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(fd), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return
		}
		regular = true
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || !regular {
		return nil, nil
	}
	if dupErr != nil {
		return nil, fmt.Errorf("duplicating the archive's descriptor: %w", dupErr)
	}
	return os.NewFile(uintptr(dup), "archive"), nil
}

// StreamOut returns srcPath inside the container as a tar stream of the files the init reads.
// Errors: isolation.ErrNotFound (no such path), isolation.ErrStopped (no init to read it).
func (c *container) StreamOut(ctx context.Context, srcPath string) (io.ReadCloser, error) {
	if !filepath.IsAbs(srcPath) {
		return nil, fmt.Errorf("%w: source %q is not absolute", isolation.ErrInvalidSpec, srcPath)
	}
	if _, err := c.record(); err != nil {
		return nil, err
	}
	// The init writes the tree's entries to one pipe; this process turns them into tar on the
	// other, which the caller reads.
	entriesR, entriesW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	_, err = c.call(ctx, containerinit.Request{Op: containerinit.OpStreamOut, Path: srcPath}, entriesW)
	entriesW.Close()
	if err != nil {
		entriesR.Close()
		return nil, fmt.Errorf("isolation_linux: stream out of %q:%s: %w", c.handle, srcPath, err)
	}
	tarR, tarW := io.Pipe()
	go func() {
		err := writeTar(bufio.NewReaderSize(entriesR, 64<<10), tarW)
		entriesR.Close()
		tarW.CloseWithError(err)
	}()
	return tarR, nil
}

func (c *container) Properties(ctx context.Context) (isolation.Properties, error) {
	rec, err := c.record()
	if err != nil {
		return nil, err
	}
	return copyProperties(rec.Properties), nil
}

func (c *container) SetProperty(ctx context.Context, key, value string) error {
	return c.updateRecord(func(r *containerRecord) {
		if r.Properties == nil {
			r.Properties = isolation.Properties{}
		}
		r.Properties[key] = value
	})
}

// Stop has the init send SIGTERM to every process and SIGKILL after grace (at once with
// kill), and marks the container stopped: it runs no more processes but keeps its files for
// StreamOut until destroyed.
func (c *container) Stop(ctx context.Context, grace time.Duration, kill bool) error {
	if err := c.updateRecord(func(r *containerRecord) { r.Stopped = true }); err != nil {
		return err
	}
	_, err := c.call(ctx, containerinit.Request{Op: containerinit.OpStop, GraceMillis: grace.Milliseconds(), Kill: kill})
	if err != nil && !isolation.IsStopped(err) {
		return fmt.Errorf("isolation_linux: stop %q: %w", c.handle, err)
	}
	return nil
}
