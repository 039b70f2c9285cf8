package isolationwindows

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinkHops bounds symlink resolution, as the kernel's ELOOP does.
const maxLinkHops = 64

// mountPoint maps a container directory to a host directory (a bind mount).
type mountPoint struct {
	Dst string `json:"dst"` // cleaned, slash-separated, absolute container path
	Src string `json:"src"` // host path
}

// fsRoot is a container's file system as the host sees it: the directory that stands for the
// container's "/" plus bind mounts. Every container path is resolved component by component,
// following symlinks (and Windows reparse points that read as links) inside the container:
// a link to "/x" or "C:\x" means the container's /x, and ".." never climbs above "/".
type fsRoot struct {
	dir    string
	mounts []mountPoint
}

// hostPath maps a cleaned container path (no links left to resolve) to the host.
func (r fsRoot) hostPath(cpath string) string {
	best := -1
	for i, m := range r.mounts {
		if (cpath == m.Dst || strings.HasPrefix(cpath, m.Dst+"/")) && (best < 0 || len(m.Dst) > len(r.mounts[best].Dst)) {
			best = i
		}
	}
	if best >= 0 {
		m := r.mounts[best]
		return filepath.Join(m.Src, filepath.FromSlash(strings.TrimPrefix(cpath, m.Dst)))
	}
	return filepath.Join(r.dir, filepath.FromSlash(cpath))
}

// isMountPoint reports whether cpath is exactly a bind mount's destination: its host link is
// the mount, not a link to follow.
func (r fsRoot) isMountPoint(cpath string) bool {
	for _, m := range r.mounts {
		if m.Dst == cpath {
			return true
		}
	}
	return false
}

// linkTargetParts turns a link target into container path components and whether it is
// absolute. Windows forms ("C:\x", "\x", "\\?\C:\x") are absolute in the container.
func linkTargetParts(target string) ([]string, bool) {
	t := strings.ReplaceAll(target, `\`, "/")
	abs := strings.HasPrefix(t, "/")
	if strings.HasPrefix(t, "//?/") || strings.HasPrefix(t, "//./") {
		t = t[4:]
		abs = true
	}
	if len(t) >= 2 && t[1] == ':' {
		t = t[2:]
		abs = true
	}
	var parts []string
	for _, p := range strings.Split(t, "/") {
		if p != "" && p != "." {
			parts = append(parts, p)
		}
	}
	return parts, abs
}

// resolve returns the cleaned container path and host path of cpath with every link resolved
// inside the container. The last component is followed only when followLast. With create,
// missing directories on the way (not the last component) are made with mode 0o755.
func (r fsRoot) resolve(cpath string, followLast, create bool) (string, string, error) {
	pending, _ := linkTargetParts(cpath)
	var done []string
	hops := 0
	for len(pending) > 0 {
		name := pending[0]
		pending = pending[1:]
		if name == ".." {
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		done = append(done, name)
		last := len(pending) == 0
		cur := "/" + strings.Join(done, "/")
		if r.isMountPoint(cur) {
			continue
		}
		host := r.hostPath(cur)
		fi, err := os.Lstat(host)
		if errors.Is(err, fs.ErrNotExist) {
			if create && !last {
				if err := os.Mkdir(host, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return "", "", fmt.Errorf("making %s: %w", cur, err)
				}
			}
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("resolving %s: %w", cur, err)
		}
		if !isLink(host, fi) || (last && !followLast) {
			continue
		}
		if hops++; hops > maxLinkHops {
			return "", "", invalidf("path %q: more than %d symbolic links", cpath, maxLinkHops)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", "", fmt.Errorf("reading link %s: %w", cur, err)
		}
		parts, abs := linkTargetParts(target)
		done = done[:len(done)-1]
		if abs {
			done = done[:0]
		}
		pending = append(parts, pending...)
	}
	c := "/" + strings.Join(done, "/")
	return c, r.hostPath(c), nil
}

// containerPathOf maps a host path below the root directory back to its container path,
// for reporting; ok is false for host paths outside it.
func (r fsRoot) containerPathOf(host string) (string, bool) {
	rel, err := filepath.Rel(r.dir, host)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return path.Clean("/" + filepath.ToSlash(rel)), true
}

// checkDir reports isolation.ErrInvalidSpec when cpath does not name an existing directory.
func (r fsRoot) checkDir(cpath string) (string, error) {
	_, host, err := r.resolve(cpath, true, false)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(host)
	if err != nil || !fi.IsDir() {
		return "", invalidf("Dir %q: not a directory in the container", cpath)
	}
	return host, nil
}

// isLink reports whether the host path is a link to follow: a symlink, or a reparse point
// (a junction) that Readlink can read.
func isLink(host string, fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return true
	}
	if fi.Mode()&fs.ModeIrregular != 0 {
		_, err := os.Readlink(host)
		return err == nil
	}
	return false
}
