package isolationlinux

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
	"github.com/trellis-run/trellis/isolation_linux/network"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// dirTrash, <StateDir>/@trash, holds destroyed containers' state dirs while they are removed
// (resources.Trash); "@" is not allowed in handles.
const dirTrash = "@trash"

// Files and directories in a container's state dir, <StateDir>/<handle>/.
const (
	fileConfig   = "config.json" // the OCI runtime-spec document; immutable
	fileState    = "state.json"  // containerRecord; rewritten atomically
	fileSocket   = "init.sock"   // the init's seqpacket socket
	fileInitLog  = "init.log"    // the init's own log (stderr)
	fileNetNS    = "netns"       // bind mount of the init's network namespace (bridge networking)
	dirProcesses = "processes"   // processes/<id>/{stdout,stderr,exit}
	fileStdout   = "stdout"
	fileStderr   = "stderr"
	fileExit     = "exit"
)

// MaybeRunInit runs the container init and exits if this process was started as one;
// otherwise it returns at once. The init normally takes over earlier, from package
// containerinit's initialisation, which every binary linking this package runs before the
// program's heavier packages initialise and before main; calling MaybeRunInit first in main
// (and in TestMain of packages whose tests create containers) states that contract where it
// is relied on.
func MaybeRunInit() {
	if containerinit.IsInit() {
		os.Exit(containerinit.Main())
	}
}

// Backend is the Linux isolation backend. It keeps no state that matters in memory: every
// container lives in its state dir and its init, so a new Backend over the same Config finds
// them all. Its methods are safe for concurrent use.
type Backend struct {
	cfg     Config
	log     *slog.Logger
	init    *os.File // sealed copy of the init binary
	spawner *spawner // starts the inits (spawner_linux.go)
	layers  *layerCache
	images  *imageLayers
	disk    *diskDirs
	trash   *resources.Trash // <StateDir>/@trash: destroyed containers' state dirs
	spares  *spareDirs       // directories made ahead of Create (spare_linux.go)
	net     *network.Network
	netErr  error     // why bridge networking is unavailable, when net is nil
	pool    *initPool // nil when Config.InitPoolSize is 0 or mounts do not propagate

	// The seccomp profile BuildSpec puts in every config.json, compiled once for all inits.
	seccompProfile *specs.LinuxSeccomp
	seccompProgram []byte // containerinit.EncodeSeccomp

	mu       sync.Mutex
	creating map[string]bool
}

var _ isolation.Backend = (*Backend)(nil)

// New checks cfg, prepares the state, layer and disk directories and seals a copy of the init
// binary. Bridge networking that cannot be set up (e.g. missing CNI plugins) is not fatal:
// Create then refuses bridge containers with isolation.ErrUnsupported, saying why.
// Errors: isolation.ErrInvalidSpec (cfg), or why a directory or the init binary is unusable.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	for _, d := range []string{cfg.StateDir, cfg.DiskDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("isolation_linux: %w", err)
		}
	}
	for _, d := range []string{cfg.StateDir, cfg.LayerCacheDir, cfg.DiskDir} {
		if err := checkTraversable(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if err := resources.SpreadSubdirs(cfg.StateDir); err != nil {
		logger.Debug("state directory: spreading container directories over the file system is not supported here", "dir", cfg.StateDir, "err", err)
	}
	layers, err := newLayerCache(cfg.LayerCacheDir, cfg.Stacks)
	if err != nil {
		return nil, err
	}
	disk, err := newDiskDirs(cfg.DiskDir)
	if err != nil {
		return nil, err
	}
	initPath := cfg.InitBinary
	if initPath == "" {
		if initPath, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("isolation_linux: finding the init binary: %w", err)
		}
	}
	sealed, kind, err := sealedInit(initPath)
	if err != nil {
		return nil, err
	}
	logger.Debug("container init binary copied", "from", initPath, "copy", kind)
	b := &Backend{
		cfg:      cfg,
		log:      logger,
		init:     sealed,
		spawner:  newSpawner(sealed),
		layers:   layers,
		images:   newImageLayers(cfg, logger),
		disk:     disk,
		creating: map[string]bool{},
	}
	prog, err := containerinit.CompileSeccomp(defaultSeccomp())
	if err != nil {
		sealed.Close()
		return nil, fmt.Errorf("isolation_linux: compiling the seccomp profile: %w", err)
	}
	b.seccompProgram = containerinit.EncodeSeccomp(prog)
	b.seccompProfile = defaultSeccomp()
	if b.trash, err = resources.NewTrash(filepath.Join(cfg.StateDir, dirTrash), logger); err != nil {
		sealed.Close()
		return nil, fmt.Errorf("isolation_linux: %w", err)
	}
	if b.pool, err = newInitPool(ctx, b, cfg.InitPoolSize); err != nil {
		b.trash.Close()
		sealed.Close()
		return nil, err
	}
	b.spares = newSpareDirs(b)
	b.reacquireImages(ctx)
	netCfg := cfg.Network
	if netCfg.Logger == nil {
		netCfg.Logger = logger
	}
	if b.net, err = network.New(netCfg); err != nil {
		b.netErr = err
		logger.WarnContext(ctx, "bridge networking unavailable; only Network none containers can be created", "err", err)
	}
	return b, nil
}

// checkTraversable refuses a directory whose parents an unprivileged container's root (a
// host uid with no other rights) cannot search: its init mounts the overlay by path.
func checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%w: %s is not searchable by others (mode %v); unprivileged containers need o+x on %s and its parents", isolation.ErrInvalidSpec, d, st.Mode().Perm(), dir)
		}
		if d == "/" {
			return nil
		}
	}
}

// Close retires the pool of container inits, ends the init spawner, releases the sealed init
// binary and closes the image store. Containers keep running.
func (b *Backend) Close() error {
	poolErr := b.pool.close()
	b.spawner.close()
	b.spares.close()
	b.trash.Close()
	b.disk.close()
	return errors.Join(poolErr, b.images.close(), b.init.Close())
}

// UninstallNetwork removes what the backend's container network left on the host once no
// container uses it: its bridge and its iptables chains (see network.Network.Uninstall). It is
// for taking a cell out of service and for tests; containers created later set it up again.
// Errors: isolation.ErrInvalidSpec while containers remain attached, or the failing command.
func (b *Backend) UninstallNetwork(ctx context.Context) error {
	if b.net == nil {
		return nil
	}
	return b.net.Uninstall(ctx)
}

// Ping checks that the state dir is usable.
func (b *Backend) Ping(ctx context.Context) error {
	f, err := os.CreateTemp(b.cfg.StateDir, ".ping-")
	if err != nil {
		return fmt.Errorf("isolation_linux: state dir %s is not writable: %w", b.cfg.StateDir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// Capacity reports the host's memory, the disk free under DiskDir and MaxContainers.
func (b *Backend) Capacity(ctx context.Context) (isolation.Capacity, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return isolation.Capacity{}, fmt.Errorf("isolation_linux: sysinfo: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(b.cfg.DiskDir, &st); err != nil {
		return isolation.Capacity{}, fmt.Errorf("isolation_linux: statfs %s: %w", b.cfg.DiskDir, err)
	}
	return isolation.Capacity{
		MemoryBytes:   uint64(si.Totalram) * uint64(si.Unit),
		DiskBytes:     st.Blocks * uint64(st.Bsize),
		MaxContainers: b.cfg.MaxContainers,
	}, nil
}

// containerRecord is state.json: what the backend must remember about a container beyond
// config.json, for a backend started later.
type containerRecord struct {
	Handle      string                  `json:"handle"`
	CreatedAt   time.Time               `json:"created_at"`
	InitPid     int                     `json:"init_pid"`
	InitStart   uint64                  `json:"init_start"` // /proc/<pid>/stat starttime
	Privileged  bool                    `json:"privileged"`
	Network     isolation.NetworkMode   `json:"network"`
	Limits      isolation.Limits        `json:"limits"`
	Properties  isolation.Properties    `json:"properties,omitempty"`
	HostIP      string                  `json:"host_ip,omitempty"`
	ContainerIP string                  `json:"container_ip,omitempty"`
	MappedPorts []isolation.PortMapping `json:"mapped_ports,omitempty"`
	Stopped     bool                    `json:"stopped,omitempty"`
	// ImageID names the image (image.Image.ID) of a docker:// or oci:// RootFS, which a
	// restarted backend holds again; Image is its run configuration.
	ImageID string                 `json:"image_id,omitempty"`
	Image   *isolation.ImageConfig `json:"image,omitempty"`
}

func (b *Backend) dir(handle string) string { return filepath.Join(b.cfg.StateDir, handle) }

// rootUID is the host uid of the container's root.
func (b *Backend) rootUID(privileged bool) int {
	if privileged {
		return 0
	}
	return int(b.cfg.UIDMapStart)
}

// Create makes the container: state dir, cgroup, overlay directories, network namespace and
// init, then networking. A failure at any step undoes the steps before it.
func (b *Backend) Create(ctx context.Context, cs isolation.ContainerSpec) (_ isolation.Container, retErr error) {
	if err := ValidateContainerSpec(cs); err != nil {
		return nil, err
	}
	src, _ := parseRootFS(cs.RootFS)
	if cs.Network != isolation.NetworkNone && b.net == nil {
		return nil, fmt.Errorf("%w: bridge networking is unavailable on this host (use Network none): %v", isolation.ErrUnsupported, b.netErr)
	}
	if n, err := b.count(); err == nil && uint64(n) >= b.cfg.MaxContainers {
		return nil, fmt.Errorf("%w: containers: %d of %d in use", isolation.ErrInsufficientResources, n, b.cfg.MaxContainers)
	}
	if !b.claim(cs.Handle) {
		return nil, fmt.Errorf("%w: container %q is being created", isolation.ErrAlreadyExists, cs.Handle)
	}
	defer b.release(cs.Handle)
	dir := b.dir(cs.Handle)
	spareState, err := b.spares.takeState(b.rootUID(cs.Privileged), dir)
	if err != nil {
		if isolation.IsAlreadyExists(err) {
			return nil, err
		}
		return nil, fmt.Errorf("isolation_linux: create %q: %w", cs.Handle, err)
	}
	defer func() {
		if retErr != nil {
			if err := b.destroy(context.WithoutCancel(ctx), cs.Handle); err != nil {
				b.log.Error("undoing a failed create", "handle", cs.Handle, "err", err)
			}
		}
	}()
	c, err := b.create(ctx, cs, src, dir, spareState)
	if err != nil {
		return nil, fmt.Errorf("isolation_linux: create %q: %w", cs.Handle, err)
	}
	return c, nil
}

func (b *Backend) claim(handle string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.creating[handle] {
		return false
	}
	b.creating[handle] = true
	return true
}

func (b *Backend) release(handle string) {
	b.mu.Lock()
	delete(b.creating, handle)
	b.mu.Unlock()
}

// create makes the container in dir, its state dir, which holds rootfs/ and processes/
// already when it came from a spare (spare_linux.go).
func (b *Backend) create(ctx context.Context, cs isolation.ContainerSpec, src rootfsSource, dir string, spareState bool) (*container, error) {
	rootUID := b.rootUID(cs.Privileged)
	lower, img, err := b.lowerDir(ctx, cs, src)
	if err != nil {
		return nil, err
	}
	var diskDir string
	if cs.Limits.DiskBytes == 0 {
		diskDir = b.spares.takeDisk(rootUID, cs.Handle) // upper/ and work/ included
	}
	if diskDir == "" {
		if diskDir, err = b.disk.dir(cs.Handle, cs.Limits.DiskBytes); err != nil {
			return nil, err
		}
		for _, d := range []string{"upper", "work"} {
			if err := mkdirOwned(filepath.Join(diskDir, d), 0o755, rootUID); err != nil {
				return nil, err
			}
		}
	}
	upper, work := filepath.Join(diskDir, "upper"), filepath.Join(diskDir, "work")
	if !spareState {
		if err := mkdirOwned(filepath.Join(dir, dirProcesses), 0o700, rootUID); err != nil {
			return nil, err
		}
	}
	cgroupPath, err := resources.Path(b.cfg.CgroupParent, cs.Handle)
	if err != nil {
		return nil, err
	}
	spec, err := BuildSpec(cs, SpecOptions{
		// The overlay is mounted on the state dir itself, in the init's mount namespace
		// only, where nothing else uses the path: a directory less to make and remove.
		RootfsPath:  dir,
		LowerDir:    lower,
		UpperDir:    upper,
		WorkDir:     work,
		UserXattr:   img != nil && !cs.Privileged,
		UIDMapStart: b.cfg.UIDMapStart,
		UIDMapSize:  b.cfg.UIDMapSize,
		CgroupsPath: cgroupPath,
	})
	if err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, fileConfig), spec); err != nil {
		return nil, err
	}
	rec := containerRecord{
		Handle:     cs.Handle,
		CreatedAt:  time.Now().UTC(),
		Privileged: cs.Privileged,
		Network:    cs.Network,
		Limits:     cs.Limits,
		Properties: copyProperties(cs.Properties),
	}
	if img != nil {
		rec.ImageID, rec.Image = img.ID, imageConfig(img)
	}
	if err := b.startInit(ctx, dir, &rec, spec); err != nil {
		return nil, err
	}
	if cs.Network != isolation.NetworkNone {
		res, err := b.net.Setup(ctx, cs.Handle, filepath.Join(dir, fileNetNS), cs.NetIn)
		if err != nil {
			return nil, err
		}
		rec.HostIP, rec.ContainerIP, rec.MappedPorts = res.HostIP, res.ContainerIP, res.Ports
		if err := writeJSON(filepath.Join(dir, fileState), &rec); err != nil {
			return nil, err
		}
	}
	return &container{b: b, handle: cs.Handle, dir: dir, privileged: cs.Privileged}, nil
}

// startInit gives the container its cgroup and an init in new namespaces from the sealed
// binary — one from the pool when a fitting one waits there, else a fresh one — places the init
// in the cgroup (cgroupstart_linux.go), hands it the container (containerinit.StartMessage),
// pins its network namespace and waits for it to report ready.
func (b *Backend) startInit(ctx context.Context, dir string, rec *containerRecord, spec *specs.Spec) error {
	sockPath := filepath.Join(dir, fileSocket)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sockPath, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("init socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		return fmt.Errorf("init socket: %w", err)
	}
	defer lf.Close()
	if err := os.Chmod(sockPath, 0o600); err != nil {
		return err
	}
	cfgFile, err := os.Open(filepath.Join(dir, fileConfig))
	if err != nil {
		return err
	}
	defer cfgFile.Close()
	procDir, err := os.Open(filepath.Join(dir, dirProcesses))
	if err != nil {
		return err
	}
	defer procDir.Close()
	logFile, err := os.OpenFile(filepath.Join(dir, fileInitLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer syncR.Close()
	defer syncW.Close()

	// A pooled init that waits in a cgroup of its own (v1) takes no migration: its cgroup is
	// renamed to the handle and given the container's limits. Any other pooled init was born in
	// the backend's cgroups and is moved into a new container cgroup; a fresh one is born in it
	// where the kernel can do that (v2), else moved (v1).
	si := b.pool.take(rec.Privileged, hostPaths(spec))
	defer b.pool.refilled() // once this init is started (or not)
	var cgroup *resources.Cgroup
	if si != nil && si.cgroup != nil {
		if cgroup, err = b.pool.adopt(si, rec.Handle, rec.Limits); err != nil {
			b.log.WarnContext(ctx, "adopting a pooled init's cgroup failed; starting a fresh init", "handle", rec.Handle, "err", err)
			b.pool.retire(si)
			si, cgroup = nil, nil
		}
	}
	birth := &cgroupBirth{cg: cgroup, adopted: cgroup != nil}
	if cgroup == nil {
		if cgroup, err = resources.New(b.cfg.CgroupParent, rec.Handle, rec.Limits); err != nil {
			if si != nil {
				b.pool.retire(si)
			}
			return err
		}
		birth.cg = cgroup
	}
	if si == nil {
		if birth, err = planCgroupBirth(cgroup); err != nil {
			return fmt.Errorf("%w: starting init: %v", ErrInit, err)
		}
		si, err = b.spawnInit(rec.Privileged, birth, logFile, rec.Handle, "")
		birth.close()
		if err != nil {
			return err
		}
	}
	// Closing the start socket before the StartMessage (every early return below) makes the
	// init exit; after it, Create's undo kills the init recorded in state.json.
	defer si.ctl.Close()
	rec.InitPid, rec.InitStart = si.pid, si.start
	if err := writeJSON(filepath.Join(dir, fileState), rec); err != nil {
		si.kill()
		b.pool.claimed(si)
		return err
	}
	b.pool.claimed(si)
	if err := birth.place(si.pid); err != nil {
		si.kill()
		return fmt.Errorf("%w: moving init into its cgroup: %v", ErrInit, err)
	}
	msg := containerinit.StartMessage{Handle: rec.Handle}
	if spec.Linux != nil && spec.Linux.Seccomp != nil && reflect.DeepEqual(spec.Linux.Seccomp, b.seccompProfile) {
		msg.Seccomp = b.seccompProgram
	}
	if err := si.handOver(msg, syncW, lf, cfgFile, procDir, logFile); err != nil {
		si.kill()
		return err
	}
	syncW.Close()
	// Networking is torn down after the init is gone, through the network namespace pinned
	// here; a container without networking has nothing to tear down in it.
	if rec.Network != isolation.NetworkNone {
		if err := bindNetNS(si.pid, filepath.Join(dir, fileNetNS)); err != nil {
			return err
		}
	}
	return waitReady(ctx, syncR, b.cfg.StartTimeout, filepath.Join(dir, fileInitLog))
}

// waitReady reads the init's one-line report.
func waitReady(ctx context.Context, r *os.File, timeout time.Duration, logPath string) error {
	type result struct {
		msg containerinit.SyncMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadBytes('\n')
		var m containerinit.SyncMessage
		if err == nil {
			err = json.Unmarshal(line, &m)
		}
		ch <- result{m, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.err != nil {
			return fmt.Errorf("%w: init exited before reporting ready (%v); see %s", ErrInit, res.err, logPath)
		}
		if !res.msg.Ready {
			return fmt.Errorf("%w: init setup failed: %s", ErrInit, res.msg.Error)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("%w: init not ready after %v; see %s", ErrInit, timeout, logPath)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bindNetNS keeps the init's network namespace reachable at path, so networking can be torn
// down after the init is gone.
func bindNetNS(pid int, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o400)
	if err != nil {
		return fmt.Errorf("netns file: %w", err)
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/net", pid), path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pinning network namespace: %w", err)
	}
	return nil
}

// unbindNetNS undoes bindNetNS; a missing file or mount is not an error.
func unbindNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// processStartTime is field 22 of /proc/<pid>/stat, which tells a pid's reuse apart.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func mkdirOwned(path string, mode os.FileMode, uid int) error {
	if err := os.Mkdir(path, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	return os.Lchown(path, uid, uid)
}

// writeJSON replaces path atomically.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v) // compact: config.json is 9 KB indented, and written per container
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func copyProperties(p isolation.Properties) isolation.Properties {
	out := make(isolation.Properties, len(p))
	for k, v := range p {
		out[k] = v
	}
	return out
}

func (b *Backend) count() (int, error) {
	entries, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() && handlePattern.MatchString(e.Name()) {
			n++
		}
	}
	return n, nil
}

// Lookup finds a container by handle, including one created by an earlier Backend.
// Errors: isolation.ErrNotFound.
func (b *Backend) Lookup(ctx context.Context, handle string) (isolation.Container, error) {
	c, err := b.load(handle)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (b *Backend) load(handle string) (*container, error) {
	if !handlePattern.MatchString(handle) || handle == "." || handle == ".." {
		return nil, fmt.Errorf("%w: container %q", isolation.ErrNotFound, handle)
	}
	dir := b.dir(handle)
	rec, err := readRecord(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: container %q", isolation.ErrNotFound, handle)
	}
	if rec.InitStart == 0 {
		// Still being created (or a create that died half-way, which Destroy cleans up).
		return nil, fmt.Errorf("%w: container %q is not created yet", isolation.ErrNotFound, handle)
	}
	return &container{b: b, handle: handle, dir: dir, privileged: rec.Privileged}, nil
}

func readRecord(dir string) (containerRecord, error) {
	var rec containerRecord
	b, err := os.ReadFile(filepath.Join(dir, fileState))
	if err != nil {
		return rec, err
	}
	err = json.Unmarshal(b, &rec)
	return rec, err
}

// List returns the containers whose properties include every pair of filter.
func (b *Backend) List(ctx context.Context, filter isolation.Properties) ([]isolation.Container, error) {
	entries, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("isolation_linux: listing %s: %w", b.cfg.StateDir, err)
	}
	var out []isolation.Container
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := b.dir(e.Name())
		rec, err := readRecord(dir)
		if err != nil || rec.InitStart == 0 {
			continue
		}
		match := true
		for k, v := range filter {
			if got, ok := rec.Properties[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, &container{b: b, handle: rec.Handle, dir: dir, privileged: rec.Privileged})
		}
	}
	return out, nil
}

// BulkMetrics returns the metrics of the named containers; unknown handles are left out.
func (b *Backend) BulkMetrics(ctx context.Context, handles []string) (map[string]isolation.Metrics, error) {
	out := make(map[string]isolation.Metrics, len(handles))
	for _, h := range handles {
		c, err := b.load(h)
		if err != nil {
			continue
		}
		m, err := c.Metrics(ctx)
		if err != nil {
			if isolation.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		out[h] = m
	}
	return out, nil
}

// Destroy kills every process of the container and removes its cgroup, network, disk
// directory and state dir. Destroying an unknown handle returns nil; so does destroying the
// remains of a create that failed half-way.
func (b *Backend) Destroy(ctx context.Context, handle string) error {
	if !handlePattern.MatchString(handle) || handle == "." || handle == ".." {
		return nil
	}
	if err := b.destroy(ctx, handle); err != nil {
		return fmt.Errorf("isolation_linux: destroy %q: %w", handle, err)
	}
	return nil
}

func (b *Backend) destroy(ctx context.Context, handle string) error {
	dir := b.dir(handle)
	rec, recErr := readRecord(dir)
	var errs []error
	// Killing the pid namespace's init makes the kernel kill every process in it, and its
	// mount namespace (the overlay and everything mounted in it) goes with the last of them.
	// That teardown runs in the dying init, on another CPU where there is one, so networking,
	// which does not depend on it, is taken apart meanwhile.
	var dying *dyingProcess
	if recErr == nil && rec.InitPid > 0 {
		dying = signalKill(rec.InitPid, rec.InitStart)
	}
	netns := filepath.Join(dir, fileNetNS)
	if b.net != nil && (recErr != nil || rec.Network != isolation.NetworkNone) {
		if err := b.net.Teardown(ctx, handle, netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unbindNetNS(netns); err != nil {
		errs = append(errs, err)
	}
	// Waiting for the init's exit leaves the cgroup empty, so removing it costs no
	// freeze-and-poll.
	initGone := dying.wait(5 * time.Second)
	if cg, err := resources.Load(b.cfg.CgroupParent, handle); err == nil {
		// The kernel ends every process of a pid namespace before its init has exited, so
		// after the init's exit there is nothing left to kill; otherwise kill what is there.
		if !initGone {
			if err := cg.Kill(); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			if err := cg.Delete(); err != nil {
				errs = append(errs, err)
			}
		}
	} else if !isolation.IsNotFound(err) {
		errs = append(errs, err)
	}
	// The disk directory and the state dir go to the trash, which removes their files in the
	// background; the state dir, with the record a destroy interrupted by a crash needs to find
	// the init and the cgroup again, goes last.
	if err := b.disk.release(handle); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := b.trash.Put(dir); err != nil {
			errs = append(errs, err)
		}
	}
	// The overlay lived in the init's mount namespace, gone with the init: the image's
	// layers may be collected now.
	b.images.release(handle)
	return errors.Join(errs...)
}

// dyingProcess is a process sent SIGKILL, pinned by its pidfd; nil when it was gone already
// (or its pid is another's now) or could not be signalled.
type dyingProcess struct{ fd int }

// signalKill sends SIGKILL to pid if it is still the process started at start.
func signalKill(pid int, start uint64) *dyingProcess {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already
	}
	// The pidfd pins the process: if the start time matches now, the fd is its.
	if st, err := processStartTime(pid); err != nil || st != start {
		unix.Close(fd)
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		unix.Close(fd)
		return nil
	}
	return &dyingProcess{fd: fd}
}

// wait waits, bounded by d, until the process has exited (through its pidfd, so without
// polling), and reports whether it was seen to exit; false for a nil dyingProcess.
func (p *dyingProcess) wait(d time.Duration) bool {
	if p == nil {
		return false
	}
	defer unix.Close(p.fd)
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
	return false
}

// killAndWait sends SIGKILL to pid if it is still the process started at start, and waits,
// bounded, until it has exited. It reports whether the process was seen to exit; false when
// it was gone already (or its pid is another's now), when signalling failed, or after d.
func killAndWait(pid int, start uint64, d time.Duration) bool {
	return signalKill(pid, start).wait(d)
}
