package systemd

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"text/template"
	"time"
)

// ErrInvalidUnit is returned by Validate and Render for a unit that systemd would refuse or
// that would not run trellis the way it must be run.
var ErrInvalidUnit = errors.New("invalid systemd unit")

// Paths and names the units and packages agree on.
const (
	// AgentName is the agent's service name on every platform.
	AgentName = "trellis-agent"
	// BBSName and BrainName are the server's two services.
	BBSName   = "trellis-bbs"
	BrainName = "trellis-brain"
	// Binary is where the packages install the trellis binary.
	Binary = "/usr/bin/trellis"
	// AgentConfig is the agent's configuration file on Linux.
	AgentConfig = "/etc/trellis/agent.yaml"
	// BBSEnvFile and BrainEnvFile hold the flags of the server's services.
	BBSEnvFile   = "/etc/trellis/bbs.env"
	BrainEnvFile = "/etc/trellis/brain.env"
	// PackageUnitDir is where a Debian package puts units; LocalUnitDir is where an
	// administrator (and `trellis agent install`) does.
	PackageUnitDir = "/lib/systemd/system"
	LocalUnitDir   = "/etc/systemd/system"
	// DocumentationURL is shown by `systemctl status`.
	DocumentationURL = "https://github.com/trellis-run/trellis/blob/main/docs/install.md"
)

// AgentStopTimeout is how long systemd waits for the agent to stop before it kills the main
// process: the agent's default evacuation timeout (10 min) plus a margin for the final
// reports to the BBS.
const AgentStopTimeout = 10*time.Minute + 5*time.Minute

// Unit describes one service. The zero value is not usable; start from AgentUnit, BBSUnit or
// BrainUnit.
type Unit struct {
	// Name is the service name without ".service".
	Name        string
	Description string
	// Exec is the command line: an absolute binary followed by its arguments. Each word is
	// quoted and escaped for systemd, so spaces, '%' and '$' arrive as written.
	Exec []string
	// ExtraArgsVar, when set, appends "$VAR" unquoted to ExecStart, so systemd splits the
	// variable's value (usually from EnvironmentFile) into further arguments.
	ExtraArgsVar string
	// EnvironmentFile is read before start; a missing file is an error unless Optional.
	EnvironmentFile         string
	EnvironmentFileOptional bool
	// After and Wants order the unit after others besides network-online.target.
	After []string
	Wants []string
	// KillMode is "process" for the agent (containers outlive it) and "control-group" for
	// the servers.
	KillMode string
	// Delegate hands the unit's cgroup subtree to the service.
	Delegate bool
	// RestartSec is the pause before systemd restarts the service after it exits.
	RestartSec time.Duration
	// TimeoutStopSec bounds a stop; for the agent a stop is a drain.
	TimeoutStopSec time.Duration
	// LimitNOFILE is the open-file limit; 0 leaves systemd's default.
	LimitNOFILE uint64
	// OOMScoreAdjust keeps the service alive under memory pressure (negative = spared).
	OOMScoreAdjust int
	// Version is written in the header comment.
	Version string
}

// FileName returns the unit's file name, "<name>.service".
func (u Unit) FileName() string { return u.Name + ".service" }

// AgentUnit returns the cell agent's unit for a binary at binary reading config.
func AgentUnit(binary, config, version string) Unit {
	return Unit{
		Name:           AgentName,
		Description:    "trellis cell agent: runs the work the BBS places on this cell",
		Exec:           []string{binary, "agent", "run", "--config", config},
		KillMode:       "process",
		Delegate:       true,
		RestartSec:     5 * time.Second,
		TimeoutStopSec: AgentStopTimeout,
		LimitNOFILE:    1048576,
		OOMScoreAdjust: -900,
		Version:        version,
	}
}

// BBSUnit returns the BBS's unit: `trellis bbs` with the flags in $TRELLIS_BBS_FLAGS from
// BBSEnvFile.
func BBSUnit(binary, version string) Unit {
	return Unit{
		Name:            BBSName,
		Description:     "trellis BBS: the API and source of truth, on etcd",
		Exec:            []string{binary, "bbs"},
		ExtraArgsVar:    "TRELLIS_BBS_FLAGS",
		EnvironmentFile: BBSEnvFile,
		KillMode:        "control-group",
		RestartSec:      5 * time.Second,
		TimeoutStopSec:  time.Minute,
		LimitNOFILE:     1048576,
		OOMScoreAdjust:  -500,
		Version:         version,
	}
}

// BrainUnit returns the brain's unit: `trellis brain` with the flags in $TRELLIS_BRAIN_FLAGS
// from BrainEnvFile. It starts after a BBS on the same machine, if there is one, without
// requiring it (the BBS may run elsewhere).
func BrainUnit(binary, version string) Unit {
	return Unit{
		Name:            BrainName,
		Description:     "trellis brain: auctioneer and converger, leader-elected through the BBS",
		Exec:            []string{binary, "brain"},
		ExtraArgsVar:    "TRELLIS_BRAIN_FLAGS",
		EnvironmentFile: BrainEnvFile,
		After:           []string{BBSName + ".service"},
		KillMode:        "control-group",
		RestartSec:      5 * time.Second,
		TimeoutStopSec:  time.Minute,
		LimitNOFILE:     65536,
		Version:         version,
	}
}

var (
	unitNamePattern = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]{1,200}$`)
	envVarPattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate reports the first field systemd would refuse or that breaks trellis's contract.
// Errors: ErrInvalidUnit naming the field.
func (u Unit) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidUnit, field, fmt.Sprintf(format, args...))
	}
	switch {
	case !unitNamePattern.MatchString(u.Name):
		return bad("name", "%q is not a unit name", u.Name)
	case u.Description == "" || strings.ContainsAny(u.Description, "\r\n"):
		return bad("description", "must be one non-empty line")
	case len(u.Exec) == 0 || !path.IsAbs(u.Exec[0]):
		return bad("exec", "must start with an absolute binary path, got %q", u.Exec)
	case u.ExtraArgsVar != "" && !envVarPattern.MatchString(u.ExtraArgsVar):
		return bad("extra_args_var", "%q is not an environment variable name", u.ExtraArgsVar)
	case u.EnvironmentFile != "" && !path.IsAbs(u.EnvironmentFile):
		return bad("environment_file", "%q must be absolute", u.EnvironmentFile)
	case u.RestartSec <= 0:
		return bad("restart_sec", "must be positive so a crash loop does not spin, got %s", u.RestartSec)
	case u.TimeoutStopSec <= 0:
		return bad("timeout_stop_sec", "must be positive, got %s", u.TimeoutStopSec)
	case u.OOMScoreAdjust < -1000 || u.OOMScoreAdjust > 1000:
		return bad("oom_score_adjust", "%d is outside -1000..1000", u.OOMScoreAdjust)
	}
	switch u.KillMode {
	case "process", "control-group", "mixed":
	default:
		return bad("kill_mode", "%q is not process, control-group or mixed", u.KillMode)
	}
	for _, w := range u.Exec {
		if strings.ContainsAny(w, "\x00\r\n") {
			return bad("exec", "argument %q holds a control character", w)
		}
	}
	for _, d := range append(append([]string{}, u.After...), u.Wants...) {
		if !unitNamePattern.MatchString(d) {
			return bad("after", "%q is not a unit name", d)
		}
	}
	return nil
}

//go:embed unit.tmpl
var unitTemplateText string

var unitTemplate = template.Must(template.New("unit").Funcs(template.FuncMap{
	"seconds": func(d time.Duration) string { return systemdSeconds(d) },
}).Parse(unitTemplateText))

// Render returns the unit file. Errors: ErrInvalidUnit.
func (u Unit) Render() ([]byte, error) {
	if err := u.Validate(); err != nil {
		return nil, err
	}
	words := make([]string, len(u.Exec))
	for i, w := range u.Exec {
		words[i] = quoteWord(w)
	}
	exec := strings.Join(words, " ")
	if u.ExtraArgsVar != "" {
		exec += " $" + u.ExtraArgsVar
	}
	envFile := u.EnvironmentFile
	if envFile != "" && u.EnvironmentFileOptional {
		envFile = "-" + envFile
	}
	var buf bytes.Buffer
	err := unitTemplate.Execute(&buf, struct {
		Unit
		ExecStart, EnvFile, Doc string
	}{u, exec, envFile, DocumentationURL})
	if err != nil {
		return nil, fmt.Errorf("systemd: render %s: %w", u.FileName(), err)
	}
	return buf.Bytes(), nil
}

// quoteWord writes one ExecStart word so that systemd passes it unchanged: '%' specifiers
// and '$' expansions are escaped, and a word with spaces, quotes or backslashes is
// double-quoted with C-style escapes.
func quoteWord(w string) string {
	w = strings.ReplaceAll(w, "%", "%%")
	w = strings.ReplaceAll(w, "$", "$$")
	if w != "" && !strings.ContainsAny(w, " \t\"'\\;") {
		return w
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\t", `\t`)
	return `"` + r.Replace(w) + `"`
}

// systemdSeconds writes d in systemd's time-span syntax, in whole seconds ("900s").
func systemdSeconds(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%ds", secs)
}
