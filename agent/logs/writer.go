package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// Writer is the stdout/stderr pair of one source of one instance. Each stream buffers a
// partial line until its newline arrives (or Close). It is safe for concurrent use.
type Writer struct {
	lf *logFile

	out, err lineWriter

	mu     sync.Mutex
	closed bool
	store  *Store
}

var _ Forker = (*Writer)(nil)

// Fork returns a new Writer with w's source and instance, writing to the same log with its own
// partial-line buffers. The caller closes it.
// Errors: ErrClosed (w or the store closed, or the log removed).
func (w *Writer) Fork() (ClosableSink, error) {
	if w.isClosed() {
		return nil, fmt.Errorf("fork %s log writer: %w", w.out.source, ErrClosed)
	}
	w.lf.mu.Lock()
	defer w.lf.mu.Unlock()
	if w.lf.removed || w.lf.closed || w.lf.refs == 0 {
		return nil, fmt.Errorf("fork %s log writer: %w", w.out.source, ErrClosed)
	}
	w.lf.refs++
	f := &Writer{lf: w.lf, store: w.store}
	f.out = lineWriter{w: f, source: w.out.source, index: w.out.index, stream: StreamOut}
	f.err = lineWriter{w: f, source: w.err.source, index: w.err.index, stream: StreamErr}
	return f, nil
}

// Stdout returns the writer of the OUT stream.
func (w *Writer) Stdout() io.Writer { return &w.out }

// Stderr returns the writer of the ERR stream.
func (w *Writer) Stderr() io.Writer { return &w.err }

// Close writes out the partial line of each stream and releases the file. Writes after Close
// fail with ErrClosed. Close is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	err := errors.Join(w.out.flush(), w.err.flush())
	return errors.Join(err, w.store.release(w.lf))
}

func (w *Writer) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// lineWriter splits one stream into stored lines.
type lineWriter struct {
	w      *Writer
	source string
	index  int
	stream Stream

	mu  sync.Mutex
	buf []byte // the partial line
	out []byte // scratch for formatted lines
}

// Write implements io.Writer. Complete lines are stored at once; the rest waits for its
// newline. It reports len(p) unless storing fails.
func (l *lineWriter) Write(p []byte) (int, error) {
	if l.w.isClosed() {
		return 0, fmt.Errorf("write %s %s log: %w", l.source, l.stream, ErrClosed)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	l.out = l.out[:0]
	now := time.Now()
	start := 0
	for {
		rest := l.buf[start:]
		nl := indexNewline(rest, MaxLineBytes)
		switch {
		case nl >= 0:
			l.out = appendLine(l.out, now, l.source, l.index, l.stream, trimCR(rest[:nl]))
			start += nl + 1
			continue
		case len(rest) > MaxLineBytes:
			cut := splitPoint(rest)
			l.out = appendLine(l.out, now, l.source, l.index, l.stream, rest[:cut])
			start += cut
			continue
		}
		break
	}
	l.buf = append(l.buf[:0], l.buf[start:]...)
	if len(l.out) == 0 {
		return len(p), nil
	}
	if err := l.w.lf.append(l.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush stores the partial line, if any.
func (l *lineWriter) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) == 0 {
		return nil
	}
	out := appendLine(nil, time.Now(), l.source, l.index, l.stream, trimCR(l.buf))
	l.buf = l.buf[:0]
	return l.w.lf.append(out)
}

// indexNewline returns the index of the first '\n' within the first limit+1 bytes of b, or -1.
func indexNewline(b []byte, limit int) int {
	if len(b) > limit+1 {
		b = b[:limit+1]
	}
	return bytes.IndexByte(b, '\n')
}

// splitPoint is where an over-long line is cut: at MaxLineBytes, moved back to the start of a
// UTF-8 sequence so that a character is not torn across lines.
func splitPoint(b []byte) int {
	cut := MaxLineBytes
	for i := 0; i < utf8.UTFMax && cut-i > 0; i++ {
		if utf8.RuneStart(b[cut-i]) {
			return cut - i
		}
	}
	return cut
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}
