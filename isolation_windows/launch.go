package isolationwindows

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

// ContainerDirEnv names the variable that tells a process-mode process which host directory
// stands for its container's "/" (processes there see the host's file system).
const ContainerDirEnv = "TRELLIS_CONTAINER_DIR"

// hostEnvKeys are the host variables a process-mode process inherits: what Windows programs
// need to find the system (and nothing that identifies the agent's own configuration).
var hostEnvKeys = []string{
	"SystemRoot", "SystemDrive", "windir", "ComSpec", "PATH", "PATHEXT", "OS",
	"NUMBER_OF_PROCESSORS", "PROCESSOR_ARCHITECTURE", "PROCESSOR_IDENTIFIER",
	"ProgramData", "ProgramFiles", "ProgramFiles(x86)", "ProgramW6432",
	"CommonProgramFiles", "CommonProgramFiles(x86)", "CommonProgramW6432", "ALLUSERSPROFILE",
}

// buildLaunch translates spec into what the driver starts, in rec's mode.
//
// Process mode: a Path or Dir that is a slash path ("/app/web.exe") is a path in the
// container, resolved under its private directory; a Windows absolute path ("C:\...") is a
// host path; a relative Path is searched by CreateProcess. The environment is the host's
// system variables (hostEnvKeys), then TEMP/TMP (a tmp folder in the private directory) and
// TRELLIS_CONTAINER_DIR, then the container's Env, then the process's Env, then PORT.
//
// Container mode: paths are the container's own (a slash path "/app/x" is "C:\app\x").
//
// In both modes PORT is set when the container has NetIn, to the host port of the first
// mapping in process mode (the process listens on the host) and to its container port in
// container mode (HNS maps the host port to it); it replaces a PORT in Env.
func buildLaunch(rec *containerRecord, root fsRoot, cfg Config, spec isolation.ProcessSpec) (launch, error) {
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	l := launch{args: spec.Args}
	var base []string
	port := ""
	switch rec.Mode {
	case ModeProcess:
		hostDir, err := root.checkDir(dir)
		if err != nil {
			return launch{}, err
		}
		l.dir = hostDir
		l.path = spec.Path
		if strings.HasPrefix(spec.Path, "/") {
			_, hp, err := root.resolve(spec.Path, true, false)
			if err != nil {
				return launch{}, invalidf("Path %q: %v", spec.Path, err)
			}
			l.path = hp
		}
		for _, k := range hostEnvKeys {
			if v, ok := os.LookupEnv(k); ok {
				base = append(base, k+"="+v)
			}
		}
		tmp := filepath.Join(rec.RootDir, "tmp")
		base = append(base, "TEMP="+tmp, "TMP="+tmp, ContainerDirEnv+"="+rec.RootDir)
		if len(rec.Ports) > 0 {
			port = strconv.FormatUint(uint64(rec.Ports[0].HostPort), 10)
		}
	case ModeContainer:
		if _, err := root.checkDir(dir); err != nil {
			return launch{}, err
		}
		l.dir = containerWinPath(dir)
		l.path = spec.Path
		if strings.HasPrefix(spec.Path, "/") {
			l.path = containerWinPath(spec.Path)
		}
		if len(rec.Ports) > 0 {
			port = strconv.FormatUint(uint64(rec.Ports[0].ContainerPort), 10)
		}
	default:
		return launch{}, fmt.Errorf("isolation_windows: container %q has unknown mode %q", rec.Handle, rec.Mode)
	}
	var portEnv []string
	if port != "" {
		portEnv = []string{"PORT=" + port}
	}
	l.env = mergeEnv(base, rec.Spec.Env, spec.Env, portEnv)
	return l, nil
}

// containerWinPath turns a slash container path into the container's Windows path.
func containerWinPath(p string) string {
	return `C:` + strings.ReplaceAll(path.Clean("/"+p), "/", `\`)
}
