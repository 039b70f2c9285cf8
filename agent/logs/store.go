package logs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	logSuffix     = ".log"
	rotatedSuffix = ".log.1"
)

// Store keeps the log files of the instances on a cell in one directory. It is safe for
// concurrent use.
type Store struct {
	dir string
	max int64

	mu     sync.Mutex
	closed bool
	files  map[string]*logFile
}

// NewStore opens (creating it if needed) the log directory dir. perInstanceMaxBytes bounds each
// instance's current file; past it the file rotates to a single ".1" file, so an instance
// holds at most about twice the bound. It must be at least 4 KiB.
// Errors: ErrInvalid (bound too small or empty dir), or the directory cannot be created.
func NewStore(dir string, perInstanceMaxBytes int64) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("log store: dir is empty: %w", ErrInvalid)
	}
	if perInstanceMaxBytes < 4<<10 {
		return nil, fmt.Errorf("log store: per-instance bound %d bytes is below the 4096-byte minimum: %w", perInstanceMaxBytes, ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log store: create %s: %w", dir, err)
	}
	return &Store{dir: dir, max: perInstanceMaxBytes, files: make(map[string]*logFile)}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Instance names the log an output belongs to.
type Instance struct {
	// Key names the log file: the instance guid of an LRP instance or the task guid; 1 to 128
	// bytes of [A-Za-z0-9_.-].
	Key string
	// Index is the instance index written on every line, or NoIndex.
	Index int
}

// Writer returns the stdout/stderr writer pair of source for inst. Several writers (sources,
// or successive processes) may share a key; their lines interleave whole. The caller closes
// the Writer to flush partial lines and release the file.
// Errors: ErrInvalid (bad source, key or index), ErrClosed (store closed), or the file cannot
// be opened.
func (s *Store) Writer(source string, inst Instance) (*Writer, error) {
	if err := validSource(source); err != nil {
		return nil, fmt.Errorf("log writer: %w", err)
	}
	if err := validKey(inst.Key); err != nil {
		return nil, fmt.Errorf("log writer: %w", err)
	}
	if inst.Index < NoIndex {
		return nil, fmt.Errorf("log writer for %s: index %d is negative: %w", inst.Key, inst.Index, ErrInvalid)
	}
	lf, err := s.acquire(inst.Key)
	if err != nil {
		return nil, err
	}
	w := &Writer{lf: lf, store: s}
	w.out = lineWriter{w: w, source: source, index: inst.Index, stream: StreamOut}
	w.err = lineWriter{w: w, source: source, index: inst.Index, stream: StreamErr}
	return w, nil
}

// acquire returns the open log file of key, opening it for append.
func (s *Store) acquire(key string) (*logFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("log writer for %s: store %s: %w", key, s.dir, ErrClosed)
	}
	lf := s.fileLocked(key)
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f == nil {
		if err := lf.openLocked(); err != nil {
			return nil, fmt.Errorf("log writer for %s: %w", key, err)
		}
	}
	lf.refs++
	return lf, nil
}

// release drops one writer's reference to lf, closing the file with the last.
func (s *Store) release(lf *logFile) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf.mu.Lock()
	defer lf.mu.Unlock()
	lf.refs--
	if lf.refs > 0 || lf.f == nil {
		return nil
	}
	err := lf.f.Close()
	lf.f = nil
	if err != nil {
		return fmt.Errorf("close log %s: %w", lf.path, err)
	}
	return nil
}

// CloseIdle closes the files of logs not written for idle, however many writers they have:
// an instance that says nothing then holds no file descriptor. The next line written opens
// its file again. It returns how many files it closed.
func (s *Store) CloseIdle(idle time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, lf := range s.files {
		lf.mu.Lock()
		if lf.f != nil && time.Since(lf.written) > idle {
			// Nothing is lost on a failed close of a file opened for append only.
			lf.f.Close()
			lf.f = nil
			n++
		}
		lf.mu.Unlock()
	}
	return n
}

// fileLocked returns the state of key, creating it from what is on disk. s.mu is held.
func (s *Store) fileLocked(key string) *logFile {
	lf := s.files[key]
	if lf == nil {
		lf = &logFile{
			path:   filepath.Join(s.dir, key+logSuffix),
			max:    s.max,
			notify: make(chan struct{}),
		}
		if fi, err := os.Stat(lf.path); err == nil {
			lf.size = fi.Size()
		}
		s.files[key] = lf
	}
	return lf
}

// existing returns the state of key if it has a writer or a file on disk.
func (s *Store) existing(key string) (*logFile, error) {
	if err := validKey(key); err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("read log %s: %w", key, ErrClosed)
	}
	if lf := s.files[key]; lf != nil {
		return lf, nil
	}
	base := filepath.Join(s.dir, key)
	for _, p := range []string{base + logSuffix, base + rotatedSuffix} {
		if _, err := os.Stat(p); err == nil {
			return s.fileLocked(key), nil
		}
	}
	return nil, fmt.Errorf("read log %s: %w", key, ErrNotFound)
}

// Remove deletes the log of key (both files). Open writers of the key fail from then on with
// ErrClosed; followers return nil. Removing an unknown key is not an error.
// Errors: ErrInvalid (bad key), or a file cannot be deleted.
func (s *Store) Remove(key string) error {
	if err := validKey(key); err != nil {
		return fmt.Errorf("remove log: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lf := s.files[key]
	delete(s.files, key)
	var errs []error
	if lf != nil {
		lf.mu.Lock()
		lf.removed = true
		if lf.f != nil {
			errs = append(errs, lf.f.Close())
			lf.f = nil
		}
		lf.broadcastLocked()
		lf.mu.Unlock()
	}
	base := filepath.Join(s.dir, key)
	for _, p := range []string{base + logSuffix, base + rotatedSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove log %s: %w", key, err)
	}
	return nil
}

// Keys lists the keys that have a log on disk, sorted, so that an agent can remove the logs of
// instances it no longer runs.
// Errors: the directory cannot be read.
func (s *Store) Keys() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list logs in %s: %w", s.dir, err)
	}
	seen := make(map[string]bool)
	var keys []string
	for _, e := range entries {
		name := e.Name()
		var key string
		switch {
		case strings.HasSuffix(name, rotatedSuffix):
			key = strings.TrimSuffix(name, rotatedSuffix)
		case strings.HasSuffix(name, logSuffix):
			key = strings.TrimSuffix(name, logSuffix)
		default:
			continue
		}
		if validKey(key) != nil || seen[key] {
			continue
		}
		seen[key] = true
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys, nil
}

// Close closes every open file; writers fail with ErrClosed from then on and followers return
// nil. Files stay on disk for the next Store over the directory.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, lf := range s.files {
		lf.mu.Lock()
		lf.closed = true
		if lf.f != nil {
			errs = append(errs, lf.f.Close())
			lf.f = nil
		}
		lf.broadcastLocked()
		lf.mu.Unlock()
	}
	s.files = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close log store %s: %w", s.dir, err)
	}
	return nil
}

// logFile is the state of one key's log. Writes, rotation and reads of the files happen under
// mu, so a reader never sees a half-rotated pair and a file is never open across a rotation
// (renaming an open file fails on Windows).
type logFile struct {
	path string
	max  int64

	mu      sync.Mutex
	f       *os.File // open while refs > 0 and written within the idle time (CloseIdle)
	refs    int
	written time.Time // when f was opened or last written
	size    int64     // bytes in the current file
	gen     int64     // rotations since this Store opened the key
	notify  chan struct{}
	removed bool
	closed  bool
}

func (lf *logFile) openLocked() error {
	f, err := os.OpenFile(lf.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	lf.f = f
	lf.size = fi.Size()
	lf.written = time.Now()
	return nil
}

// broadcastLocked wakes every follower.
func (lf *logFile) broadcastLocked() {
	close(lf.notify)
	lf.notify = make(chan struct{})
}

// append writes whole stored lines, rotating first when they would not fit.
func (lf *logFile) append(b []byte) error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	switch {
	case lf.removed:
		return fmt.Errorf("write log %s: removed: %w", lf.path, ErrClosed)
	case lf.closed || lf.refs == 0:
		return fmt.Errorf("write log %s: %w", lf.path, ErrClosed)
	}
	if lf.f == nil { // closed while idle
		if err := lf.openLocked(); err != nil {
			return fmt.Errorf("write log %s: %w", lf.path, err)
		}
	}
	if lf.size > 0 && lf.size+int64(len(b)) > lf.max {
		if err := lf.rotateLocked(); err != nil {
			if lf.f == nil {
				return err
			}
			// The rename failed (on Windows, another program may hold the file open): keep
			// writing past the bound rather than lose output; the next line retries.
		}
	}
	n, err := lf.f.Write(b)
	lf.size += int64(n)
	lf.written = time.Now()
	if n > 0 {
		lf.broadcastLocked()
	}
	if err != nil {
		return fmt.Errorf("write log %s: %w", lf.path, err)
	}
	return nil
}

func (lf *logFile) rotateLocked() error {
	if lf.f != nil {
		if err := lf.f.Close(); err != nil {
			lf.f = nil
			return fmt.Errorf("rotate log %s: close: %w", lf.path, err)
		}
		lf.f = nil
	}
	if err := os.Rename(lf.path, lf.path+".1"); err != nil {
		// Keep logging into the current file rather than losing output.
		if oerr := lf.openLocked(); oerr != nil {
			return fmt.Errorf("rotate log %s: %w (and reopen: %v)", lf.path, err, oerr)
		}
		return fmt.Errorf("rotate log %s: %w", lf.path, err)
	}
	lf.gen++
	return lf.openLocked()
}
