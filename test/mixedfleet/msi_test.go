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
// installed over it without properties keeps the configuration file as it was (wine's msiexec
// removes the old version as a plain uninstall, so this is what proves that only a purge
// deletes it); msiexec /x removes the service and trellis.exe but keeps the configuration
// and data; msiexec /x PURGE=1 after a reinstall deletes those too.
func TestMSIUnderWine(t *testing.T) {
	f := setup(t)
	if _, err := exec.LookPath("wixl"); err != nil {
		t.Skip("needs wixl to build the MSI (apt-get install wixl msitools)")
	}
	prefix := os.Getenv("WINEPREFIX")
	programData := filepath.Join(prefix, "drive_c", "ProgramData", "trellis")
	configPath := filepath.Join(programData, "agent.yaml")
	dataDir := filepath.Join(programData, "agent")
	exePath := filepath.Join(prefix, "drive_c", "Program Files", "trellis", "trellis.exe")
	dir := filepath.Join(f.dir, "msi")

	// A cell left installed by an interrupted run would answer for this one, and its MSI
	// (a product code of its own) cannot be named from here.
	if st := f.serviceState(t); st != "" {
		t.Fatalf("a trellis-agent service (%s) is already installed in the wine prefix %s, left by an interrupted run: "+
			"uninstall it (wine msiexec /x <its msi> PURGE=1) or delete the prefix", st, prefix)
	}
	// With no service installed, what is under ProgramData\trellis is what an earlier run's
	// plain uninstall kept (as designed); it would make the install below prove nothing about
	// writing a configuration, so it goes, and so it does after this test.
	if err := os.RemoveAll(programData); err != nil {
		t.Fatal(err)
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
	// installed is true from before each install to after the uninstall that follows it: an
	// msiexec that fails may still have installed the product, which must not outlive the test.
	installed := false
	t.Cleanup(func() {
		if installed {
			// Either version may be the one installed when the test stopped.
			for i := len(msis) - 1; i >= 0 && f.serviceState(t) != ""; i-- {
				f.wineOutput(3*time.Minute, "msiexec", "/x", winPath(msis[i]), "/qn", msi.PurgeProperty+"=1")
			}
			if st := f.serviceState(t); st != "" {
				t.Errorf("cleanup: the trellis-agent service (%s) is still installed in the wine prefix %s", st, prefix)
			}
		}
		os.RemoveAll(programData)
	})
	installed = true
	f.msiexec(t, dir, "install", "/i", winPath(msis[0]),
		"BBS_URL="+f.bbs.URL(), "CELL_ID="+cellID, "ZONE=z3", "ROOTFS_PROVIDERS=preloaded:windows2016",
		"CA_FILE="+winPath(f.pki.CAFile), "CERT_FILE="+winPath(cert.CertFile), "KEY_FILE="+winPath(cert.KeyFile))
	cellLine := regexp.MustCompile(`(?m)^` + cellID + `\s+z3\s+windows\s+preloaded:windows2016\s`)
	f.awaitCell(t, cellLine, programData)
	if st := f.serviceState(t); st != "RUNNING" {
		t.Fatalf("after install the service is %q, want RUNNING", st)
	}
	before, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("the install wrote no configuration: %v", err)
	}
	if !bytes.Contains(before, []byte("cell_id: "+cellID)) || !bytes.Contains(before, []byte("zone: z3")) {
		t.Fatalf("configuration after the install:\n%s", before)
	}

	// The upgrade passes no properties: everything must come from the kept configuration,
	// which it leaves as it was.
	f.msiexec(t, dir, "upgrade", "/i", winPath(msis[1]))
	after, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("the upgrade lost the configuration: %v", err)
	}
	if !bytes.Equal(after, before) {
		t.Fatalf("the upgrade changed the configuration:\n%s\nbefore:\n%s", after, before)
	}
	f.awaitCell(t, cellLine, programData)
	if st := f.serviceState(t); st != "RUNNING" {
		t.Fatalf("after the upgrade the service is %q, want RUNNING", st)
	}

	// A plain uninstall removes the program and the service, and keeps the configuration and
	// the agent's data, as removing the Debian package does.
	f.msiexec(t, dir, "uninstall", "/x", winPath(msis[1]))
	installed = false
	if st := f.serviceState(t); st != "" {
		t.Errorf("after msiexec /x the service is still %q", st)
	}
	if _, err := os.Stat(exePath); !os.IsNotExist(err) {
		t.Errorf("after msiexec /x %s is still there (%v)", exePath, err)
	}
	if kept, err := os.ReadFile(configPath); err != nil || !bytes.Equal(kept, before) {
		t.Fatalf("msiexec /x did not keep the configuration as it was (%v):\n%s", err, kept)
	}
	if _, err := os.Stat(dataDir); err != nil {
		t.Errorf("msiexec /x did not keep the agent's data directory: %v", err)
	}

	// A reinstall takes the kept settings it is not given (the zone), and an uninstall with
	// PURGE=1 deletes the configuration and the data.
	installed = true
	f.msiexec(t, dir, "reinstall", "/i", winPath(msis[1]), "BBS_URL="+f.bbs.URL(), "CELL_ID="+cellID)
	if st := f.serviceState(t); st != "RUNNING" {
		t.Fatalf("after the reinstall the service is %q, want RUNNING", st)
	}
	if cfg, err := os.ReadFile(configPath); err != nil || !bytes.Contains(cfg, []byte("zone: z3")) {
		t.Fatalf("the reinstall did not keep the zone (%v):\n%s", err, cfg)
	}
	f.msiexec(t, dir, "purge", "/x", winPath(msis[1]), msi.PurgeProperty+"=1")
	installed = false
	if st := f.serviceState(t); st != "" {
		t.Errorf("after msiexec /x PURGE=1 the service is still %q", st)
	}
	for _, p := range []string{exePath, configPath, dataDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("after msiexec /x PURGE=1 %s is still there (%v)", p, err)
		}
	}
}

// msiexec runs wine msiexec quietly with args (an /i or /x and its properties), logging
// verbosely to <dir>/<name>.log, and fails the test with the end of that log when msiexec
// fails. A run that failed before msiexec wrote any log never reached the package: that is
// wine failing to start a process (seen on a cold wineserver), not the product, so it is
// reported loudly and tried once more; a failure with a log is never retried.
func (f *fleet) msiexec(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		logPath := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, attempt))
		full := append(append([]string{"msiexec"}, args...), "/qn", "/l*v", winPath(logPath))
		out, err := f.wineOutput(3*time.Minute, full...)
		if err == nil {
			return
		}
		raw, _ := os.ReadFile(logPath)
		if len(raw) == 0 && attempt == 1 {
			t.Logf("WINE START-UP HICCUP: wine %s failed (%v) before msiexec wrote its log; trying once more. Output:\n%s",
				strings.Join(full, " "), err, out)
			time.Sleep(2 * time.Second)
			continue
		}
		text := strings.ToValidUTF8(strings.ReplaceAll(string(raw), "\x00", ""), "?")
		if len(text) > 4000 {
			text = text[len(text)-4000:]
		}
		t.Fatalf("wine %s: %v\n%s\nmsiexec log %s (end):\n%s", strings.Join(full, " "), err, out, logPath, text)
	}
}

// wineOutput runs a Windows program of the prefix (msiexec, sc) under wine and returns its
// output. The output goes to a file, not a pipe: a process the program has wine start (the
// prefix's services, when they are not up yet) inherits the handle and may keep it open long
// after the program exits, which a pipe would have to wait for.
func (f *fleet) wineOutput(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := os.CreateTemp("", "trellis-wine-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, f.wine, args...)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	text, rerr := os.ReadFile(out.Name())
	if err == nil && rerr != nil {
		err = rerr
	}
	return string(text), err
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
