// Package inroot resolves paths inside a container's root from the outside of any chroot:
// every lookup goes through openat2 with RESOLVE_IN_ROOT against a descriptor of the root, so
// neither ".." nor a symlink (absolute or relative) in the container's tree can lead out of
// it. The container init uses it to build the mount tree, and its stream helper (package
// stream) to unpack and pack archives.
package inroot

import (
	"errors"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Open opens p (an absolute path inside the container) relative to rootFd, resolving every
// symlink and ".." as if rootFd were "/". The result is an O_PATH descriptor.
func Open(rootFd int, p string, flags uint64) (int, error) {
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(rootFd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | flags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	return fd, nil
}

// MkdirAll makes directory p and its parents inside the root at rootFd and returns an O_PATH
// descriptor of it.
func MkdirAll(rootFd int, p string, mode uint32) (int, error) {
	p = path.Clean("/" + p)
	if fd, err := Open(rootFd, p, unix.O_DIRECTORY); err == nil {
		return fd, nil
	} else if !errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	parent, base := path.Split(p)
	pfd, err := MkdirAll(rootFd, parent, mode)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	// O_PATH descriptors serve as dirfd for mkdirat through /proc/self/fd.
	if err := unix.Mkdirat(pfd, base, mode); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "mkdir", Path: p, Err: err}
	}
	return Open(rootFd, p, unix.O_DIRECTORY)
}

// FdPath is the /proc path of one of this process's descriptors.
func FdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
