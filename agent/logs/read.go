package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readChunk is how much a reader copies out of a file per lock hold.
const readChunk = 256 << 10

// Read calls fn with every stored line of key, oldest first (the rotated file, then the
// current one). Without follow it returns once it has reached the end. With follow it then
// waits for new lines and passes them on as they are written, across rotations, until ctx
// ends (it returns ctx's error), the log is removed or the store closed (it returns nil), or
// fn fails (it returns fn's error). A follower that falls more than one rotation behind skips
// the lines that were rotated away.
// Errors: ErrInvalid (bad key), ErrNotFound (no log for key), ErrClosed (store closed), a read
// error, fn's error, ctx's error.
func (s *Store) Read(ctx context.Context, key string, follow bool, fn func(Line) error) error {
	lf, err := s.existing(key)
	if err != nil {
		return err
	}
	r := reader{lf: lf, buf: make([]byte, readChunk)}
	r.gen, r.wait = lf.startGen()
	r.gen-- // start with the rotated file
	for {
		chunk, wait, done, err := r.next()
		if err != nil {
			return fmt.Errorf("read log %s: %w", key, err)
		}
		if len(chunk) > 0 {
			if err := r.emit(chunk, fn); err != nil {
				return err
			}
			continue
		}
		if done {
			return r.flush(fn)
		}
		if !follow {
			return r.flush(fn)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

// reader is one Read's position: offset off in the file of generation gen.
type reader struct {
	lf    *logFile
	gen   int64
	off   int64
	buf   []byte
	carry []byte // a line begun in the previous chunk
	wait  <-chan struct{}
}

func (lf *logFile) startGen() (int64, <-chan struct{}) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.gen, lf.notify
}

// next copies the next bytes out of the files. With none available it returns the channel
// to wait on, or done when the log was removed or the store closed.
func (r *reader) next() (chunk []byte, wait <-chan struct{}, done bool, err error) {
	lf := r.lf
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.removed || lf.closed {
		return nil, nil, true, nil
	}
	for {
		if r.gen < lf.gen-1 {
			// More than one rotation happened since the last read: the lines in between are
			// gone. Continue with the oldest file that still exists.
			r.gen, r.off = lf.gen-1, 0
		}
		path := lf.path
		if r.gen < lf.gen {
			path += ".1"
		}
		n, err := readAt(path, r.off, r.buf)
		if err != nil {
			return nil, nil, false, err
		}
		if n > 0 {
			r.off += int64(n)
			return r.buf[:n], nil, false, nil
		}
		if r.gen == lf.gen {
			return nil, lf.notify, false, nil
		}
		r.gen, r.off = r.gen+1, 0
	}
}

// readAt reads up to len(buf) bytes of path from off; a missing file reads as empty.
func readAt(path string, off int64, buf []byte) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, err
	}
	return n, nil
}

// emit passes the complete lines of carry+chunk to fn and keeps the rest.
func (r *reader) emit(chunk []byte, fn func(Line) error) error {
	data := chunk
	if len(r.carry) > 0 {
		r.carry = append(r.carry, chunk...)
		data = r.carry
	}
	for {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		if err := fn(parseLine(data[:nl])); err != nil {
			return err
		}
		data = data[nl+1:]
	}
	r.carry = append(r.carry[:0], data...)
	return nil
}

// flush passes on a final line without its newline (a torn write).
func (r *reader) flush(fn func(Line) error) error {
	if len(r.carry) == 0 {
		return nil
	}
	l := parseLine(r.carry)
	r.carry = r.carry[:0]
	return fn(l)
}
