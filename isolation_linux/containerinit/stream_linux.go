package containerinit

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// Streaming runs in the container's init, whose root is the container's root: every path is
// resolved with openat2(RESOLVE_IN_ROOT) against that root, so neither ".." in an archive nor
// a symlink in the container (absolute or relative) can lead outside it.

// extractTar unpacks the tar stream r below dst (a path inside the container, created if
// missing). Entry names are cleaned as if rooted at dst, so "../x" lands at dst/x. Device
// nodes are refused. Errors wrap isolation.ErrInvalidSpec for a bad archive or path.
func extractTar(r io.Reader, dst string) error {
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
		mtime time.Time
	}
	var dirs []dirTimes
	// An archive in a regular file (a cached droplet, handed over by the backend) has its
	// entries' data copied by the kernel, file to file, rather than through this process.
	src, _ := r.(*os.File)
	if src != nil {
		var st unix.Stat_t
		if unix.Fstat(int(src.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			src = nil
		}
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading archive: %v", isolation.ErrInvalidSpec, err)
		}
		name := path.Clean("/" + hdr.Name)
		if name == "/" {
			continue
		}
		target := path.Join(dst, name)
		entrySrc := src
		if isSparse(hdr) {
			entrySrc = nil // its data in the archive is not its content
		}
		if err := extractEntry(rootFd, tr, hdr, target, dst, entrySrc); err != nil {
			return fmt.Errorf("%w: %s: %v", isolation.ErrInvalidSpec, hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTimes{target, hdr.ModTime})
		}
	}
	// Directory times last: creating entries inside a directory changes its mtime.
	for _, d := range dirs {
		if fd, err := inRoot(rootFd, d.path, unix.O_DIRECTORY); err == nil {
			ts := []unix.Timespec{unix.NsecToTimespec(d.mtime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
			_ = unix.UtimesNanoAt(unix.AT_FDCWD, fdPath(fd), ts, 0)
			unix.Close(fd)
		}
	}
	return nil
}

// ExtractEntry creates the archive entry hdr at target (a path under dst inside the root
// rootFd), its content read from tr.
func ExtractEntry(rootFd int, tr *tar.Reader, hdr *tar.Header, target, dst string) error {
	return extractEntry(rootFd, tr, hdr, target, dst, nil)
}

// isSparse reports whether hdr is a sparse file, whose data in the archive is a map of its
// content rather than the content itself.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// copyFromArchive copies n bytes of src from offset off to dst in the kernel (sendfile),
// leaving src's own offset alone (tr skips the entry's data by seeking on its next Next).
// copied says how much was written before an error.
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

func extractEntry(rootFd int, tr *tar.Reader, hdr *tar.Header, target, dst string, src *os.File) error {
	parent, base := path.Split(target)
	pfd, err := mkdirAllInRoot(rootFd, parent, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := uint32(hdr.FileInfo().Mode().Perm()) | uint32(hdr.Mode)&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX)

	// Replace whatever is in the way, except a directory meeting a directory.
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !(isDir && hdr.Typeflag == tar.TypeDir) {
			flags := 0
			if isDir {
				flags = unix.AT_REMOVEDIR
			}
			if err := unix.Unlinkat(pfd, base, flags); err != nil {
				return fmt.Errorf("replacing existing entry: %w", err)
			}
		}
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), target)
		copied := int64(0)
		if src != nil {
			var off int64
			if off, err = src.Seek(0, io.SeekCurrent); err == nil {
				copied, err = copyFromArchive(fd, src, off, hdr.Size)
			}
			if err != nil && copied == 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				err = nil // sendfile unavailable here: copy through this process
			}
		}
		if err == nil && copied == 0 {
			_, err = io.Copy(f, tr)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
	case tar.TypeLink:
		// The link target is another entry of this archive, named relative to dst.
		src := path.Join(dst, path.Clean("/"+hdr.Linkname))
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
	case tar.TypeFifo:
		if err := unix.Mkfifoat(pfd, base, mode); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("entry type %q is not supported", hdr.Typeflag)
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// chown clears set-id bits; apply the mode afterwards.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		_ = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// tarWriter writes a path inside the container as a tar stream.
type tarWriter struct {
	src string
}

// newTarWriter checks that src exists (an lstat, so a symlink is sent as a symlink). Errors
// wrap isolation.ErrNotFound.
func newTarWriter(src string) (*tarWriter, error) {
	if !path.IsAbs(src) {
		return nil, fmt.Errorf("%w: source %q is not absolute", isolation.ErrInvalidSpec, src)
	}
	if _, err := os.Lstat(src); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist in the container", isolation.ErrNotFound, src)
		}
		return nil, fmt.Errorf("%w: %s: %v", isolation.ErrInvalidSpec, src, err)
	}
	return &tarWriter{src: path.Clean(src)}, nil
}

// writeTo writes the tree at src to w, entries named relative to src's parent (streaming out
// /app/logs yields logs, logs/a.txt, ...), and closes w.
func (t *tarWriter) writeTo(w io.WriteCloser) error {
	defer w.Close()
	tw := tar.NewWriter(w)
	base := path.Dir(t.src)
	err := filepath.WalkDir(t.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, hdr.Size)
		f.Close()
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
