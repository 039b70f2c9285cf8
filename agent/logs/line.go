package logs

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Sources of log lines. A source is 1 to 32 bytes of [A-Z0-9_-].
const (
	// SourceApp labels the output of the workload's processes.
	SourceApp = "APP"
	// SourceHealth labels health-check results.
	SourceHealth = "HEALTH"
	// SourceCell labels the agent's own messages about the instance (progress, downloads).
	SourceCell = "CELL"
)

// Stream is the standard stream a line was written to.
type Stream string

// The two streams.
const (
	StreamOut Stream = "OUT"
	StreamErr Stream = "ERR"
)

// MaxLineBytes bounds the text of one line; longer output is split into several lines.
const MaxLineBytes = 64 << 10

// NoIndex is the Instance.Index of work without an instance index (a task).
const NoIndex = -1

// timeLayout is RFC 3339 with a fixed nine-digit fraction, so that lines align.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Line is one stored log line.
type Line struct {
	// Time is when the line was completed (UTC).
	Time time.Time
	// Source is the writer's source ("APP", "HEALTH", "CELL").
	Source string
	// Index is the instance index, or NoIndex.
	Index int
	// Stream is OUT or ERR.
	Stream Stream
	// Text is the line without its newline.
	Text string
}

// String formats l as it is stored, without the newline.
func (l Line) String() string {
	b := appendLine(nil, l.Time, l.Source, l.Index, l.Stream, []byte(l.Text))
	return string(b[:len(b)-1])
}

// appendLine appends the stored form of one line, with its newline, to b.
func appendLine(b []byte, t time.Time, source string, index int, stream Stream, text []byte) []byte {
	b = t.UTC().AppendFormat(b, timeLayout)
	b = append(b, " ["...)
	b = append(b, source...)
	if index != NoIndex {
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(index), 10)
	}
	b = append(b, "] "...)
	b = append(b, stream...)
	b = append(b, ' ')
	b = append(b, text...)
	return append(b, '\n')
}

// parseLine parses one stored line (without its newline). A line that does not parse, such as
// the remains of a torn write, comes back whole as Text with zero other fields, so that no
// output is lost.
func parseLine(raw []byte) Line {
	l, err := parseFields(raw)
	if err != nil {
		return Line{Index: NoIndex, Text: string(raw)}
	}
	return l
}

func parseFields(raw []byte) (Line, error) {
	ts, rest, ok := bytes.Cut(raw, []byte(" ["))
	if !ok {
		return Line{}, fmt.Errorf("no source: %w", ErrInvalid)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return Line{}, err
	}
	label, rest, ok := bytes.Cut(rest, []byte("] "))
	if !ok {
		return Line{}, fmt.Errorf("unterminated source: %w", ErrInvalid)
	}
	l := Line{Time: t, Index: NoIndex}
	src, idx, hasIdx := strings.Cut(string(label), "/")
	if err := validSource(src); err != nil {
		return Line{}, err
	}
	l.Source = src
	if hasIdx {
		n, err := strconv.Atoi(idx)
		if err != nil || n < 0 {
			return Line{}, fmt.Errorf("index %q: %w", idx, ErrInvalid)
		}
		l.Index = n
	}
	stream, text, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return Line{}, fmt.Errorf("no stream: %w", ErrInvalid)
	}
	switch Stream(stream) {
	case StreamOut, StreamErr:
		l.Stream = Stream(stream)
	default:
		return Line{}, fmt.Errorf("stream %q: %w", stream, ErrInvalid)
	}
	l.Text = string(text)
	return l, nil
}

// validSource checks a source: 1 to 32 bytes of [A-Z0-9_-].
func validSource(s string) error {
	if s == "" || len(s) > 32 {
		return fmt.Errorf("source %q must be 1 to 32 bytes long: %w", s, ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("source %q: byte %q is not one of [A-Z0-9_-]: %w", s, c, ErrInvalid)
		}
	}
	return nil
}

// validKey checks an instance key: 1 to 128 bytes of [A-Za-z0-9_.-], not "." or "..".
func validKey(k string) error {
	if k == "" || len(k) > 128 || k == "." || k == ".." {
		return fmt.Errorf("key %q must be 1 to 128 bytes of [A-Za-z0-9_.-] and not \".\" or \"..\": %w", k, ErrInvalid)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("key %q: byte %q is not one of [A-Za-z0-9_.-]: %w", k, c, ErrInvalid)
		}
	}
	return nil
}

// Sink is where a component writes the output of one instance: process output, progress
// messages, health-check results. *Writer implements it; Discard drops everything.
type Sink interface {
	Stdout() io.Writer
	Stderr() io.Writer
}

// ClosableSink is a Sink whose owner must close it to flush partial lines.
type ClosableSink interface {
	Sink
	io.Closer
}

// Forker is implemented by Sinks that hand out independent writer pairs with the same labels,
// each with its own partial-line buffers (*Writer does). A component running several
// processes at once through one Sink forks it per process, so that the partial lines of two
// processes never join into one line.
type Forker interface {
	Fork() (ClosableSink, error)
}

// Discard is a Sink that drops everything written to it.
var Discard Sink = discard{}

type discard struct{}

func (discard) Stdout() io.Writer { return io.Discard }
func (discard) Stderr() io.Writer { return io.Discard }
