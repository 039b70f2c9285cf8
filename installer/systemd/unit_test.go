package systemd

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestUnitsGolden(t *testing.T) {
	for _, u := range []Unit{
		AgentUnit(Binary, AgentConfig, "1.2.3"),
		BBSUnit(Binary, "1.2.3"),
		BrainUnit(Binary, "1.2.3"),
	} {
		t.Run(u.Name, func(t *testing.T) {
			got, err := u.Render()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, u.FileName(), got)
		})
	}
}

// TestAgentUnitContract pins the settings DESIGN §5 depends on, independently of the golden
// file, so that a careless -update cannot drop them.
func TestAgentUnitContract(t *testing.T) {
	got, err := AgentUnit(Binary, AgentConfig, "dev").Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"ExecStart=/usr/bin/trellis agent run --config /etc/trellis/agent.yaml",
		"KillMode=process",
		"Delegate=yes",
		"Restart=always",
		"RestartSec=5s",
		"TimeoutStopSec=900s",
		"LimitNOFILE=1048576",
		"WantedBy=multi-user.target",
	} {
		if !bytes.Contains(got, []byte("\n"+line+"\n")) {
			t.Errorf("agent unit lacks %q:\n%s", line, got)
		}
	}
	if AgentStopTimeout < 10*time.Minute+time.Minute {
		t.Errorf("AgentStopTimeout %s leaves no margin over the 10 min evacuation timeout", AgentStopTimeout)
	}
}

func TestQuoteWord(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/usr/bin/trellis", "/usr/bin/trellis"},
		{"--config", "--config"},
		{"/etc/trellis dir/agent.yaml", `"/etc/trellis dir/agent.yaml"`},
		{"100%", "100%%"},
		{"$HOME", "$$HOME"},
		{`a"b`, `"a\"b"`},
		{`C:\x`, `"C:\\x"`},
		{"", `""`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := quoteWord(tc.in); got != tc.want {
				t.Errorf("quoteWord(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := AgentUnit(Binary, AgentConfig, "dev")
	for _, tc := range []struct {
		name  string
		edit  func(*Unit)
		field string
	}{
		{"relative binary", func(u *Unit) { u.Exec[0] = "trellis" }, "exec"},
		{"no exec", func(u *Unit) { u.Exec = nil }, "exec"},
		{"newline in argument", func(u *Unit) { u.Exec = append(u.Exec, "a\nb") }, "exec"},
		{"bad name", func(u *Unit) { u.Name = "trellis agent" }, "name"},
		{"two-line description", func(u *Unit) { u.Description = "a\nKillMode=none" }, "description"},
		{"zero restart delay", func(u *Unit) { u.RestartSec = 0 }, "restart_sec"},
		{"zero stop timeout", func(u *Unit) { u.TimeoutStopSec = 0 }, "timeout_stop_sec"},
		{"kill mode", func(u *Unit) { u.KillMode = "none" }, "kill_mode"},
		{"env var", func(u *Unit) { u.ExtraArgsVar = "A-B" }, "extra_args_var"},
		{"relative env file", func(u *Unit) { u.EnvironmentFile = "bbs.env" }, "environment_file"},
		{"oom", func(u *Unit) { u.OOMScoreAdjust = -1001 }, "oom_score_adjust"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := ok
			u.Exec = append([]string(nil), ok.Exec...)
			tc.edit(&u)
			_, err := u.Render()
			if !errors.Is(err, ErrInvalidUnit) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Render() = %v, want ErrInvalidUnit naming %s", err, tc.field)
			}
		})
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("AgentUnit: %v", err)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker over each rendered unit, with the
// binary and environment file present, and over deliberately broken units that it must
// reject, so the test can fail.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: install the Debian package systemd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trellis")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, name string, data []byte) ([]byte, error) {
		t.Helper()
		sub := t.TempDir()
		path := filepath.Join(sub, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(analyze, "verify", path)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
		out, err := cmd.CombinedOutput()
		// verify exits 0 on keys it ignores ("Unknown key", "Failed to parse"), so any
		// complaint about the unit counts as a failure.
		if err == nil && bytes.Contains(out, []byte(name)) {
			err = errors.New("systemd-analyze verify complained")
		}
		return out, err
	}
	render := func(t *testing.T, u Unit) []byte {
		t.Helper()
		u.EnvironmentFile = strings.Replace(u.EnvironmentFile, "/etc/trellis", dir, 1)
		data, err := u.Render()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	units := []Unit{AgentUnit(bin, filepath.Join(dir, "agent.yaml"), "dev"), BBSUnit(bin, "dev"), BrainUnit(bin, "dev")}
	for _, u := range units {
		t.Run("good/"+u.Name, func(t *testing.T) {
			if out, err := verify(t, u.FileName(), render(t, u)); err != nil {
				t.Fatalf("systemd-analyze verify: %v\n%s\n%s", err, out, render(t, u))
			}
		})
	}
	agent := render(t, units[0])
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"unknown key", bytes.Replace(agent, []byte("KillMode=process"), []byte("KillMood=process"), 1)},
		{"missing binary", bytes.Replace(agent, []byte(bin), []byte(filepath.Join(dir, "absent")), 1)},
		{"no ExecStart", bytes.Replace(agent, []byte("ExecStart="), []byte("#ExecStart="), 1)},
		{"bad kill mode", bytes.Replace(agent, []byte("KillMode=process"), []byte("KillMode=sometimes"), 1)},
	} {
		t.Run("broken/"+tc.name, func(t *testing.T) {
			if bytes.Equal(tc.data, agent) {
				t.Fatal("the edit did not apply")
			}
			if out, err := verify(t, AgentName+".service", tc.data); err == nil {
				t.Fatalf("systemd-analyze verify accepted a broken unit:\n%s\n%s", tc.data, out)
			}
		})
	}
}
