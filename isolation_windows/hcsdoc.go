package isolationwindows

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"

	"github.com/trellis-run/trellis/isolation"
)

// The documents container mode sends to HCS and HNS. They mirror, field for field and with
// the same JSON names, hcsshim's schema1 ContainerConfig and ProcessConfig and hcn's
// HostComputeEndpoint (which the windows implementation decodes them into), so that the
// translation is untagged, unit-tested and pinned by golden files in testdata/.

// hcsLayer is schema1 Layer: a read-only layer folder and the GUID HCS knows it by.
type hcsLayer struct {
	ID   string
	Path string
}

// hcsMappedDir is schema1 MappedDir: a host directory visible in the container.
type hcsMappedDir struct {
	HostPath          string
	ContainerPath     string
	ReadOnly          bool
	BandwidthMaximum  uint64
	IOPSMaximum       uint64
	CreateInUtilityVM bool
}

// hcsContainerDoc is schema1 ContainerConfig for a process-isolated Windows Server container.
type hcsContainerDoc struct {
	SystemType                  string
	Name                        string
	Owner                       string `json:",omitempty"`
	VolumePath                  string `json:",omitempty"`
	IgnoreFlushesDuringBoot     bool   `json:",omitempty"`
	LayerFolderPath             string `json:",omitempty"`
	Layers                      []hcsLayer
	ProcessorMaximum            int64          `json:",omitempty"`
	StorageSandboxSize          uint64         `json:",omitempty"`
	MemoryMaximumInMB           int64          `json:",omitempty"`
	HostName                    string         `json:",omitempty"`
	MappedDirectories           []hcsMappedDir `json:",omitempty"`
	HvPartition                 bool
	EndpointList                []string `json:",omitempty"`
	TerminateOnLastHandleClosed bool     `json:",omitempty"`
}

// hcsProcessDoc is schema1 ProcessConfig for a process in a Windows container.
type hcsProcessDoc struct {
	ApplicationName  string            `json:",omitempty"`
	CommandLine      string            `json:",omitempty"`
	User             string            `json:",omitempty"`
	WorkingDirectory string            `json:",omitempty"`
	Environment      map[string]string `json:",omitempty"`
	EmulateConsole   bool              `json:",omitempty"`
	CreateStdInPipe  bool              `json:",omitempty"`
	CreateStdOutPipe bool              `json:",omitempty"`
	CreateStdErrPipe bool              `json:",omitempty"`
}

// hnsEndpointDoc is hcn HostComputeEndpoint as sent to create one.
type hnsEndpointDoc struct {
	Name               string              `json:",omitempty"`
	HostComputeNetwork string              `json:",omitempty"`
	Policies           []hnsEndpointPolicy `json:",omitempty"`
	SchemaVersion      hnsSchemaVersion
}

type hnsEndpointPolicy struct {
	Type     string
	Settings json.RawMessage `json:",omitempty"`
}

// hnsPortMapping is hcn PortMappingPolicySetting.
type hnsPortMapping struct {
	Protocol     uint32 `json:",omitempty"`
	InternalPort uint16 `json:",omitempty"`
	ExternalPort uint16 `json:",omitempty"`
	VIP          string `json:",omitempty"`
	Flags        uint32 `json:",omitempty"`
}

type hnsSchemaVersion struct {
	Major int
	Minor int
}

// hcsOwner is the Owner HCS records for our compute systems.
const hcsOwner = "trellis"

// protocolTCP is IPPROTO_TCP, as HNS port mappings name it.
const protocolTCP = 6

// mib rounds bytes up to whole MiB.
func mib(b uint64) int64 { return int64((b + 1<<20 - 1) >> 20) }

// buildContainerDoc translates a container into its HCS document: the stack's layers
// (topmost first, as HCS wants them), the scratch volume, bind mounts as mapped directories
// (container paths in C:\ form, ReadOnly kept), MemoryBytes as MemoryMaximumInMB (rounded
// up to a MiB), CPUWeight as ProcessorMaximum (the same hard cap as process mode, see
// cpuRateFor), DiskBytes as the sandbox size, the HNS endpoint, and a process-isolated (not
// Hyper-V) partition that HCS ends when its last handle closes only if told to: it is not,
// so containers outlive the agent.
func buildContainerDoc(id string, spec isolation.ContainerSpec, layers []hcsLayer, volumePath, layerFolder, endpointID string) hcsContainerDoc {
	doc := hcsContainerDoc{
		SystemType:              "Container",
		Name:                    id,
		Owner:                   hcsOwner,
		VolumePath:              volumePath,
		IgnoreFlushesDuringBoot: true,
		LayerFolderPath:         layerFolder,
		Layers:                  layers,
		ProcessorMaximum:        int64(cpuRateFor(spec.Limits.CPUWeight)),
		StorageSandboxSize:      spec.Limits.DiskBytes,
		HostName:                hostNameFor(spec.Handle),
	}
	if spec.Limits.MemoryBytes != 0 {
		doc.MemoryMaximumInMB = mib(spec.Limits.MemoryBytes)
	}
	for _, bm := range spec.BindMounts {
		doc.MappedDirectories = append(doc.MappedDirectories, hcsMappedDir{
			HostPath:      bm.SrcPath,
			ContainerPath: containerWinPath(bm.DstPath),
			ReadOnly:      bm.ReadOnly,
		})
	}
	if endpointID != "" {
		doc.EndpointList = []string{endpointID}
	}
	return doc
}

// hostNameFor is a NetBIOS-safe host name for a container: at most 15 characters of the
// handle, without dots.
func hostNameFor(handle string) string {
	b := []byte{}
	for i := 0; i < len(handle) && len(b) < 15; i++ {
		c := handle[i]
		if c == '.' || c == '_' {
			c = '-'
		}
		b = append(b, c)
	}
	return string(b)
}

// buildProcessDoc translates a launch into the HCS process document. Output goes through
// pipes (no console), and the environment is the complete one buildLaunch made.
func buildProcessDoc(l launch) hcsProcessDoc {
	env := make(map[string]string, len(l.env))
	for _, kv := range l.env {
		k, v, _ := cutEnv(kv)
		env[k] = v
	}
	return hcsProcessDoc{
		CommandLine:      composeCommandLine(append([]string{l.path}, l.args...)),
		WorkingDirectory: l.dir,
		Environment:      env,
		CreateStdInPipe:  true,
		CreateStdOutPipe: true,
		CreateStdErrPipe: true,
	}
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// buildEndpointDoc translates the granted ports into an HNS endpoint on the NAT network:
// one TCP PortMapping policy per port, host port outside, container port inside, sorted by
// container port for a stable document.
func buildEndpointDoc(name, networkID string, ports []isolation.PortMapping) (hnsEndpointDoc, error) {
	doc := hnsEndpointDoc{Name: name, HostComputeNetwork: networkID, SchemaVersion: hnsSchemaVersion{Major: 2, Minor: 0}}
	sorted := append([]isolation.PortMapping(nil), ports...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ContainerPort < sorted[j].ContainerPort })
	for _, p := range sorted {
		settings, err := json.Marshal(hnsPortMapping{Protocol: protocolTCP, InternalPort: uint16(p.ContainerPort), ExternalPort: uint16(p.HostPort)})
		if err != nil {
			return hnsEndpointDoc{}, fmt.Errorf("encoding a port mapping: %w", err)
		}
		doc.Policies = append(doc.Policies, hnsEndpointPolicy{Type: "PortMapping", Settings: settings})
	}
	return doc, nil
}

// cleanContainerPath cleans a slash container path.
func cleanContainerPath(p string) string { return path.Clean("/" + p) }
