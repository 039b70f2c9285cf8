package isolationwindows

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Microsoft/hcsshim"
	"github.com/Microsoft/hcsshim/hcn"
	"golang.org/x/sys/windows"

	"github.com/trellis-run/trellis/isolation"
)

// alive reports whether pid names a running process.
func alive(pid int) bool {
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	ev, _ := windows.WaitForSingleObject(h, 0)
	return ev == uint32(windows.WAIT_TIMEOUT)
}

// A process tree dies with its container: by Destroy (TerminateJobObject) and, with
// KeepAcrossRestart false, by the backend closing the job (kill-on-close).
func TestProcessTreeDiesWithContainer(t *testing.T) {
	helper := helperPath(t)
	for _, tc := range []struct {
		name string
		keep bool
	}{{"destroy", true}, {"kill-on-close", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := processConfig(scratchDir(t))
			cfg.KeepAcrossRestart = tc.keep
			b := newProcessBackend(t, cfg)
			ctx := context.Background()
			c, err := b.Create(ctx, isolation.ContainerSpec{Handle: "tree", RootFS: "preloaded:" + processStack})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			p, err := c.Run(ctx, isolation.ProcessSpec{Path: helper, Args: []string{"spawn-sleep", "/child.pid"}}, isolation.ProcessIO{Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			info, _ := c.Info(ctx)
			var childPid int
			deadline := time.Now().Add(30 * time.Second)
			for childPid == 0 && time.Now().Before(deadline) {
				if data, err := os.ReadFile(filepath.Join(info.ContainerPath, "child.pid")); err == nil {
					childPid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if childPid == 0 || !alive(childPid) {
				t.Fatalf("the child never started (pid %d, parent output %q)", childPid, out.String())
			}
			if tc.keep {
				if err := b.Destroy(ctx, "tree"); err != nil {
					t.Fatal(err)
				}
				if code, err := p.Wait(ctx); err != nil || code != exitKilled {
					t.Errorf("parent Wait = %d, %v; want %d", code, err, exitKilled)
				}
			} else {
				b.Close()
			}
			for deadline := time.Now().Add(10 * time.Second); alive(childPid) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			if alive(childPid) {
				t.Fatalf("child %d outlived its container", childPid)
			}
			if !tc.keep {
				nb := newProcessBackend(t, cfg)
				destroyAll(t, nb)
			}
		})
	}
}

// The documents decode into hcsshim's and hcn's own types without losing a field: the
// mirrors in hcsdoc.go have their JSON names.
func TestDocumentsMatchHcsshimTypes(t *testing.T) {
	for _, tc := range []struct {
		file   string
		target any
	}{
		{"hcs-container.json", &hcsshim.ContainerConfig{}},
		{"hcs-process.json", &hcsshim.ProcessConfig{}},
		{"hns-endpoint.json", &hcn.HostComputeEndpoint{}},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			if underWine {
				// The test binary runs from a work directory; testdata is beside the source.
				t.Skipf("testdata not reachable from the wine work directory: %v", err)
			}
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, tc.target); err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		back, _ := json.Marshal(tc.target)
		var want, got map[string]any
		json.Unmarshal(data, &want)
		json.Unmarshal(back, &got)
		for k, v := range want {
			wb, _ := json.Marshal(v)
			gb, _ := json.Marshal(got[k])
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: field %s = %s after a round trip through %T, want %s", tc.file, k, gb, tc.target, wb)
			}
		}
	}
}

// A process-mode container that writes past its disk limit is reported with the event "disk
// limit exceeded" and its processes are killed at the next disk check.
func TestDiskLimitProcessMode(t *testing.T) {
	helper := helperPath(t)
	cfg := processConfig(scratchDir(t))
	cfg.DiskCheckInterval = 200 * time.Millisecond
	b := newProcessBackend(t, cfg)
	t.Cleanup(func() { destroyAll(t, b) })
	ctx := context.Background()
	c, err := b.Create(ctx, isolation.ContainerSpec{Handle: "disk", RootFS: "preloaded:" + processStack,
		Limits: isolation.Limits{DiskBytes: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Run(ctx, isolation.ProcessSpec{Path: helper, Args: []string{"fill-sleep", "/big", strconv.Itoa(1 << 20)}}, isolation.ProcessIO{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if code, err := p.Wait(wctx); err != nil || code != exitKilled {
		t.Fatalf("Wait = %d, %v; want %d (killed by the disk watchdog)", code, err, exitKilled)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.Events, isolation.EventDiskLimit) {
		t.Fatalf("events = %q, want %q", info.Events, isolation.EventDiskLimit)
	}
	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.DiskBytes < 1<<20 || m.DiskLimitBytes != 64<<10 {
		t.Fatalf("Metrics: disk %d of %d, want at least %d of %d", m.DiskBytes, m.DiskLimitBytes, 1<<20, 64<<10)
	}
}
