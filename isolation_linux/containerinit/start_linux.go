package containerinit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// StartMessage hands an init its container. The backend sends it on FdStart, as one packet
// with StartFiles descriptors attached, once the init is in the container's cgroups. An init
// may have been started long before (the backend's pool of inits): everything that depends on
// the container arrives here or in config.json.
type StartMessage struct {
	// Handle names the container in the init's log.
	Handle string `json:"handle"`
	// Seccomp is config.json's linux.seccomp compiled by CompileSeccomp and encoded by
	// EncodeSeccomp, which the backend does once per profile rather than every init once per
	// container (raw instructions: no per-instruction decoding either). Empty means the init
	// compiles linux.seccomp itself.
	Seccomp []byte `json:"seccomp,omitempty"`
}

// sockFilterSize is the size of one classic BPF instruction, struct sock_filter.
const sockFilterSize = int(unsafe.Sizeof(unix.SockFilter{}))

// EncodeSeccomp turns a program into StartMessage.Seccomp: its instructions' bytes in the
// native layout.
func EncodeSeccomp(prog []unix.SockFilter) []byte {
	if len(prog) == 0 {
		return nil
	}
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*sockFilterSize))
}

// decodeSeccomp is the inverse of EncodeSeccomp.
func decodeSeccomp(b []byte) ([]unix.SockFilter, error) {
	if len(b)%sockFilterSize != 0 || len(b)/sockFilterSize > 0xffff {
		return nil, fmt.Errorf("start message: seccomp program of %d bytes is not a whole number of at most 65535 instructions", len(b))
	}
	prog := make([]unix.SockFilter, len(b)/sockFilterSize)
	if len(prog) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(b)), b)
	}
	return prog, nil
}

// errNotStarted: the backend closed FdStart without starting the init, which is how a
// pooled init is retired and how a failed start is abandoned. The init exits quietly.
var errNotStarted = errors.New("closed by the backend before start")

// maxStartMessage bounds the StartMessage packet (a compiled profile is a few KiB of JSON).
const maxStartMessage = 256 << 10

// awaitStart blocks until the backend starts the init on FdStart, moves the descriptors that
// came with the message to their fixed numbers and returns the message. On a cgroup v1 host,
// and for an init from the pool on any host, the init is started in the backend's cgroups
// and moved into the container's while it waits here, so that what it allocates is charged
// to the container from its first own step; whatever it touched before (the Go runtime's
// start) stays charged to the backend until it exits.
func awaitStart() (StartMessage, error) {
	var msg StartMessage
	buf := make([]byte, maxStartMessage)
	oob := make([]byte, unix.CmsgSpace(StartFiles*4))
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(FdStart, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	unix.Close(FdStart)
	if err != nil {
		return msg, fmt.Errorf("start socket: %w", err)
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return msg, fmt.Errorf("start socket: control message: %w", err)
		}
		for i := range cmsgs {
			got, err := unix.ParseUnixRights(&cmsgs[i])
			if err != nil {
				return msg, fmt.Errorf("start socket: control message: %w", err)
			}
			fds = append(fds, got...)
		}
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if n == 0 && oobn == 0 {
		return msg, errNotStarted
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(fds) != StartFiles {
		return msg, fmt.Errorf("start socket: truncated start message (%d bytes, %d descriptors)", n, len(fds))
	}
	if err := json.Unmarshal(buf[:n], &msg); err != nil {
		return msg, fmt.Errorf("start socket: %w", err)
	}
	// dup3 replaces the /dev/null placeholders at 3..6 atomically; the log becomes stdout
	// and stderr.
	for i, to := range []int{FdSync, FdListener, FdConfig, FdProcesses, 1, 2} {
		from := fds[min(i, StartFiles-1)]
		flags := unix.O_CLOEXEC
		if to < 3 {
			flags = 0
		}
		if err := unix.Dup3(from, to, flags); err != nil {
			return msg, fmt.Errorf("start socket: dup3 %d to %d: %w", from, to, err)
		}
	}
	return msg, nil
}
