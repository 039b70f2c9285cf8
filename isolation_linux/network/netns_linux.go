package network

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// CreateNetNS creates a new, empty network namespace and bind-mounts it at path (as `ip netns
// add` does under /run/netns), so it outlives every process in it until DeleteNetNS. Missing
// parent directories are created. The namespace is made on a locked OS thread that returns to
// the caller's namespace before it is released; if it cannot return, the thread is discarded.
//
// Errors: isolation.ErrAlreadyExists (path exists), or the failing system call.
func CreateNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create netns %s: %w", path, isolation.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// Never unlocked: if restoring the namespace fails, the goroutine exits locked and the
		// runtime ends the thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(mountErr, fmt.Errorf("return to original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			mountErr = fmt.Errorf("bind-mount netns: %w", mountErr)
		}
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		_ = DeleteNetNS(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

// DeleteNetNS unmounts the namespace at path and removes the file. The namespace itself goes
// when its last process exits. A missing or unmounted path is not an error, so DeleteNetNS is
// idempotent.
func DeleteNetNS(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	return nil
}

// RunInNetNS runs fn on a locked OS thread that has joined the network namespace at path,
// then returns the thread to the caller's namespace. Sockets fn creates stay in the joined
// namespace after it returns, so a listener made here serves from any goroutine. fn must not
// start goroutines that expect to inherit the namespace.
//
// Errors: path is not a network namespace, or fn's error.
func RunInNetNS(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	if !isNetNSFile(target) {
		return fmt.Errorf("%s is not a network namespace: %w", path, isolation.ErrInvalidSpec)
	}

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once back in the original namespace
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// isNetNS reports whether path is a network namespace (a bind mount of one, or a
// /proc/<pid>/ns/net link). A leftover plain file where a namespace used to be mounted is not.
func isNetNS(path string) bool {
	if path == "" {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return isNetNSFile(f)
}

func isNetNSFile(f *os.File) bool {
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNET
}

// setLoopbackUp brings lo up in the network namespace at path (what the CNI loopback plugin
// does, without a process).
func setLoopbackUp(path string) error {
	return loopbackFlags(path, func(fd int, ifr *unix.Ifreq) error {
		flags := ifr.Uint16()
		if flags&unix.IFF_UP != 0 {
			return nil
		}
		ifr.SetUint16(flags | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
}

// checkLoopbackUp reports an error unless lo is up in the network namespace at path.
func checkLoopbackUp(path string) error {
	return loopbackFlags(path, func(_ int, ifr *unix.Ifreq) error {
		if ifr.Uint16()&unix.IFF_UP == 0 {
			return errors.New("lo is down")
		}
		return nil
	})
}

// loopbackFlags reads lo's flags inside the namespace at path and hands them to fn, with the
// socket they were read through.
func loopbackFlags(path string, fn func(fd int, ifr *unix.Ifreq) error) error {
	return RunInNetNS(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket in netns %s: %w", path, err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("read flags of lo in netns %s: %w", path, err)
		}
		return fn(fd, ifr)
	})
}
