package isolationlinux

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
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
		if err := containerinit.ExtractEntry(rootFd, tr, hdr, name, "/"); err != nil {
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

// sealedInit copies the init binary into a memory file and seals it against every change, so
// that what containers execute can be altered neither through the file on disk nor through
// the memory file.
func sealedInit(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("init binary: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("trellis-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("trellis-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "trellis-init")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copying init binary: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing init binary: %w", err)
	}
	return f, nil
}
