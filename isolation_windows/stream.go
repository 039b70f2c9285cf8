package isolationwindows

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

// unpackTar unpacks the archive r into the container directory dst. Member names are rooted
// at dst ("../x" and "/x" land at dst/x; a name climbing in its middle is clamped at dst) and
// links on the way are resolved inside the container (fsRoot.resolve), so nothing lands
// outside it. A link member may point anywhere: it is only ever followed inside the container.
func unpackTar(ctx context.Context, root fsRoot, dst string, r io.Reader) error {
	// A missing destination is made, with its parents, as the other backends do (a download
	// action names where a droplet goes, e.g. /app, which need not exist yet).
	dstC, dstHost, err := root.resolve(dst, true, true)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dstHost, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return invalidf("StreamIn destination %q: %v", dst, err)
	}
	if fi, err := os.Stat(dstHost); err != nil || !fi.IsDir() {
		return invalidf("StreamIn destination %q: not a directory in the container", dst)
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalidf("StreamIn: reading the archive: %v", err)
		}
		rel := path.Clean("/" + strings.ReplaceAll(hdr.Name, `\`, "/"))
		if rel == "/" {
			continue
		}
		cpath := path.Join(dstC, rel)
		// Resolve the parent (creating it), then handle the last component without following it.
		parentC, parentHost, err := root.resolve(path.Dir(cpath), true, true)
		if err != nil {
			return fmt.Errorf("StreamIn %q: %w", hdr.Name, err)
		}
		if err := os.MkdirAll(parentHost, 0o755); err != nil {
			return fmt.Errorf("StreamIn %q: making %s: %w", hdr.Name, parentC, err)
		}
		target := filepath.Join(parentHost, path.Base(cpath))
		if err := unpackMember(root, tr, hdr, dstC, target); err != nil {
			return fmt.Errorf("StreamIn %q: %w", hdr.Name, err)
		}
	}
}

func unpackMember(root fsRoot, tr *tar.Reader, hdr *tar.Header, dstC, target string) error {
	mode := fs.FileMode(hdr.Mode) & fs.ModePerm
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := os.Lstat(target); err == nil && !fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return err
			}
		}
		if err := os.Mkdir(target, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return os.Chmod(target, mode|0o700)
	case tar.TypeReg, tar.TypeRegA:
		removeLink(target)
		f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode|0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Chmod(target, mode|0o600)
	case tar.TypeSymlink:
		removeLink(target)
		if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.Symlink(filepath.FromSlash(hdr.Linkname), target)
	case tar.TypeLink:
		// The link target is a member name of this archive, rooted at the destination too.
		_, src, err := root.resolve(path.Join(dstC, path.Clean("/"+hdr.Linkname)), false, false)
		if err != nil {
			return err
		}
		removeLink(target)
		if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.Link(src, target)
	default:
		return invalidf("member type %q is not supported (regular files, directories and links only)", hdr.Typeflag)
	}
}

// removeLink removes target when it is a symlink, so a member never writes through a link
// already in place.
func removeLink(target string) {
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		os.Remove(target)
	}
}

// packTar returns the container path src (a file or a directory tree) as a tar stream whose
// members are named after src's base name. A missing path is isolation.ErrNotFound, reported
// before any byte is read. The walk does not follow links: they are archived as links.
func packTar(root fsRoot, src string) (io.ReadCloser, error) {
	srcC, host, err := root.resolve(src, true, false)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: StreamOut %q: no such file or directory in the container", isolation.ErrNotFound, src)
	}
	if err != nil {
		return nil, fmt.Errorf("StreamOut %q: %w", src, err)
	}
	base := path.Base(srcC)
	if srcC == "/" {
		base = "."
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTree(pw, host, base, fi))
	}()
	return pr, nil
}

func writeTree(w io.Writer, host, base string, rootInfo fs.FileInfo) error {
	tw := tar.NewWriter(w)
	add := func(p, name string, fi fs.FileInfo) error {
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			link = filepath.ToSlash(l)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, hdr.Size)
		return err
	}
	if !rootInfo.IsDir() {
		if err := add(host, base, rootInfo); err != nil {
			return err
		}
		return tw.Close()
	}
	err := filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(host, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return add(p, path.Join(base, filepath.ToSlash(rel)), fi)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
