//go:build !linux

package resources

import (
	"context"
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

// Cgroup is a Linux control group; on this system none can be made.
type Cgroup struct{}

// DiskQuota is a set of size-limited directories; on this system none can be made.
type DiskQuota struct{}

func unsupported(what string) error {
	return fmt.Errorf("%w: %s needs Linux", isolation.ErrUnsupported, what)
}

// New fails: cgroups exist only on Linux.
func New(parent, handle string, limits isolation.Limits) (*Cgroup, error) {
	return nil, unsupported("cgroups")
}

// Load fails: cgroups exist only on Linux.
func Load(parent, handle string) (*Cgroup, error) { return nil, unsupported("cgroups") }

// Adopt fails: cgroups exist only on Linux.
func Adopt(parent, from, handle string, limits isolation.Limits) (*Cgroup, error) {
	return nil, unsupported("cgroups")
}

// AdoptSupported is false: cgroups exist only on Linux.
func AdoptSupported() bool { return false }

// Children fails: cgroups exist only on Linux.
func Children(parent string) ([]string, error) { return nil, unsupported("cgroups") }

// NewDiskQuota fails: the disk quotas used here exist only on Linux.
func NewDiskQuota(baseDir string) (*DiskQuota, error) { return nil, unsupported("disk quotas") }

// The methods below cannot be reached (no constructor succeeds) but keep callers portable.

func (*Cgroup) Path() string                                      { return "" }
func (*Cgroup) Version() int                                      { return 0 }
func (*Cgroup) AddProc(int) error                                 { return unsupported("cgroups") }
func (*Cgroup) Stats() (Stats, error)                             { return Stats{}, unsupported("cgroups") }
func (*Cgroup) OOMKills() (uint64, error)                         { return 0, unsupported("cgroups") }
func (*Cgroup) WatchOOM(context.Context) (<-chan struct{}, error) { return nil, unsupported("cgroups") }
func (*Cgroup) Kill() error                                       { return unsupported("cgroups") }
func (*Cgroup) Delete() error                                     { return unsupported("cgroups") }
func (*DiskQuota) Dir(string, uint64) (string, error)             { return "", unsupported("disk quotas") }
func (*DiskQuota) Usage(string) (uint64, error)                   { return 0, unsupported("disk quotas") }
func (*DiskQuota) Release(string) error                           { return unsupported("disk quotas") }
func (*DiskQuota) Flush()                                         {}
func (*DiskQuota) Spare() (string, string, error)                 { return "", "", unsupported("disk quotas") }
func (*DiskQuota) AdoptSpare(string, string) (string, error)      { return "", unsupported("disk quotas") }
func (*DiskQuota) Close()                                         {}

// RemoveTree does nothing: there are no cgroups here.
func RemoveTree(parent string) error { return nil }
