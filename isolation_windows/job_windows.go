package isolationwindows

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/trellis-run/trellis/isolation"
)

var (
	modkernel32              = windows.NewLazySystemDLL("kernel32.dll")
	procOpenJobObjectW       = modkernel32.NewProc("OpenJobObjectW")
	procGlobalMemoryStatusEx = modkernel32.NewProc("GlobalMemoryStatusEx")
)

// jobObjectAllAccess is JOB_OBJECT_ALL_ACCESS.
const jobObjectAllAccess = 0x1F003F

// jobObjectAssociateCompletionPort is JOBOBJECT_ASSOCIATE_COMPLETION_PORT.
type jobObjectAssociateCompletionPort struct {
	CompletionKey  uintptr
	CompletionPort windows.Handle
}

func openJobObject(name string) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return 0, err
	}
	r, _, e := procOpenJobObjectW.Call(jobObjectAllAccess, 0, uintptr(unsafe.Pointer(p)))
	if r == 0 {
		return 0, e
	}
	return windows.Handle(r), nil
}

// jobDriver runs process-mode containers: one job object per container, its processes
// created suspended, assigned to the job, then resumed, so neither they nor their children
// ever run outside it.
type jobDriver struct {
	cfg  Config
	log  *slog.Logger
	port windows.Handle // the completion port every job reports to

	mu      sync.Mutex
	jobs    map[string]*jobState // by container handle
	byKey   map[uintptr]*jobState
	nextKey uintptr
	closed  bool
	loopEnd chan struct{}
}

type jobState struct {
	h      windows.Handle
	key    uintptr
	events []string
}

func newJobDriver(cfg Config, log *slog.Logger) (driver, error) {
	port, err := windows.CreateIoCompletionPort(windows.InvalidHandle, 0, 0, 1)
	if err != nil {
		return nil, fmt.Errorf("creating the job completion port: %w", err)
	}
	d := &jobDriver{cfg: cfg, log: log, port: port, jobs: map[string]*jobState{}, byKey: map[uintptr]*jobState{}, nextKey: 1, loopEnd: make(chan struct{})}
	go d.notifications()
	return d, nil
}

// notifications reads the jobs' completion-port messages: a job memory limit hit becomes the
// container event "out of memory".
func (d *jobDriver) notifications() {
	defer close(d.loopEnd)
	for {
		var msg uint32
		var key uintptr
		var ov *windows.Overlapped
		err := windows.GetQueuedCompletionStatus(d.port, &msg, &key, &ov, windows.INFINITE)
		if err != nil {
			d.mu.Lock()
			closed := d.closed
			d.mu.Unlock()
			if closed {
				return
			}
			d.log.Warn("isolation_windows: job completion port", "err", err)
			continue
		}
		if key == 0 {
			return // close() posts key 0
		}
		if msg == jobObjectMsgJobMemoryLimit {
			d.mu.Lock()
			if js := d.byKey[key]; js != nil {
				js.events = append(js.events, isolation.EventOutOfMemory)
			}
			d.mu.Unlock()
		}
	}
}

func (d *jobDriver) close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	var errs []error
	for _, js := range d.jobs {
		errs = append(errs, windows.CloseHandle(js.h))
	}
	d.jobs, d.byKey = map[string]*jobState{}, map[uintptr]*jobState{}
	d.mu.Unlock()
	windows.PostQueuedCompletionStatus(d.port, 0, 0, nil)
	<-d.loopEnd
	errs = append(errs, windows.CloseHandle(d.port))
	return errors.Join(errs...)
}

// setup applies the limits to job h and connects it to the completion port.
func (d *jobDriver) setup(rec *containerRecord, h windows.Handle) error {
	lim := jobLimitsFor(rec.Spec.Limits)
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = lim.LimitFlags
	info.BasicLimitInformation.ActiveProcessLimit = lim.ActiveProcessLimit
	info.JobMemoryLimit = uintptr(lim.JobMemoryLimit)
	if _, err := windows.SetInformationJobObject(h, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		return fmt.Errorf("setting job limits: %w", err)
	}
	if lim.CPURate != 0 {
		cpu := jobCPURateControlInformation{ControlFlags: jobObjectCPURateControlEnable | jobObjectCPURateControlHardCap, CPURate: lim.CPURate}
		if _, err := windows.SetInformationJobObject(h, windows.JobObjectCpuRateControlInformation,
			uintptr(unsafe.Pointer(&cpu)), uint32(unsafe.Sizeof(cpu))); err != nil {
			return fmt.Errorf("setting the job CPU rate: %w", err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	js := &jobState{h: h, key: d.nextKey}
	d.nextKey++
	assoc := jobObjectAssociateCompletionPort{CompletionKey: js.key, CompletionPort: d.port}
	if _, err := windows.SetInformationJobObject(h, windows.JobObjectAssociateCompletionPortInformation,
		uintptr(unsafe.Pointer(&assoc)), uint32(unsafe.Sizeof(assoc))); err != nil {
		// A job keeps the port it was first associated with (a previous Backend's):
		// memory events are then not seen until the container is recreated.
		d.log.Warn("isolation_windows: job memory notifications unavailable", "handle", rec.Handle, "err", err)
	}
	d.jobs[rec.Handle] = js
	d.byKey[js.key] = js
	return nil
}

func (d *jobDriver) job(handle string) (windows.Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	js := d.jobs[handle]
	if js == nil {
		return 0, fmt.Errorf("job of %q: %w", handle, isolation.ErrNotFound)
	}
	return js.h, nil
}

func (d *jobDriver) create(ctx context.Context, rec *containerRecord) (err error) {
	root := filepath.Join(d.cfg.StateDir, rec.Handle, rootDirName)
	if err := os.Mkdir(root, 0o700); err != nil {
		return fmt.Errorf("making the private directory: %w", err)
	}
	if err := securePrivateDir(root); err != nil {
		return fmt.Errorf("restricting the private directory to the service account: %w", err)
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o700); err != nil {
		return fmt.Errorf("making the private tmp directory: %w", err)
	}
	rec.RootDir = root
	// No address of its own: the processes share the host's network, and a port answers only
	// as its host mapping (HostIP:HostPort). Reporting HostIP here would send callers that
	// prefer the container's address (the agent's health checks) to the nominal port.
	rec.ContainerIP = ""
	for i, bm := range rec.Spec.BindMounts {
		dst := filepath.Join(root, filepath.FromSlash(bm.DstPath))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("BindMounts[%d]: %w", i, err)
		}
		if err := os.Symlink(bm.SrcPath, dst); err != nil {
			return fmt.Errorf("BindMounts[%d]: linking %s to %s: %w", i, bm.DstPath, bm.SrcPath, err)
		}
		rec.Mounts = append(rec.Mounts, mountPoint{Dst: cleanContainerPath(bm.DstPath), Src: bm.SrcPath})
	}
	rec.JobName = jobName(d.cfg.StateDir, rec.Handle)
	if h, err := openJobObject(rec.JobName); err == nil {
		windows.CloseHandle(h)
		return fmt.Errorf("job object %s exists already (a container of a lost state dir still runs): %w", rec.JobName, isolation.ErrAlreadyExists)
	}
	name, err := windows.UTF16PtrFromString(rec.JobName)
	if err != nil {
		return err
	}
	h, err := windows.CreateJobObject(nil, name)
	if err != nil {
		return fmt.Errorf("creating job object %s: %w", rec.JobName, err)
	}
	if err := d.setup(rec, h); err != nil {
		windows.CloseHandle(h)
		return err
	}
	return nil
}

// open reopens (or, when every process and handle is gone, recreates) the job by name.
func (d *jobDriver) open(ctx context.Context, rec *containerRecord) error {
	name, err := windows.UTF16PtrFromString(rec.JobName)
	if err != nil {
		return err
	}
	h, err := windows.CreateJobObject(nil, name)
	if err != nil {
		return fmt.Errorf("reopening job object %s: %w", rec.JobName, err)
	}
	if err := d.setup(rec, h); err != nil {
		windows.CloseHandle(h)
		return err
	}
	return nil
}

func (d *jobDriver) start(ctx context.Context, rec *containerRecord, l launch) (osProcess, error) {
	job, err := d.job(rec.Handle)
	if err != nil {
		return nil, err
	}
	inherit := &windows.SecurityAttributes{InheritHandle: 1}
	inherit.Length = uint32(unsafe.Sizeof(*inherit))
	var childSide []windows.Handle
	defer func() {
		for _, h := range childSide {
			windows.CloseHandle(h)
		}
	}()
	// stdin: a pipe fed from l.stdin, or NUL.
	var stdin windows.Handle
	var stdinW *os.File
	if l.stdin != nil {
		var r, w windows.Handle
		if err := windows.CreatePipe(&r, &w, inherit, 0); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		childSide = append(childSide, r)
		stdin = r
		stdinW = os.NewFile(uintptr(w), "stdin")
	} else {
		nul, err := openInheritable("NUL", windows.GENERIC_READ, windows.OPEN_EXISTING, inherit)
		if err != nil {
			return nil, err
		}
		childSide = append(childSide, nul)
		stdin = nul
	}
	stdout, err := openInheritable(l.stdoutPath, windows.GENERIC_WRITE, windows.CREATE_ALWAYS, inherit)
	if err != nil {
		closeFile(stdinW)
		return nil, err
	}
	childSide = append(childSide, stdout)
	stderr, err := openInheritable(l.stderrPath, windows.GENERIC_WRITE, windows.CREATE_ALWAYS, inherit)
	if err != nil {
		closeFile(stdinW)
		return nil, err
	}
	childSide = append(childSide, stderr)
	handles := []windows.Handle{stdin, stdout, stderr}
	if d.cfg.KeepAcrossRestart {
		// The child holds the job open, so the container outlives this Backend.
		var dup windows.Handle
		cur := windows.CurrentProcess()
		if err := windows.DuplicateHandle(cur, job, cur, &dup, 0, true, windows.DUPLICATE_SAME_ACCESS); err != nil {
			closeFile(stdinW)
			return nil, fmt.Errorf("duplicating the job handle: %w", err)
		}
		childSide = append(childSide, dup)
		handles = append(handles, dup)
	}
	attrs, err := windows.NewProcThreadAttributeList(1)
	if err != nil {
		closeFile(stdinW)
		return nil, err
	}
	defer attrs.Delete()
	if err := attrs.Update(windows.PROC_THREAD_ATTRIBUTE_HANDLE_LIST, unsafe.Pointer(&handles[0]), uintptr(len(handles))*unsafe.Sizeof(handles[0])); err != nil {
		closeFile(stdinW)
		return nil, fmt.Errorf("handle list: %w", err)
	}
	si := windows.StartupInfoEx{ProcThreadAttributeList: attrs.List()}
	si.Cb = uint32(unsafe.Sizeof(si))
	si.Flags = windows.STARTF_USESTDHANDLES
	si.StdInput, si.StdOutput, si.StdErr = stdin, stdout, stderr
	var appName *uint16
	if filepath.IsAbs(l.path) {
		if appName, err = windows.UTF16PtrFromString(l.path); err != nil {
			closeFile(stdinW)
			return nil, invalidf("Path %q: %v", l.path, err)
		}
	}
	cmdLine, err := windows.UTF16PtrFromString(windows.ComposeCommandLine(append([]string{l.path}, l.args...)))
	if err != nil {
		closeFile(stdinW)
		return nil, invalidf("Args: %v", err)
	}
	dir, err := windows.UTF16PtrFromString(l.dir)
	if err != nil {
		closeFile(stdinW)
		return nil, invalidf("Dir %q: %v", l.dir, err)
	}
	env, err := envBlock(l.env)
	if err != nil {
		closeFile(stdinW)
		return nil, invalidf("Env: %v", err)
	}
	flags := uint32(windows.CREATE_SUSPENDED | windows.CREATE_NEW_PROCESS_GROUP | windows.CREATE_UNICODE_ENVIRONMENT | windows.EXTENDED_STARTUPINFO_PRESENT)
	var pi windows.ProcessInformation
	if err := windows.CreateProcess(appName, cmdLine, nil, nil, true, flags, &env[0], dir, &si.StartupInfo, &pi); err != nil {
		closeFile(stdinW)
		return nil, fmt.Errorf("CreateProcess %s: %w", l.path, err)
	}
	defer windows.CloseHandle(pi.Thread)
	if err := windows.AssignProcessToJobObject(job, pi.Process); err != nil {
		windows.TerminateProcess(pi.Process, exitKilled)
		windows.CloseHandle(pi.Process)
		closeFile(stdinW)
		return nil, fmt.Errorf("assigning the process to the job: %w", err)
	}
	if _, err := windows.ResumeThread(pi.Thread); err != nil {
		windows.TerminateProcess(pi.Process, exitKilled)
		windows.CloseHandle(pi.Process)
		closeFile(stdinW)
		return nil, fmt.Errorf("resuming the process: %w", err)
	}
	p := &winProcess{h: pi.Process, id: int(pi.ProcessId)}
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(pi.Process, &creation, &exit, &kernel, &user); err == nil {
		p.created = uint64(creation.HighDateTime)<<32 | uint64(creation.LowDateTime)
	}
	if stdinW != nil {
		p.stdinDone = make(chan struct{})
		go func() {
			defer close(p.stdinDone)
			io.Copy(stdinW, l.stdin)
			stdinW.Close()
		}()
	}
	return p, nil
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

// openInheritable opens path as an inheritable handle for a child's standard stream.
func openInheritable(path string, access, disposition uint32, sa *windows.SecurityAttributes) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, err
	}
	share := uint32(windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE | windows.FILE_SHARE_DELETE)
	h, err := windows.CreateFile(p, access, share, sa, disposition, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", path, err)
	}
	return h, nil
}

// envBlock encodes env as a sorted, double-NUL-terminated UTF-16 block.
func envBlock(env []string) ([]uint16, error) {
	sorted := append([]string(nil), env...)
	sort.Slice(sorted, func(i, j int) bool { return strings.ToUpper(sorted[i]) < strings.ToUpper(sorted[j]) })
	var out []uint16
	for _, kv := range sorted {
		u, err := windows.UTF16FromString(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, u...)
	}
	if len(out) == 0 {
		out = append(out, 0)
	}
	return append(out, 0), nil
}

func (d *jobDriver) reattach(ctx context.Context, rec *containerRecord, pr processRecord) (osProcess, error) {
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION|windows.PROCESS_TERMINATE, false, uint32(pr.Pid))
	if err != nil {
		return nil, fmt.Errorf("process %d: %w (%v)", pr.Pid, isolation.ErrNotFound, err)
	}
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("process %d: %w", pr.Pid, err)
	}
	if got := uint64(creation.HighDateTime)<<32 | uint64(creation.LowDateTime); pr.CreationTime != 0 && got != pr.CreationTime {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("process %d: %w (the pid now names another process)", pr.Pid, isolation.ErrNotFound)
	}
	return &winProcess{h: h, id: pr.Pid, created: pr.CreationTime}, nil
}

// jobPids lists the processes in a job.
func jobPids(job windows.Handle) ([]uint32, error) {
	// JOBOBJECT_BASIC_PROCESS_ID_LIST: two uint32 counts, then the ids (ULONG_PTR each).
	buf := make([]uintptr, 2+1024)
	if err := windows.QueryInformationJobObject(job, windows.JobObjectBasicProcessIdList,
		uintptr(unsafe.Pointer(&buf[0])), uint32(len(buf))*uint32(unsafe.Sizeof(buf[0])), nil); err != nil {
		return nil, err
	}
	// NumberOfAssignedProcesses, then NumberOfProcessIdsInList.
	n := (*[2]uint32)(unsafe.Pointer(&buf[0]))[1]
	pids := make([]uint32, 0, n)
	for i := uint32(0); i < n && int(i) < len(buf)-1; i++ {
		pids = append(pids, uint32(buf[1+i]))
	}
	return pids, nil
}

// terminate sends CTRL_BREAK to every process group of the container: each process the
// backend starts leads its own group (CREATE_NEW_PROCESS_GROUP).
func (d *jobDriver) terminate(ctx context.Context, rec *containerRecord) error {
	job, err := d.job(rec.Handle)
	if err != nil {
		return err
	}
	pids, err := jobPids(job)
	if err != nil {
		return fmt.Errorf("listing the job's processes: %w", err)
	}
	var errs []error
	sent := 0
	for _, pid := range pids {
		if err := windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, pid); err != nil {
			errs = append(errs, fmt.Errorf("CTRL_BREAK to %d: %w", pid, err))
			continue
		}
		sent++
	}
	if sent == 0 && len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

func (d *jobDriver) kill(ctx context.Context, rec *containerRecord) error {
	job, err := d.job(rec.Handle)
	if err != nil {
		return err
	}
	if err := windows.TerminateJobObject(job, exitKilled); err != nil {
		return fmt.Errorf("TerminateJobObject: %w", err)
	}
	return nil
}

func (d *jobDriver) destroy(ctx context.Context, rec *containerRecord) error {
	d.mu.Lock()
	js := d.jobs[rec.Handle]
	delete(d.jobs, rec.Handle)
	if js != nil {
		delete(d.byKey, js.key)
	}
	d.mu.Unlock()
	if js != nil {
		windows.TerminateJobObject(js.h, exitKilled)
		if err := windows.CloseHandle(js.h); err != nil {
			return fmt.Errorf("closing the job: %w", err)
		}
	}
	// Remove the bind-mount links first, so removing the private directory never reaches
	// into the host directories they point to.
	for _, m := range rec.Mounts {
		if err := os.Remove(filepath.Join(rec.RootDir, filepath.FromSlash(m.Dst))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the bind mount %s: %w", m.Dst, err)
		}
	}
	return nil
}

func (d *jobDriver) metrics(ctx context.Context, rec *containerRecord) (isolation.Metrics, error) {
	job, err := d.job(rec.Handle)
	if err != nil {
		return isolation.Metrics{}, err
	}
	var acct jobBasicAndIOAccountingInformation
	if err := windows.QueryInformationJobObject(job, windows.JobObjectBasicAndIoAccountingInformation,
		uintptr(unsafe.Pointer(&acct)), uint32(unsafe.Sizeof(acct)), nil); err != nil {
		// Wine implements only the basic class; the I/O counters are not reported anyway.
		if err := windows.QueryInformationJobObject(job, windows.JobObjectBasicAccountingInformation,
			uintptr(unsafe.Pointer(&acct.BasicInfo)), uint32(unsafe.Sizeof(acct.BasicInfo)), nil); err != nil {
			return isolation.Metrics{}, fmt.Errorf("job accounting: %w", err)
		}
	}
	var ext windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	if err := windows.QueryInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&ext)), uint32(unsafe.Sizeof(ext)), nil); err != nil {
		return isolation.Metrics{}, fmt.Errorf("job limits: %w", err)
	}
	return jobMetrics(acct, uint64(ext.PeakJobMemoryUsed)), nil
}

func (d *jobDriver) events(rec *containerRecord) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	js := d.jobs[rec.Handle]
	if js == nil {
		return nil
	}
	evs := js.events
	js.events = nil
	return evs
}

// winProcess is a process-mode process.
type winProcess struct {
	h         windows.Handle
	id        int
	created   uint64
	stdinDone chan struct{}
}

func (p *winProcess) pid() int             { return p.id }
func (p *winProcess) creationTime() uint64 { return p.created }

func (p *winProcess) wait() (int, error) {
	if _, err := windows.WaitForSingleObject(p.h, windows.INFINITE); err != nil {
		return -1, fmt.Errorf("waiting for process %d: %w", p.id, err)
	}
	var code uint32
	if err := windows.GetExitCodeProcess(p.h, &code); err != nil {
		return -1, fmt.Errorf("exit code of process %d: %w", p.id, err)
	}
	return int(int32(code)), nil
}

func (p *winProcess) terminate() error {
	return windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(p.id))
}

func (p *winProcess) kill() error { return windows.TerminateProcess(p.h, exitKilled) }

func (p *winProcess) release() { windows.CloseHandle(p.h) }

// securePrivateDir gives the directory a protected DACL: full control for SYSTEM, the
// Administrators and the account the backend runs as (the service account, which the
// container's processes run as), and nothing inherited from the parent.
func securePrivateDir(dir string) error {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return err
	}
	sddl := "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;" + user.User.Sid.String() + ")"
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

// memoryStatusEx is MEMORYSTATUSEX.
type memoryStatusEx struct {
	Length               uint32
	MemoryLoad           uint32
	TotalPhys            uint64
	AvailPhys            uint64
	TotalPageFile        uint64
	AvailPageFile        uint64
	TotalVirtual         uint64
	AvailVirtual         uint64
	AvailExtendedVirtual uint64
}

func hostCapacity(cfg Config) (isolation.Capacity, error) {
	ms := memoryStatusEx{}
	ms.Length = uint32(unsafe.Sizeof(ms))
	if r, _, e := procGlobalMemoryStatusEx.Call(uintptr(unsafe.Pointer(&ms))); r == 0 {
		return isolation.Capacity{}, fmt.Errorf("GlobalMemoryStatusEx: %w", e)
	}
	dir, err := windows.UTF16PtrFromString(cfg.StateDir)
	if err != nil {
		return isolation.Capacity{}, err
	}
	var free, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(dir, &free, &total, &totalFree); err != nil {
		return isolation.Capacity{}, fmt.Errorf("GetDiskFreeSpaceEx %s: %w", cfg.StateDir, err)
	}
	return isolation.Capacity{MemoryBytes: ms.TotalPhys, DiskBytes: total}, nil
}
