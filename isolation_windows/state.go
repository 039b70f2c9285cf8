package isolationwindows

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// The state dir layout, one directory per container:
//
//	<StateDir>/<handle>/container.json      containerRecord
//	<StateDir>/<handle>/root/               process mode: the private directory ("/")
//	<StateDir>/<handle>/procs/<id>.json     processRecord
//	<StateDir>/<handle>/procs/<id>.stdout   what the process wrote to stdout
//	<StateDir>/<handle>/procs/<id>.stderr   ... and to stderr
const (
	containerFile = "container.json"
	rootDirName   = "root"
	procsDirName  = "procs"
)

// containerRecord is what a Backend persists about a container, so that a new Backend over
// the same StateDir finds it (Lookup, List) and reopens its isolation.
type containerRecord struct {
	Handle     string                  `json:"handle"`
	Mode       Mode                    `json:"mode"`
	Stack      string                  `json:"stack"`
	Spec       isolation.ContainerSpec `json:"spec"`
	State      isolation.State         `json:"state"`
	Properties isolation.Properties    `json:"properties"`
	Ports      []isolation.PortMapping `json:"ports,omitempty"`
	HostIP     string                  `json:"host_ip"`
	// ContainerIP is the HNS endpoint's address (container mode); empty in process mode,
	// where processes share the host's network and answer only on their mapped host ports.
	ContainerIP string `json:"container_ip"`
	// RootDir is the host directory standing for the container's "/": the private directory
	// (process mode) or the scratch volume's mount path (container mode).
	RootDir string       `json:"root_dir"`
	Mounts  []mountPoint `json:"mounts,omitempty"`
	// JobName is the process-mode job object's name.
	JobName string `json:"job_name,omitempty"`
	// SystemID and EndpointID name the compute system and HNS endpoint (container mode).
	SystemID   string    `json:"system_id,omitempty"`
	EndpointID string    `json:"endpoint_id,omitempty"`
	Events     []string  `json:"events,omitempty"`
	Created    time.Time `json:"created"`
}

// processRecord is what a Backend persists about a process.
type processRecord struct {
	ID  string `json:"id"`
	Pid int    `json:"pid"`
	// CreationTime identifies the process beside its pid (pids are reused): the Windows
	// creation FILETIME in process mode, 0 where the platform has none.
	CreationTime uint64    `json:"creation_time"`
	Started      time.Time `json:"started"`
	// ExitCode is set once the process has exited and a Backend saw its status.
	ExitCode *int `json:"exit_code,omitempty"`
	// Lost is set when the process exited while no Backend watched it, so its status is
	// unknown.
	Lost bool `json:"lost,omitempty"`
}

// writeJSON writes v to path atomically (a temporary file renamed over it).
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	return nil
}

// loadRecords reads every container record under stateDir. Directories without a readable
// record (a Create that did not finish) are returned in broken, for the caller to clean up.
func loadRecords(stateDir string) (recs []*containerRecord, broken []string, err error) {
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		var rec containerRecord
		if err := readJSON(filepath.Join(stateDir, e.Name(), containerFile), &rec); err != nil || rec.Handle != e.Name() {
			broken = append(broken, e.Name())
			continue
		}
		recs = append(recs, &rec)
	}
	return recs, broken, nil
}
