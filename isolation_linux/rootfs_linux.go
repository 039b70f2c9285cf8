package isolationlinux

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
	"github.com/trellis-run/trellis/isolation_linux/image"
)

// layerCache unpacks each stack once into a read-only directory used as the overlay's lower
// layer. Unprivileged containers get a copy whose ownership is shifted into the container uid
// range (container uid N is host uid UIDMapStart+N), so that files keep their owners inside
// the user namespace; privileged containers use an unshifted copy. A layer's name is derived
// from the stack's source path, its size and mtime and the shift, so a changed stack is
// unpacked again instead of being served stale.
type layerCache struct {
	dir    string
	stacks map[string]string

	mu      sync.Mutex
	pending map[string]*sync.Mutex
}

func newLayerCache(dir string, stacks map[string]string) (*layerCache, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("layer cache %s: %w", dir, err)
	}
	return &layerCache{dir: dir, stacks: stacks, pending: map[string]*sync.Mutex{}}, nil
}

// get returns the lower directory for stack, unpacking it first if needed. shift is 0 for
// privileged containers. Errors: isolation.ErrInvalidSpec (unknown stack), or why unpacking
// failed.
func (lc *layerCache) get(stack string, shift uint32) (string, error) {
	src, ok := lc.stacks[stack]
	if !ok {
		return "", fmt.Errorf("%w: RootFS preloaded:%s: no such stack on this cell", isolation.ErrInvalidSpec, stack)
	}
	st, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("stack %s: %w", stack, err)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d\x00%d", src, st.Size(), st.ModTime().UnixNano(), shift)))
	key := stack + "-" + hex.EncodeToString(sum[:8])
	final := filepath.Join(lc.dir, key)

	lc.mu.Lock()
	m := lc.pending[key]
	if m == nil {
		m = &sync.Mutex{}
		lc.pending[key] = m
	}
	lc.mu.Unlock()
	m.Lock()
	defer m.Unlock()

	if _, err := os.Stat(filepath.Join(final, "rootfs")); err == nil {
		return filepath.Join(final, "rootfs"), nil
	}
	tmp, err := os.MkdirTemp(lc.dir, ".unpack-"+stack+"-")
	if err != nil {
		return "", fmt.Errorf("stack %s: %w", stack, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o711); err != nil {
		return "", err
	}
	rootfs := filepath.Join(tmp, "rootfs")
	if st.IsDir() {
		err = copyTree(src, rootfs)
	} else {
		err = untarFile(src, rootfs)
	}
	if err != nil {
		return "", fmt.Errorf("unpacking stack %s from %s: %w", stack, src, err)
	}
	if shift != 0 {
		if err := shiftOwnership(rootfs, shift); err != nil {
			return "", fmt.Errorf("shifting stack %s into the container uid range: %w", stack, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(filepath.Join(final, "rootfs")); statErr == nil {
			return filepath.Join(final, "rootfs"), nil // another backend won the race
		}
		return "", fmt.Errorf("stack %s: %w", stack, err)
	}
	return filepath.Join(final, "rootfs"), nil
}

// copyTree copies a directory tree, keeping modes, owners, symlinks and hard links as copies.
// cp -a is the tool that gets every corner (xattrs, sparse files, device nodes) right.
func copyTree(src, dst string) error {
	out, err := exec.Command("cp", "-a", "--", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// untarFile unpacks a (possibly gzip-compressed) tarball into dst. Entries are kept inside
// dst: names are cleaned as if rooted there, and no entry is written through a symlink.
func untarFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(src, ".gz") || strings.HasSuffix(src, ".tgz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer gz.Close()
		r = gz
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	rootFd, err := unix.Open(dst, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFd)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + hdr.Name)
		if name == "/" {
			continue
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			continue // device nodes come from the container's /dev, never from a layer
		}
		e := entryOf(hdr)
		if e == nil {
			continue
		}
		if err := containerinit.ExtractEntry(rootFd, e, tr, name, "/", nil); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

// shiftOwnership adds shift to the owner and group of every file below root.
func shiftOwnership(root string, shift uint32) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		mode := st.Mode
		if err := unix.Lchown(p, int(st.Uid+shift), int(st.Gid+shift)); err != nil {
			return err
		}
		// chown clears set-id bits of regular files; put them back.
		if d.Type().IsRegular() && mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return unix.Chmod(p, mode&0o7777)
		}
		return nil
	})
}

// BuildBusyboxStack makes dir a minimal root filesystem from the host's statically linked
// busybox (Debian's busybox-static): /bin/busybox with a symlink for every applet,
// /etc/passwd and /etc/group with root and vcap (uid and gid 2000, home /home/vcap), a
// world-writable /tmp, and the /dev, /proc and /sys mount points. busybox defaults to
// /bin/busybox. Tests and `make run` use it as the "busybox" stack.
func BuildBusyboxStack(dir, busybox string) error {
	if busybox == "" {
		busybox = "/bin/busybox"
	}
	real, err := filepath.EvalSymlinks(busybox)
	if err != nil {
		return fmt.Errorf("busybox stack: %w (install busybox-static)", err)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "root", "home/vcap", "tmp", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "var/tmp"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o1777); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "root"), 0o700); err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(dir, "home/vcap"), 2000, 2000); err != nil {
		return err
	}
	bin := filepath.Join(dir, "bin/busybox")
	if err := copyFile(real, bin, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(real, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		p := filepath.Join(dir, applet)
		if p == bin {
			continue
		}
		rel, err := filepath.Rel(filepath.Dir(p), bin)
		if err != nil {
			return err
		}
		if err := os.Symlink(rel, p); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nvcap:x:2000:\nnogroup:x:65534:\n",
		"etc/hosts":    "127.0.0.1\tlocalhost\n",
		"etc/hostname": "localhost\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// imageLayers is the backend's side of docker:// and oci:// root filesystems: the cell's
// image store (isolation_linux/image), opened on first use, and the Image each container
// holds, by handle, so that its layers stay cached until it is destroyed.
type imageLayers struct {
	cfg image.Config
	log *slog.Logger

	mu    sync.Mutex
	store *image.Store
	err   error // why the store could not be opened, the last time it was tried
	held  map[string]*image.Image
}

// newImageLayers prepares the image side of a backend with cfg: the store shifts ownership
// into the backend's uid range and logs to log unless Images.Logger is set.
func newImageLayers(cfg Config, log *slog.Logger) *imageLayers {
	ic := cfg.Images
	ic.UIDMap = image.UIDMap{Start: cfg.UIDMapStart, Size: cfg.UIDMapSize}
	if ic.Logger == nil {
		ic.Logger = log
	}
	return &imageLayers{cfg: ic, log: log, held: map[string]*image.Image{}}
}

// open returns the store, opening it the first time. Errors: isolation.ErrUnsupported when
// the backend has no image directory, or why the store cannot be opened.
func (il *imageLayers) open() (*image.Store, error) {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.store != nil {
		return il.store, nil
	}
	if il.cfg.Dir == "" {
		return nil, fmt.Errorf("%w: image root filesystems: Config.Images.Dir is not set on this cell", isolation.ErrUnsupported)
	}
	st, err := image.NewStore(il.cfg)
	if err != nil {
		il.err = err
		return nil, fmt.Errorf("opening the image store: %w", err)
	}
	il.store = st
	return st, nil
}

// pull pulls ref for the container handle and holds the image until release(handle).
// Progress lines go to progress (when not nil). Privileged containers get the image's own
// ownership; the others ownership shifted into the container uid range. Errors: the image
// store's (registry refusals, digest mismatches; see image.Store.Pull), with
// isolation.ErrInvalidSpec for a malformed reference.
func (il *imageLayers) pull(ctx context.Context, handle, ref string, auth isolation.ImageAuth, privileged bool, progress io.Writer) (*image.Image, error) {
	st, err := il.open()
	if err != nil {
		return nil, err
	}
	var opts []image.PullOption
	if privileged {
		opts = append(opts, image.Unshifted())
	}
	report := newPullReporter(ref, progress)
	img, err := st.Pull(ctx, ref, image.Credentials{Username: auth.Username, Password: auth.Password}, report.progress, opts...)
	if err != nil {
		if image.IsInvalidReference(err) {
			return nil, fmt.Errorf("%w: RootFS: %w", isolation.ErrInvalidSpec, err)
		}
		return nil, fmt.Errorf("pulling image: %w", err)
	}
	report.done(img)
	il.mu.Lock()
	if old := il.held[handle]; old != nil {
		old.Release()
	}
	il.held[handle] = img
	il.mu.Unlock()
	return img, nil
}

// reacquire holds again the image a container surviving a restart uses (its layers must not
// be collected while it runs). Errors: the store cannot be opened, or no longer has the image.
func (il *imageLayers) reacquire(handle, id string) error {
	st, err := il.open()
	if err != nil {
		return err
	}
	img, err := st.Acquire(id)
	if err != nil {
		return err
	}
	il.mu.Lock()
	il.held[handle] = img
	il.mu.Unlock()
	return nil
}

// release lets the layers of handle's image be collected; unknown handles are ignored.
func (il *imageLayers) release(handle string) {
	il.mu.Lock()
	img := il.held[handle]
	delete(il.held, handle)
	il.mu.Unlock()
	if img != nil {
		img.Release()
	}
}

// close closes the store (if it was opened); held images keep their directories.
func (il *imageLayers) close() error {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.store == nil {
		return nil
	}
	err := il.store.Close()
	il.store = nil
	return err
}

// pullReporter turns image.Progress into lines: one when a layer starts, is cached or
// finishes, and at most one a second per layer in between.
type pullReporter struct {
	ref  string
	w    io.Writer
	last map[int]time.Time
}

func newPullReporter(ref string, w io.Writer) *pullReporter {
	return &pullReporter{ref: ref, w: w, last: map[int]time.Time{}}
}

// progress is called by Store.Pull, never concurrently.
func (r *pullReporter) progress(p image.Progress) {
	if r.w == nil {
		return
	}
	first := r.last[p.Layer].IsZero()
	finished := p.Cached || (p.Total > 0 && p.Done >= p.Total)
	if !first && !finished && time.Since(r.last[p.Layer]) < time.Second {
		return
	}
	r.last[p.Layer] = time.Now()
	fmt.Fprintf(r.w, "%s: %s\n", r.ref, p)
}

func (r *pullReporter) done(img *image.Image) {
	if r.w == nil {
		return
	}
	fmt.Fprintf(r.w, "%s: image %s ready (%d layers)\n", r.ref, img.Digest, len(img.Layers))
}

// imageConfig is the run configuration of img as the isolation interface reports it: TCP
// ports only, since a health check or a port mapping speaks TCP.
func imageConfig(img *image.Image) *isolation.ImageConfig {
	c := img.Config
	out := &isolation.ImageConfig{
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
	}
	for _, p := range c.ExposedPorts {
		if p.Protocol == "tcp" {
			out.ExposedPorts = append(out.ExposedPorts, uint32(p.Port))
		}
	}
	return out
}

// lowerDir returns the overlay's lower directories for the container's RootFS: the cached
// copy of a preloaded stack, or the layers of a pulled image (top first), which the
// container then holds (the image is returned). Errors: as layerCache.get or
// imageLayers.pull.
func (b *Backend) lowerDir(ctx context.Context, cs isolation.ContainerSpec, src rootfsSource) (string, *image.Image, error) {
	if src.image == "" {
		lower, err := b.layers.get(src.stack, uint32(b.rootUID(cs.Privileged)))
		return lower, nil, err
	}
	img, err := b.images.pull(ctx, cs.Handle, src.image, cs.ImageAuth, cs.Privileged, cs.Progress)
	if err != nil {
		return "", nil, err
	}
	return img.LowerDir(), img, nil
}

// reacquireImages holds the images of the containers a previous backend left running, before
// anything can pull or release (and so collect) layers.
func (b *Backend) reacquireImages(ctx context.Context) {
	entries, err := os.ReadDir(b.cfg.StateDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		rec, err := readRecord(b.dir(e.Name()))
		if err != nil || rec.ImageID == "" {
			continue
		}
		if err := b.images.reacquire(rec.Handle, rec.ImageID); err != nil {
			b.log.WarnContext(ctx, "re-acquiring the image of a running container; its layers may be collected", "handle", rec.Handle, "image", rec.ImageID, "err", err)
		}
	}
}
