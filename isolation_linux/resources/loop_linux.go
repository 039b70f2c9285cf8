package resources

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// attachLoop binds image to a free loop device with autoclear set, so the device detaches by
// itself when its last user (the mount made on it) goes away; a crashed agent leaks no device.
// The caller mounts the returned device and then closes it.
func attachLoop(image string) (*os.File, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()

	// Another process may claim the device LOOP_CTL_GET_FREE returned before we configure it;
	// the kernel then answers EBUSY and we ask for another.
	var lastErr error
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := openLoopDevice(fmt.Sprintf("/dev/loop%d", n))
		if err != nil {
			return nil, err
		}
		err = configureLoop(dev, img, image)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("bind %s to %s: %w", image, dev.Name(), err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("bind %s to a loop device: every free device was taken first: %w", image, lastErr)
}

// openLoopDevice opens a loop device node, waiting briefly for devtmpfs to create the node of a
// device that LOOP_CTL_GET_FREE has just added.
func openLoopDevice(path string) (*os.File, error) {
	for wait := time.Millisecond; ; wait *= 2 {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || wait > 100*time.Millisecond {
			return f, err
		}
		time.Sleep(wait)
	}
}

func configureLoop(dev, img *os.File, name string) error {
	cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	// Kernels before 5.8 lack LOOP_CONFIGURE: bind, then set the flags.
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &cfg.Info); err != nil {
		_ = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}
