package testprog

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// helperEnv makes the test binary act as trellis-testprog, so the tests exercise real processes
// and real signals without building a second binary.
const helperEnv = "TESTPROG_BE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// command returns the helper running p in dir with env added.
func command(t *testing.T, p isolationtest.Program, dir string, env ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], p.Argv()...)
	cmd.Env = append(append(os.Environ(), helperEnv+"=1"), env...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("running the helper: %v", err)
		return -1
	}
}

func TestPrograms(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "sub", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "in.txt"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootEnv := RootEnv + "=" + root
	cases := []struct {
		name     string
		prog     isolationtest.Program
		dir      string
		env      []string
		stdin    string
		code     int
		out, err string
	}{
		{"exit", isolationtest.Exit(42), root, nil, "", 42, "", ""},
		{"echo", isolationtest.Echo("o\n", "e\n"), root, nil, "", 0, "o\n", "e\n"},
		{"cat", isolationtest.Cat(), root, nil, "piped\x00bytes", 0, "piped\x00bytes", ""},
		{"printenv", isolationtest.PrintEnv("TESTPROG_X"), root, []string{"TESTPROG_X=y"}, "", 0, "y\n", ""},
		{"printenv unset", isolationtest.PrintEnv("TESTPROG_UNSET"), root, nil, "", 1, "", ""},
		{"pwd under root", isolationtest.PrintCwd(), filepath.Join(root, "sub"), []string{rootEnv}, "", 0, "/sub\n", ""},
		{"pwd at root", isolationtest.PrintCwd(), root, []string{rootEnv}, "", 0, "/\n", ""},
		{"read absolute under root", isolationtest.ReadFile("/sub/in.txt"), root, []string{rootEnv}, "", 0, "content", ""},
		{"read relative", isolationtest.ReadFile("in.txt"), filepath.Join(root, "sub"), nil, "", 0, "content", ""},
		{"read missing", isolationtest.ReadFile("/sub/none"), root, []string{rootEnv}, "", 1, "", ""},
		{"list", isolationtest.ListDir("/sub"), root, []string{rootEnv}, "", 0, "d\nin.txt\n", ""},
		{"write without parent", isolationtest.WriteFile("/no/dir/f", "x"), root, []string{rootEnv}, "", 1, "", ""},
		{"usage", isolationtest.Program{Kind: "bogus"}, root, nil, "", 2, "", ""},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			cmd, stdout, stderr := command(t, tc.prog, tc.dir, tc.env...)
			cmd.Stdin = strings.NewReader(tc.stdin)
			code := exitCode(t, cmd.Run())
			if code != tc.code || stdout.String() != tc.out || (tc.err != "" && stderr.String() != tc.err) {
				t.Fatalf("%v: exit %d stdout %q stderr %q; want %d %q %q", tc.prog, code, stdout, stderr, tc.code, tc.out, tc.err)
			}
		})
	}
	t.Run("write", func(t *testing.T) {
		cmd, _, stderr := command(t, isolationtest.WriteFile("/sub/out.txt", "written"), root, rootEnv)
		if code := exitCode(t, cmd.Run()); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got, err := os.ReadFile(filepath.Join(root, "sub", "out.txt")); string(got) != "written" {
			t.Fatalf("file holds %q, %v", got, err)
		}
	})
}

// startReady starts p and waits for its ready line.
func startReady(t *testing.T, p isolationtest.Program) *exec.Cmd {
	t.Helper()
	cmd, _, _ := command(t, p, t.TempDir())
	cmd.Stdout = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(isolationtest.ReadyLine))
	if _, err := out.Read(buf); err != nil || string(buf) != isolationtest.ReadyLine {
		t.Fatalf("ready line %q, %v", buf, err)
	}
	return cmd
}

func TestSignals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGTERM cannot be sent to a process on Windows; the backend's tests cover CTRL_SHUTDOWN")
	}
	t.Run("sleep exits 143 on terminate", func(t *testing.T) {
		cmd := startReady(t, isolationtest.Sleep())
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := exitCode(t, cmd.Wait()); code != 143 {
			t.Fatalf("exit %d, want 143", code)
		}
	})
	t.Run("ignore-term survives terminate", func(t *testing.T) {
		cmd := startReady(t, isolationtest.IgnoreTerm())
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Fatalf("exited after SIGTERM: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		err := <-done
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("Wait after kill: %v, want death by SIGKILL", err)
		}
	})
}
