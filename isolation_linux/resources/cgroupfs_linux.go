package resources

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// readUint reads a cgroup file holding one unsigned number; "max" reads as 0 (no limit).
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return n, nil
}

// readKeyed reads one value from a flat keyed file ("key value" per line), such as memory.stat,
// memory.events, memory.oom_control or cpu.stat. found is false when the key is absent.
func readKeyed(path, key string) (v uint64, found bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	for line := range bytes.Lines(b) {
		k, val, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("parse %s in %s: %w", key, path, err)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// readProcs lists the pids in cgroup.procs of dir and every directory below it. A missing dir
// holds no processes.
func readProcs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// The cgroup (or a child) was removed while we walked it.
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if t := strings.TrimSpace(s.Text()); t != "" {
				pid, err := strconv.Atoi(t)
				if err != nil {
					return fmt.Errorf("parse %s: %w", p, err)
				}
				pids = append(pids, pid)
			}
		}
		return s.Err()
	})
	return pids, err
}

// writeFile writes value to a cgroup interface file in one write, as the kernel expects. Like
// containerd it opens with O_CREATE: on cgroupfs that cannot create anything (a missing file, say
// of a controller that is not enabled, still fails), and it lets tests run against a plain
// directory standing in for cgroupfs.
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return f.Close()
}

// noLimit reports whether a v1 limit is the kernel's "unlimited" (PAGE_COUNTER_MAX pages,
// printed as about 2^63).
func noLimit(v uint64) bool { return v >= 1<<62 }
