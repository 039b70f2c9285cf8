package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newStore(t *testing.T, dir string, max int64) *Store {
	t.Helper()
	s, err := NewStore(dir, max)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newWriter(t *testing.T, s *Store, source, key string, index int) *Writer {
	t.Helper()
	w, err := s.Writer(source, Instance{Key: key, Index: index})
	if err != nil {
		t.Fatalf("Writer(%s, %s): %v", source, key, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func readAll(t *testing.T, s *Store, key string) []Line {
	t.Helper()
	var lines []Line
	if err := s.Read(context.Background(), key, false, func(l Line) error {
		lines = append(lines, l)
		return nil
	}); err != nil {
		t.Fatalf("Read(%s): %v", key, err)
	}
	return lines
}

func texts(lines []Line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

func TestWriteAndRead(t *testing.T) {
	s := newStore(t, t.TempDir(), 1<<20)
	app := newWriter(t, s, SourceApp, "guid-1", 3)
	health := newWriter(t, s, SourceHealth, "guid-1", 3)
	task := newWriter(t, s, SourceCell, "task-1", NoIndex)

	before := time.Now().Add(-time.Second)
	io.WriteString(app.Stdout(), "hello\nwor")
	io.WriteString(app.Stderr(), "oops\r\n")
	io.WriteString(app.Stdout(), "ld\n\n")
	io.WriteString(health.Stderr(), "tcp 8080: refused\n")
	io.WriteString(task.Stdout(), "staging")
	if err := task.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	want := []Line{
		{Source: "APP", Index: 3, Stream: StreamOut, Text: "hello"},
		{Source: "APP", Index: 3, Stream: StreamErr, Text: "oops"},
		{Source: "APP", Index: 3, Stream: StreamOut, Text: "world"},
		{Source: "APP", Index: 3, Stream: StreamOut, Text: ""},
		{Source: "HEALTH", Index: 3, Stream: StreamErr, Text: "tcp 8080: refused"},
	}
	got := readAll(t, s, "guid-1")
	if len(got) != len(want) {
		t.Fatalf("got %d lines %q, want %d", len(got), texts(got), len(want))
	}
	for i := range want {
		g := got[i]
		if g.Time.Before(before) || g.Time.After(time.Now()) {
			t.Errorf("line %d: time %v out of range", i, g.Time)
		}
		g.Time = time.Time{}
		if g != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, g, want[i])
		}
	}
	got = readAll(t, s, "task-1")
	if len(got) != 1 || got[0].Text != "staging" || got[0].Index != NoIndex || got[0].Source != "CELL" {
		t.Fatalf("task log = %+v, want the partial line flushed on Close", got)
	}
	raw, err := os.ReadFile(filepath.Join(s.Dir(), "task-1.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), " [CELL] OUT staging\n") {
		t.Errorf("stored form %q lacks \" [CELL] OUT staging\"", raw)
	}
	if _, err := io.WriteString(task.Stdout(), "late\n"); !IsClosed(err) {
		t.Errorf("write after Close: err = %v, want ErrClosed", err)
	}
}

func TestLongLinesSplit(t *testing.T) {
	s := newStore(t, t.TempDir(), 1<<20)
	w := newWriter(t, s, SourceApp, "long", 0)
	// 'é' is two bytes; placed across the 64 KiB mark it must not be torn.
	long := strings.Repeat("a", MaxLineBytes-1) + "é" + strings.Repeat("b", 10)
	exact := strings.Repeat("c", MaxLineBytes)
	// Write in small pieces to exercise the buffering.
	data := long + "\n" + exact + "\n"
	for len(data) > 0 {
		n := min(len(data), 1000)
		if _, err := io.WriteString(w.Stdout(), data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	got := texts(readAll(t, s, "long"))
	want := []string{strings.Repeat("a", MaxLineBytes-1), "é" + strings.Repeat("b", 10), exact}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
}

func TestRotation(t *testing.T) {
	const max = 4096
	s := newStore(t, t.TempDir(), max)
	w := newWriter(t, s, SourceApp, "rot", 0)
	// Each stored line is ~100 bytes: 200 lines are ~20 KiB, several rotations.
	for i := range 200 {
		fmt.Fprintf(w.Stdout(), "line %03d %s\n", i, strings.Repeat("x", 50))
	}
	for _, name := range []string{"rot.log", "rot.log.1"} {
		fi, err := os.Stat(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatalf("stat %s: %v", name, err)
		}
		if fi.Size() > max {
			t.Errorf("%s is %d bytes, over the %d bound", name, fi.Size(), max)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "rot.log.2")); err == nil {
		t.Error("rot.log.2 exists; only one rotated file is kept")
	}
	got := texts(readAll(t, s, "rot"))
	if len(got) < 40 || len(got) > 82 {
		t.Fatalf("read %d lines, want what fits in two 4 KiB files", len(got))
	}
	// The newest lines are all there, in order, ending with the last one written.
	first := 200 - len(got)
	for i, text := range got {
		if want := fmt.Sprintf("line %03d ", first+i); !strings.HasPrefix(text, want) {
			t.Fatalf("line %d = %q, want prefix %q", i, text[:12], want)
		}
	}
}

func TestFollow(t *testing.T) {
	s := newStore(t, t.TempDir(), 4096)
	w := newWriter(t, s, SourceApp, "f", 1)
	io.WriteString(w.Stdout(), "before\n")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lines := make(chan Line, 1000)
	done := make(chan error, 1)
	go func() {
		done <- s.Read(ctx, "f", true, func(l Line) error {
			lines <- l
			return nil
		})
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l.Text != want {
				t.Fatalf("followed %q, want %q", l.Text, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line %q within 5s", want)
		}
	}
	expect("before")
	io.WriteString(w.Stderr(), "after\n")
	expect("after")
	// Write across several rotations, one line at a time, waiting for each: the follower
	// crosses every rotation without losing or repeating a line.
	for i := range 150 {
		text := fmt.Sprintf("n%03d %s", i, strings.Repeat("y", 40))
		io.WriteString(w.Stdout(), text+"\n")
		expect(text)
	}
	// A second writer of the same key (a restarted process) shows up in the same stream.
	w2 := newWriter(t, s, SourceCell, "f", 1)
	io.WriteString(w2.Stdout(), "from cell\n")
	expect("from cell")

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v, want context.Canceled", err)
	}
}

func TestFollowEndsOnRemove(t *testing.T) {
	s := newStore(t, t.TempDir(), 4096)
	w := newWriter(t, s, SourceApp, "gone", 0)
	io.WriteString(w.Stdout(), "x\n")
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Read(context.Background(), "gone", true, func(Line) error {
			close(started)
			return nil
		})
	}()
	<-started
	if err := s.Remove("gone"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follower returned %v after Remove, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follower still running 5s after Remove")
	}
	if _, err := io.WriteString(w.Stdout(), "y\n"); !IsClosed(err) {
		t.Errorf("write after Remove: %v, want ErrClosed", err)
	}
	if err := s.Read(context.Background(), "gone", false, func(Line) error { return nil }); !IsNotFound(err) {
		t.Errorf("Read after Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove("gone"); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
	for _, name := range []string{"gone.log", "gone.log.1"} {
		if _, err := os.Stat(filepath.Join(s.Dir(), name)); err == nil {
			t.Errorf("%s still exists", name)
		}
	}
}

func TestRestartAppends(t *testing.T) {
	dir := t.TempDir()
	s1, err := NewStore(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s1.Writer(SourceApp, Instance{Key: "k", Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w.Stdout(), "first life\npartial")
	w.Close()
	s1.Close()

	s2 := newStore(t, dir, 1<<20)
	keys, err := s2.Keys()
	if err != nil || len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("Keys after restart = %v, %v; want [k]", keys, err)
	}
	w2 := newWriter(t, s2, SourceApp, "k", 0)
	io.WriteString(w2.Stdout(), "second life\n")
	got := texts(readAll(t, s2, "k"))
	want := []string{"first life", "partial", "second life"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("after restart read %q, want %q", got, want)
	}
}

func TestFnErrorStopsRead(t *testing.T) {
	s := newStore(t, t.TempDir(), 1<<20)
	w := newWriter(t, s, SourceApp, "k", 0)
	io.WriteString(w.Stdout(), "a\nb\nc\n")
	stop := errors.New("stop")
	n := 0
	err := s.Read(context.Background(), "k", true, func(Line) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Read = %v after %d lines, want fn's error after 2", err, n)
	}
}

func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	s := newStore(t, t.TempDir(), 1<<20)
	var wg sync.WaitGroup
	for g := range 4 {
		w := newWriter(t, s, SourceApp, "c", g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				fmt.Fprintf(w.Stdout(), "g%d-%d ", g, i)
				fmt.Fprintf(w.Stdout(), "%s\n", strings.Repeat("z", 20))
			}
		}()
	}
	wg.Wait()
	lines := readAll(t, s, "c")
	if len(lines) != 400 {
		t.Fatalf("read %d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if want := fmt.Sprintf("g%d-", l.Index); !strings.HasPrefix(l.Text, want) || !strings.HasSuffix(l.Text, strings.Repeat("z", 20)) {
			t.Fatalf("torn or mislabelled line %+v", l)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	if _, err := NewStore(t.TempDir(), 100); !IsInvalid(err) {
		t.Errorf("NewStore with a 100-byte bound: %v, want ErrInvalid", err)
	}
	s := newStore(t, t.TempDir(), 1<<20)
	for _, tc := range []struct {
		name   string
		source string
		inst   Instance
	}{
		{"empty key", SourceApp, Instance{Key: ""}},
		{"dot-dot key", SourceApp, Instance{Key: ".."}},
		{"slash in key", SourceApp, Instance{Key: "a/b"}},
		{"lower-case source", "app", Instance{Key: "k"}},
		{"bracket in source", "A]P", Instance{Key: "k"}},
		{"negative index", SourceApp, Instance{Key: "k", Index: -2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Writer(tc.source, tc.inst); !IsInvalid(err) {
				t.Errorf("Writer = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.Read(context.Background(), "missing", false, func(Line) error { return nil }); !IsNotFound(err) {
		t.Errorf("Read of a missing key = %v, want ErrNotFound", err)
	}
}

func TestParseLine(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	for _, tc := range []struct {
		name string
		in   Line
	}{
		{"indexed", Line{Time: ts, Source: "APP", Index: 12, Stream: StreamErr, Text: "a ] b [c/1] OUT"}},
		{"no index", Line{Time: ts, Source: "CELL", Index: NoIndex, Stream: StreamOut, Text: ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseLine([]byte(tc.in.String()))
			if !got.Time.Equal(tc.in.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.in.Time)
			}
			got.Time = tc.in.Time
			if got != tc.in {
				t.Errorf("parse(%q) = %+v, want %+v", tc.in.String(), got, tc.in)
			}
		})
	}
	torn := "2025-03-04T05:06:07.0000"
	if got := parseLine([]byte(torn)); got.Text != torn || got.Source != "" {
		t.Errorf("torn line parsed as %+v, want it whole in Text", got)
	}
}

func TestForkKeepsPartialLinesApart(t *testing.T) {
	s := newStore(t, t.TempDir(), 1<<20)
	w := newWriter(t, s, SourceApp, "k", 0)
	f1, err := w.Fork()
	if err != nil {
		t.Fatal(err)
	}
	f2, err := w.Fork()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f1.Stdout(), "one-")
	io.WriteString(f2.Stdout(), "two-")
	io.WriteString(f1.Stdout(), "end\n")
	io.WriteString(f2.Stdout(), "end\n")
	if err := errors.Join(f1.Close(), f2.Close(), w.Close()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(texts(readAll(t, s, "k")), "|")
	if got != "one-end|two-end" {
		t.Fatalf("forked writers produced %q, want \"one-end|two-end\"", got)
	}
	if _, err := w.Fork(); !IsClosed(err) {
		t.Errorf("Fork of a closed writer = %v, want ErrClosed", err)
	}
}

// TestCloseIdle: an idle log's file is closed while its writers stay open; the next line opens
// it again and every line is kept.
func TestCloseIdle(t *testing.T) {
	s := newStore(t, t.TempDir(), 4096)
	w := newWriter(t, s, SourceApp, "quiet", 0)
	fmt.Fprintln(w.Stdout(), "before")
	if n := s.CloseIdle(time.Hour); n != 0 {
		t.Fatalf("CloseIdle(1h) closed %d files just written, want 0", n)
	}
	if n := s.CloseIdle(0); n != 1 {
		t.Fatalf("CloseIdle(0) closed %d files, want 1", n)
	}
	if n := s.CloseIdle(0); n != 0 {
		t.Fatalf("CloseIdle(0) again closed %d files, want 0", n)
	}
	f, err := w.Fork()
	if err != nil {
		t.Fatalf("Fork of a writer whose file was closed while idle: %v", err)
	}
	fmt.Fprintln(w.Stdout(), "after")
	fmt.Fprintln(f.Stdout(), "forked")
	f.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts(readAll(t, s, "quiet")), ","); got != "before,after,forked" {
		t.Fatalf("lines = %s, want before,after,forked", got)
	}
	if _, err := fmt.Fprintln(w.Stdout(), "late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
}
