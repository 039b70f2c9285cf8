package actions

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent/cache"
	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// Programs the tests register on the in-memory backend, besides the vocabulary at
// isolationtest.TestProgramPath.
const (
	progEnv      = "/bin/env"      // prints its environment, one NAME=value per line
	progDelay    = "/bin/delay"    // args [ms, code, file?]: sleeps ms (exits 143 on terminate), writes file, exits code
	progStubborn = "/bin/stubborn" // prints ready, records terminate and kill times, dies only when killed
	progCount    = "/bin/count"    // counts its starts, exits with the code in args[0]
)

// env is one test's world: a memory backend with the test programs, one container, a log
// store and a cache.
type env struct {
	t       *testing.T
	backend *isolationtest.Memory
	c       isolation.Container
	logs    *logs.Store
	app     *logs.Writer
	cell    *logs.Writer
	cache   *cache.Cache

	mu       sync.Mutex
	termAt   time.Time
	killAt   time.Time
	starts   int
	stubbies chan struct{}
}

func newEnv(t *testing.T, containerEnv ...string) *env {
	t.Helper()
	m, err := isolationtest.NewMemory(isolationtest.DefaultMemoryConfig())
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	e := &env{t: t, backend: m, stubbies: make(chan struct{}, 8)}
	m.RegisterProgram(progEnv, func(ctx context.Context, pc *isolationtest.ProcContext) int {
		for _, kv := range pc.Env {
			fmt.Fprintln(pc.Stdout, kv)
		}
		return 0
	})
	m.RegisterProgram(progDelay, func(ctx context.Context, pc *isolationtest.ProcContext) int {
		ms, _ := strconv.Atoi(pc.Args[0])
		code, _ := strconv.Atoi(pc.Args[1])
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return isolationtest.ExitTerminated
		}
		if len(pc.Args) > 2 {
			if err := pc.WriteFile(pc.Args[2], []byte("done"), 0o644); err != nil {
				return 1
			}
		}
		return code
	})
	m.RegisterProgram(progStubborn, func(ctx context.Context, pc *isolationtest.ProcContext) int {
		e.stubbies <- struct{}{}
		<-ctx.Done()
		e.mu.Lock()
		e.termAt = time.Now()
		e.mu.Unlock()
		<-pc.Killed()
		e.mu.Lock()
		e.killAt = time.Now()
		e.mu.Unlock()
		return isolationtest.ExitKilled
	})
	m.RegisterProgram(progCount, func(ctx context.Context, pc *isolationtest.ProcContext) int {
		e.mu.Lock()
		e.starts++
		e.mu.Unlock()
		code, _ := strconv.Atoi(pc.Args[0])
		return code
	})
	ctx := context.Background()
	c, err := m.Create(ctx, isolation.ContainerSpec{
		Handle: "c1",
		RootFS: isolationtest.MemoryRootFS,
		Env:    containerEnv,
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { m.Destroy(context.Background(), "c1") })
	e.c = c

	e.logs, err = logs.NewStore(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.logs.Close() })
	e.app, err = e.logs.Writer(logs.SourceApp, logs.Instance{Key: "inst", Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	e.cell, err = e.logs.Writer(logs.SourceCell, logs.Instance{Key: "inst", Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cache.DefaultConfig()
	cfg.Dir = t.TempDir()
	e.cache, err = cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runner returns a Runner over the env with cfg's zero fields filled in.
func (e *env) runner(cfg Config) *Runner {
	e.t.Helper()
	if cfg.Container == nil {
		cfg.Container = e.c
	}
	if cfg.Cache == nil {
		cfg.Cache = e.cache
	}
	if cfg.Output == nil {
		cfg.Output = e.app
	}
	if cfg.Progress == nil {
		cfg.Progress = e.cell
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 5 * time.Second
	}
	r, err := NewRunner(cfg)
	if err != nil {
		e.t.Fatalf("NewRunner: %v", err)
	}
	return r
}

// lines returns the instance's log lines as "SOURCE STREAM text".
func (e *env) lines() []string {
	e.t.Helper()
	var out []string
	err := e.logs.Read(context.Background(), "inst", false, func(l logs.Line) error {
		out = append(out, fmt.Sprintf("%s %s %s", l.Source, l.Stream, l.Text))
		return nil
	})
	if err != nil && !logs.IsNotFound(err) {
		e.t.Fatalf("read logs: %v", err)
	}
	return out
}

// readFile returns the content of a file in the container, or an error wrapping
// isolation.ErrNotFound.
func (e *env) readFile(p string) (string, error) {
	rc, err := e.c.StreamOut(context.Background(), p)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return "", err
	}
	if hdr.Typeflag != tar.TypeReg {
		return "", fmt.Errorf("%s is not a regular file", p)
	}
	b, err := io.ReadAll(tr)
	return string(b), err
}

// Action constructors.

func prog(p isolationtest.Program) *models.Action {
	spec := isolationtest.MemoryProgram(p)
	return &models.Action{Run: &models.RunAction{Path: spec.Path, Args: spec.Args}}
}

func run(path string, args ...string) *models.Action {
	return &models.Action{Run: &models.RunAction{Path: path, Args: args}}
}

func delay(ms, code int, file ...string) *models.Action {
	return run(progDelay, append([]string{strconv.Itoa(ms), strconv.Itoa(code)}, file...)...)
}

func serial(as ...*models.Action) *models.Action {
	return &models.Action{Serial: &models.SerialAction{Actions: as}}
}

func parallel(as ...*models.Action) *models.Action {
	return &models.Action{Parallel: &models.ParallelAction{Actions: as}}
}

func codependent(as ...*models.Action) *models.Action {
	return &models.Action{Codependent: &models.CodependentAction{Actions: as}}
}

func try(a *models.Action) *models.Action {
	return &models.Action{Try: &models.TryAction{Action: a}}
}

func timeout(ms int64, a *models.Action) *models.Action {
	return &models.Action{Timeout: &models.TimeoutAction{Action: a, TimeoutMs: ms}}
}

func progress(start, success, failure string, a *models.Action) *models.Action {
	return &models.Action{EmitProgress: &models.EmitProgressAction{
		Action: a, StartMessage: start, SuccessMessage: success, FailureMessagePrefix: failure,
	}}
}

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if strings.HasSuffix(name, "/") {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755})
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(content))})
		io.WriteString(tw, content)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want reason %q", reason)
	}
	if got := Reason(err); got != reason {
		t.Fatalf("Reason(%v) = %q, want %q", err, got, reason)
	}
}
