package isolationlinux

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// The backend's copy of the init binary. Containers never execute the binary on disk, which
// a container could otherwise reach and change through /proc/<init>/exe: New copies it once,
// and the spawner executes the copy by descriptor. The copy is one of two kinds:
//
//   - a file on a tmpfs of the backend's own that is never attached to any mount tree
//     (fsopen/fsmount: no path in any namespace reaches it) and is made read-only once the file
//     is written, so that the backend's read-only descriptor is the only way to it and nothing
//     can open it for writing (EROFS). The tmpfs asks for transparent huge pages (huge=always),
//     and the ELF loader maps the binary's text and read-only data at addresses congruent to
//     their file offsets modulo 2 MiB, so each init maps the copy with one page-table entry
//     per 2 MiB instead of one per 4 KiB: an init touching its ~14 MB of code and data held
//     ~3,600 entries, which the kernel had to walk and release at every container's destroy.
//   - where the kernel cannot make such a mount (before Linux 5.12) or a step fails, a
//     memfd_create file sealed against every change (F_SEAL_SEAL|SHRINK|GROW|WRITE), as
//     before.
//
// Both are about the binary's size in memory, once per backend.

// sealedInit returns the backend's copy of the init binary at path, read-only, and which
// kind it is (for the log).
func sealedInit(path string) (*os.File, string, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("init binary: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("init binary: %w", err)
	}
	f, hugeErr := detachedTmpfsCopy(src, st.Size())
	if hugeErr == nil {
		return f, "read-only detached tmpfs with huge pages", nil
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, "", fmt.Errorf("init binary: %w", err)
	}
	f, err = sealedMemfdCopy(src)
	if err != nil {
		return nil, "", errors.Join(err, fmt.Errorf("read-only tmpfs copy: %w", hugeErr))
	}
	return f, fmt.Sprintf("sealed memfd (no detached tmpfs copy: %v)", hugeErr), nil
}

// copyMode is the copy's mode: executable by all, readable by none but root. Unprivileged
// inits execute it as a uid of their user namespace, to which the host's root, its owner, is
// no one, so they need the execute bit for others; and a process that executes a file it
// cannot read starts non-dumpable, with the initial user namespace as its memory's owner
// (the kernel's rule for setuid programs). A container process of the same uid is already
// kept from an init's /proc/<pid>/mem and environ by the init marking itself non-dumpable and
// by holding fewer capabilities than it does; this keeps it out from the init's first
// instruction, whatever it holds.
const copyMode = 0o111

// hugePage is the size of a transparent huge page mapped by one page-middle-directory entry.
const hugePage = 2 << 20

// detachedTmpfsCopy copies src (size bytes) onto a new, never attached, then read-only tmpfs.
func detachedTmpfsCopy(src io.Reader, size int64) (*os.File, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	limit := (size+hugePage-1)/hugePage*hugePage + hugePage
	for _, o := range [][2]string{{"huge", "always"}, {"size", strconv.FormatInt(limit, 10)}, {"nr_inodes", "8"}, {"mode", "0700"}} {
		if err := unix.FsconfigSetString(fsfd, o[0], o[1]); err != nil {
			return nil, fmt.Errorf("tmpfs option %s=%s: %w", o[0], o[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("creating the tmpfs: %w", err)
	}
	mnt, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mnt)
	const name = "trellis-init"
	wfd, err := unix.Openat(mnt, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, copyMode)
	if err != nil {
		return nil, fmt.Errorf("creating the copy: %w", err)
	}
	w := os.NewFile(uintptr(wfd), name)
	if _, err := io.Copy(w, src); err != nil {
		w.Close()
		return nil, fmt.Errorf("copying the init binary: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("copying the init binary: %w", err)
	}
	rfd, err := unix.Openat(mnt, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the copy: %w", err)
	}
	if err := unix.MountSetattr(mnt, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		unix.Close(rfd)
		return nil, fmt.Errorf("making the tmpfs read-only: %w", err)
	}
	return os.NewFile(uintptr(rfd), name), nil
}

// sealedMemfdCopy copies src into a memory file and seals it against every change.
func sealedMemfdCopy(src io.Reader) (*os.File, error) {
	fd, err := unix.MemfdCreate("trellis-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("trellis-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "trellis-init")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copying init binary: %w", err)
	}
	if err := unix.Fchmod(fd, copyMode); err != nil {
		f.Close()
		return nil, fmt.Errorf("init binary copy: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing init binary: %w", err)
	}
	return f, nil
}
