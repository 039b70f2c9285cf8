package isolationlinux

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// This file translates an isolation.ContainerSpec into the OCI runtime-spec document that the
// container's init acts on and that is kept in the container's state dir as config.json. It is
// pure and untagged so that it is unit-tested on every platform.

// Annotation keys trellis puts into config.json.
const (
	// annotationOverlay holds the overlay mount options (lowerdir, upperdir, workdir) for the
	// root filesystem, which the OCI spec has no field for: Root.Path is the mount point.
	annotationOverlay = containerinit.AnnotationOverlay
	// annotationHandle is the container's handle.
	annotationHandle = "dev.trellis.handle"
)

// defaultPath is PATH for processes whose environment does not set it.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultNofile is RLIMIT_NOFILE of container processes unless their spec says otherwise.
const defaultNofile = 1024

// DefaultCapabilities is the capability set of a container's processes (the bounding,
// permitted, effective and inheritable sets of root; non-root users get none), the same set
// containerd gives a container by default.
var DefaultCapabilities = []string{
	"CAP_AUDIT_WRITE",
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_MKNOD",
	"CAP_NET_BIND_SERVICE",
	"CAP_NET_RAW",
	"CAP_SETFCAP",
	"CAP_SETGID",
	"CAP_SETPCAP",
	"CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// MaskedPaths are made unreadable inside every container: files are covered by /dev/null,
// directories by an empty read-only tmpfs.
var MaskedPaths = containerinit.MaskedPaths

// ReadonlyPaths are remounted read-only inside every container.
var ReadonlyPaths = containerinit.ReadonlyPaths

// DeniedSyscalls fail with EPERM inside every container: they administer the kernel, the
// mount table or other processes' memory, none of which a container's process may touch.
var DeniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "delete_module",
	"finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "init_module", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
	"move_mount", "name_to_handle_at", "open_by_handle_at", "open_tree", "perf_event_open",
	"pivot_root", "process_vm_readv", "process_vm_writev", "ptrace", "quotactl",
	"quotactl_fd", "reboot", "request_key", "setns", "settimeofday", "swapoff", "swapon",
	"syslog", "umount2", "unshare", "userfaultfd", "vhangup", "adjtimex", "io_uring_setup",
	"io_uring_enter", "io_uring_register",
}

// cloneNamespaceFlags are the clone(2) flags that create namespaces; clone with any of them
// fails with EPERM in a container (unshare and setns are denied outright).
var cloneNamespaceFlags = []uint64{
	0x00020000, // CLONE_NEWNS
	0x02000000, // CLONE_NEWCGROUP
	0x04000000, // CLONE_NEWUTS
	0x08000000, // CLONE_NEWIPC
	0x10000000, // CLONE_NEWUSER
	0x20000000, // CLONE_NEWPID
	0x40000000, // CLONE_NEWNET
}

const (
	errnoEPERM  = 1
	errnoENOSYS = 38
)

// handlePattern is isolation.ValidateHandle's rule for handles and process ids (without its
// exclusion of "." and ".."), for the state-dir scans and lookups that match names directly.
var handlePattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,128}$`)

// envPattern is a NAME=value environment entry, as isolation.ValidateProcessSpec checks it.
var envPattern = regexp.MustCompile(`^[^=\x00]+=[^\x00]*$`)

// RootFS schemes this backend resolves: a preloaded stack, or a registry image pulled into
// the cell's layer cache (isolation_linux/image).
const (
	rootfsPreloaded = "preloaded:"
	rootfsDocker    = "docker:"
	rootfsOCI       = "oci:"
)

// reservedMountPoints are the container paths the backend mounts itself; bind mounts may not
// cover them or anything below them.
var reservedMountPoints = []string{"/proc", "/sys", "/dev"}

// ValidateContainerSpec checks a spec before anything is created: the platform-neutral rules
// of isolation.ValidateContainerSpec, then what is particular to this backend: preloaded:<stack>,
// docker:// or oci:// root filesystems (registry credentials only with the latter), bind mounts from slash paths on the host, and none onto
// the mount points the backend owns. Errors wrap isolation.ErrInvalidSpec (naming the field)
// or isolation.ErrUnsupported.
func ValidateContainerSpec(cs isolation.ContainerSpec) error {
	if err := isolation.ValidateContainerSpec(cs); err != nil {
		return err
	}
	rootfs, err := parseRootFS(cs.RootFS)
	if err != nil {
		return err
	}
	if !cs.ImageAuth.IsZero() && rootfs.image == "" {
		return fmt.Errorf("%w: ImageAuth: registry credentials apply only to a docker:// or oci:// RootFS, not %q", isolation.ErrInvalidSpec, cs.RootFS)
	}
	for i, b := range cs.BindMounts {
		if !path.IsAbs(b.SrcPath) {
			return fmt.Errorf("%w: BindMounts[%d].SrcPath %q is not an absolute path on this host", isolation.ErrInvalidSpec, i, b.SrcPath)
		}
		dst := path.Clean(b.DstPath)
		for _, reserved := range reservedMountPoints {
			if dst == reserved || strings.HasPrefix(dst, reserved+"/") {
				return fmt.Errorf("%w: BindMounts[%d].DstPath %q is under %s, which the backend owns", isolation.ErrInvalidSpec, i, b.DstPath, reserved)
			}
		}
	}
	return nil
}

// rootfsSource is a parsed RootFS: a preloaded stack or a registry image (the whole URI,
// which the image store parses).
type rootfsSource struct {
	stack string
	image string
}

// parseRootFS parses a RootFS URI. uri has passed isolation.ValidateContainerSpec, so it is a
// URI; a scheme other than preloaded, docker and oci is ErrUnsupported. The image reference
// itself is checked when it is pulled.
func parseRootFS(uri string) (rootfsSource, error) {
	switch {
	case strings.HasPrefix(uri, rootfsPreloaded):
		stack := strings.TrimPrefix(uri, rootfsPreloaded)
		if stack == "" || strings.ContainsAny(stack, "/\x00") {
			return rootfsSource{}, fmt.Errorf("%w: RootFS %q names no valid stack", isolation.ErrInvalidSpec, uri)
		}
		return rootfsSource{stack: stack}, nil
	case strings.HasPrefix(uri, rootfsDocker), strings.HasPrefix(uri, rootfsOCI):
		_, rest, _ := strings.Cut(uri, ":")
		if strings.Trim(rest, "/") == "" || strings.ContainsAny(rest, "\x00 ") {
			return rootfsSource{}, fmt.Errorf("%w: RootFS %q names no image", isolation.ErrInvalidSpec, uri)
		}
		return rootfsSource{image: uri}, nil
	}
	return rootfsSource{}, fmt.Errorf("%w: RootFS %q: the linux backend resolves preloaded:<stack>, docker:// and oci:// root filesystems", isolation.ErrUnsupported, uri)
}

// SpecOptions are the host-side facts BuildSpec needs besides the ContainerSpec.
type SpecOptions struct {
	// RootfsPath is the directory the overlay is mounted on (the container's "/").
	RootfsPath string
	// LowerDir, UpperDir and WorkDir make up the overlay. LowerDir may stack several
	// directories, top first, separated by ':' (an image's layers).
	LowerDir, UpperDir, WorkDir string
	// UserXattr mounts the overlay with the userxattr option, so that it reads the
	// user.overlay.* xattrs (opaque directories of image layers) that a user namespace can
	// see instead of trusted.overlay.*. Set for unprivileged containers on image layers.
	UserXattr bool
	// UIDMapStart and UIDMapSize map container ids 0..Size-1 to host ids Start..; they are
	// ignored for privileged containers.
	UIDMapStart, UIDMapSize uint32
	// CgroupsPath is the container's cgroup, relative to the hierarchy root.
	CgroupsPath string
}

// BuildSpec translates cs into the OCI runtime-spec document of the container. The document's
// Process is the template of every process run in the container (environment, capabilities,
// rlimits, no_new_privs); its Args are empty because creating a container runs no process.
// Errors wrap isolation.ErrInvalidSpec or isolation.ErrUnsupported.
func BuildSpec(cs isolation.ContainerSpec, opts SpecOptions) (*specs.Spec, error) {
	if err := ValidateContainerSpec(cs); err != nil {
		return nil, err
	}
	if opts.RootfsPath == "" || opts.LowerDir == "" || opts.UpperDir == "" || opts.WorkDir == "" {
		return nil, fmt.Errorf("%w: rootfs path and overlay directories must all be set", isolation.ErrInvalidSpec)
	}
	dirs := append(strings.Split(opts.LowerDir, ":"), opts.UpperDir, opts.WorkDir)
	for _, d := range dirs {
		if d == "" || strings.ContainsAny(d, ",:\x00") {
			return nil, fmt.Errorf("%w: overlay directory %q is empty or contains ',' or ':'", isolation.ErrInvalidSpec, d)
		}
	}
	// volatile: the overlay never syncs its upper file system, neither on fsync nor when it is
	// unmounted. A container's upper dir does not outlive the container, nor a container the
	// host's crash, so those syncs bought nothing; the one at unmount, a flush of the whole
	// file system holding DiskDir, made every destroy wait for the disk (Linux 5.10+; the
	// unprivileged overlay mount this backend needs came with 5.11).
	overlay := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,volatile", opts.LowerDir, opts.UpperDir, opts.WorkDir)
	if opts.UserXattr {
		overlay += ",userxattr"
	}
	if !cs.Privileged && opts.UIDMapSize == 0 {
		return nil, fmt.Errorf("%w: an unprivileged container needs a uid mapping of size > 0", isolation.ErrInvalidSpec)
	}

	env := []string{defaultPath}
	env = containerinit.MergeEnv(env, cs.Env)
	caps := append([]string(nil), DefaultCapabilities...)
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: cs.Handle,
		Root:     &specs.Root{Path: opts.RootfsPath},
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Env:  env,
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:    caps,
				Effective:   caps,
				Inheritable: caps,
				Permitted:   caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: defaultNofile, Soft: defaultNofile}},
			NoNewPrivileges: true,
		},
		Mounts: defaultMounts(),
		Annotations: map[string]string{
			annotationHandle:  cs.Handle,
			annotationOverlay: overlay,
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.NetworkNamespace},
			},
			Devices:       defaultDevices(),
			CgroupsPath:   opts.CgroupsPath,
			Resources:     resourcesFor(cs.Limits),
			MaskedPaths:   append([]string(nil), MaskedPaths...),
			ReadonlyPaths: append([]string(nil), ReadonlyPaths...),
			Seccomp:       defaultSeccomp(),
		},
	}
	if !cs.Privileged {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: opts.UIDMapStart, Size: opts.UIDMapSize}}
		s.Linux.UIDMappings = m
		s.Linux.GIDMappings = append([]specs.LinuxIDMapping(nil), m...)
		// sysfs cannot be mounted read-write by a user namespace that does not own the
		// network namespace's devices, and should not be anyway: it is read-only below.
	}
	for _, b := range cs.BindMounts {
		opt := []string{"rbind", "nosuid", "nodev"}
		if b.ReadOnly {
			opt = append(opt, "ro")
		} else {
			opt = append(opt, "rw")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: path.Clean(b.DstPath), Type: "bind", Source: b.SrcPath, Options: opt})
	}
	return s, nil
}

func defaultMounts() []specs.Mount { return containerinit.StandardMounts() }

func defaultDevices() []specs.LinuxDevice { return containerinit.StandardDevices() }

// cpuSharesFor maps Diego's cpu_weight (1–100) onto cgroup v1 cpu.shares the way Garden does:
// weight 100 is the default 1024 shares; 0 leaves the kernel default.
func cpuSharesFor(weight uint32) uint64 {
	if weight == 0 {
		return 0
	}
	s := uint64(weight) * 1024 / 100
	if s < 2 {
		s = 2
	}
	return s
}

func resourcesFor(l isolation.Limits) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if l.MemoryBytes > 0 {
		limit := int64(l.MemoryBytes)
		r.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	}
	if shares := cpuSharesFor(l.CPUWeight); shares > 0 {
		r.CPU = &specs.LinuxCPU{Shares: &shares}
	}
	if l.Pids > 0 {
		pids := int64(l.Pids)
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return r
}

func defaultSeccomp() *specs.LinuxSeccomp {
	eperm := uint(errnoEPERM)
	enosys := uint(errnoENOSYS)
	names := append([]string(nil), DeniedSyscalls...)
	sort.Strings(names)
	sc := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchAARCH64},
		Syscalls: []specs.LinuxSyscall{
			{Names: names, Action: specs.ActErrno, ErrnoRet: &eperm},
			// clone3 passes its flags in memory, where a filter cannot see them; ENOSYS makes
			// libc fall back to clone, whose flags are checked below.
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		},
	}
	for _, f := range cloneNamespaceFlags {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{
			Names:    []string{"clone"},
			Action:   specs.ActErrno,
			ErrnoRet: &eperm,
			Args:     []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}},
		})
	}
	return sc
}
