package isolationlinux

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// The backend reads and writes the tar of StreamIn and StreamOut; the init creates and reads
// the files inside the container, one containerinit.Entry at a time (containerinit/entry.go).

// entryOf is the entry a tar header stands for, nil for a header that makes no file (a
// global PAX header). Set-id and sticky bits are kept; the file type travels in Type.
func entryOf(hdr *tar.Header) *containerinit.Entry {
	e := &containerinit.Entry{
		Name:     hdr.Name,
		Mode:     uint32(hdr.Mode) & (0o777 | unix.S_ISUID | unix.S_ISGID | unix.S_ISVTX),
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		Linkname: hdr.Linkname,
		ModTime:  hdr.ModTime.UnixNano(),
		Offset:   -1,
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		e.Type, e.Size = containerinit.EntryRegular, hdr.Size
	case tar.TypeXGlobalHeader:
		return nil
	default:
		e.Type = hdr.Typeflag
	}
	return e
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

// writeEntries turns the tar stream r into entries on w, then the end frame. archive, when
// set, is the regular file r reads from: a regular file's entry then names where its content
// starts there instead of carrying it (the init copies it in the kernel). Errors are the
// archive's (wrapping isolation.ErrInvalidSpec) or w's.
func writeEntries(r io.Reader, archive *os.File, w io.Writer) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return containerinit.EndEntries(w)
		}
		if err != nil {
			return fmt.Errorf("%w: reading the archive: %v", isolation.ErrInvalidSpec, err)
		}
		e := entryOf(hdr)
		if e == nil {
			continue
		}
		inline := e.Type == containerinit.EntryRegular
		if inline && archive != nil && !isSparse(hdr) {
			if off, err := archive.Seek(0, io.SeekCurrent); err == nil {
				e.Offset, inline = off, false
			}
		}
		if err := containerinit.WriteEntry(w, e); err != nil {
			return err
		}
		if inline {
			if _, err := io.CopyN(w, tr, e.Size); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("%w: reading the archive: %s: %v", isolation.ErrInvalidSpec, hdr.Name, io.ErrUnexpectedEOF)
				}
				return err
			}
		}
	}
}

// writeTar turns the entries on r into a tar stream on w, with the headers tar.FileInfoHeader
// makes for such files (owner names left out).
func writeTar(r io.Reader, w io.Writer) error {
	tw := tar.NewWriter(w)
	for {
		e, err := containerinit.ReadEntry(r)
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(entryInfo{e}, e.Linkname)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name, err)
		}
		hdr.Name = e.Name
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.Type == containerinit.EntryRegular {
			if _, err := io.CopyN(tw, r, e.Size); err != nil {
				return fmt.Errorf("%s: %w", e.Name, err)
			}
		}
	}
}

// entryInfo is an entry as the fs.FileInfo (with a syscall.Stat_t, and no owner names to
// look up) that tar.FileInfoHeader takes.
type entryInfo struct{ e *containerinit.Entry }

func (i entryInfo) Name() string       { return strings.TrimSuffix(i.e.Name, "/") }
func (i entryInfo) Size() int64        { return i.e.Size }
func (i entryInfo) ModTime() time.Time { return time.Unix(0, i.e.ModTime) }
func (i entryInfo) IsDir() bool        { return i.e.Type == containerinit.EntryDir }
func (i entryInfo) Uname() (string, error) {
	return "", nil
}
func (i entryInfo) Gname() (string, error) {
	return "", nil
}

func (i entryInfo) Mode() fs.FileMode {
	m := fs.FileMode(i.e.Mode & 0o777)
	if i.e.Mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if i.e.Mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if i.e.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	switch i.e.Type {
	case containerinit.EntryDir:
		m |= fs.ModeDir
	case containerinit.EntrySymlink:
		m |= fs.ModeSymlink
	case containerinit.EntryFifo:
		m |= fs.ModeNamedPipe
	case containerinit.EntryChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case containerinit.EntryBlock:
		m |= fs.ModeDevice
	}
	return m
}

func (i entryInfo) Sys() any {
	return &syscall.Stat_t{
		Uid:  uint32(i.e.UID),
		Gid:  uint32(i.e.GID),
		Atim: syscall.NsecToTimespec(i.e.AccessTime),
		Ctim: syscall.NsecToTimespec(i.e.ChangeTime),
		Rdev: i.e.Rdev,
	}
}
