package containerinit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// Streaming runs in the container's init, whose root is the container's root: every path is
// resolved with openat2(RESOLVE_IN_ROOT) against that root, so neither ".." in an archive nor
// a symlink in the container (absolute or relative) can lead outside it.

// extractEntries creates the entries of the stream r (entry.go) below dst (a path inside
// the container, created if missing). Entry names are cleaned as if rooted at dst, so "../x"
// lands at dst/x. archive, when set, is the file whose offsets entries name for their content.
// Device nodes are refused. Errors wrap isolation.ErrInvalidSpec for a bad entry or path.
func extractEntries(r io.Reader, archive *os.File, dst string) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("%w: destination %q is not absolute", isolation.ErrInvalidSpec, dst)
	}
	rootFd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFd)
	dirFd, err := mkdirAllInRoot(rootFd, dst, 0o755)
	if err != nil {
		return fmt.Errorf("%w: destination %s: %v", isolation.ErrInvalidSpec, dst, err)
	}
	unix.Close(dirFd)

	type dirTimes struct {
		path  string
		mtime int64
	}
	var dirs []dirTimes
	for {
		e, err := ReadEntry(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading the archive: %v", isolation.ErrInvalidSpec, err)
		}
		name := path.Clean("/" + e.Name)
		content := io.LimitReader(r, 0)
		if e.Type == EntryRegular && e.Offset < 0 {
			content = io.LimitReader(r, e.Size)
		}
		if name != "/" {
			target := path.Join(dst, name)
			if err := ExtractEntry(rootFd, e, content, target, dst, archive); err != nil {
				return fmt.Errorf("%w: %s: %v", isolation.ErrInvalidSpec, e.Name, err)
			}
			if e.Type == EntryDir {
				dirs = append(dirs, dirTimes{target, e.ModTime})
			}
		}
		// Content the entry did not take (it was skipped) must not be read as the next frame.
		if _, err := io.Copy(io.Discard, content); err != nil {
			return fmt.Errorf("%w: reading the archive: %v", isolation.ErrInvalidSpec, err)
		}
	}
	// Directory times last: creating entries inside a directory changes its mtime.
	for _, d := range dirs {
		if fd, err := inRoot(rootFd, d.path, unix.O_DIRECTORY); err == nil {
			ts := []unix.Timespec{unix.NsecToTimespec(d.mtime), unix.NsecToTimespec(d.mtime)}
			_ = unix.UtimesNanoAt(unix.AT_FDCWD, fdPath(fd), ts, 0)
			unix.Close(fd)
		}
	}
	return nil
}

// copyFromArchive copies n bytes of src from offset off to dst in the kernel (sendfile),
// leaving src's own offset alone. copied says how much was written before an error.
func copyFromArchive(dst int, src *os.File, off, n int64) (copied int64, err error) {
	for copied < n {
		chunk := min(n-copied, 1<<30)
		w, err := unix.Sendfile(dst, int(src.Fd()), &off, int(chunk))
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return copied, err
		}
		if w == 0 {
			return copied, io.ErrUnexpectedEOF // the archive is shorter than its header says
		}
		copied += int64(w)
	}
	return copied, nil
}

// ExtractEntry creates e at target (a path under dst inside the root rootFd). A regular
// file's content is read from content, or copied from archive at e.Offset when both are set.
func ExtractEntry(rootFd int, e *Entry, content io.Reader, target, dst string, archive *os.File) error {
	parent, base := path.Split(target)
	pfd, err := mkdirAllInRoot(rootFd, parent, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := e.Mode & (0o777 | unix.S_ISUID | unix.S_ISGID | unix.S_ISVTX)

	// Replace whatever is in the way, except a directory meeting a directory.
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !(isDir && e.Type == EntryDir) {
			flags := 0
			if isDir {
				flags = unix.AT_REMOVEDIR
			}
			if err := unix.Unlinkat(pfd, base, flags); err != nil {
				return fmt.Errorf("replacing existing entry: %w", err)
			}
		}
	}

	switch e.Type {
	case EntryDir:
		if err := unix.Mkdirat(pfd, base, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	case EntryRegular:
		fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), target)
		if archive != nil && e.Offset >= 0 {
			var copied int64
			copied, err = copyFromArchive(fd, archive, e.Offset, e.Size)
			if err != nil && copied == 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				// sendfile unavailable here: copy through this process.
				var n int64
				n, err = io.Copy(f, io.NewSectionReader(archive, e.Offset, e.Size))
				if err == nil && n < e.Size {
					err = io.ErrUnexpectedEOF // the archive is shorter than its header says
				}
			}
		} else {
			_, err = io.Copy(f, content)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case EntrySymlink:
		if err := unix.Symlinkat(e.Linkname, pfd, base); err != nil {
			return err
		}
	case EntryLink:
		// The link target is another entry of this archive, named relative to dst.
		src := path.Join(dst, path.Clean("/"+e.Linkname))
		sdir, sbase := path.Split(src)
		sfd, err := inRoot(rootFd, sdir, unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = unix.Linkat(sfd, sbase, pfd, base, 0)
		unix.Close(sfd)
		if err != nil {
			return err
		}
	case EntryFifo:
		if err := unix.Mkfifoat(pfd, base, mode); err != nil {
			return err
		}
	default:
		return fmt.Errorf("entry type %q is not supported", e.Type)
	}
	if err := unix.Fchownat(pfd, base, e.UID, e.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if e.Type != EntrySymlink {
		// chown clears set-id bits; apply the mode afterwards.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if e.Type != EntryDir {
		ts := []unix.Timespec{unix.NsecToTimespec(e.ModTime), unix.NsecToTimespec(e.ModTime)}
		_ = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// archiver writes a path inside the container as a stream of entries (entry.go).
type archiver struct {
	src string
}

// newArchiver checks that src exists (an lstat, so a symlink is sent as a symlink). Errors
// wrap isolation.ErrNotFound.
func newArchiver(src string) (*archiver, error) {
	if !path.IsAbs(src) {
		return nil, fmt.Errorf("%w: source %q is not absolute", isolation.ErrInvalidSpec, src)
	}
	if _, err := os.Lstat(src); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist in the container", isolation.ErrNotFound, src)
		}
		return nil, fmt.Errorf("%w: %s: %v", isolation.ErrInvalidSpec, src, err)
	}
	return &archiver{src: path.Clean(src)}, nil
}

// writeTo writes the tree at src to w, entries named relative to src's parent (streaming out
// /app/logs yields logs/, logs/a.txt, ...), directories before what they hold, each in name
// order, then the end frame; it closes w.
func (a *archiver) writeTo(w io.WriteCloser) error {
	defer w.Close()
	base := path.Dir(a.src)
	if base != "/" {
		base += "/"
	}
	if err := a.walk(w, a.src, base); err != nil {
		return err
	}
	return EndEntries(w)
}

// walk writes p and, for a directory (never a symlink to one), everything below it.
func (a *archiver) walk(w io.Writer, p, base string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	e := &Entry{
		Name:       p[len(base):],
		Mode:       st.Mode,
		UID:        int(st.Uid),
		GID:        int(st.Gid),
		ModTime:    st.Mtim.Nano(),
		AccessTime: st.Atim.Nano(),
		ChangeTime: st.Ctim.Nano(),
		Offset:     -1,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type, e.Name = EntryDir, e.Name+"/"
	case unix.S_IFREG:
		e.Type, e.Size = EntryRegular, st.Size
	case unix.S_IFLNK:
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		e.Type, e.Linkname = EntrySymlink, link
	case unix.S_IFIFO:
		e.Type = EntryFifo
	case unix.S_IFCHR:
		e.Type, e.Rdev = EntryChar, st.Rdev
	case unix.S_IFBLK:
		e.Type, e.Rdev = EntryBlock, st.Rdev
	default:
		return fmt.Errorf("%s: sockets cannot be archived", p)
	}
	if e.Type == EntryRegular {
		// Open before the frame: a file that cannot be read fails the stream before its entry.
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := WriteEntry(w, e); err != nil {
			return err
		}
		// Exactly Size bytes: a file that grew is cut, one that shrank is an error.
		if _, err := io.CopyN(w, f, e.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	}
	if err := WriteEntry(w, e); err != nil {
		return err
	}
	if e.Type != EntryDir {
		return nil
	}
	children, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := a.walk(w, path.Join(p, c.Name()), base); err != nil {
			return err
		}
	}
	return nil
}
