package installer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogFileRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "logs", "agent.log")
	const bound = 4096
	l, err := OpenLogFile(path, bound)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 100 { // 10,000 bytes: two rotations
		if _, err := l.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 || len(data) > bound || len(data)%len(line) != 0 {
			t.Errorf("%s holds %d bytes, want whole lines up to %d", filepath.Base(p), len(data), bound)
		}
	}
	if _, err := os.Stat(path + ".2"); !os.IsNotExist(err) {
		t.Errorf("a third file exists: %v", err)
	}
	if _, err := l.Write(line); err == nil {
		t.Error("Write after Close succeeded")
	}

	// Reopening appends and counts what is there.
	l, err = OpenLogFile(path, bound)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	l.Write([]byte("again\n"))
	l.Close()
	after, _ := os.ReadFile(path)
	if !bytes.HasPrefix(after, before) || !bytes.HasSuffix(after, []byte("again\n")) {
		t.Errorf("reopen did not append")
	}
}

func TestLogFileBound(t *testing.T) {
	if _, err := OpenLogFile(filepath.Join(t.TempDir(), "a.log"), 100); err == nil {
		t.Fatal("a 100-byte bound was accepted")
	}
}
