package deb

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/trellis-run/trellis/installer/systemd"
)

// ErrInvalidConfig is returned for a Config that cannot produce a package.
var ErrInvalidConfig = errors.New("invalid package configuration")

// ErrBuild wraps a failure of nfpm to assemble a package.
var ErrBuild = errors.New("building the package failed")

// Package names.
const (
	BinaryPackage = "trellis"
	AgentPackage  = "trellis-agent"
	ServerPackage = "trellis-server"
)

// Paths on the installed system, besides those of package systemd.
const (
	ConfigDir     = "/etc/trellis"
	StateDir      = "/var/lib/trellis"
	AgentStateDir = "/var/lib/trellis/agent"
	BBSStateDir   = "/var/lib/trellis/bbs"
	PKIDir        = "/etc/trellis/pki"
)

// Config says what to package.
type Config struct {
	// Version is the package version; a git describe string ("v1.2.0-3-gabc", "abc1234")
	// is turned into a Debian version by DebianVersion. Required.
	Version string
	// Arch is the Debian architecture of Binary. Default "amd64".
	Arch string
	// Binary is the Linux trellis binary to ship. Required.
	Binary string
	// OutDir receives the .deb files. Default "dist".
	OutDir string
	// Maintainer is the Maintainer field. Default "trellis maintainers <trellis@localhost>".
	Maintainer string
	// MTime stamps every file, for reproducible packages. Default: SOURCE_DATE_EPOCH when
	// set, else the time of the build.
	MTime time.Time
}

// DefaultConfig returns the defaults; Version and Binary still need setting.
func DefaultConfig() Config {
	return Config{Arch: "amd64", OutDir: "dist", Maintainer: "trellis maintainers <trellis@localhost>"}
}

// Validate reports the first unusable field. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.Version == "":
		return fmt.Errorf("%w: version must be set", ErrInvalidConfig)
	case c.Arch == "":
		return fmt.Errorf("%w: arch must be set", ErrInvalidConfig)
	case c.OutDir == "":
		return fmt.Errorf("%w: out_dir must be set", ErrInvalidConfig)
	case c.Binary == "":
		return fmt.Errorf("%w: binary must be set", ErrInvalidConfig)
	}
	fi, err := os.Stat(c.Binary)
	if err != nil {
		return fmt.Errorf("%w: binary: %w", ErrInvalidConfig, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: binary: %s is not an executable file", ErrInvalidConfig, c.Binary)
	}
	return nil
}

var debianVersionPattern = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

// DebianVersion turns a release tag or git describe string into a Debian upstream version:
// a leading "v" goes, a version not starting with a digit (a bare commit) becomes
// "0.0.0~git<commit>" so it sorts before any release, hyphens become "+" and anything else
// outside Debian's alphabet becomes ".". "v1.2.0-3-gabc-dirty" gives "1.2.0+3+gabc+dirty".
func DebianVersion(v string) string {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0.0~git" + v
	}
	var b strings.Builder
	for _, r := range v {
		switch {
		case r == '-':
			b.WriteByte('+')
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '.', r == '+', r == '~':
			b.WriteRune(r)
		default:
			b.WriteByte('.')
		}
	}
	return b.String()
}

// scriptData fills the maintainer-script templates.
type scriptData struct {
	Package, Version string
	Units            []string
	StateDirs        []string
	PurgeFiles       []string
	SharedDirs       []string
	StopNote         string
}

// file is one file of a package, generated or copied.
type file struct {
	dst  string
	src  string // copied from disk when set
	data []byte // written from memory otherwise
	mode os.FileMode
	typ  string // nfpm content type: "" (file), files.TypeConfigNoReplace
}

// spec is one package before it is handed to nfpm.
type spec struct {
	name, description string
	depends           []string
	recommends        []string
	files             []file
	scripts           *scriptData
}

//go:embed scripts/*.tmpl
var scriptFS embed.FS

var scripts = template.Must(template.ParseFS(scriptFS, "scripts/*.tmpl"))

// Build writes the three packages into cfg.OutDir and returns their paths: trellis,
// trellis-agent, trellis-server. Errors: ErrInvalidConfig, ErrBuild, or the file system's.
func Build(ctx context.Context, cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range []func(Config) (spec, error){binarySpec, agentSpec, serverSpec} {
		sp, err := s(cfg)
		if err != nil {
			return out, err
		}
		path, err := build(ctx, cfg, sp)
		if err != nil {
			return out, err
		}
		out = append(out, path)
	}
	return out, nil
}

func binarySpec(cfg Config) (spec, error) {
	return spec{
		name:        BinaryPackage,
		description: "trellis, a cell runtime for mixed Windows and Linux fleets (the binary)\n The trellis binary: BBS, brain, cell agent and operator CLI. Install\n trellis-agent on cells and trellis-server on the control plane.",
		files:       []file{{dst: systemd.Binary, src: cfg.Binary, mode: 0o755}},
	}, nil
}

// DefaultAgentConfig is /etc/trellis/agent.yaml as the agent package ships it: the keys an
// operator fills in with `trellis agent configure`, which the agent refuses to start without.
const DefaultAgentConfig = `# trellis cell agent configuration, read by trellis-agent.service.
# Fill it in with
#   trellis agent configure --cell-id ID --bbs-url https://BBS:8889 --zone z1 \
#     --rootfs preloaded:cflinuxfs4=/var/lib/trellis/rootfs/cflinuxfs4 --rootfs docker
# then start the agent: systemctl start trellis-agent
cell_id: ""
zone: z1
bbs:
  url: ""
  ca_file: /etc/trellis/pki/ca.crt
  cert_file: /etc/trellis/pki/cell.crt
  key_file: /etc/trellis/pki/cell.key
rootfs_providers: {}
data_dir: /var/lib/trellis/agent
backend: linux
`

func agentSpec(cfg Config) (spec, error) {
	unit, err := systemd.AgentUnit(systemd.Binary, systemd.AgentConfig, cfg.Version).Render()
	if err != nil {
		return spec{}, err
	}
	name := systemd.AgentName + ".service"
	return spec{
		name:        AgentPackage,
		description: "trellis cell agent (systemd service)\n Runs the work the trellis BBS places on this cell. Stopping the service drains\n the cell: its instances are evacuated to other cells first.",
		// The Linux backend networks containers through the CNI plugins Debian ships in
		// /usr/lib/cni (portmap writes iptables rules) and formats per-container disks
		// with mkfs.ext4 or uses XFS project quotas.
		depends:    []string{fmt.Sprintf("%s (= %s)", BinaryPackage, DebianVersion(cfg.Version)), "containernetworking-plugins", "iptables"},
		recommends: []string{"e2fsprogs", "xfsprogs"},
		files: []file{
			{dst: filepath.Join(systemd.PackageUnitDir, name), data: unit, mode: 0o644},
			{dst: systemd.AgentConfig, data: []byte(DefaultAgentConfig), mode: 0o640, typ: files.TypeConfigNoReplace},
		},
		scripts: &scriptData{
			Units:      []string{systemd.AgentName},
			StateDirs:  []string{AgentStateDir},
			PurgeFiles: []string{systemd.AgentConfig},
			SharedDirs: []string{StateDir, PKIDir, ConfigDir},
			StopNote:   "stopping trellis-agent drains the cell (up to 15 minutes while its work moves away)",
		},
	}, nil
}

// DefaultBBSEnv and DefaultBrainEnv are the server package's /etc/trellis/{bbs,brain}.env.
const (
	DefaultBBSEnv = `# Flags of trellis-bbs.service, passed to ` + "`trellis bbs`" + ` (see trellis bbs --help).
# Several BBS replicas share an external etcd: add --etcd-endpoints and its --etcd-* files.
TRELLIS_BBS_FLAGS="--data-dir /var/lib/trellis/bbs --listen 0.0.0.0:8889 --tls-ca /etc/trellis/pki/ca.crt --tls-cert /etc/trellis/pki/bbs.crt --tls-key /etc/trellis/pki/bbs.key"
`
	DefaultBrainEnv = `# Flags of trellis-brain.service, passed to ` + "`trellis brain`" + ` (see trellis brain --help).
# Every brain of a cluster needs its own --owner (the default, <hostname>-<pid>, is unique).
TRELLIS_BRAIN_FLAGS="--bbs-url https://127.0.0.1:8889 --bbs-ca /etc/trellis/pki/ca.crt --bbs-cert /etc/trellis/pki/brain.crt --bbs-key /etc/trellis/pki/brain.key --metrics-listen 127.0.0.1:9101"
`
)

func serverSpec(cfg Config) (spec, error) {
	bbs, err := systemd.BBSUnit(systemd.Binary, cfg.Version).Render()
	if err != nil {
		return spec{}, err
	}
	brain, err := systemd.BrainUnit(systemd.Binary, cfg.Version).Render()
	if err != nil {
		return spec{}, err
	}
	return spec{
		name:        ServerPackage,
		description: "trellis control plane: BBS and brain (systemd services)\n trellis-bbs serves the API over an embedded or external etcd; trellis-brain\n runs the auctioneer and converger, leader-elected among brains.",
		depends:     []string{fmt.Sprintf("%s (= %s)", BinaryPackage, DebianVersion(cfg.Version))},
		files: []file{
			{dst: filepath.Join(systemd.PackageUnitDir, systemd.BBSName+".service"), data: bbs, mode: 0o644},
			{dst: filepath.Join(systemd.PackageUnitDir, systemd.BrainName+".service"), data: brain, mode: 0o644},
			{dst: systemd.BBSEnvFile, data: []byte(DefaultBBSEnv), mode: 0o640, typ: files.TypeConfigNoReplace},
			{dst: systemd.BrainEnvFile, data: []byte(DefaultBrainEnv), mode: 0o640, typ: files.TypeConfigNoReplace},
		},
		scripts: &scriptData{
			Units:      []string{systemd.BBSName, systemd.BrainName},
			StateDirs:  []string{BBSStateDir},
			PurgeFiles: []string{systemd.BBSEnvFile, systemd.BrainEnvFile},
			SharedDirs: []string{StateDir, PKIDir, ConfigDir},
		},
	}, nil
}

// build stages sp's generated files and scripts in a temporary directory and writes the
// package with nfpm.
func build(ctx context.Context, cfg Config, sp spec) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	stage, err := os.MkdirTemp("", "trellis-deb-")
	if err != nil {
		return "", fmt.Errorf("deb: stage %s: %w", sp.name, err)
	}
	defer os.RemoveAll(stage)

	version := DebianVersion(cfg.Version)
	info := &nfpm.Info{
		Name:          sp.name,
		Arch:          cfg.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    cfg.Maintainer,
		Description:   sp.description,
		Vendor:        "trellis",
		Homepage:      "https://github.com/trellis-run/trellis",
		License:       "Apache-2.0",
		MTime:         cfg.MTime,
	}
	info.Depends = sp.depends
	info.Recommends = sp.recommends
	for i, f := range sp.files {
		src := f.src
		if src == "" {
			src = filepath.Join(stage, fmt.Sprintf("file-%d", i))
			if err := os.WriteFile(src, f.data, f.mode); err != nil {
				return "", fmt.Errorf("deb: stage %s: %w", f.dst, err)
			}
		}
		info.Contents = append(info.Contents, &files.Content{
			Source:      src,
			Destination: f.dst,
			Type:        f.typ,
			FileInfo:    &files.ContentFileInfo{Owner: "root", Group: "root", Mode: f.mode},
		})
	}
	if sp.scripts != nil {
		data := *sp.scripts
		data.Package, data.Version = sp.name, version
		for _, s := range []struct {
			tmpl string
			dst  *string
		}{
			{"postinst.tmpl", &info.Scripts.PostInstall},
			{"prerm.tmpl", &info.Scripts.PreRemove},
			{"postrm.tmpl", &info.Scripts.PostRemove},
		} {
			var buf bytes.Buffer
			if err := scripts.ExecuteTemplate(&buf, s.tmpl, data); err != nil {
				return "", fmt.Errorf("deb: %s script %s: %w", sp.name, s.tmpl, err)
			}
			path := filepath.Join(stage, strings.TrimSuffix(s.tmpl, ".tmpl"))
			if err := os.WriteFile(path, buf.Bytes(), 0o755); err != nil {
				return "", fmt.Errorf("deb: stage %s: %w", path, err)
			}
			*s.dst = path
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrBuild, sp.name, err)
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("deb: create %s: %w", cfg.OutDir, err)
	}
	dst := filepath.Join(cfg.OutDir, deb.Default.ConventionalFileName(info))
	tmp, err := os.CreateTemp(cfg.OutDir, "."+sp.name+"-*.deb")
	if err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := deb.Default.Package(info, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("%w: %s: %v", ErrBuild, sp.name, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("deb: write %s: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("deb: write %s: %w", dst, err)
	}
	return dst, nil
}
