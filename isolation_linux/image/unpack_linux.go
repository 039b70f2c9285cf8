//go:build linux

package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// Whiteouts, as the OCI image layout spells them in a layer and as overlayfs wants them
// in a lower directory.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	// The opaque marker is set in both namespaces: overlayfs mounted by host root reads
	// trusted.overlay.*, one mounted inside a user namespace (with the userxattr option)
	// reads user.overlay.*.
	xattrOpaqueTrusted = "trusted.overlay.opaque"
	xattrOpaqueUser    = "user.overlay.opaque"
	xattrCapability    = "security.capability"
)

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// unpackLayer unpacks a layer blob (a tar, gzip- or zstd-compressed or not) into dir, an
// empty directory, and returns the digest of the uncompressed tar (the layer's diff id).
// ids, when not zero, shifts every owner into that range. Entries never land outside dir:
// names are resolved inside it (symlinks included) and a name that climbs out with ".."
// is refused. Errors: ErrInvalidImage for content that cannot be unpacked as asked, the
// context's error, or an I/O error.
func unpackLayer(ctx context.Context, r io.Reader, dir string, ids UIDMap) (string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	var stream io.Reader = br
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		gz, err := gzip.NewReader(br)
		if err != nil {
			return "", fmt.Errorf("%w: gzip: %v", ErrInvalidImage, err)
		}
		defer gz.Close()
		stream = gz
	case bytes.Equal(magic, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return "", fmt.Errorf("%w: zstd: %v", ErrInvalidImage, err)
		}
		defer zr.Close()
		stream = zr
	}
	h := sha256.New()
	tee := io.TeeReader(stream, h)
	u, err := newUnpacker(dir, ids)
	if err != nil {
		return "", err
	}
	defer u.close()
	tr := tar.NewReader(tee)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: reading the tar stream: %v", ErrInvalidImage, err)
		}
		if err := u.apply(hdr, tr); err != nil {
			return "", fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	// What follows the end-of-archive marker is part of the diff id too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return "", fmt.Errorf("%w: reading the tar stream: %v", ErrInvalidImage, err)
	}
	if err := u.finish(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

type unpacker struct {
	root    int // the layer directory
	ids     UIDMap
	rootHdr *tar.Header
	dirs    []dirTime
	buf     []byte
}

type dirTime struct {
	rel   string
	mtime time.Time
}

func newUnpacker(dir string, ids UIDMap) (*unpacker, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &unpacker{root: fd, ids: ids, buf: make([]byte, 128<<10)}, nil
}

func (u *unpacker) close() { unix.Close(u.root) }

// host maps a container owner to the host owner the file gets.
func (u *unpacker) host(uid, gid int) (int, int, error) {
	if uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("%w: negative owner %d:%d", ErrInvalidImage, uid, gid)
	}
	if u.ids.Size == 0 {
		return uid, gid, nil
	}
	if uint64(uid) >= uint64(u.ids.Size) || uint64(gid) >= uint64(u.ids.Size) {
		return 0, 0, fmt.Errorf("%w: owned by %d:%d, outside the %d ids a container's user namespace maps", ErrInvalidImage, uid, gid, u.ids.Size)
	}
	return int(u.ids.Start) + uid, int(u.ids.Start) + gid, nil
}

// cleanRel turns a tar name into a path relative to the layer root ("" for the root
// itself). Names that climb out of the layer are refused; a leading "/" is tolerated.
func cleanRel(name string) (string, error) {
	c := path.Clean(strings.TrimLeft(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: %q escapes the layer", ErrInvalidImage, name)
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

func splitRel(rel string) (parent, base string) {
	parent, base = path.Dir(rel), path.Base(rel)
	if parent == "." {
		parent = ""
	}
	return parent, base
}

// openDir opens the directory rel, resolving every component (symlinks included) as if
// the layer were the root of the filesystem, so nothing can lead outside it.
func (u *unpacker) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := containerinit.Openat2(u.root, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	return fd, nil
}

// mkdirAll opens the directory rel, creating what is missing (owned by the container's
// root, 0755, as a layer that lists a file but not its directory means).
func (u *unpacker) mkdirAll(rel string) (int, error) {
	fd, err := u.openDir(rel)
	if err == nil || rel == "" || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, base := splitRel(rel)
	pfd, err := u.mkdirAll(parent)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	uid, gid, err := u.host(0, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, &os.PathError{Op: "chown", Path: rel, Err: err}
	}
	return u.openDir(rel)
}

// removeExisting removes whatever base in pfd is (a directory with its contents), never
// following a symlink.
func removeExisting(pfd int, base string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(pfd, base, 0)
	}
	// os.RemoveAll walks with unlinkat and does not follow symlinks.
	return os.RemoveAll("/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base)
}

func (u *unpacker) apply(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanRel(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		if hdr.Typeflag == tar.TypeDir {
			u.rootHdr = hdr
		}
		return nil
	}
	parent, base := splitRel(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(parent, base)
	}
	pfd, err := u.mkdirAll(parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	uid, gid, err := u.host(hdr.Uid, hdr.Gid)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode) & 0o7777
	mtime := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	times := []unix.Timespec{mtime, mtime}

	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return err
			}
			err = unix.ENOENT
		}
		if errors.Is(err, unix.ENOENT) {
			err = unix.Mkdirat(pfd, base, 0o700)
		}
		if err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := u.setAttrs(fd, uid, gid, mode, hdr); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTime{rel: rel, mtime: hdr.ModTime})
		return nil

	case tar.TypeReg, tar.TypeRegA:
		if err := removeExisting(pfd, base); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		if _, err := io.CopyBuffer(f, r, u.buf); err != nil {
			return err
		}
		if err := u.setAttrs(fd, uid, gid, mode, hdr); err != nil {
			return err
		}
		return unix.UtimesNanoAt(pfd, base, times, unix.AT_SYMLINK_NOFOLLOW)

	case tar.TypeSymlink:
		if err := removeExisting(pfd, base); err != nil {
			return err
		}
		// The target is stored as written: it is resolved inside the container's root
		// when used, and the unpacker itself never follows it.
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		return unix.UtimesNanoAt(pfd, base, times, unix.AT_SYMLINK_NOFOLLOW)

	case tar.TypeLink:
		target, err := cleanRel(hdr.Linkname)
		if err != nil {
			return err
		}
		if target == "" {
			return fmt.Errorf("%w: hard link to the layer root", ErrInvalidImage)
		}
		if target == rel {
			return nil
		}
		tparent, tbase := splitRel(target)
		tpfd, err := u.openDir(tparent)
		if err != nil {
			return fmt.Errorf("%w: hard link target %q: %v", ErrInvalidImage, hdr.Linkname, err)
		}
		defer unix.Close(tpfd)
		if err := removeExisting(pfd, base); err != nil {
			return err
		}
		if err := unix.Linkat(tpfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("%w: hard link to %q: %v", ErrInvalidImage, hdr.Linkname, err)
		}
		return nil

	case tar.TypeFifo:
		if err := removeExisting(pfd, base); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return err
		}
		return unix.UtimesNanoAt(pfd, base, times, unix.AT_SYMLINK_NOFOLLOW)

	case tar.TypeChar:
		if hdr.Devmajor == 0 && hdr.Devminor == 0 {
			// Already an overlay-style whiteout.
			return u.mkWhiteout(pfd, base, true)
		}
		return nil // device nodes come from the container's /dev, never from an image
	default:
		return nil // block devices, PAX global headers and the like: nothing to unpack
	}
}

// setAttrs sets owner, mode (after the owner: chown clears set-id bits) and the xattrs a
// layer may carry on an open file or directory.
func (u *unpacker) setAttrs(fd, uid, gid int, mode uint32, hdr *tar.Header) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		value := []byte(hdr.PAXRecords[k])
		switch {
		case name == xattrCapability:
			var ok bool
			if value, ok = convertFileCaps(value, u.ids.Start); !ok {
				continue
			}
		case strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay."):
		default:
			// trusted.* (overlayfs metadata among them) and other security.* attributes
			// are not an image's to set.
			continue
		}
		if err := unix.Fsetxattr(fd, name, value, 0); err != nil {
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	return nil
}

// convertFileCaps rewrites a security.capability value (revision 1, 2 or 3) for the
// namespace the layer is used in: revision 2 for host root, revision 3 with the mapped
// root's host uid for a user-namespaced container (the kernel honours a revision 3
// capability only in the namespace whose root it names).
func convertFileCaps(v []byte, rootUID uint32) ([]byte, bool) {
	if len(v) < 4 {
		return nil, false
	}
	magic := binary.LittleEndian.Uint32(v)
	body := make([]byte, 16) // permitted and inheritable, two 32-bit words each
	switch magic & 0xff000000 {
	case 0x01000000:
		if len(v) < 12 {
			return nil, false
		}
		copy(body, v[4:12])
	case 0x02000000, 0x03000000:
		if len(v) < 20 {
			return nil, false
		}
		copy(body, v[4:20])
	default:
		return nil, false
	}
	flags := magic & 0x1 // effective
	if rootUID == 0 {
		out := binary.LittleEndian.AppendUint32(nil, 0x02000000|flags)
		return append(out, body...), true
	}
	out := binary.LittleEndian.AppendUint32(nil, 0x03000000|flags)
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, rootUID), true
}

// whiteout applies a ".wh." entry: ".wh..wh..opq" makes parent opaque, ".wh.<name>"
// removes <name> of the layers below. Other ".wh..wh." names (AUFS metadata) are skipped.
func (u *unpacker) whiteout(parent, base string) error {
	pfd, err := u.mkdirAll(parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if base == whiteoutOpaque {
		if err := unix.Fsetxattr(pfd, xattrOpaqueTrusted, []byte("y"), 0); err != nil {
			return fmt.Errorf("marking %q opaque: %w", parent, err)
		}
		if err := unix.Fsetxattr(pfd, xattrOpaqueUser, []byte("y"), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("marking %q opaque: %w", parent, err)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%w: whiteout of %q", ErrInvalidImage, name)
	}
	return u.mkWhiteout(pfd, name, false)
}

// mkWhiteout makes name a 0/0 character device, overlayfs's whiteout. A whiteout hides
// only lower layers: an entry this layer already made keeps its place unless replace.
func (u *unpacker) mkWhiteout(pfd int, name string, replace bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if !replace {
			return nil
		}
		if err := removeExisting(pfd, name); err != nil {
			return err
		}
	}
	if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %q: %w", name, err)
	}
	uid, gid, err := u.host(0, 0)
	if err != nil {
		return err
	}
	return unix.Fchownat(pfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// finish sets the layer root's attributes and the directories' times, last (creating
// entries in a directory changes its mtime).
func (u *unpacker) finish() error {
	uid, gid, err := u.host(0, 0)
	mode := uint32(0o755)
	if u.rootHdr != nil {
		if uid, gid, err = u.host(u.rootHdr.Uid, u.rootHdr.Gid); err == nil {
			mode = uint32(u.rootHdr.Mode) & 0o7777
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Fchown(u.root, uid, gid); err != nil {
		return err
	}
	if err := unix.Fchmod(u.root, mode); err != nil {
		return err
	}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		parent, base := splitRel(d.rel)
		pfd, err := u.openDir(parent)
		if err != nil {
			continue // replaced by a later entry
		}
		ts := unix.NsecToTimespec(d.mtime.UnixNano())
		err = unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "utimes", Path: d.rel, Err: err}
		}
	}
	return nil
}

// diskUsage is the space the tree at dir takes (allocated blocks, hard links counted once).
func diskUsage(dir string) (int64, error) {
	seen := map[[2]uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if !d.IsDir() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// syncFS flushes the filesystem holding dir, so a layer is durable before it is published.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// dirLock holds an exclusive flock on a store directory.
type dirLock struct{ f *os.File }

func (l *dirLock) Close() error { return l.f.Close() }

// lockDir takes the store's directory lock, so two stores never share a directory.
func lockDir(dir string) (io.Closer, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another image store is using %s", dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return &dirLock{f: f}, nil
}
