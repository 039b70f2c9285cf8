package containerinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The init spawner. Starting an init clones into new namespaces, a user namespace among them,
// and Go can only fork (not vfork) a process for that: the kernel copies the forking
// process's page tables, and every page the forking process writes afterwards takes a
// copy-on-write fault. From a cell agent holding hundreds of containers' state that was a
// fifth of the agent's CPU during a burst of creates. So each backend starts one small helper,
// its binary re-executed as SpawnerArgv0 (a vfork, no new namespaces), which does the clones:
// a process that has done nothing but start is cheap to fork. The spawner takes over in this
// package's init hook, like the init, so nothing else of the program initialises in it.
//
// Protocol: the backend sends a SpawnRequest as one packet on the spawner's control socket
// (FdSpawnControl), with the new init's log, its end of the start socket and, when
// SpawnRequest.CgroupDir, a cgroup v2 directory to be born in. The spawner answers with one
// SpawnReply packet carrying the init's pidfd. Requests are served one at a time. End of file
// on the control socket (the backend closed it, or died) ends the spawner; inits it started
// live on, reparented.

// SpawnerArgv0 is the argv[0] under which a backend executes its binary as its init spawner.
const SpawnerArgv0 = "trellis-init-spawner"

// The spawner's descriptors.
const (
	FdSpawnControl = 3 // the spawner's end of its seqpacket control socket
	FdSpawnBinary  = 4 // the sealed init binary, executed by the inits it starts
)

// SpawnRequest asks the spawner for one init.
type SpawnRequest struct {
	// Label is the init's argv[1] (its name in its log until started).
	Label string `json:"label"`
	// UIDMapStart and UIDMapSize map the init's user namespace (container uid 0 is host uid
	// UIDMapStart; gids alike). UIDMapSize 0: no user namespace (a privileged container).
	UIDMapStart int `json:"uid_map_start,omitempty"`
	UIDMapSize  int `json:"uid_map_size,omitempty"`
	// Idle starts the init at nice 19 (a pooled init, which the backend renices when it
	// takes it).
	Idle bool `json:"idle,omitempty"`
	// CgroupDir: the third descriptor is a cgroup v2 directory the init is born in
	// (CLONE_INTO_CGROUP).
	CgroupDir bool `json:"cgroup_dir,omitempty"`
	// Stage, for a pooled init, is an empty directory the init mounts its own tmpfs on, in its
	// own mount namespace, to build the container's standard file system layout ahead
	// (stage_linux.go); it is its argv[2].
	Stage string `json:"stage,omitempty"`
}

// SpawnReply answers a SpawnRequest: the init's pid, with its pidfd attached, or an error.
type SpawnReply struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// IdleNice is the nice value of inits spawned with SpawnRequest.Idle.
const IdleNice = 19

// spawnerMain serves the control socket until end of file.
func spawnerMain() int {
	// Reap the inits this process starts (until they are reparented when it exits).
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	go func() {
		for range sigchld {
			for {
				var ws unix.WaitStatus
				if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintln(os.Stderr, "init spawner:", err)
		return 1
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(3*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(FdSpawnControl, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 0 // the backend is gone
		}
		files, ferr := receivedFiles(oob[:oobn])
		reply, pidfd := spawnOne(buf[:n], files, ferr, int(devNull.Fd()))
		for _, f := range files {
			f.Close()
		}
		b, _ := json.Marshal(reply)
		var rights []byte
		if pidfd >= 0 {
			rights = unix.UnixRights(pidfd)
		}
		err = unix.Sendmsg(FdSpawnControl, b, rights, nil, 0)
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		if err != nil {
			return 0
		}
	}
}

// spawnOne starts the init a request asks for and returns the reply and its pidfd (-1 on
// failure).
func spawnOne(packet []byte, files []*os.File, ferr error, devNull int) (SpawnReply, int) {
	fail := func(err error) (SpawnReply, int) { return SpawnReply{Error: err.Error()}, -1 }
	if ferr != nil {
		return fail(ferr)
	}
	var req SpawnRequest
	if err := json.Unmarshal(packet, &req); err != nil {
		return fail(fmt.Errorf("decoding the request: %w", err))
	}
	want := 2
	if req.CgroupDir {
		want = 3
	}
	if len(files) != want {
		return fail(fmt.Errorf("request with %d descriptors, want %d", len(files), want))
	}
	log, start := files[0].Fd(), files[1].Fd()
	pidfd := -1
	sys := &syscall.SysProcAttr{
		Setsid:     true,
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
		PidFD:      &pidfd,
	}
	if req.UIDMapSize > 0 {
		sys.Cloneflags |= unix.CLONE_NEWUSER
		m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: req.UIDMapStart, Size: req.UIDMapSize}}
		sys.UidMappings, sys.GidMappings = m, m
		sys.GidMappingsEnableSetgroups = true
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if req.CgroupDir {
		sys.UseCgroupFD, sys.CgroupFD = true, int(files[2].Fd())
	}
	// Descriptors 3..6 hold /dev/null until the StartMessage brings the real ones; the sealed
	// binary is at FdBinary, which the child executes by that number, and the start socket at
	// FdStart.
	fds := []uintptr{uintptr(devNull), log, log, uintptr(devNull), uintptr(devNull), uintptr(devNull), uintptr(devNull), FdSpawnBinary, start}
	if len(fds)-2 != FdBinary || len(fds)-1 != FdStart {
		panic("containerinit: init descriptor layout out of sync")
	}
	attr := &syscall.ProcAttr{Dir: "/", Env: initEnv(), Files: fds, Sys: sys}
	argv := []string{Argv0, req.Label}
	if req.Stage != "" {
		argv = append(argv, req.Stage)
	}
	path := "/proc/self/fd/" + strconv.Itoa(FdBinary)
	var pid int
	var err error
	if req.Idle {
		err = atNice(IdleNice, func() error {
			pid, err = syscall.ForkExec(path, argv, attr)
			return err
		})
	} else {
		pid, err = syscall.ForkExec(path, argv, attr)
	}
	if err != nil {
		return fail(fmt.Errorf("starting init: %w", err))
	}
	if pidfd < 0 {
		// A kernel without CLONE_PIDFD: the pid is this process's unreaped child until the
		// reaper sees it exit, which it cannot have yet (it waits on its start socket).
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return fail(fmt.Errorf("pidfd of init %d: %w", pid, err))
		}
	}
	return SpawnReply{Pid: pid}, pidfd
}

// atNice runs fork, which forks, from an OS thread at nice value nice: the child inherits the
// thread's value, and its threads inherit it from it. The thread gets its own value back.
func atNice(nice int, fork func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return fork()
	}
	own := 20 - prio // the system call returns 20 - nice
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
		return fork()
	}
	err = fork()
	if rerr := unix.Setpriority(unix.PRIO_PROCESS, tid, own); rerr != nil {
		// The thread must not go back to the runtime at another priority.
		panic(fmt.Sprintf("containerinit: restoring the nice value of thread %d: %v", tid, rerr))
	}
	return err
}

// initEnv is the environment of every init: the Go runtime's garbage collector off, with a
// memory limit as the backstop. An init allocates a few MB while it starts and little after;
// with the default settings it collected one to three times during its start, which cost
// about a tenth of its start's CPU and left more memory mapped than it saved (mean anonymous
// RSS of running inits: 4.4 MB with the collector, 3.0 MB without). The limit makes it
// collect should an init's heap ever grow toward it, and bounds what an init can add to its
// container's memory use. The container's processes get their environment from their
// ProcessSpec, never this one.
func initEnv() []string {
	return []string{"GOGC=off", "GOMEMLIMIT=" + initMemoryLimit}
}

// initMemoryLimit is the GOMEMLIMIT of an init.
const initMemoryLimit = "16MiB"
