package isolationtest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// Errors of the in-memory filesystem, wrapped in *fs.PathError like the os package does.
var (
	errNotDir       = errors.New("not a directory")
	errIsDir        = errors.New("is a directory")
	errTooManyLinks = errors.New("too many levels of symbolic links")
	errNoSpace      = errors.New("no space left on device (disk limit)")
)

// maxSymlinks bounds symlink resolution the way Linux's MAXSYMLINKS does.
const maxSymlinks = 40

// fsNode is one inode: a directory, a regular file or a symlink.
type fsNode struct {
	mode    fs.FileMode // type bits and permission bits
	modTime time.Time
	data    []byte             // file content or symlink target; replaced, never mutated in place
	entries map[string]*fsNode // directory entries; nil until the first one
	nlink   int                // directory entries naming a regular file (hard links)
}

func (n *fsNode) isDir() bool     { return n.mode.IsDir() }
func (n *fsNode) isSymlink() bool { return n.mode&fs.ModeSymlink != 0 }

// memFS is a container's filesystem: a tree of nodes rooted at "/". Every path is resolved
// inside the tree, symlinks included, so nothing can name a node outside it. It is not
// goroutine-safe: the owning container's mutex guards it.
type memFS struct {
	root  *fsNode
	used  uint64 // bytes held by regular files (each inode once)
	limit uint64 // 0 = unlimited
}

func newMemFS(limit uint64, now time.Time) *memFS {
	return &memFS{root: &fsNode{mode: fs.ModeDir | 0o755, modTime: now}, limit: limit}
}

// splitPath splits p into components, dropping empty and "." ones (".." stays: it is resolved
// against symlinks during the walk, as POSIX does).
func splitPath(p string) []string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, s := range parts {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// lookup is the result of resolving a path.
type lookup struct {
	path   string  // canonical absolute path, symlinks resolved
	parent *fsNode // directory holding the last component; nil for "/"
	name   string  // last component; "" for "/"
	node   *fsNode // nil when the last component does not exist (its parent does)
}

// resolve walks p from the root. Symlinks in intermediate components are always followed, the
// last one only when followLast; ".." never climbs above the root. A missing last component is
// not an error (node is nil); a missing intermediate one is fs.ErrNotExist.
func (f *memFS) resolve(p string, followLast bool) (lookup, error) {
	if !path.IsAbs(p) {
		return lookup{}, &fs.PathError{Op: "resolve", Path: p, Err: fs.ErrInvalid}
	}
	rem := splitPath(p)
	stack := []*fsNode{f.root}
	var names []string
	links := 0
	for len(rem) > 0 {
		name := rem[0]
		rem = rem[1:]
		if name == ".." {
			if len(names) > 0 {
				names = names[:len(names)-1]
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if !dir.isDir() {
			return lookup{}, &fs.PathError{Op: "resolve", Path: p, Err: errNotDir}
		}
		child := dir.entries[name]
		if child == nil {
			if len(rem) == 0 {
				return lookup{path: joinAbs(append(names, name)), parent: dir, name: name}, nil
			}
			return lookup{}, &fs.PathError{Op: "resolve", Path: p, Err: fs.ErrNotExist}
		}
		if child.isSymlink() && (len(rem) > 0 || followLast) {
			links++
			if links > maxSymlinks {
				return lookup{}, &fs.PathError{Op: "resolve", Path: p, Err: errTooManyLinks}
			}
			target := string(child.data)
			if path.IsAbs(target) {
				names = names[:0]
				stack = stack[:1]
			}
			rem = append(splitPath(target), rem...)
			continue
		}
		names = append(names, name)
		stack = append(stack, child)
	}
	if len(names) == 0 {
		return lookup{path: "/", node: f.root}, nil
	}
	n := len(stack)
	return lookup{path: joinAbs(names), parent: stack[n-2], name: names[len(names)-1], node: stack[n-1]}, nil
}

func joinAbs(names []string) string { return "/" + strings.Join(names, "/") }

// mkdirAll makes directory p and any missing parents with perm.
func (f *memFS) mkdirAll(p string, perm fs.FileMode, now time.Time) error {
	l, err := f.resolve(p, true)
	if errors.Is(err, fs.ErrNotExist) {
		if err := f.mkdirAll(path.Dir(path.Clean(p)), perm, now); err != nil {
			return err
		}
		l, err = f.resolve(p, true)
	}
	if err != nil {
		return err
	}
	if l.node != nil {
		if !l.node.isDir() {
			return &fs.PathError{Op: "mkdir", Path: p, Err: errNotDir}
		}
		return nil
	}
	f.link(l.parent, l.name, &fsNode{mode: fs.ModeDir | perm.Perm(), modTime: now})
	return nil
}

// link puts node into dir under name, releasing whatever the name held before.
func (f *memFS) link(dir *fsNode, name string, node *fsNode) {
	if old := dir.entries[name]; old != nil {
		f.release(old)
	}
	if dir.entries == nil {
		dir.entries = make(map[string]*fsNode)
	}
	dir.entries[name] = node
	if node.mode.IsRegular() {
		node.nlink++
		if node.nlink == 1 {
			f.used += uint64(len(node.data))
		}
	}
}

// release drops one reference to n (and, for a directory, to everything below it).
func (f *memFS) release(n *fsNode) {
	switch {
	case n.isDir():
		for _, child := range n.entries {
			f.release(child)
		}
	case n.mode.IsRegular():
		n.nlink--
		if n.nlink == 0 {
			f.used -= uint64(len(n.data))
		}
	}
}

// fits reports whether growing usage by grow bytes (after freeing free bytes) stays in limit.
func (f *memFS) fits(grow, free uint64) bool {
	return f.limit == 0 || f.used-free+grow <= f.limit
}

// writeFile creates or truncates the regular file p (following a final symlink), like
// os.WriteFile: the parent must exist and an existing file keeps its mode.
func (f *memFS) writeFile(p string, data []byte, perm fs.FileMode, now time.Time) error {
	l, err := f.resolve(p, true)
	if err != nil {
		return err
	}
	if l.node == nil {
		if !f.fits(uint64(len(data)), 0) {
			return &fs.PathError{Op: "write", Path: p, Err: errNoSpace}
		}
		f.link(l.parent, l.name, &fsNode{mode: perm.Perm(), modTime: now, data: data})
		return nil
	}
	if l.node.isDir() {
		return &fs.PathError{Op: "write", Path: p, Err: errIsDir}
	}
	if !f.fits(uint64(len(data)), uint64(len(l.node.data))) {
		return &fs.PathError{Op: "write", Path: p, Err: errNoSpace}
	}
	f.used = f.used - uint64(len(l.node.data)) + uint64(len(data))
	l.node.data = data
	l.node.modTime = now
	return nil
}

// readFile returns the content of the regular file p.
func (f *memFS) readFile(p string) ([]byte, error) {
	l, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	if l.node == nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	if l.node.isDir() {
		return nil, &fs.PathError{Op: "read", Path: p, Err: errIsDir}
	}
	return l.node.data, nil
}

// readDir returns the sorted entry names of directory p.
func (f *memFS) readDir(p string) ([]string, error) {
	l, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	if l.node == nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	if !l.node.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: errNotDir}
	}
	names := make([]string, 0, len(l.node.entries))
	for name := range l.node.entries {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// tarEntry is one archive member read ahead of applying it, so the tar stream is consumed
// without holding the container's lock.
type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// archiveName maps an archive member name to its path under dst: the name is cleaned as if
// rooted at dst, so ".." and absolute names cannot climb above dst.
func archiveName(dst, name string) string {
	return path.Join(dst, path.Clean("/"+name))
}

// apply unpacks one archive member under dst (an absolute, cleaned directory path that exists).
func (f *memFS) apply(dst string, e tarEntry) error {
	hdr := e.hdr
	target := archiveName(dst, hdr.Name)
	perm := fs.FileMode(hdr.Mode).Perm()
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := f.mkdirAll(target, perm, hdr.ModTime); err != nil {
			return err
		}
		l, err := f.resolve(target, true)
		if err != nil {
			return err
		}
		l.node.mode = fs.ModeDir | perm
		l.node.modTime = hdr.ModTime
		return nil
	case tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("member %q: type %q is not supported", hdr.Name, hdr.Typeflag)
	}
	if target == dst {
		return fmt.Errorf("member %q: names the destination directory itself", hdr.Name)
	}
	if err := f.mkdirAll(path.Dir(target), 0o755, hdr.ModTime); err != nil {
		return err
	}
	l, err := f.resolve(target, false)
	if err != nil {
		return err
	}
	var free uint64
	if l.node != nil {
		if l.node.isDir() {
			return &fs.PathError{Op: "extract", Path: target, Err: errIsDir}
		}
		if l.node.mode.IsRegular() && l.node.nlink == 1 {
			free = uint64(len(l.node.data))
		}
	}
	var node *fsNode
	switch hdr.Typeflag {
	case tar.TypeReg:
		if !f.fits(uint64(len(e.data)), free) {
			return &fs.PathError{Op: "extract", Path: target, Err: errNoSpace}
		}
		node = &fsNode{mode: perm, modTime: hdr.ModTime, data: e.data}
	case tar.TypeSymlink:
		node = &fsNode{mode: fs.ModeSymlink | 0o777, modTime: hdr.ModTime, data: []byte(hdr.Linkname)}
	case tar.TypeLink:
		src, err := f.resolve(archiveName(dst, hdr.Linkname), false)
		if err != nil {
			return err
		}
		if src.node == nil || !src.node.mode.IsRegular() {
			return fmt.Errorf("member %q: hard link target %q is not a regular file in the archive",
				hdr.Name, hdr.Linkname)
		}
		node = src.node
	}
	f.link(l.parent, l.name, node)
	return nil
}

// archive writes p (not following a final symlink) as a tar stream whose member names start
// with p's base name; directories are walked in name order.
func (f *memFS) archive(p string) (*bytes.Buffer, error) {
	l, err := f.resolve(p, false)
	if err != nil {
		return nil, err
	}
	if l.node == nil {
		return nil, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
	}
	base := l.name
	if l.path == "/" {
		base = "."
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeTree(tw, base, l.node); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

func writeTree(tw *tar.Writer, name string, n *fsNode) error {
	hdr := &tar.Header{Name: name, Mode: int64(n.mode.Perm()), ModTime: n.modTime, Format: tar.FormatPAX}
	switch {
	case n.isDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name = name + "/"
	case n.isSymlink():
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = string(n.data)
	default:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(n.data))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg {
		if _, err := tw.Write(n.data); err != nil {
			return err
		}
	}
	if !n.isDir() {
		return nil
	}
	names := make([]string, 0, len(n.entries))
	for child := range n.entries {
		names = append(names, child)
	}
	sort.Strings(names)
	for _, child := range names {
		if err := writeTree(tw, name+"/"+child, n.entries[child]); err != nil {
			return err
		}
	}
	return nil
}

// readArchiveEntry reads the next member of tr with its content (for regular files).
func readArchiveEntry(tr *tar.Reader) (tarEntry, error) {
	hdr, err := tr.Next()
	if err != nil {
		return tarEntry{}, err
	}
	e := tarEntry{hdr: hdr}
	if hdr.Typeflag == tar.TypeReg {
		if hdr.Size < 0 {
			return tarEntry{}, fmt.Errorf("member %q: negative size", hdr.Name)
		}
		e.data = make([]byte, 0, min(hdr.Size, 1<<20))
		buf := bytes.NewBuffer(e.data)
		if _, err := io.Copy(buf, tr); err != nil {
			return tarEntry{}, fmt.Errorf("member %q: %w", hdr.Name, err)
		}
		e.data = buf.Bytes()
	}
	return e, nil
}
