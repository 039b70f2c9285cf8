package cache

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A cached artifact is read once per container that downloads it: a droplet that every
// instance of an app fetches is unpacked hundreds of times on a busy cell. When the artifact is
// a gzipped tar, the only use the agent has for it (the download action) is the tar inside, so
// the entry stores that tar, decompressed once when the entry is filled, instead of paying the
// decompression on every hit. The checksums kept are those of the download itself.

// expandGzipTar replaces the verified download dl by the tar it holds when it is a gzipped
// tar, reporting whether it did. Anything else — not gzip, gzip of something other than a
// tar, or a gzip stream that turns out to be corrupt — is left as downloaded, so that the
// reader of the entry sees exactly what it would have seen without this step (a corrupt
// stream still fails there, when it is unpacked). Errors are local I/O failures only.
func (c *Cache) expandGzipTar(dl *downloaded) (bool, error) {
	f, err := os.Open(dl.path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	if magic, err := br.Peek(2); err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return false, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return false, nil
	}
	zbr := bufio.NewReaderSize(zr, 64<<10)
	if head, err := zbr.Peek(512); (err != nil && !errors.Is(err, io.EOF)) || !isTarHeader(head) {
		return false, nil
	}
	out, err := os.CreateTemp(filepath.Join(c.cfg.Dir, tmpDir), "expand-*")
	if err != nil {
		return false, fmt.Errorf("expand the gzipped tar: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	n, err := zbr.WriteTo(out)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return false, fmt.Errorf("expand the gzipped tar: %w", err)
		}
		return false, nil // a corrupt stream: served as downloaded, and fails where it is unpacked
	}
	if err := out.Sync(); err != nil {
		return false, fmt.Errorf("expand the gzipped tar: sync: %w", err)
	}
	if err := out.Close(); err != nil {
		return false, fmt.Errorf("expand the gzipped tar: close: %w", err)
	}
	// Windows refuses to remove a file that is still open: close the download first (the
	// deferred Close then does nothing).
	f.Close()
	if err := os.Remove(dl.path); err != nil {
		os.Remove(out.Name())
		keep = true
		return false, fmt.Errorf("expand the gzipped tar: remove the download: %w", err)
	}
	keep = true
	dl.path, dl.size = out.Name(), n
	return true, nil
}

// isTarHeader reports whether block begins with a POSIX (ustar) or GNU tar header, by the test
// the download action applies (agent/actions), so that an expanded entry is recognised there
// as the tar it is.
func isTarHeader(block []byte) bool {
	if len(block) < 512 || !bytes.HasPrefix(block[257:], []byte("ustar")) {
		return false
	}
	_, err := tar.NewReader(bytes.NewReader(block)).Next()
	return err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
