package msi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func fakeExe(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trellis.exe")
	if err := os.WriteFile(path, []byte("MZ not really a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Version, cfg.Exe, cfg.OutDir = "v1.2.0-3-gabc1234", fakeExe(t), t.TempDir()
	return cfg
}

func TestWXSGolden(t *testing.T) {
	got, err := RenderWXS(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "trellis-agent.wxs")
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
		t.Errorf("the WiX source differs from testdata/trellis-agent.wxs (run with -update if intended):\n%s", got)
	}
}

func TestMSIVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.3", "1.2.3"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0"},
		{"v2", "2.0.0"},
		{"v2.5", "2.5.0"},
		{"abc1234", "0.0.0"},
		{"dev", "0.0.0"},
		{"v300.1.70000", "255.1.65535"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := MSIVersion(tc.in); got != tc.want {
				t.Fatalf("MSIVersion(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no version", func(c *Config) { c.Version = "" }},
		{"no exe", func(c *Config) { c.Exe = "" }},
		{"missing exe", func(c *Config) { c.Exe = filepath.Join(t.TempDir(), "absent.exe") }},
		{"exe is a directory", func(c *Config) { c.Exe = t.TempDir() }},
		{"no out dir", func(c *Config) { c.OutDir = "" }},
		{"no manufacturer", func(c *Config) { c.Manufacturer = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			if _, err := RenderWXS(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("RenderWXS = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// msiTable returns the rows of one table as msiinfo exports them (tab-separated), without
// the three header lines.
func msiTable(t *testing.T, msi, table string) []string {
	t.Helper()
	out, err := exec.Command("msiinfo", "export", msi, table).CombinedOutput()
	if err != nil {
		t.Fatalf("msiinfo export %s: %v\n%s", table, err, out)
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("msiinfo export %s printed %q", table, out)
	}
	return lines[3:]
}

// row finds the row of table whose first column is key and returns its columns.
func row(t *testing.T, rows []string, key string) []string {
	t.Helper()
	for _, r := range rows {
		cols := strings.Split(r, "\t")
		if cols[0] == key {
			return cols
		}
	}
	t.Fatalf("no row %q in %q", key, rows)
	return nil
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"wixl": "wixl", "msiinfo": "msitools", "osslsigncode": "osslsigncode", "openssl": "openssl"}[tool]
			t.Skipf("%s not found: install the Debian package %s", tool, pkg)
		}
	}
}

// TestBuildTables builds the MSI with wixl and reads its tables back with msiinfo.
func TestBuildTables(t *testing.T) {
	needTools(t, "wixl", "msiinfo")
	cfg := testConfig(t)
	msi, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(msi) != "trellis-agent_1.2.0_x64.msi" {
		t.Errorf("file name %s", filepath.Base(msi))
	}
	for _, tc := range []struct {
		table, key string
		want       map[int]string // column index → value
	}{
		{"File", exeFileID, map[int]string{2: "trellis.exe", 3: "23"}},
		{"Component", "TrellisExe", map[int]string{1: "{" + strings.ToUpper(exeComponentGUID) + "}", 2: "INSTALLDIR"}},
		{"Directory", "INSTALLDIR", map[int]string{1: "ProgramFiles64Folder", 2: "trellis"}},
		{"Directory", "CONFIGDIR", map[int]string{1: "CommonAppDataFolder", 2: "trellis"}},
		// Type 16 own process, start 2 automatic, error control 1 normal.
		{"ServiceInstall", "AgentService", map[int]string{
			1: ServiceName, 3: "16", 4: "2", 5: "1", 8: "LocalSystem",
			10: `agent run --service --config "[CommonAppDataFolder]trellis\agent.yaml"`, 11: "TrellisExe"}},
		// Events 163 = start on install (1) + stop on install (2) + stop on uninstall (32)
		// + delete on uninstall (128); wait for each.
		{"ServiceControl", "AgentService", map[int]string{1: ServiceName, 2: "163", 4: "1", 5: "TrellisExe"}},
		// Type 3090 = 18 (an installed exe) + deferred + no impersonation; 3154 adds
		// "ignore the exit code".
		{"CustomAction", "ConfigureAgent", map[int]string{1: "3090", 2: exeFileID, 3: `agent configure --config "[CommonAppDataFolder]trellis\agent.yaml" --bbs-url "[BBS_URL]" --cell-id "[CELL_ID]" --zone "[ZONE]" --tags "[PLACEMENT_TAGS]" --rootfs "[ROOTFS_PROVIDERS]" --ca-file "[CA_FILE]" --cert-file "[CERT_FILE]" --key-file "[KEY_FILE]"`}},
		{"CustomAction", "SetAgentRecovery", map[int]string{1: "3154", 3: "agent recovery --name trellis-agent"}},
		{"CustomAction", "DrainAgent", map[int]string{1: "3154", 3: `agent stop --timeout 0 --config "[CommonAppDataFolder]trellis\agent.yaml"`}},
		{"InstallExecuteSequence", "DrainAgent", map[int]string{1: "Installed OR WIX_UPGRADE_DETECTED", 2: "1899"}},
		{"CustomAction", "PurgeAgent", map[int]string{1: "3154", 3: `agent purge --config "[CommonAppDataFolder]trellis\agent.yaml"`}},
		{"InstallExecuteSequence", "ConfigureAgent", map[int]string{1: `NOT REMOVE~="ALL" AND (BBS_URL OR CELL_ID OR ZONE OR PLACEMENT_TAGS OR ROOTFS_PROVIDERS OR CA_FILE OR CERT_FILE OR KEY_FILE OR WIX_UPGRADE_DETECTED)`, 2: "4001"}},
		// Only an uninstall given PURGE=1 purges, never the removal half of an upgrade (which
		// wine's msiexec runs as a plain uninstall, without UPGRADINGPRODUCTCODE).
		{"InstallExecuteSequence", "PurgeAgent", map[int]string{1: `REMOVE~="ALL" AND PURGE="1" AND NOT UPGRADINGPRODUCTCODE`, 2: "2001"}},
		{"InstallExecuteSequence", "SetAgentRecovery", map[int]string{2: "5801"}},
		{"InstallExecuteSequence", "InstallFiles", map[int]string{2: "4000"}},
		{"InstallExecuteSequence", "DeleteServices", map[int]string{2: "2000"}},
		{"InstallExecuteSequence", "RemoveFiles", map[int]string{2: "3500"}},
		{"InstallExecuteSequence", "StartServices", map[int]string{2: "5900"}},
		{"Property", "ProductVersion", map[int]string{1: "1.2.0"}},
		{"Property", "UpgradeCode", map[int]string{1: "{" + UpgradeCode + "}"}},
		{"Upgrade", "{" + strings.ToUpper(UpgradeCode) + "}", map[int]string{2: "1.2.0", 4: "1", 6: "WIX_UPGRADE_DETECTED"}},
	} {
		t.Run(tc.table+"/"+tc.key, func(t *testing.T) {
			cols := row(t, msiTable(t, msi, tc.table), tc.key)
			for i, want := range tc.want {
				if i >= len(cols) || cols[i] != want {
					t.Errorf("%s %s column %d = %q, want %q (row %q)", tc.table, tc.key, i, at(cols, i), want, cols)
				}
			}
		})
	}
	// The purge must run while trellis.exe is still installed and after the service is gone;
	// the configure before the service starts.
	seq := map[string]int{}
	for _, r := range msiTable(t, msi, "InstallExecuteSequence") {
		cols := strings.Split(r, "\t")
		var n int
		for _, c := range cols[2] {
			n = n*10 + int(c-'0')
		}
		seq[cols[0]] = n
	}
	for _, o := range [][2]string{
		{"DrainAgent", "StopServices"},
		{"DeleteServices", "PurgeAgent"}, {"PurgeAgent", "RemoveFiles"},
		{"InstallFiles", "ConfigureAgent"}, {"ConfigureAgent", "StartServices"},
		{"InstallServices", "SetAgentRecovery"}, {"SetAgentRecovery", "StartServices"},
	} {
		if seq[o[0]] >= seq[o[1]] {
			t.Errorf("%s (%d) must come before %s (%d)", o[0], seq[o[0]], o[1], seq[o[1]])
		}
	}
	// Every custom action runs the installed trellis.exe: none depends on another program,
	// such as cmd.exe, which wine did not always run.
	for _, r := range msiTable(t, msi, "CustomAction") {
		if cols := strings.Split(r, "\t"); len(cols) < 3 || cols[2] != exeFileID {
			t.Errorf("custom action %q does not run the installed trellis.exe", r)
		}
	}
	var conds []string
	for _, r := range msiTable(t, msi, "LaunchCondition") {
		conds = append(conds, strings.Split(r, "\t")[0])
	}
	if !contains(conds, "Installed OR WIX_UPGRADE_DETECTED OR (BBS_URL AND CELL_ID)") {
		t.Errorf("launch conditions %q lack the first-install check", conds)
	}
}

func at(cols []string, i int) string {
	if i < len(cols) {
		return cols[i]
	}
	return "<none>"
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// pki writes a self-signed code-signing CA and a leaf certificate issued by it, in PEM, and
// returns the CA file and the SignConfig of the leaf.
func pki(t *testing.T, dir, name string) (string, SignConfig) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " code signing"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write(name+"-ca.pem", "CERTIFICATE", caDER)
	return caFile, SignConfig{
		CertFile: write(name+"-cert.pem", "CERTIFICATE", leafDER),
		KeyFile:  write(name+"-key.pem", "PRIVATE KEY", keyDER),
	}
}

// TestSignAndVerify signs a built MSI and a real Windows executable with a code-signing
// certificate from a test CA, verifies both against that CA, and checks that verification
// fails against another CA, for an unsigned file and for a file changed after signing.
func TestSignAndVerify(t *testing.T) {
	needTools(t, "wixl", "osslsigncode")
	ctx := context.Background()
	dir := t.TempDir()
	caFile, sc := pki(t, dir, "trellis")
	otherCA, _ := pki(t, dir, "other")

	exe := filepath.Join(dir, "trellis.exe")
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", exe, src)
	build.Dir = dir
	build.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a Windows executable: %v\n%s", err, out)
	}
	cfg := testConfig(t)
	cfg.Exe = exe
	if err := Sign(ctx, sc, exe); err != nil {
		t.Fatalf("sign exe: %v", err)
	}
	msi, err := Build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, sc, caFile, msi); !errors.Is(err, ErrSign) {
		t.Fatalf("Verify of an unsigned MSI = %v, want ErrSign", err)
	}
	if err := Sign(ctx, sc, msi); err != nil {
		t.Fatalf("sign msi: %v", err)
	}
	for _, f := range []string{exe, msi} {
		if err := Verify(ctx, sc, caFile, f); err != nil {
			t.Errorf("Verify(%s) against its CA: %v", filepath.Base(f), err)
		}
		if err := Verify(ctx, sc, otherCA, f); !errors.Is(err, ErrSign) {
			t.Errorf("Verify(%s) against another CA = %v, want ErrSign", filepath.Base(f), err)
		}
	}
	// Change one byte of the signed executable's code: the signature must no longer hold.
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	tampered := filepath.Join(dir, "tampered.exe")
	if err := os.WriteFile(tampered, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, sc, caFile, tampered); !errors.Is(err, ErrSign) {
		t.Errorf("Verify of a tampered exe = %v, want ErrSign", err)
	}
}

func TestSignConfigValidate(t *testing.T) {
	dir := t.TempDir()
	_, sc := pki(t, dir, "v")
	for _, tc := range []struct {
		name string
		c    SignConfig
	}{
		{"nothing", SignConfig{}},
		{"cert without key", SignConfig{CertFile: sc.CertFile}},
		{"both kinds", SignConfig{CertFile: sc.CertFile, KeyFile: sc.KeyFile, PKCS12File: sc.CertFile}},
		{"missing key", SignConfig{CertFile: sc.CertFile, KeyFile: filepath.Join(dir, "absent")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
}
