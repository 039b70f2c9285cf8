package installer

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// DefaultLogFileBytes bounds the agent's own log file under a service manager: past it the
// file is renamed to <name>.1 (replacing the previous one) and a new one is started, so the
// log takes at most twice this.
const DefaultLogFileBytes = 16 << 20

// LogFile is a size-bounded log file: where the agent writes its log when it runs under the
// Windows service manager, which gives a service no stderr. Writes are serialized; one write is
// never split across the two files.
type LogFile struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenLogFile opens (appending to) or creates the log file at path, creating its directory,
// and rotates it once it exceeds maxBytes. Errors: ErrInvalidOptions for maxBytes < 4096, or
// the file system's.
func OpenLogFile(path string, maxBytes int64) (*LogFile, error) {
	if maxBytes < 4<<10 {
		return nil, fmt.Errorf("%w: log file bound %d is below 4096 bytes", ErrInvalidOptions, maxBytes)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("installer: log file directory: %w", err)
	}
	l := &LogFile{path: path, max: maxBytes}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *LogFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("installer: open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("installer: log file: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write appends p, first rotating the file when p would take it past the bound. A failed
// rotation keeps writing to the current file rather than losing the log.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.max {
		l.rotate()
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// rotate renames the file to <path>.1 and starts a new one. Windows cannot rename an open
// file, so the file is closed first.
func (l *LogFile) rotate() {
	if err := l.f.Close(); err != nil {
		l.f = nil
	}
	renamed := os.Rename(l.path, l.path+".1") == nil
	if err := l.open(); err != nil {
		l.f = nil
		return
	}
	if !renamed {
		// Could not rename (another process holds it open): truncate instead of growing.
		if err := l.f.Truncate(0); err == nil {
			l.size = 0
		}
	}
}

// Close closes the file. Later writes fail with os.ErrClosed.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
