package deb

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/installer/systemd"
)

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3+gabc1234+dirty"},
		{"abc1234", "0.0.0~gitabc1234"},
		{"abc1234-dirty", "0.0.0~gitabc1234+dirty"},
		{"dev", "0.0.0~gitdev"},
		{"", "0.0.0~git"},
		{"1.0_beta/x", "1.0.beta.x"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := DebianVersion(tc.in)
			if got != tc.want {
				t.Fatalf("DebianVersion(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if !debianVersionPattern.MatchString(got) {
				t.Fatalf("%q is not a Debian upstream version", got)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	bin := fakeBinary(t, "x")
	noexec := filepath.Join(t.TempDir(), "trellis")
	if err := os.WriteFile(noexec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no version", func(c *Config) { c.Version = "" }},
		{"no arch", func(c *Config) { c.Arch = "" }},
		{"no out dir", func(c *Config) { c.OutDir = "" }},
		{"no binary", func(c *Config) { c.Binary = "" }},
		{"missing binary", func(c *Config) { c.Binary = filepath.Join(t.TempDir(), "absent") }},
		{"not executable", func(c *Config) { c.Binary = noexec }},
		{"directory", func(c *Config) { c.Binary = t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Version, cfg.Binary = "1.0.0", bin
			tc.edit(&cfg)
			if _, err := Build(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Build = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// fakeBinary writes an executable script standing in for the trellis binary; it prints
// marker so a test can tell versions apart.
func fakeBinary(t *testing.T, marker string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trellis")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func buildAll(t *testing.T, version, marker string) (bin, agent, server string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Version, cfg.Binary, cfg.OutDir = version, fakeBinary(t, marker), t.TempDir()
	cfg.MTime = time.Unix(1700000000, 0)
	paths, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("Build returned %v, want three packages", paths)
	}
	return paths[0], paths[1], paths[2]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackageContents reads the packages with dpkg-deb: names, dependencies, files, modes
// and conffiles. It needs no root.
func TestPackageContents(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not found: install the Debian package dpkg")
	}
	bin, agent, server := buildAll(t, "v1.2.0-3-gabc1234", "one")
	for _, tc := range []struct {
		path, name string
		fields     []string
		contents   []string
		conffiles  []string
	}{
		{bin, BinaryPackage, []string{"Version: 1.2.0+3+gabc1234"},
			[]string{"-rwxr-xr-x root/root", "./usr/bin/trellis"}, nil},
		{agent, AgentPackage, []string{"Depends: trellis (= 1.2.0+3+gabc1234), containernetworking-plugins, iptables", "Recommends: e2fsprogs, xfsprogs"},
			[]string{"./lib/systemd/system/trellis-agent.service", "-rw-r----- root/root", "./etc/trellis/agent.yaml"},
			[]string{"/etc/trellis/agent.yaml"}},
		{server, ServerPackage, []string{"Depends: trellis (= 1.2.0+3+gabc1234)"},
			[]string{"./lib/systemd/system/trellis-bbs.service", "./lib/systemd/system/trellis-brain.service", "./etc/trellis/bbs.env", "./etc/trellis/brain.env"},
			[]string{"/etc/trellis/bbs.env", "/etc/trellis/brain.env"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if filepath.Base(tc.path) != tc.name+"_1.2.0+3+gabc1234_amd64.deb" {
				t.Errorf("file name %s", filepath.Base(tc.path))
			}
			info := run(t, "dpkg-deb", "--info", tc.path)
			for _, f := range append([]string{"Package: " + tc.name, "Architecture: amd64"}, tc.fields...) {
				if !strings.Contains(info, f) {
					t.Errorf("control lacks %q:\n%s", f, info)
				}
			}
			contents := run(t, "dpkg-deb", "--contents", tc.path)
			for _, c := range tc.contents {
				if !strings.Contains(contents, c) {
					t.Errorf("contents lack %q:\n%s", c, contents)
				}
			}
			if tc.conffiles == nil {
				return
			}
			conf := strings.Fields(run(t, "dpkg-deb", "--info", tc.path, "conffiles"))
			if strings.Join(conf, " ") != strings.Join(tc.conffiles, " ") {
				t.Errorf("conffiles = %q, want %q", conf, tc.conffiles)
			}
		})
	}
}

// TestInstallUpgradePurge installs the real packages on this machine with dpkg, checks every
// path, upgrades keeping an edited configuration, and purges, checking that nothing is left.
// It needs root and refuses to touch a machine where trellis is already installed.
func TestInstallUpgradePurge(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not found")
	}
	for _, p := range []string{BinaryPackage, AgentPackage, ServerPackage} {
		if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output(); strings.Contains(string(out), "installed") {
			t.Skipf("package %s is installed on this machine; not touching it", p)
		}
	}
	for _, p := range []string{"containernetworking-plugins", "iptables"} {
		if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output(); !strings.Contains(string(out), "install ok installed") {
			t.Skipf("trellis-agent depends on %s, which is not installed (make deps installs it)", p)
		}
	}
	for _, p := range []string{systemd.Binary, ConfigDir, StateDir} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists outside any package; not touching it", p)
		}
	}
	t.Cleanup(func() {
		// None of these existed before the test (checked above), so a failed run must not
		// leave them to make the next run skip.
		exec.Command("dpkg", "--purge", AgentPackage, ServerPackage, BinaryPackage).Run()
		for _, p := range []string{ConfigDir, StateDir, systemd.Binary} {
			os.RemoveAll(p)
		}
	})
	bin1, agent1, server1 := buildAll(t, "1.0.0", "one")
	bin2, agent2, _ := buildAll(t, "1.0.1", "two")
	enabled := func(unit string) string {
		return filepath.Join(systemd.LocalUnitDir, "multi-user.target.wants", unit+".service")
	}
	agentUnit := filepath.Join(systemd.PackageUnitDir, systemd.AgentName+".service")

	run(t, "dpkg", "-i", bin1, agent1, server1)
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{
		{systemd.Binary, 0o755},
		{agentUnit, 0o644},
		{systemd.AgentConfig, 0o640},
		{filepath.Join(systemd.PackageUnitDir, systemd.BBSName+".service"), 0o644},
		{filepath.Join(systemd.PackageUnitDir, systemd.BrainName+".service"), 0o644},
		{systemd.BBSEnvFile, 0o640},
		{systemd.BrainEnvFile, 0o640},
		{AgentStateDir, os.ModeDir | 0o750},
		{BBSStateDir, os.ModeDir | 0o750},
	} {
		fi, err := os.Stat(p.path)
		if err != nil {
			t.Errorf("after install: %v", err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != p.mode {
			t.Errorf("%s mode %v, want %v", p.path, fi.Mode(), p.mode)
		}
	}
	if out := run(t, systemd.Binary); strings.TrimSpace(out) != "one" {
		t.Errorf("installed binary printed %q", out)
	}
	unit, _ := os.ReadFile(agentUnit)
	want, _ := systemd.AgentUnit(systemd.Binary, systemd.AgentConfig, "1.0.0").Render()
	if string(unit) != string(want) {
		t.Errorf("installed unit differs from AgentUnit:\n%s", unit)
	}
	if cfg, _ := os.ReadFile(systemd.AgentConfig); string(cfg) != DefaultAgentConfig {
		t.Errorf("installed config:\n%s", cfg)
	}
	for _, u := range []string{systemd.AgentName, systemd.BBSName, systemd.BrainName} {
		if _, err := os.Lstat(enabled(u)); err != nil {
			t.Errorf("%s not enabled: %v", u, err)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		run(t, "systemd-analyze", "verify", agentUnit)
	}

	// An upgrade replaces the binary and keeps the operator's configuration.
	edited := strings.Replace(DefaultAgentConfig, `cell_id: ""`, "cell_id: cell-7", 1)
	if err := os.WriteFile(systemd.AgentConfig, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", bin2, agent2)
	if out := run(t, systemd.Binary); strings.TrimSpace(out) != "two" {
		t.Errorf("upgraded binary printed %q", out)
	}
	if cfg, _ := os.ReadFile(systemd.AgentConfig); string(cfg) != edited {
		t.Errorf("upgrade changed the edited config:\n%s", cfg)
	}
	if _, err := os.Lstat(enabled(systemd.AgentName)); err != nil {
		t.Errorf("agent not enabled after upgrade: %v", err)
	}

	// Removing keeps the configuration (dpkg's rule for conffiles) and disables the unit.
	run(t, "dpkg", "--remove", AgentPackage)
	if _, err := os.Stat(systemd.AgentConfig); err != nil {
		t.Errorf("remove deleted the config: %v", err)
	}
	if _, err := os.Lstat(enabled(systemd.AgentName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove left the unit enabled: %v", err)
	}

	run(t, "dpkg", "--purge", AgentPackage, ServerPackage, BinaryPackage)
	for _, p := range []string{
		systemd.Binary, agentUnit, systemd.AgentConfig, AgentStateDir,
		filepath.Join(systemd.PackageUnitDir, systemd.BBSName+".service"),
		filepath.Join(systemd.PackageUnitDir, systemd.BrainName+".service"),
		systemd.BBSEnvFile, systemd.BrainEnvFile, BBSStateDir,
		enabled(systemd.AgentName), enabled(systemd.BBSName), enabled(systemd.BrainName),
		ConfigDir, StateDir,
	} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after purge: %v", p, err)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", AgentPackage).Output(); len(out) > 0 && !strings.HasPrefix(string(out), "un") && !strings.HasPrefix(string(out), "pn") {
		t.Errorf("dpkg still knows %s: %q", AgentPackage, out)
	}
}
