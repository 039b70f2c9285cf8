package isolationlinux

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// diskDirs hands out each container's directory for its overlay upper and work dirs, through
// resources.DiskQuota so that Limits.DiskBytes is enforced.
type diskDirs struct {
	base  string
	quota *resources.DiskQuota
	err   error // why quota is nil
}

func newDiskDirs(base string) (*diskDirs, error) {
	d := &diskDirs{base: base}
	d.quota, d.err = resources.NewDiskQuota(base)
	if d.err != nil && !isolation.IsUnsupported(d.err) {
		return nil, fmt.Errorf("disk dir %s: %w", base, d.err)
	}
	return d, nil
}

// dir returns the container's directory, limited to limit bytes (0 = unlimited). Every
// directory from base down to it is made searchable by others, because an unprivileged
// container's root mounts the overlay by path. Errors: isolation.ErrUnsupported when this host
// cannot enforce disk limits.
func (d *diskDirs) dir(handle string, limit uint64) (string, error) {
	if d.quota == nil {
		return "", fmt.Errorf("%w: Limits.DiskBytes: disk directories are unavailable on this host: %v", isolation.ErrUnsupported, d.err)
	}
	p, err := d.quota.Dir(handle, limit)
	if err != nil {
		return "", err
	}
	return p, d.searchable(p)
}

// spare makes a spare unlimited directory (resources.DiskQuota.Spare), searchable like dir's.
func (d *diskDirs) spare() (name, dir string, err error) {
	if d.quota == nil {
		return "", "", fmt.Errorf("%w: disk directories are unavailable on this host: %v", isolation.ErrUnsupported, d.err)
	}
	if name, dir, err = d.quota.Spare(); err == nil {
		err = d.searchable(dir)
	}
	return name, dir, err
}

// searchable makes every directory from base down to p searchable by others.
func (d *diskDirs) searchable(p string) error {
	rel, err := filepath.Rel(d.base, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("disk directory %s is outside %s", p, d.base)
	}
	at := d.base
	for _, part := range append([]string{"."}, strings.Split(rel, string(filepath.Separator))...) {
		at = filepath.Join(at, part)
		st, err := os.Stat(at)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(at, st.Mode().Perm()|0o111); err != nil {
				return err
			}
		}
	}
	return nil
}

// usage is the bytes the container's directory holds.
func (d *diskDirs) usage(handle string) (uint64, error) {
	if d.quota == nil {
		return 0, d.err
	}
	return d.quota.Usage(handle)
}

// release removes the container's directory; a missing one is not an error.
func (d *diskDirs) release(handle string) error {
	if d.quota == nil {
		return nil
	}
	return d.quota.Release(handle)
}

// flush waits until released directories are gone from the disk (see resources.Trash).
func (d *diskDirs) flush() {
	if d.quota != nil {
		d.quota.Flush()
	}
}

func (d *diskDirs) close() {
	if d.quota != nil {
		d.quota.Close()
	}
}
