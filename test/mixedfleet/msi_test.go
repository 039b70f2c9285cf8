//go:build linux

package mixedfleet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/installer/msi"
)

// TestMSIUnderWine: the Windows cell's MSI installs under wine with the cell's settings as
// properties, its service reaches RUNNING and the agent registers with the BBS; a newer MSI
// installed over it without properties keeps the configuration (the cell comes back with
// the same settings); msiexec /x removes the service, trellis.exe and the configuration.
func TestMSIUnderWine(t *testing.T) {
	f := setup(t)
	if _, err := exec.LookPath("wixl"); err != nil {
		t.Skip("needs wixl to build the MSI (apt-get install wixl msitools)")
	}
	prefix := os.Getenv("WINEPREFIX")
	programData := filepath.Join(prefix, "drive_c", "ProgramData", "trellis")
	configPath := filepath.Join(programData, "agent.yaml")
	exePath := filepath.Join(prefix, "drive_c", "Program Files", "trellis", "trellis.exe")
	dir := filepath.Join(f.dir, "msi")

	// A cell left installed by an interrupted run would answer for this one, and its MSI
	// (a product code of its own) cannot be named from here.
	if st := f.serviceState(t); st != "" {
		t.Fatalf("a trellis-agent service (%s) is already installed in the wine prefix %s, left by an interrupted run: "+
			"uninstall it (wine msiexec /x <its msi>) or delete the prefix", st, prefix)
	}
	var msis []string
	for _, v := range []string{"v1.0.0", "v1.1.0"} {
		cfg := msi.DefaultConfig()
		cfg.Version, cfg.Exe, cfg.OutDir = v, f.winBin, dir
		p, err := msi.Build(context.Background(), cfg)
		if err != nil {
			t.Fatalf("build the %s MSI: %v", v, err)
		}
		msis = append(msis, p)
	}

	cellID := fmt.Sprintf("msi-%d", f.id)
	cert, err := f.pki.IssueCell(cellID)
	if err != nil {
		t.Fatal(err)
	}
	installed := false
	t.Cleanup(func() {
		if installed {
			f.wineRun(t, 3*time.Minute, "msiexec", "/x", winPath(msis[1]), "/qn")
		}
	})
	f.wineRun(t, 3*time.Minute, "msiexec", "/i", winPath(msis[0]), "/qn",
		"BBS_URL="+f.bbs.URL(), "CELL_ID="+cellID, "ZONE=z3", "ROOTFS_PROVIDERS=preloaded:windows2016",
		"CA_FILE="+winPath(f.pki.CAFile), "CERT_FILE="+winPath(cert.CertFile), "KEY_FILE="+winPath(cert.KeyFile))
	installed = true
	cellLine := regexp.MustCompile(`(?m)^` + cellID + `\s+z3\s+windows\s+preloaded:windows2016\s`)
	f.awaitCell(t, cellLine, programData)
	if st := f.serviceState(t); st != "RUNNING" {
		t.Fatalf("after install the service is %q, want RUNNING", st)
	}
	before, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("the install wrote no configuration: %v", err)
	}

	// The upgrade passes no properties: everything must come from the kept configuration.
	f.msiUpgrade(t, msis[1], dir)
	after, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("the upgrade lost the configuration: %v", err)
	}
	if !bytes.Contains(after, []byte("cell_id: "+cellID)) || !bytes.Contains(after, []byte("zone: z3")) {
		t.Fatalf("configuration after the upgrade:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := os.Stat(configPath + msi.SavedConfigSuffix); !os.IsNotExist(err) {
		t.Errorf("the upgrade left its saved copy of the configuration: %v", err)
	}
	f.awaitCell(t, cellLine, programData)
	if st := f.serviceState(t); st != "RUNNING" {
		t.Fatalf("after the upgrade the service is %q, want RUNNING", st)
	}

	f.wineRun(t, 3*time.Minute, "msiexec", "/x", winPath(msis[1]), "/qn")
	installed = false
	if st := f.serviceState(t); st != "" {
		t.Errorf("after msiexec /x the service is still %q", st)
	}
	for _, p := range []string{exePath, configPath} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("after msiexec /x %s is still there (%v)", p, err)
		}
	}
}

// wineRun runs a Windows program of the prefix (msiexec, sc) under wine and fails the test
// when it fails.
// msiUpgrade installs msiPath over the installed version with msiexec, logging verbosely to a
// file under dir. Under wine the upgrade (which stops the running service) now and then ends
// with exit status 1 and no output when the machine is loaded; it is tried once more, and a
// second failure fails the test with the end of both logs.
func (f *fleet) msiUpgrade(t *testing.T, msiPath, dir string) {
	t.Helper()
	var logs []string
	for attempt := 1; attempt <= 2; attempt++ {
		logPath := filepath.Join(dir, fmt.Sprintf("upgrade-%d.log", attempt))
		out, err := f.wineOutput(3*time.Minute, "msiexec", "/i", winPath(msiPath), "/qn", "/l*v", winPath(logPath))
		if err == nil {
			return
		}
		raw, _ := os.ReadFile(logPath)
		text := strings.ToValidUTF8(strings.ReplaceAll(string(raw), "\x00", ""), "?")
		if len(text) > 3000 {
			text = text[len(text)-3000:]
		}
		logs = append(logs, fmt.Sprintf("attempt %d: %v\n%s\nmsiexec log (end):\n%s", attempt, err, out, text))
		t.Logf("msiexec upgrade attempt %d failed: %v", attempt, err)
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("msiexec upgrade to %s failed twice:\n%s", msiPath, strings.Join(logs, "\n"))
}

func (f *fleet) wineRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := f.wineOutput(timeout, args...)
	if err != nil {
		t.Fatalf("wine %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (f *fleet) wineOutput(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.wine, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Services wine starts inherit the pipe; do not wait for them to close it.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	return out.String(), err
}

var scState = regexp.MustCompile(`STATE\s*:\s*\d+\s+(\w+)`)

// serviceState is the state sc query reports for trellis-agent ("RUNNING", "STOPPED", …),
// or "" when it is not installed.
func (f *fleet) serviceState(t *testing.T) string {
	t.Helper()
	out, err := f.wineOutput(30*time.Second, "sc", "query", msi.ServiceName)
	if m := scState.FindStringSubmatch(out); err == nil && m != nil {
		return m[1]
	}
	return ""
}

// awaitCell waits until `trellis cells` shows the line, printing the agent's service log on
// failure.
func (f *fleet) awaitCell(t *testing.T, line *regexp.Regexp, programData string) {
	t.Helper()
	waitFor(t, 60*time.Second, "the MSI-installed cell in trellis cells", func() (bool, string) {
		out := f.cli(t, "cells")
		if line.MatchString(out) {
			return true, ""
		}
		log, _ := os.ReadFile(filepath.Join(programData, "agent", "agent.log"))
		return false, fmt.Sprintf("trellis cells:\n%s\nservice %q, agent.log:\n%s", out, f.serviceState(t), log)
	})
}
