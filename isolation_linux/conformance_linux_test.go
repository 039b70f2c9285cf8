package isolationlinux

import (
	"context"
	"strconv"
	"testing"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// busyboxProgram maps the suite's test programs onto busybox applets and sh.
func busyboxProgram(p isolationtest.Program) isolation.ProcessSpec {
	sh := func(script string, args ...string) isolation.ProcessSpec {
		return isolation.ProcessSpec{Path: "/bin/sh", Args: append([]string{"-c", script, "sh"}, args...)}
	}
	switch p.Kind {
	case isolationtest.KindExit:
		return sh(`exit "$1"`, strconv.Itoa(p.Code))
	case isolationtest.KindEcho:
		return sh(`printf %s "$1"; printf %s "$2" >&2`, p.Stdout, p.Stderr)
	case isolationtest.KindSleep:
		// The default disposition of SIGTERM is in place from the start: exit 143.
		return sh(`echo ready; exec sleep 100000`)
	case isolationtest.KindIgnoreTerm:
		// An ignored signal stays ignored across exec.
		return sh(`trap '' TERM; echo ready; exec sleep 100000`)
	case isolationtest.KindCat:
		return isolation.ProcessSpec{Path: "/bin/cat"}
	case isolationtest.KindPrintEnv:
		// busybox-static has no printenv applet.
		return sh(`eval "test \"\${$1+set}\" = set" || exit 1; eval "printf '%s\n' \"\${$1}\""`, p.Name)
	case isolationtest.KindPrintCwd:
		return sh(`pwd`)
	case isolationtest.KindWriteFile:
		return sh(`{ printf %s "$2" > "$1"; } 2>/dev/null || exit 1`, p.Path, p.Content)
	case isolationtest.KindReadFile:
		return sh(`cat -- "$1" 2>/dev/null || exit 1`, p.Path)
	case isolationtest.KindListDir:
		return sh(`ls -1A -- "$1" 2>/dev/null || exit 1`, p.Path)
	}
	return isolation.ProcessSpec{Path: "/bin/false"}
}

func TestConformance(t *testing.T) {
	if testBase == "" {
		t.Skip("needs root")
	}
	configs := map[isolation.Backend]Config{}
	isolationtest.RunConformance(t, isolationtest.Harness{
		New: func(t *testing.T) isolation.Backend {
			cfg := testConfig(t)
			b := newTestBackend(t, cfg)
			configs[b] = cfg
			return b
		},
		Reopen: func(t *testing.T, old isolation.Backend) isolation.Backend {
			cfg := configs[old]
			b, err := New(context.Background(), cfg, nil)
			if err != nil {
				t.Fatalf("New over the same state: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		RootFS:  "preloaded:busybox",
		Program: busyboxProgram,
	})
}
