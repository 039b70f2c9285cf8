package containerinit

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// capabilityNumbers maps capability names (linux/capability.h) to their numbers.
var capabilityNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// capMask turns capability names into a 64-bit set.
func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		c, ok := capabilityNumbers[n]
		if !ok {
			return 0, fmt.Errorf("%w: unknown capability %q", isolation.ErrInvalidSpec, n)
		}
		m |= 1 << c
	}
	return m, nil
}

// lastCap is the highest capability the running kernel knows.
func lastCap() uint {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 40
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8)
	if err != nil {
		return 40
	}
	return uint(n)
}

// hardenThread confines the calling OS thread (which must be locked to its goroutine and
// never unlocked) to the container's process template: capability sets reduced to the
// template's, ambient set cleared, no_new_privs, and the seccomp filter. Processes forked
// from this thread inherit all of it; the init's other threads keep their privileges.
// lastCap is the kernel's highest capability number (read by the caller while /proc is the
// host's or the container's, never half-way through the pivot).
func hardenThread(p *ConfigProcess, filter []unix.SockFilter, lastCap uint) error {
	c := p.Capabilities
	if c == nil {
		c = &specs.LinuxCapabilities{}
	}
	bounding, err := capMask(c.Bounding)
	if err != nil {
		return err
	}
	effective, err := capMask(c.Effective)
	if err != nil {
		return err
	}
	permitted, err := capMask(c.Permitted)
	if err != nil {
		return err
	}
	inheritable, err := capMask(c.Inheritable)
	if err != nil {
		return err
	}
	for capNr := uint(0); capNr <= lastCap; capNr++ {
		if bounding&(1<<capNr) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(capNr), 0, 0, 0); err != nil {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", capNr, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(effective), Permitted: uint32(permitted), Inheritable: uint32(inheritable)},
		{Effective: uint32(effective >> 32), Permitted: uint32(permitted >> 32), Inheritable: uint32(inheritable >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("setting capabilities: %w", err)
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
	}
	if len(filter) > 0 {
		if err := loadSeccomp(filter); err != nil {
			return err
		}
	}
	return nil
}
