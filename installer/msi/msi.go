package msi

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// ErrInvalidConfig is returned for a Config that cannot produce an MSI.
var ErrInvalidConfig = errors.New("invalid MSI configuration")

// ErrToolMissing is returned when wixl or osslsigncode is not installed.
var ErrToolMissing = errors.New("packaging tool not installed")

// ErrBuild wraps a failure of wixl.
var ErrBuild = errors.New("building the MSI failed")

// Identifiers that must never change between versions: the upgrade code ties every version
// of the product together for MajorUpgrade, and component GUIDs identify a component at
// its install path.
const (
	UpgradeCode         = "32a5a232-8dd7-45aa-b12c-972c94217b61"
	exeComponentGUID    = "9b87aafb-3817-44a4-b4d6-636bf532d150"
	configComponentGUID = "085259f9-06a0-428d-abc8-edbaa81ade1d"
	exeFileID           = "TrellisExe"
)

// ServiceName is the Windows service's name, the same as the systemd unit's.
const ServiceName = "trellis-agent"

// ConfigPath is where the MSI writes the agent's configuration, in MSI formatted syntax.
const ConfigPath = `[CommonAppDataFolder]trellis\agent.yaml`

// PurgeProperty is the property that makes an uninstall also delete the configuration and
// the agent's data (msiexec /x trellis-agent.msi PURGE=1). Without it an uninstall keeps them,
// as removing the Debian package keeps /etc/trellis until it is purged.
const PurgeProperty = "PURGE"

// ServiceArguments is the command line the service control manager starts trellis.exe with.
const ServiceArguments = `agent run --service --config "` + ConfigPath + `"`

// Property maps a public MSI property to the `trellis agent configure` flag it fills.
type Property struct {
	Name, Flag string
}

// Properties are the public properties an operator passes to msiexec.
var Properties = []Property{
	{"BBS_URL", "--bbs-url"},
	{"CELL_ID", "--cell-id"},
	{"ZONE", "--zone"},
	{"PLACEMENT_TAGS", "--tags"},
	{"ROOTFS_PROVIDERS", "--rootfs"},
	{"CA_FILE", "--ca-file"},
	{"CERT_FILE", "--cert-file"},
	{"KEY_FILE", "--key-file"},
}

// Config says what to package.
type Config struct {
	// Version is trellis's version (a tag or git describe string); the MSI's ProductVersion
	// is derived from it by MSIVersion. Required.
	Version string
	// Exe is the Windows amd64 trellis.exe. Required.
	Exe string
	// OutDir receives the MSI. Default "dist".
	OutDir string
	// Manufacturer is shown in Programs and Features. Default "trellis".
	Manufacturer string
	// Wixl is the wixl binary. Default "wixl".
	Wixl string
}

// DefaultConfig returns the defaults; Version and Exe still need setting.
func DefaultConfig() Config {
	return Config{OutDir: "dist", Manufacturer: "trellis", Wixl: "wixl"}
}

// Validate reports the first unusable field. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.Version == "":
		return fmt.Errorf("%w: version must be set", ErrInvalidConfig)
	case c.Exe == "":
		return fmt.Errorf("%w: exe must be set", ErrInvalidConfig)
	case c.OutDir == "":
		return fmt.Errorf("%w: out_dir must be set", ErrInvalidConfig)
	case c.Manufacturer == "":
		return fmt.Errorf("%w: manufacturer must be set", ErrInvalidConfig)
	case c.Wixl == "":
		return fmt.Errorf("%w: wixl must be set", ErrInvalidConfig)
	}
	fi, err := os.Stat(c.Exe)
	if err != nil {
		return fmt.Errorf("%w: exe: %w", ErrInvalidConfig, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: exe: %s is not a file", ErrInvalidConfig, c.Exe)
	}
	return nil
}

var versionPrefix = regexp.MustCompile(`^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?`)

// MSIVersion returns the MSI ProductVersion for a trellis version: the leading
// major.minor.patch of a tag or git describe string, clamped to the MSI limits (255, 255,
// 65535), or "0.0.0" for a bare commit. Builds between two tags share a version; the MSI
// allows same-version upgrades so the newer build still replaces the older.
func MSIVersion(v string) string {
	m := versionPrefix.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return "0.0.0"
	}
	limits := []int{255, 255, 65535}
	parts := make([]string, 3)
	for i := range parts {
		n, _ := strconv.Atoi(m[i+1])
		parts[i] = strconv.Itoa(min(n, limits[i]))
	}
	return strings.Join(parts, ".")
}

//go:embed trellis-agent.wxs.tmpl
var wxsText string

var wxsTemplate = template.Must(template.New("wxs").Funcs(template.FuncMap{
	"attr": xmlEscape,
	"text": textEscaper.Replace,
}).Parse(wxsText))

// xmlEscape escapes s for a double-quoted XML attribute value.
var xmlEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "\n", "&#10;", "\t", "&#9;").Replace

// textEscaper escapes an XML text node, leaving quotes readable.
var textEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// wxsData fills the template.
type wxsData struct {
	Version, MSIVersion, Manufacturer, UpgradeCode string
	ExeComponentGUID, ConfigComponentGUID          string
	ExeFileID, ServiceName, ServiceArguments       string
	PropertyList                                   string
	NotRemoving, PurgeCondition                    string
	ConfigureCommand, ConfigureCondition           string
	RecoveryCommand, PurgeCommand                  string
	DrainCommand, DrainCondition                   string
	PurgeProperty                                  string
}

// RenderWXS returns the WiX source for cfg. Errors: ErrInvalidConfig.
func RenderWXS(cfg Config) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := wxsData{
		Version: cfg.Version, MSIVersion: MSIVersion(cfg.Version), Manufacturer: cfg.Manufacturer,
		UpgradeCode: UpgradeCode, ExeComponentGUID: exeComponentGUID, ConfigComponentGUID: configComponentGUID,
		ExeFileID: exeFileID, ServiceName: ServiceName, ServiceArguments: ServiceArguments,
		RecoveryCommand: "agent recovery --name " + ServiceName,
		PurgeCommand:    `agent purge --config "` + ConfigPath + `"`,
		DrainCommand:    `agent stop --timeout 0 --config "` + ConfigPath + `"`,
		// Whenever a trellis.exe is already installed: repair, upgrade, uninstall.
		DrainCondition: "Installed OR WIX_UPGRADE_DETECTED",
		PurgeProperty:  PurgeProperty,
	}
	cmd := []string{`agent configure --config "` + ConfigPath + `"`}
	var names []string
	for _, p := range Properties {
		cmd = append(cmd, fmt.Sprintf(`%s "[%s]"`, p.Flag, p.Name))
		names = append(names, p.Name)
	}
	d.PropertyList = "Public properties: " + strings.Join(names, ", ")
	d.ConfigureCommand = strings.Join(cmd, " ")
	d.NotRemoving = `NOT REMOVE~="ALL"`
	// An upgrade runs configure even without properties: with nothing to set it only checks
	// that the kept file is valid for the new version, and a file that is not fails (and so
	// rolls back) the upgrade instead of leaving a service that cannot start.
	d.ConfigureCondition = d.NotRemoving + ` AND (` + strings.Join(names, " OR ") + ` OR WIX_UPGRADE_DETECTED)`
	// Only an uninstall asked to purge deletes the configuration. The removal half of an
	// upgrade never does: Windows Installer runs it with UPGRADINGPRODUCTCODE set, and wine's
	// msiexec as a plain uninstall of its own (REMOVE=ALL, nothing else), which is why the
	// purge needs a property the operator passes rather than the absence of an upgrade.
	d.PurgeCondition = `REMOVE~="ALL" AND ` + PurgeProperty + `="1" AND NOT UPGRADINGPRODUCTCODE`
	var buf bytes.Buffer
	if err := wxsTemplate.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("msi: render: %w", err)
	}
	return buf.Bytes(), nil
}

// FileName returns the MSI's file name for version.
func FileName(version string) string {
	return fmt.Sprintf("trellis-agent_%s_x64.msi", MSIVersion(version))
}

// Build renders the WiX source and compiles it with wixl into cfg.OutDir, returning the MSI's
// path. Errors: ErrInvalidConfig, ErrToolMissing, ErrBuild.
func Build(ctx context.Context, cfg Config) (string, error) {
	wxs, err := RenderWXS(cfg)
	if err != nil {
		return "", err
	}
	wixl, err := exec.LookPath(cfg.Wixl)
	if err != nil {
		return "", fmt.Errorf("%w: %s (Debian package wixl): %v", ErrToolMissing, cfg.Wixl, err)
	}
	stage, err := os.MkdirTemp("", "trellis-msi-")
	if err != nil {
		return "", fmt.Errorf("msi: %w", err)
	}
	defer os.RemoveAll(stage)
	// wixl takes sources relative to the .wxs, so the golden source names no build path.
	src := filepath.Join(stage, "trellis-agent.wxs")
	if err := os.WriteFile(src, wxs, 0o644); err != nil {
		return "", fmt.Errorf("msi: %w", err)
	}
	exe, err := filepath.Abs(cfg.Exe)
	if err != nil {
		return "", fmt.Errorf("msi: %w", err)
	}
	if err := os.Symlink(exe, filepath.Join(stage, "trellis.exe")); err != nil {
		return "", fmt.Errorf("msi: stage trellis.exe: %w", err)
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("msi: create %s: %w", cfg.OutDir, err)
	}
	tmp := filepath.Join(stage, "out.msi")
	c := exec.CommandContext(ctx, wixl, "-a", "x64", "-o", tmp, src)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%w: wixl: %v: %s", ErrBuild, err, strings.TrimSpace(out.String()))
	}
	dst := filepath.Join(cfg.OutDir, FileName(cfg.Version))
	data, err := os.ReadFile(tmp)
	if err != nil {
		return "", fmt.Errorf("msi: %w", err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return "", fmt.Errorf("msi: write %s: %w", dst, err)
	}
	return dst, nil
}
