package isolationlinux

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// spawner is the backend's end of its init spawner (containerinit/spawn_linux.go): a small
// process, the sealed binary run as containerinit.SpawnerArgv0, that clones the containers'
// inits so that the backend — a large process in a cell agent — never forks for them. It is
// started on first use and again if it died; requests go one at a time.
type spawner struct {
	sealed *os.File

	mu   sync.Mutex
	ctl  *os.File  // our end of the control socket; nil until started, or after a failure
	cmd  *exec.Cmd // the spawner process
	done chan struct{}
}

func newSpawner(sealed *os.File) *spawner { return &spawner{sealed: sealed} }

// startLocked starts the spawner process. Its start is a vfork and exec: no new namespaces.
func (s *spawner) startLocked() error {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("spawner socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "spawner-control"), os.NewFile(uintptr(pair[1]), "spawner-control")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path:   "/proc/self/fd/" + strconv.Itoa(containerinit.FdSpawnBinary),
		Args:   []string{containerinit.SpawnerArgv0},
		Env:    []string{},
		Dir:    "/",
		Stderr: os.Stderr,
		// At containerinit.FdSpawnControl and FdSpawnBinary in the child.
		ExtraFiles: []*os.File{theirs, s.sealed},
	}
	if 3 != containerinit.FdSpawnControl || 4 != containerinit.FdSpawnBinary {
		panic("isolation_linux: spawner descriptor layout out of sync")
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return fmt.Errorf("starting the init spawner: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.ctl, s.cmd, s.done = ours, cmd, done
	return nil
}

// spawn asks the spawner for an init and returns its pid and pidfd. files are the init's log
// and its end of the start socket, and for req.CgroupDir the cgroup directory. A spawner that
// died is started again once.
func (s *spawner) spawn(req containerinit.SpawnRequest, files ...*os.File) (int, *os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if s.ctl == nil {
			if err := s.startLocked(); err != nil {
				return 0, nil, err
			}
		}
		pid, pidfd, err := s.exchangeLocked(req, files)
		var gone *spawnerGone
		if errors.As(err, &gone) && attempt == 0 {
			s.stopLocked()
			continue
		}
		return pid, pidfd, err
	}
}

// spawnerGone: the spawner's control socket failed; the spawner is restarted.
type spawnerGone struct{ err error }

func (e *spawnerGone) Error() string { return "the init spawner is gone: " + e.err.Error() }
func (e *spawnerGone) Unwrap() error { return e.err }

func (s *spawner) exchangeLocked(req containerinit.SpawnRequest, files []*os.File) (int, *os.File, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err = unix.Sendmsg(int(s.ctl.Fd()), b, unix.UnixRights(fds...), nil, 0)
	runtime.KeepAlive(files)
	if err != nil {
		return 0, nil, &spawnerGone{err}
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	for {
		n, oobn, _, _, err = unix.Recvmsg(int(s.ctl.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err == nil && n == 0 {
		err = errors.New("end of file")
	}
	if err != nil {
		return 0, nil, &spawnerGone{err}
	}
	var pidfd *os.File
	if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				for _, fd := range got {
					if pidfd == nil {
						// Non-blocking, so that the runtime's poller waits on it (watchExit)
						// rather than a thread per init.
						unix.SetNonblock(fd, true)
						pidfd = os.NewFile(uintptr(fd), "pidfd")
					} else {
						unix.Close(fd)
					}
				}
			}
		}
	}
	var reply containerinit.SpawnReply
	if err := json.Unmarshal(buf[:n], &reply); err != nil {
		if pidfd != nil {
			pidfd.Close()
		}
		return 0, nil, &spawnerGone{fmt.Errorf("decoding its reply: %w", err)}
	}
	if reply.Error != "" {
		if pidfd != nil {
			pidfd.Close()
		}
		return 0, nil, errors.New(reply.Error)
	}
	if pidfd == nil || reply.Pid <= 0 {
		return 0, nil, &spawnerGone{fmt.Errorf("reply without a pid and pidfd: %+v", reply)}
	}
	return reply.Pid, pidfd, nil
}

// stopLocked ends the spawner (end of file on its control socket) and waits for it.
func (s *spawner) stopLocked() {
	if s.ctl == nil {
		return
	}
	s.ctl.Close()
	<-s.done
	s.ctl, s.cmd, s.done = nil, nil, nil
}

// close ends the spawner. Inits it started live on.
func (s *spawner) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// watchExit closes exited once the process of pidfd (non-blocking) has ended, and closes
// pidfd. The runtime's poller waits: a pidfd turns readable when its process exits.
func watchExit(pidfd *os.File, exited chan<- struct{}) {
	defer close(exited)
	defer pidfd.Close()
	ended := func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return n > 0 || (err != nil && !errors.Is(err, unix.EINTR))
	}
	rc, err := pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(ended)
	}
	if err != nil {
		// Not pollable: wait in the kernel.
		fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
				return
			}
		}
	}
}
