package containerinit

import (
	"fmt"
	"path"
	"reflect"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// staged is where this pooled init built the standard layout (layout.go) while it waited for
// its container; "" when it did not.
var staged string

// prepareStage builds the standard layout on a tmpfs of this init's own, mounted at dir (an
// empty directory of the backend's): the kernel file systems, the device nodes bound from the
// host, the masked and read-only paths. At start, setupRootfs moves it under the container's
// root, which takes three mount moves instead of about thirty mounts on the start path. The
// mount namespace first becomes a slave of the host's: it still sees what the backend mounts
// later (the pool needs that, see sameView in the backend), and nothing mounted here reaches the
// host or the other pooled inits. On failure nothing stays mounted at dir.
func prepareStage(dir string) (err error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making the mount namespace a slave: %w", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mounting the stage on %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFd)
	if err := standardLayout(rootFd, StandardMounts(), StandardDevices(), MaskedPaths, ReadonlyPaths); err != nil {
		return err
	}
	staged = dir
	return nil
}

// standardLayout makes mounts, then devices, masked and read-only paths below rootFd, the way
// a container's config.json asks for them.
func standardLayout(rootFd int, mounts []specs.Mount, devices []specs.LinuxDevice, masked, readonly []string) error {
	for _, m := range mounts {
		if err := mountOne(rootFd, m); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
	}
	if err := setupDev(rootFd, devices); err != nil {
		return err
	}
	for _, p := range masked {
		if err := maskPath(rootFd, p); err != nil {
			return fmt.Errorf("masking %s: %w", p, err)
		}
	}
	for _, p := range readonly {
		if err := readonlyPath(rootFd, p); err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
	}
	return nil
}

// stagedFor reports whether the staged layout is what spec asks for, and how many of its
// mounts it covers.
func stagedFor(spec *Config) (int, bool) {
	std := StandardMounts()
	if staged == "" || len(spec.Mounts) < len(std) || !reflect.DeepEqual(spec.Mounts[:len(std)], std) {
		return 0, false
	}
	if !reflect.DeepEqual(spec.Linux.Devices, StandardDevices()) ||
		!reflect.DeepEqual(spec.Linux.MaskedPaths, MaskedPaths) || !reflect.DeepEqual(spec.Linux.ReadonlyPaths, ReadonlyPaths) {
		return 0, false
	}
	return len(std), true
}

// moveStaged moves the staged layout's top mounts (with everything mounted below them) to the
// same places below rootFd.
func moveStaged(rootFd int) error {
	var moved []string
	for _, m := range StandardMounts() {
		below := false
		for _, top := range moved {
			if strings.HasPrefix(m.Destination, top+"/") {
				below = true
			}
		}
		if below {
			continue
		}
		target, err := mkdirAllInRoot(rootFd, m.Destination, 0o755)
		if err != nil {
			return fmt.Errorf("mount point %s: %w", m.Destination, err)
		}
		err = mountAt(path.Join(staged, m.Destination), target, "", unix.MS_MOVE, "")
		unix.Close(target)
		if err != nil {
			return fmt.Errorf("moving the staged %s: %w", m.Destination, err)
		}
		moved = append(moved, m.Destination)
	}
	return nil
}
