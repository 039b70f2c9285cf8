package resources

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// Layout under a DiskQuota's base directory.
const (
	imagesDir  = "images"  // <handle>.img: one sparse ext4 image per limited container
	volumesDir = "volumes" // <handle>/: the image's mount point (a plain directory if unlimited)
	dataDir    = "data"    // <handle>/data: the directory handed out
	trashDir   = "trash"   // released volumes and images, removed in the background (Trash)
	reserve    = ".reserve"
)

const (
	blockSize   = 4096
	mkfsTimeout = time.Minute
)

// DiskQuota hands out per-container directories whose writes are limited.
//
// Enforcement: each limited directory is its own small ext4 filesystem — a sparse image file
// under baseDir/images, mounted through an autoclear loop device at baseDir/volumes/<handle>.
// The image is a copy of a template that mkfs.ext4 formatted once for its size, cached in
// baseDir/templates, with a fresh UUID written into it (see disk_template_linux.go). The handed-out directory is <mount>/data; the filesystem is sized a
// little above the limit and the surplus is held by a root-only preallocated file beside data,
// so exactly limitBytes (rounded up to 4 KiB, the base directories included) can be written
// before writes fail with ENOSPC. Usage is the filesystem's used blocks less that reservation.
// Kernel project quotas (XFS prjquota, what grootfs uses) would need CONFIG_XFS_QUOTA or
// CONFIG_QUOTA, which kernels like this host's lack; a filesystem per container needs only loop
// devices and ext4. Images are sparse: they take host disk as data is written, so the host's
// advertised disk capacity must stay within what the host really has.
//
// When baseDir is already on XFS mounted with project quota enforcement (prjquota), no images are
// made: each limited directory gets its own XFS project (id from 2^20 up, inherited by
// everything below it) with a block hard limit, writes beyond it fail with EDQUOT, and Usage is
// the project's quota report. Mode tells which enforcement is in use.
//
// An unlimited directory (limitBytes 0) is a plain directory under baseDir/volumes; its Usage
// walks the tree.
//
// State lives entirely in baseDir, so a restarted agent's NewDiskQuota finds the mounted volumes
// again; an image left unmounted (after a host reboot) is mounted again on first use. One
// DiskQuota (one agent) owns a baseDir at a time. Methods are safe for concurrent use.
type DiskQuota struct {
	base    string
	project bool   // XFS project quotas on base; else loop-mounted ext4 images
	mkfs    string // mkfs.ext4, in loop mode
	trash   *Trash // takes released volumes and images, in loop mode

	mu    sync.Mutex
	locks map[string]*handleLock
	alloc sync.Mutex // held from choosing a project id until a directory carries it

	// Formatted templates, in loop mode (disk_template_linux.go).
	tmu       sync.Mutex
	templates map[int64]*templateSlot // by image size
	keyMu     sync.Mutex
	key       string      // mkfsKey, once known
	noReflink atomic.Bool // FICLONE failed here once: copy extents instead

	spares atomic.Uint64 // names Spare's directories
}

// Disk quota modes, as Mode reports them.
const (
	ModeXFSProjectQuota = "xfs-project-quota"
	ModeLoopExt4        = "loop-ext4"
)

type handleLock struct {
	mu   sync.Mutex
	refs int
}

// NewDiskQuota prepares baseDir (an absolute path; created if missing) to hold limited
// directories.
// Errors: isolation.ErrInvalidSpec (relative path), isolation.ErrUnsupported (not root, no loop
// device support, or no mkfs.ext4).
func NewDiskQuota(baseDir string) (*DiskQuota, error) {
	if !filepath.IsAbs(baseDir) {
		return nil, fmt.Errorf("%w: disk quota base directory %q is not absolute", isolation.ErrInvalidSpec, baseDir)
	}
	baseDir = filepath.Clean(baseDir)
	for _, d := range []string{baseDir, filepath.Join(baseDir, imagesDir), filepath.Join(baseDir, volumesDir), filepath.Join(baseDir, templatesDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("prepare disk quota directory: %w", err)
		}
	}
	// Each container's volume directory is where its overlay upper and work dirs, and the
	// overlay's own work files, are created and removed: spread them as the state dirs are.
	if err := SpreadSubdirs(filepath.Join(baseDir, volumesDir)); err != nil {
		slog.Debug("disk volumes: spreading container directories over the file system is not supported here", "dir", baseDir, "err", err)
	}
	q := &DiskQuota{base: baseDir, locks: map[string]*handleLock{}, templates: map[int64]*templateSlot{}}
	if projectQuotaEnforced(baseDir) {
		q.project = true
		return q, nil
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return nil, fmt.Errorf("%w: disk quotas need loop devices (or baseDir on XFS with prjquota): %v", isolation.ErrUnsupported, err)
	}
	mkfs, err := findTool("mkfs.ext4")
	if err != nil {
		return nil, fmt.Errorf("%w: disk quotas need mkfs.ext4 (Debian package e2fsprogs): %v", isolation.ErrUnsupported, err)
	}
	q.mkfs = mkfs
	if q.trash, err = NewTrash(filepath.Join(baseDir, trashDir), slog.Default()); err != nil {
		return nil, err
	}
	// Spares are made for this process's lifetime; an earlier one's go.
	if spares, err := filepath.Glob(filepath.Join(baseDir, volumesDir, sparePrefix+"*")); err == nil {
		for _, s := range spares {
			if err := q.trash.Put(s); err != nil {
				slog.Warn("removing a spare disk directory left by an earlier process", "dir", s, "error", err)
			}
		}
	}
	return q, nil
}

// sparePrefix starts the names of spare directories ("@" is no handle character).
const sparePrefix = "@spare-"

// Spare makes an unlimited directory ahead of the container that will take it (AdoptSpare),
// and returns its name and the directory Dir would hand out. Spares left by an earlier
// process are removed by NewDiskQuota.
func (q *DiskQuota) Spare() (name, dir string, err error) {
	name = sparePrefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(q.spares.Add(1), 10)
	dir, err = q.Dir(name, 0)
	return name, dir, err
}

// AdoptSpare gives the spare made by Spare to handle, with what the caller made in it, as if
// Dir(handle, 0) had made it, and returns its directory.
// Errors: isolation.ErrAlreadyExists (handle has a directory), isolation.ErrNotFound (no such
// spare), isolation.ErrInvalidSpec (bad names).
func (q *DiskQuota) AdoptSpare(name, handle string) (string, error) {
	if !strings.HasPrefix(name, sparePrefix) {
		return "", fmt.Errorf("%w: %q is not a spare", isolation.ErrInvalidSpec, name)
	}
	if err := validName("handle", handle); err != nil {
		return "", err
	}
	defer q.lock(handle)()
	image, mount, data := q.paths(handle)
	if has, err := exists(image); err != nil || has {
		return "", fmt.Errorf("%w: disk for %s exists with a limit (%v)", isolation.ErrAlreadyExists, handle, err)
	}
	_, spare, _ := q.paths(name)
	if err := unix.Renameat2(unix.AT_FDCWD, spare, unix.AT_FDCWD, mount, unix.RENAME_NOREPLACE); err != nil {
		switch {
		case errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY):
			return "", fmt.Errorf("%w: disk for %s", isolation.ErrAlreadyExists, handle)
		case errors.Is(err, unix.ENOENT):
			return "", fmt.Errorf("%w: spare disk directory %s", isolation.ErrNotFound, name)
		}
		return "", fmt.Errorf("disk for %s from spare %s: %w", handle, name, err)
	}
	return data, nil
}

// Flush waits until what was released is gone from the disk, not only from its place.
func (q *DiskQuota) Flush() {
	if q.trash != nil {
		q.trash.Flush()
	}
}

// Close empties the trash of released directories and stops removing them; Dir and Release
// must not be called after it.
func (q *DiskQuota) Close() {
	if q.trash != nil {
		q.trash.Close()
	}
}

// Mode reports how limits are enforced: ModeXFSProjectQuota or ModeLoopExt4.
func (q *DiskQuota) Mode() string {
	if q.project {
		return ModeXFSProjectQuota
	}
	return ModeLoopExt4
}

// findTool looks a program up in PATH and then in the sbin directories a service's PATH may
// lack.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /sbin", name)
}

func (q *DiskQuota) lock(handle string) func() {
	q.mu.Lock()
	l := q.locks[handle]
	if l == nil {
		l = &handleLock{}
		q.locks[handle] = l
	}
	l.refs++
	q.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		q.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(q.locks, handle)
		}
		q.mu.Unlock()
	}
}

func (q *DiskQuota) paths(handle string) (image, mount, data string) {
	mount = filepath.Join(q.base, volumesDir, handle)
	return filepath.Join(q.base, imagesDir, handle+".img"), mount, filepath.Join(mount, dataDir)
}

// Dir returns a directory for handle whose writes are limited to limitBytes, rounded up to
// 4 KiB (0 = unlimited), creating it on first use. Asking again for the same handle and limit
// returns the same directory with its contents.
// Errors: isolation.ErrInvalidSpec (bad handle), isolation.ErrAlreadyExists (the handle has a
// directory with a different limit).
func (q *DiskQuota) Dir(handle string, limitBytes uint64) (string, error) {
	if err := validName("handle", handle); err != nil {
		return "", err
	}
	defer q.lock(handle)()
	image, mount, data := q.paths(handle)
	want := roundUp(limitBytes)
	if q.project {
		return q.projectDir(handle, mount, data, want)
	}

	hasImage, err := exists(image)
	if err != nil {
		return "", err
	}
	switch {
	case hasImage:
		if err := q.ensureMounted(image, mount); err != nil {
			return "", fmt.Errorf("disk for %s: %w", handle, err)
		}
		capacity, _, err := volumeUsage(mount)
		if err != nil {
			return "", fmt.Errorf("disk for %s: %w", handle, err)
		}
		if capacity != want {
			return "", fmt.Errorf("%w: disk for %s exists with a limit of %d bytes, not %d", isolation.ErrAlreadyExists, handle, capacity, want)
		}
		return data, nil
	case want == 0:
		if err := os.MkdirAll(data, 0o755); err != nil {
			return "", fmt.Errorf("disk for %s: %w", handle, err)
		}
		return data, nil
	}
	if _, err := os.Stat(mount); err == nil {
		return "", fmt.Errorf("%w: disk for %s exists without a limit", isolation.ErrAlreadyExists, handle)
	}
	if err := q.create(image, mount, want); err != nil {
		if rerr := q.release(image, mount); rerr != nil {
			slog.Warn("clean up a disk that failed to set up", "handle", handle, "error", rerr)
		}
		return "", fmt.Errorf("disk for %s (%d bytes): %w", handle, want, err)
	}
	return data, nil
}

// create makes the image for a limit of want bytes as a copy of the formatted template of its
// size, mounts it, then reserves the surplus so that exactly want bytes are free for data.
func (q *DiskQuota) create(image, mount string, want uint64) error {
	// ext4 with 4 KiB blocks and one 256-byte inode per 16 KiB spends about 1/64 of its size on
	// metadata; a 1/32 margin plus 4 MiB always leaves room for the reservation to trim.
	size := want + want/32 + 4<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	var t *diskTemplate
	for attempt := 0; ; attempt++ {
		var err error
		if t, err = q.templateFor(int64(size)); err != nil {
			return err
		}
		err = q.copyTemplate(t, image)
		if err == nil {
			break
		}
		if rerr := os.Remove(image); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("%w (and removing the partial image: %v)", err, rerr)
		}
		if !errors.Is(err, os.ErrNotExist) || attempt > 0 {
			return err
		}
		// The template was pruned or replaced since it was loaded: load it again.
		q.forgetTemplate(t, false)
	}
	if err := q.ensureMounted(image, mount); err != nil {
		// A copy the kernel finds corrupt says the template is: format it again next time.
		if errors.Is(err, unix.EUCLEAN) || errors.Is(err, unix.EBADMSG) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIO) {
			q.forgetTemplate(t, true)
		}
		return err
	}
	if err := os.Mkdir(filepath.Join(mount, dataDir), 0o755); err != nil {
		return err
	}
	return reserveSurplus(mount, want)
}

// reserveSurplus preallocates a root-only file at the volume's root so that the filesystem's
// capacity less the file is exactly want bytes. ext4 counts the file's extent-tree blocks in its
// size on disk, so the allocation is trimmed until the sum is right.
func reserveSurplus(mount string, want uint64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return err
	}
	total := usable(&st)
	if total < want {
		return fmt.Errorf("formatted volume holds %d bytes, less than the %d asked for", total, want)
	}
	f, err := os.OpenFile(filepath.Join(mount, reserve), os.O_CREATE|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	target := total - want
	alloc := target
	for range 4 {
		if err := f.Truncate(0); err != nil {
			return err
		}
		if alloc > 0 {
			if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(alloc)); err != nil {
				return fmt.Errorf("reserve %d bytes: %w", alloc, err)
			}
		}
		held, err := onDisk(f)
		if err != nil {
			return err
		}
		if held == target {
			return nil
		}
		if held < target {
			return fmt.Errorf("reserve holds %d bytes, want %d", held, target)
		}
		alloc -= min(alloc, held-target)
	}
	return fmt.Errorf("reserve could not be sized to %d bytes", target)
}

// usable is how many bytes of a filesystem files can ever occupy: its blocks less those ext4
// keeps back for its own metadata (s_resv_clusters, fixed at mount; Bfree counts them, Bavail
// does not).
func usable(st *unix.Statfs_t) uint64 {
	return (st.Blocks - (st.Bfree - st.Bavail)) * uint64(st.Bsize)
}

func onDisk(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return uint64(st.Blocks) * 512, nil
}

// volumeUsage reports a mounted volume's capacity for data (limit) and what is used of it.
func volumeUsage(mount string) (capacity, used uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return 0, 0, err
	}
	f, err := os.Open(filepath.Join(mount, reserve))
	if err != nil {
		return 0, 0, fmt.Errorf("volume %s has no reservation: %w", mount, err)
	}
	defer f.Close()
	held, err := onDisk(f)
	if err != nil {
		return 0, 0, err
	}
	total, usedAll := usable(&st), (st.Blocks-st.Bfree)*uint64(st.Bsize)
	if held > total || held > usedAll {
		return 0, 0, fmt.Errorf("volume %s: reservation %d exceeds its filesystem (%d total, %d used)", mount, held, total, usedAll)
	}
	return total - held, usedAll - held, nil
}

// ensureMounted mounts image at mount unless something is mounted there already.
func (q *DiskQuota) ensureMounted(image, mount string) error {
	if err := os.MkdirAll(mount, 0o700); err != nil {
		return err
	}
	if m, err := isMountPoint(mount); err != nil || m {
		return err
	}
	dev, err := attachLoop(image)
	if err != nil {
		return err
	}
	// Closing dev after mounting leaves the mount as the device's only user; with autoclear the
	// device is freed when the volume is unmounted (or, if mount fails, right here).
	defer dev.Close()
	if err := unix.Mount(dev.Name(), mount, "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", image, dev.Name(), mount, err)
	}
	return nil
}

// isMountPoint reports whether dir is the root of a mount: its device differs from its
// parent's.
func isMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}

// Usage reports the bytes handle's directory holds: for a limited directory, the blocks its
// filesystem uses (the few KiB of base directories included), which never exceeds the limit;
// for an unlimited one, the blocks of every file in it.
// Errors: isolation.ErrInvalidSpec (bad handle), isolation.ErrNotFound (no directory for handle).
func (q *DiskQuota) Usage(handle string) (uint64, error) {
	if err := validName("handle", handle); err != nil {
		return 0, err
	}
	defer q.lock(handle)()
	image, mount, data := q.paths(handle)
	if q.project {
		if id, err := getProjectID(data); err == nil && id != 0 {
			_, used, err := projectUsage(q.base, id)
			if err != nil {
				return 0, fmt.Errorf("disk usage of %s: %w", handle, err)
			}
			return used, nil
		}
	}
	hasImage, err := exists(image)
	if err != nil {
		return 0, err
	}
	if hasImage {
		// Usage only reads: mounting here would bring back, from an image about to be
		// removed, a volume that a concurrent release (the lock is per DiskQuota, and
		// another backend may hold the same base) has just unmounted, and leave it behind.
		if m, err := isMountPoint(mount); err != nil || !m {
			if err == nil || errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("%w: the disk volume of %s is not mounted", isolation.ErrNotFound, handle)
			}
			return 0, fmt.Errorf("disk usage of %s: %w", handle, err)
		}
		_, used, err := volumeUsage(mount)
		if err != nil {
			return 0, fmt.Errorf("disk usage of %s: %w", handle, err)
		}
		return used, nil
	}
	if _, err := os.Stat(data); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%w: no disk for %s", isolation.ErrNotFound, handle)
		}
		return 0, err
	}
	used, err := treeUsage(data)
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", handle, err)
	}
	return used, nil
}

// treeUsage sums the blocks of every file under dir, counting hard-linked files once.
func treeUsage(dir string) (uint64, error) {
	var total uint64
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			key := [2]uint64{st.Dev, st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		total += uint64(st.Blocks) * 512
		return nil
	})
	return total, err
}

// Release removes handle's directory, its contents and its filesystem. Releasing an unknown
// handle is not an error. A volume still in use (e.g. mounted into a live container's mount
// namespace) is detached lazily: the kernel frees its loop device when the last user goes.
// Errors: isolation.ErrInvalidSpec (bad handle).
func (q *DiskQuota) Release(handle string) error {
	if err := validName("handle", handle); err != nil {
		return err
	}
	defer q.lock(handle)()
	image, mount, data := q.paths(handle)
	if q.project {
		id, err := getProjectID(data)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("release disk for %s: %w", handle, err)
		}
		if err := os.RemoveAll(mount); err != nil {
			return fmt.Errorf("release disk for %s: %w", handle, err)
		}
		if id != 0 {
			if err := setProjectLimit(q.base, id, 0); err != nil {
				return fmt.Errorf("release disk for %s: %w", handle, err)
			}
		}
		return nil
	}
	if err := q.release(image, mount); err != nil {
		return fmt.Errorf("release disk for %s: %w", handle, err)
	}
	return nil
}

// projectDir is Dir with XFS project quotas.
func (q *DiskQuota) projectDir(handle, mount, data string, want uint64) (string, error) {
	if id, err := getProjectID(data); err == nil {
		have := uint64(0)
		if id != 0 {
			if have, _, err = projectUsage(q.base, id); err != nil {
				return "", fmt.Errorf("disk for %s: %w", handle, err)
			}
		}
		if have != want {
			return "", fmt.Errorf("%w: disk for %s exists with a limit of %d bytes, not %d", isolation.ErrAlreadyExists, handle, have, want)
		}
		return data, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("disk for %s: %w", handle, err)
	}
	if want == 0 {
		if err := os.MkdirAll(data, 0o755); err != nil {
			return "", fmt.Errorf("disk for %s: %w", handle, err)
		}
		return data, nil
	}
	q.alloc.Lock()
	defer q.alloc.Unlock()
	id, err := allocateProjectID(filepath.Join(q.base, volumesDir))
	if err == nil {
		err = os.MkdirAll(data, 0o755)
	}
	if err == nil {
		// The limit goes on before the directory joins the project: no write escapes it.
		err = setProjectLimit(q.base, id, want)
	}
	if err == nil {
		err = setProjectID(data, id)
	}
	if err != nil {
		if rerr := os.RemoveAll(mount); rerr != nil {
			slog.Warn("clean up a disk that failed to set up", "handle", handle, "error", rerr)
		}
		return "", fmt.Errorf("disk for %s (%d bytes): %w", handle, want, err)
	}
	return data, nil
}

func (q *DiskQuota) release(image, mount string) error {
	// The volume may be mounted more than once on the same point (a second owner of the base,
	// such as a restarted backend, remounted it meanwhile): unmount until nothing is left,
	// a bounded number of times.
	for range maxStackedMounts {
		m, err := isMountPoint(mount)
		if errors.Is(err, os.ErrNotExist) {
			// Gone by now: another owner of the base released it meanwhile.
			break
		}
		if err != nil {
			return err
		}
		if !m {
			break
		}
		if err := unix.Unmount(mount, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", mount, err)
			}
			if err := unix.Unmount(mount, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("detach %s: %w", mount, err)
			}
		}
	}
	if m, err := isMountPoint(mount); (err != nil && !errors.Is(err, os.ErrNotExist)) || m {
		// Never remove files through a mount we meant to be gone.
		return fmt.Errorf("%w: %s is still a mount point after unmounting (%v)", ErrBusy, mount, err)
	}
	// Removing the files, and the image's blocks, is the trash's, in the background.
	if err := q.trash.Put(mount); err != nil {
		return err
	}
	return q.trash.Put(image)
}

// maxStackedMounts bounds how many mounts release takes off one volume's mount point.
const maxStackedMounts = 8

func roundUp(n uint64) uint64 { return (n + blockSize - 1) &^ (blockSize - 1) }

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
