package containerinit

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountFlags maps OCI mount options to mount(2) flags; set false clears the flag.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"diratime":    {true, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"norelatime":  {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
}

// parseMountOptions splits OCI options into mount flags and the filesystem's data string.
func parseMountOptions(options []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range options {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// lockedFlags returns the flags of the mount holding fd that an unprivileged remount must
// keep (the kernel refuses to clear them in a user namespace).
func lockedFlags(fd int) (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	var f uintptr
	for _, m := range []struct{ st, ms uintptr }{
		{unix.ST_RDONLY, unix.MS_RDONLY},
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&m.st != 0 {
			f |= m.ms
		}
	}
	return f, nil
}

// inRoot opens p (an absolute path inside the container) relative to rootFd, resolving every
// symlink and ".." as if rootFd were "/". The result is an O_PATH descriptor.
func inRoot(rootFd int, p string, flags uint64) (int, error) {
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := Openat2(rootFd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | flags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	return fd, nil
}

// Openat2 is openat2(2), tried again when it fails with EAGAIN: with RESOLVE_IN_ROOT or
// RESOLVE_BENEATH the kernel refuses a ".." it walked while any rename happened anywhere on
// the host (it cannot then prove the walk stayed inside), and a cell renames often (the trash,
// spare directories, cgroups).
func Openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dirfd, path, how)
		if !errors.Is(err, unix.EAGAIN) || try == 100 {
			return fd, err
		}
	}
}

// mkdirAllInRoot makes directory p and its parents inside the root at rootFd and returns an
// O_PATH descriptor of it.
func mkdirAllInRoot(rootFd int, p string, mode uint32) (int, error) {
	p = path.Clean("/" + p)
	if fd, err := inRoot(rootFd, p, unix.O_DIRECTORY); err == nil {
		return fd, nil
	} else if !errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	parent, base := path.Split(p)
	pfd, err := mkdirAllInRoot(rootFd, parent, mode)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	// O_PATH descriptors serve as dirfd for mkdirat through /proc/self/fd.
	if err := unix.Mkdirat(pfd, base, mode); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "mkdir", Path: p, Err: err}
	}
	return inRoot(rootFd, p, unix.O_DIRECTORY)
}

// createInRoot makes sure p exists inside the root (an empty file if missing, its parents as
// directories) and returns an O_PATH descriptor of it.
func createInRoot(rootFd int, p string) (int, error) {
	if fd, err := inRoot(rootFd, p, 0); err == nil {
		return fd, nil
	} else if !errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	dir, base := path.Split(path.Clean("/" + p))
	pfd, err := mkdirAllInRoot(rootFd, dir, 0o755)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "create", Path: p, Err: err}
	}
	if err == nil {
		unix.Close(fd)
	}
	return inRoot(rootFd, p, 0)
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mountAt mounts onto the object held by the O_PATH descriptor target.
func mountAt(source string, target int, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, fdPath(target), fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s) flags %#x: %w", source, fstype, flags, err)
	}
	return nil
}

// setupRootfs mounts the container's filesystem tree below spec.Root.Path in the current
// (new, private) mount namespace and pivots into it. It runs in the init before any process.
func setupRootfs(spec *Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the mount namespace private: %w", err)
	}
	rootfs := spec.Root.Path
	if err := unix.Mount("overlay", rootfs, "overlay", unix.MS_NODEV, spec.Annotations[AnnotationOverlay]); err != nil {
		return fmt.Errorf("mounting the overlay root filesystem on %s: %w", rootfs, err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the root filesystem: %w", err)
	}
	defer unix.Close(rootFd)

	if n, ok := stagedFor(spec); ok {
		// Built while the init waited (stage_linux.go); the container's own mounts follow.
		if err := moveStaged(rootFd); err != nil {
			return err
		}
		for _, m := range spec.Mounts[n:] {
			if err := mountOne(rootFd, m); err != nil {
				return fmt.Errorf("mount %s: %w", m.Destination, err)
			}
		}
	} else if err := standardLayout(rootFd, spec.Mounts, spec.Linux.Devices, spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths); err != nil {
		return err
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("setting hostname: %w", err)
		}
	}
	return pivotRoot(rootfs)
}

func mountOne(rootFd int, m specs.Mount) error {
	flags, data := parseMountOptions(m.Options)
	if flags&unix.MS_BIND != 0 {
		return bindMount(rootFd, m.Source, m.Destination, flags)
	}
	target, err := mkdirAllInRoot(rootFd, m.Destination, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	return mountAt(m.Source, target, m.Type, flags, data)
}

// bindMount binds host path src at dst inside the root, then applies the read-only and
// no-suid/dev/exec flags with a remount that keeps the flags the source mount has locked.
func bindMount(rootFd int, src, dst string, flags uintptr) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind source: %w", err)
	}
	var target int
	if st.IsDir() {
		target, err = mkdirAllInRoot(rootFd, dst, 0o755)
	} else {
		target, err = createInRoot(rootFd, dst)
	}
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := mountAt(src, target, "", unix.MS_BIND|(flags&unix.MS_REC), ""); err != nil {
		return err
	}
	extra := flags &^ (unix.MS_BIND | unix.MS_REC)
	if extra == 0 {
		return nil
	}
	// Reopen: the descriptor from before the mount names the covered directory.
	mounted, err := inRoot(rootFd, dst, 0)
	if err != nil {
		return err
	}
	defer unix.Close(mounted)
	locked, err := lockedFlags(mounted)
	if err != nil {
		return err
	}
	return mountAt("", mounted, "", unix.MS_BIND|unix.MS_REMOUNT|extra|locked, "")
}

// setupDev binds the host's device nodes into the container's /dev tmpfs (a user namespace
// cannot mknod) and adds the usual links.
func setupDev(rootFd int, devices []specs.LinuxDevice) error {
	for _, d := range devices {
		if err := bindMount(rootFd, d.Path, d.Path, 0); err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
	}
	devFd, err := inRoot(rootFd, "/dev", unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(devFd)
	for _, l := range [][2]string{
		{"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
		{"pts/ptmx", "ptmx"},
	} {
		if err := unix.Symlinkat(l[0], devFd, l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("linking /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

func maskPath(rootFd int, p string) error {
	fd, err := inRoot(rootFd, p, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return mountAt("tmpfs", fd, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
	}
	return mountAt("/dev/null", fd, "", unix.MS_BIND, "")
}

func readonlyPath(rootFd int, p string) error {
	fd, err := inRoot(rootFd, p, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := mountAt(fdPath(fd), fd, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	mounted, err := inRoot(rootFd, p, 0)
	if err != nil {
		return err
	}
	defer unix.Close(mounted)
	locked, err := lockedFlags(mounted)
	if err != nil {
		return err
	}
	return mountAt("", mounted, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC|locked, "")
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the old root, so that
// nothing of the host's tree stays reachable.
func pivotRoot(rootfs string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(newRoot)
	if err := unix.Fchdir(newRoot); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return err
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making the old root a slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if wd, err := os.Getwd(); err != nil || wd != "/" {
		return fmt.Errorf("working directory after pivot_root is %q (%v), not /", wd, err)
	}
	return nil
}
