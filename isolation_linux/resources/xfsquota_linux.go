package resources

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// XFS project quotas, used when a DiskQuota's base directory is already on XFS mounted with
// project quota enforcement (prjquota): each limited directory gets its own project id, set with
// FS_IOC_FSSETXATTR and inherited by everything created below it, and a block hard limit set
// with quotactl(Q_XSETQLIM). This is how grootfs limits disk; it costs no loop device and no
// extra filesystem. quotactl_fd (Linux 5.14+) addresses the filesystem by an open directory, so
// no block device path is needed.

// Kernel ABI (linux/fs.h, linux/dqblk_xfs.h, linux/quota.h); x/sys/unix lacks these.
const (
	fsIocFsgetxattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjinherit = 0x00000200

	prjQuota       = 2
	qXGetQuota     = 0x5803 // XQM_CMD(3)
	qXSetQLim      = 0x5804 // XQM_CMD(4)
	qXGetQStat     = 0x5805 // XQM_CMD(5)
	fsDquotVersion = 1
	fsProjQuota    = 2      // fs_disk_quota.d_flags
	fsDqBSoft      = 1 << 2 // fs_disk_quota.d_fieldmask
	fsDqBHard      = 1 << 3
	fsQuotaPdqEnfd = 0x0020 // fs_quota_stat.qs_flags: project quota enforced

	// projectIDBase keeps trellis' project ids clear of ones an operator assigns by hand
	// (/etc/projid conventionally uses small numbers).
	projectIDBase = 1 << 20
)

// fsxattr is struct fsxattr (28 bytes).
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

// fsDiskQuota is struct fs_disk_quota (112 bytes); limits and counts are in 512-byte blocks.
type fsDiskQuota struct {
	Version      int8
	Flags        int8
	Fieldmask    uint16
	ID           uint32
	BlkHardlimit uint64
	BlkSoftlimit uint64
	InoHardlimit uint64
	InoSoftlimit uint64
	Bcount       uint64
	Icount       uint64
	Itimer       int32
	Btimer       int32
	Iwarns       uint16
	Bwarns       uint16
	ItimerHi     int8
	BtimerHi     int8
	RtbtimerHi   int8
	Padding2     int8
	RtbHardlimit uint64
	RtbSoftlimit uint64
	Rtbcount     uint64
	Rtbtimer     int32
	Rtbwarns     uint16
	Padding3     int16
	Padding4     [8]byte
}

func quotactlFd(dir *os.File, cmd, id uint32, addr unsafe.Pointer) error {
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, dir.Fd(), uintptr(cmd<<8|prjQuota), uintptr(id), uintptr(addr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// projectQuotaEnforced reports whether dir is on XFS with project quotas enforced. Any failure
// to tell (not XFS, an older kernel without quotactl_fd, quotas off) reads as false.
func projectQuotaEnforced(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.XFS_SUPER_MAGIC {
		return false
	}
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	// struct fs_quota_stat: __s8 qs_version; __u16 qs_flags (at offset 2); ... (80 bytes).
	var buf [128]byte
	buf[0] = 1 // FS_QSTAT_VERSION
	if err := quotactlFd(d, qXGetQStat, 0, unsafe.Pointer(&buf[0])); err != nil {
		return false
	}
	flags := uint16(buf[2]) | uint16(buf[3])<<8
	return flags&fsQuotaPdqEnfd != 0
}

func fsxattrIoctl(f *os.File, req uintptr, x *fsxattr) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(x))); errno != 0 {
		return errno
	}
	return nil
}

func getProjectID(dir string) (uint32, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var x fsxattr
	if err := fsxattrIoctl(f, fsIocFsgetxattr, &x); err != nil {
		return 0, fmt.Errorf("get project of %s: %w", dir, err)
	}
	return x.Projid, nil
}

// setProjectID puts dir in project id and marks it so that everything created below inherits
// the project.
func setProjectID(dir string, id uint32) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	var x fsxattr
	if err := fsxattrIoctl(f, fsIocFsgetxattr, &x); err != nil {
		return fmt.Errorf("get project of %s: %w", dir, err)
	}
	x.Projid = id
	x.Xflags |= fsXflagProjinherit
	if err := fsxattrIoctl(f, fsIocFssetxattr, &x); err != nil {
		return fmt.Errorf("set project %d on %s: %w", id, dir, err)
	}
	return nil
}

// setProjectLimit sets project id's block hard and soft limits to limitBytes (0 removes them).
func setProjectLimit(fsDir string, id uint32, limitBytes uint64) error {
	d, err := os.Open(fsDir)
	if err != nil {
		return err
	}
	defer d.Close()
	q := fsDiskQuota{
		Version:      fsDquotVersion,
		Flags:        fsProjQuota,
		Fieldmask:    fsDqBHard | fsDqBSoft,
		ID:           id,
		BlkHardlimit: limitBytes / 512,
		BlkSoftlimit: limitBytes / 512,
	}
	if err := quotactlFd(d, qXSetQLim, id, unsafe.Pointer(&q)); err != nil {
		return fmt.Errorf("set limit of project %d to %d bytes: %w", id, limitBytes, err)
	}
	return nil
}

// projectUsage reads project id's block limit and usage in bytes.
func projectUsage(fsDir string, id uint32) (limit, used uint64, err error) {
	d, err := os.Open(fsDir)
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	var q fsDiskQuota
	if err := quotactlFd(d, qXGetQuota, id, unsafe.Pointer(&q)); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return 0, 0, nil // no usage recorded yet
		}
		return 0, 0, fmt.Errorf("read quota of project %d: %w", id, err)
	}
	return q.BlkHardlimit * 512, q.Bcount * 512, nil
}

// allocateProjectID returns the lowest id at or above projectIDBase that no directory in
// volumes uses. The caller holds the DiskQuota's allocation lock until the id is set on a
// directory, so concurrent Dir calls never share one.
func allocateProjectID(volumes string) (uint32, error) {
	entries, err := os.ReadDir(volumes)
	if err != nil {
		return 0, err
	}
	used := map[uint32]bool{}
	for _, e := range entries {
		id, err := getProjectID(filepath.Join(volumes, e.Name(), dataDir))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, err
		}
		used[id] = true
	}
	for id := uint32(projectIDBase); id != 0; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, errors.New("no free project id")
}
