package isolationwindows

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// underWine is set by hack/wine-test.sh.
var underWine = os.Getenv("TRELLIS_WINE") != ""

// scratchDir returns a fresh directory for one test, removed best-effort at cleanup
// (t.TempDir fails under wine, where os.RemoveAll does not work).
func scratchDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TRELLIS_WINE_WORKDIR")
	dir, err := os.MkdirTemp(base, "iw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dir) })
	return dir
}

// helperPath returns the wintestprog executable: built by hack/wine-test.sh under wine, or
// with go build on Windows.
func helperPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TRELLIS_WINE_HELPER"); p != "" {
		return p
	}
	out := filepath.Join(scratchDir(t), "wintestprog.exe")
	cmd := exec.Command("go", "build", "-o", out, "github.com/trellis-run/trellis/isolation_windows/internal/wintestprog")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building wintestprog: %v\n%s", err, b)
	}
	return out
}

const processStack = "windowsservercore-process"

func processConfig(stateDir string) Config {
	cfg := DefaultConfig()
	cfg.StateDir = stateDir
	cfg.Stacks = map[string]StackConfig{processStack: {Mode: ModeProcess}}
	cfg.PortRangeLo, cfg.PortRangeHi = 42000, 42999
	return cfg
}

func newProcessBackend(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// destroyAll destroys what a test left, then closes b.
func destroyAll(t *testing.T, b *Backend) {
	ctx := context.Background()
	cs, _ := b.List(ctx, nil)
	for _, c := range cs {
		if err := b.Destroy(ctx, c.Handle()); err != nil {
			t.Errorf("cleanup: Destroy(%q): %v", c.Handle(), err)
		}
	}
	b.Close()
}

// wineSkips are the conformance subtests wine cannot run, each with the reason.
var wineSkips = map[string]string{
	"Signal/Terminate":     "wine: GenerateConsoleCtrlEvent fails (ERROR_INVALID_ACCESS without a console, ERROR_INVALID_HANDLE with one), so CTRL_BREAK never arrives",
	"Run/OutlivesContext":  "wine: ends its process with terminate (CTRL_BREAK), which wine cannot deliver",
	"Attach/Running":       "wine: ends its process with terminate (CTRL_BREAK), which wine cannot deliver",
	"Stop/Grace":           "wine: expects terminate (CTRL_BREAK) to end the process within the grace time",
	"Reopen/Process":       "wine: ends the reattached process with terminate (CTRL_BREAK)",
	"Signal/Kill":          "wine: sends terminate (CTRL_BREAK) first, which wine cannot deliver",
	"Create/InvalidSpec":   "wine: the suite's own t.TempDir cleanup fails (os.RemoveAll is not supported by wine)",
	"Stream/SymlinkEscape": "wine: symbolic links made by os.Symlink are not read back as links (no NT reparse points)",
	"Stream/Modes":         "NTFS keeps no Unix permission bits",
}

func TestConformanceProcessMode(t *testing.T) {
	helper := helperPath(t)
	skip := map[string]string{}
	if underWine {
		for k, v := range wineSkips {
			skip[k] = v
		}
	} else {
		skip["Stream/Modes"] = wineSkips["Stream/Modes"]
	}
	for name, reason := range skip {
		t.Logf("skipping %s: %s", name, reason)
	}
	isolationtest.RunConformance(t, isolationtest.Harness{
		New: func(t *testing.T) isolation.Backend {
			b := newProcessBackend(t, processConfig(scratchDir(t)))
			t.Cleanup(func() { destroyAll(t, b) })
			return b
		},
		Reopen: func(t *testing.T, old isolation.Backend) isolation.Backend {
			ob := old.(*Backend)
			ob.Close()
			b := newProcessBackend(t, ob.cfg)
			t.Cleanup(func() { destroyAll(t, b) })
			return b
		},
		RootFS: "preloaded:" + processStack,
		Program: func(p isolationtest.Program) isolation.ProcessSpec {
			return isolation.ProcessSpec{Path: helper, Args: p.Argv()}
		},
		Skip: skip,
	})
}
