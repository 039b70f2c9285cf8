package isolationtest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// The suite is only worth running if it fails a backend that breaks the contract. These tests
// wrap the in-memory backend so that it breaks one rule, run the suite against the wrapper in a
// child test process (a failing subtest cannot be observed from inside the same test binary
// without failing it), and check the subtest guarding that rule is the one that fails.

const brokenEnv = "ISOLATIONTEST_BROKEN_MODE"

// breakages maps a mode of brokenBackend to the subtest run and the one that must fail ("" for
// the suite as a whole), with a phrase of the failure message.
var breakages = []struct {
	mode, subtest, fails, wantOutput string
}{
	{"exit-code-zero", "Run/ExitCodes", "Run/ExitCodes", "exited 0, want 1"},
	{"stderr-on-stdout", "Run/Stdio", "Run/Stdio", "each on its own stream"},
	{"terminate-kills", "Signal/Terminate", "Signal/Terminate", "exited 137, want 143"},
	{"wait-ignores-ctx", "Wait/Context", "Wait/Context", "ignored its context"},
	{"duplicate-replaces", "Create/DuplicateHandle", "Create/DuplicateHandle", "want ErrAlreadyExists"},
	{"destroy-unknown-fails", "Destroy", "Destroy", "want nil"},
	{"no-clamp", "Stream/Escape", "Stream/Escape", "want content \"dotdot\""},
	{"bulk-unknown", "Metrics/Known", "Metrics/Known", "want exactly the two known handles"},
	{"stop-stays-active", "Stop/Stopped", "Stop/Stopped", "Info.State after Stop"},
	{"modes-lost", "Stream/Modes", "Stream/Modes", "want 750"},
	{"reopen-loses-exited", "Reopen/Process", "Reopen/Process", "exited before the reopen"},
	{"run-ctx-kills", "Run/OutlivesContext", "Run/OutlivesContext", "after the context given to Run was cancelled"},
	{"unknown-skip", "Ping", "", "not a subtest"},
}

func TestSuiteCatchesBrokenBackends(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("running as a child")
	}
	t.Run("control", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "none", "")
		if err != nil {
			t.Fatalf("the pass-through wrapper fails the suite: %v\n%s", err, out)
		}
	})
	for _, tc := range breakages {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			out, err := runChild(t, tc.mode, tc.subtest)
			if err == nil {
				t.Fatalf("the suite passed a backend broken by %q\n%s", tc.mode, out)
			}
			failed := strings.TrimSuffix("--- FAIL: TestBrokenBackendChild/"+tc.fails, "/")
			if !strings.Contains(out, failed) {
				t.Fatalf("want %q in the output of the child\n%s", failed, out)
			}
			if !strings.Contains(out, tc.wantOutput) {
				t.Fatalf("want the failure to say %q\n%s", tc.wantOutput, out)
			}
		})
	}
}

// runChild runs TestBrokenBackendChild (limited to subtest when set) in mode.
func runChild(t *testing.T, mode, subtest string) (string, error) {
	pattern := "^TestBrokenBackendChild$"
	for _, part := range strings.Split(subtest, "/") {
		if part != "" {
			pattern += "/^" + regexp.QuoteMeta(part) + "$"
		}
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+pattern, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), brokenEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestBrokenBackendChild runs the suite against brokenBackend; only as a child process.
func TestBrokenBackendChild(t *testing.T) {
	mode := os.Getenv(brokenEnv)
	if mode == "" {
		t.Skip("runs only as a child of TestSuiteCatchesBrokenBackends")
	}
	h := MemoryHarness()
	inner := h.New
	h.New = func(t *testing.T) isolation.Backend { return &brokenBackend{Backend: inner(t), mode: mode} }
	innerReopen := h.Reopen
	h.Reopen = func(t *testing.T, b isolation.Backend) isolation.Backend {
		return &brokenBackend{Backend: innerReopen(t, b.(*brokenBackend).Backend), mode: mode, reopened: true}
	}
	if mode == "unknown-skip" {
		h.Skip = map[string]string{"Stream/NoSuchSubtest": "stale"}
	}
	RunConformance(t, h)
}

type brokenBackend struct {
	isolation.Backend
	mode     string
	reopened bool
}

func (b *brokenBackend) wrap(c isolation.Container) isolation.Container {
	return &brokenContainer{Container: c, b: b}
}

func (b *brokenBackend) Create(ctx context.Context, spec isolation.ContainerSpec) (isolation.Container, error) {
	if b.mode == "duplicate-replaces" {
		if err := b.Backend.Destroy(ctx, spec.Handle); err != nil {
			return nil, err
		}
	}
	c, err := b.Backend.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return b.wrap(c), nil
}

func (b *brokenBackend) Lookup(ctx context.Context, handle string) (isolation.Container, error) {
	c, err := b.Backend.Lookup(ctx, handle)
	if err != nil {
		return nil, err
	}
	return b.wrap(c), nil
}

func (b *brokenBackend) Destroy(ctx context.Context, handle string) error {
	if b.mode == "destroy-unknown-fails" {
		if _, err := b.Backend.Lookup(ctx, handle); err != nil {
			return err
		}
	}
	return b.Backend.Destroy(ctx, handle)
}

func (b *brokenBackend) List(ctx context.Context, filter isolation.Properties) ([]isolation.Container, error) {
	cs, err := b.Backend.List(ctx, filter)
	for i, c := range cs {
		cs[i] = b.wrap(c)
	}
	return cs, err
}

func (b *brokenBackend) BulkMetrics(ctx context.Context, handles []string) (map[string]isolation.Metrics, error) {
	m, err := b.Backend.BulkMetrics(ctx, handles)
	if b.mode == "bulk-unknown" {
		for _, h := range handles {
			if _, ok := m[h]; !ok {
				m[h] = isolation.Metrics{}
			}
		}
	}
	return m, err
}

type brokenContainer struct {
	isolation.Container
	b *brokenBackend
}

func (c *brokenContainer) Run(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	if c.b.mode == "stderr-on-stdout" {
		stdio.Stderr = stdio.Stdout
	}
	p, err := c.Container.Run(ctx, spec, stdio)
	if err != nil {
		return nil, err
	}
	if c.b.mode == "run-ctx-kills" {
		// Tie the process to the request, as exec.CommandContext would.
		go func() {
			<-ctx.Done()
			// Late enough for the program to be ready, within the suite's survival window.
			time.Sleep(50 * time.Millisecond)
			p.Signal(context.Background(), isolation.SignalKill)
		}()
	}
	return &brokenProcess{Process: p, mode: c.b.mode}, nil
}

func (c *brokenContainer) Attach(ctx context.Context, id string, stdio isolation.ProcessIO) (isolation.Process, error) {
	p, err := c.Container.Attach(ctx, id, stdio)
	if err != nil {
		return nil, err
	}
	if c.b.mode == "reopen-loses-exited" && c.b.reopened {
		if code, werr := p.Wait(ctx); werr == nil {
			return nil, fmt.Errorf("attach %q: exited with %d before the restart: %w", id, code, isolation.ErrNotFound)
		}
	}
	return &brokenProcess{Process: p, mode: c.b.mode}, nil
}

func (c *brokenContainer) Info(ctx context.Context) (isolation.ContainerInfo, error) {
	info, err := c.Container.Info(ctx)
	if c.b.mode == "stop-stays-active" {
		info.State = isolation.StateActive
	}
	return info, err
}

// StreamIn in "no-clamp" mode joins member names to dst lexically, so "../x" climbs out, and
// in "modes-lost" mode unpacks every member with default modes.
func (c *brokenContainer) StreamIn(ctx context.Context, dst string, r io.Reader) error {
	switch c.b.mode {
	case "no-clamp", "modes-lost":
	default:
		return c.Container.StreamIn(ctx, dst, r)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if c.b.mode == "no-clamp" {
			hdr.Name = strings.TrimPrefix(path.Join(dst, hdr.Name), "/")
		} else if hdr.Typeflag == tar.TypeDir {
			hdr.Mode = 0o755
		} else {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if c.b.mode == "no-clamp" {
		dst = "/"
	}
	return c.Container.StreamIn(ctx, dst, &buf)
}

type brokenProcess struct {
	isolation.Process
	mode string
}

func (p *brokenProcess) Wait(ctx context.Context) (int, error) {
	switch p.mode {
	case "wait-ignores-ctx":
		return p.Process.Wait(context.Background())
	case "exit-code-zero":
		_, err := p.Process.Wait(ctx)
		return 0, err
	}
	return p.Process.Wait(ctx)
}

func (p *brokenProcess) Signal(ctx context.Context, sig isolation.Signal) error {
	if p.mode == "terminate-kills" {
		sig = isolation.SignalKill
	}
	return p.Process.Signal(ctx, sig)
}
