package isolationlinux

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// diskDirs hands out each container's directory for its overlay upper and work dirs.
type diskDirs struct {
	base string
}

func newDiskDirs(base string) (*diskDirs, error) {
	if err := os.MkdirAll(base, 0o711); err != nil {
		return nil, fmt.Errorf("disk dir %s: %w", base, err)
	}
	return &diskDirs{base: base}, nil
}

// dir returns the container's directory. Errors: isolation.ErrUnsupported for a limit, which
// this host cannot enforce yet.
func (d *diskDirs) dir(handle string, limit uint64) (string, error) {
	if limit > 0 {
		return "", fmt.Errorf("%w: Limits.DiskBytes: disk quotas are not available to the linux backend yet", isolation.ErrUnsupported)
	}
	p := filepath.Join(d.base, handle)
	if err := os.Mkdir(p, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	return p, nil
}

// usage is the bytes held below the container's directory.
func (d *diskDirs) usage(handle string) (uint64, error) {
	var total uint64
	err := filepath.WalkDir(filepath.Join(d.base, handle), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err == nil {
			total += uint64(st.Blocks) * 512
		}
		return nil
	})
	return total, err
}

func (d *diskDirs) limit(handle string) uint64 { return 0 }

// release removes the container's directory; a missing one is not an error.
func (d *diskDirs) release(handle string) error {
	return os.RemoveAll(filepath.Join(d.base, handle))
}
