package isolationwindows

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
	"github.com/trellis-run/trellis/isolation/isolationtest/testprog"
)

const containerStack = "windowsservercore-container"

// containerModeSkips are the conformance subtests container mode cannot pass, by design.
var containerModeSkips = map[string]string{
	"Signal/Terminate":    "container mode: hcsshim's public API has no per-process console event; Stop (HCS shutdown) is the graceful stop",
	"Signal/Kill":         "container mode: sends a per-process terminate first (unsupported, see Signal/Terminate)",
	"Run/OutlivesContext": "container mode: ends its process with a per-process terminate",
	"Attach/Running":      "container mode: ends its process with a per-process terminate",
	"Reopen/Process":      "container mode: ends the reattached process with a per-process terminate",
	"Stream/SymlinkEscape": "container mode on the fake: the suite looks for escapes next to ContainerPath, the scratch volume, " +
		"whose parent is the fake's own scratch folder; covered by TestUnpackTarEscapes",
}

// TestConformanceContainerModeFake runs the suite against container mode over hcsFake, with
// package testprog built for this host as the program inside the "container".
func TestConformanceContainerModeFake(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the HCS fake runs host processes as Unix ones; on Windows container mode needs real HCS")
	}
	base := t.TempDir()
	layer := filepath.Join(base, "layers", "base")
	bin := filepath.Join(layer, "Files", "bin", "testprog")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/trellis-run/trellis/isolation/isolationtest/testprog/trellis-testprog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testprog: %v\n%s", err, out)
	}
	newB := func(t *testing.T, fake *hcsFake, stateDir string) *Backend {
		cfg := DefaultConfig()
		cfg.StateDir = stateDir
		cfg.ScratchDir = filepath.Join(stateDir, "..", filepath.Base(stateDir)+"-scratch")
		cfg.Stacks = map[string]StackConfig{containerStack: {Mode: ModeContainer, Layers: []string{layer}}}
		cfg.MemoryBytes, cfg.DiskBytes = 8<<30, 100<<30
		cfg.PortRangeLo, cfg.PortRangeHi = 43000, 43999
		d := deps{
			process:   func(Config, *slog.Logger) (driver, error) { return nil, unsupportedf("process mode needs Windows") },
			container: func(cfg Config, log *slog.Logger) (driver, error) { return newHCSDriver(cfg, log, fake, fake), nil },
			portFree:  portFree,
		}
		b, err := newBackend(context.Background(), cfg, nil, d)
		if err != nil {
			t.Fatalf("newBackend: %v", err)
		}
		return b
	}
	fakes := map[*Backend]*hcsFake{}
	isolationtest.RunConformance(t, isolationtest.Harness{
		New: func(t *testing.T) isolation.Backend {
			fake := newHCSFake(testprog.RootEnv)
			b := newB(t, fake, filepath.Join(t.TempDir(), "state"))
			fakes[b] = fake
			t.Cleanup(func() { b.Close() })
			return b
		},
		Reopen: func(t *testing.T, old isolation.Backend) isolation.Backend {
			ob := old.(*Backend)
			ob.Close()
			b := newB(t, fakes[ob], ob.cfg.StateDir)
			t.Cleanup(func() { b.Close() })
			return b
		},
		RootFS: "preloaded:" + containerStack,
		Program: func(p isolationtest.Program) isolation.ProcessSpec {
			return isolation.ProcessSpec{Path: "/bin/testprog", Args: p.Argv()}
		},
		Skip: containerModeSkips,
	})
}
