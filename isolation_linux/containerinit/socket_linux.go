package containerinit

import (
	"errors"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The init serves its seqpacket socket through the runtime's poller via os.File and
// syscall.RawConn rather than package net, whose initialisation (and that of what sorts
// before it) would run ahead of this package's init hook; see init.

// listener is the listening socket handed over as a descriptor.
type listener struct {
	f  *os.File
	rc syscall.RawConn
}

func newListener(fd int) (*listener, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "init.sock")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &listener{f: f, rc: rc}, nil
}

// accept waits for the next connection.
func (l *listener) accept() (*conn, error) {
	var nfd int
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		return nil, os.NewSyscallError("accept4", err)
	}
	return newConn(nfd)
}

// conn is one accepted connection: one request packet in, one reply packet out.
type conn struct {
	*os.File
	rc syscall.RawConn
}

func newConn(fd int) (*conn, error) {
	f := os.NewFile(uintptr(fd), "conn"+strconv.Itoa(fd))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &conn{File: f, rc: rc}, nil
}

// recvmsg reads one packet and its control message; received descriptors are close-on-exec.
func (c *conn) recvmsg(buf, oob []byte) (n, oobn int, err error) {
	var rerr error
	err = c.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, os.NewSyscallError("recvmsg", err)
	}
	return n, oobn, nil
}
