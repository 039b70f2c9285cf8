package containerinit

import (
	"encoding/json"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config is what a container's init reads of its runtime-spec document (config.json, which
// the backend writes and keeps in the state dir): the fields the init acts on, under the
// spec's own JSON names, with the spec's types below them. The rest of the document is the
// backend's (namespaces, id mappings and cgroup limits are set up before the init runs) and is
// skipped while decoding.
//
// Decoding into specs.Spec cost a fresh init about 0.75 ms of CPU, most of it encoding/json
// building its field tables for the spec's whole type graph; decoding into Config costs 0.2
// ms, and a pooled init's warm-up 0.17 instead of 0.8 (docs/isolation-linux.md).
// TestConfigMatchesRuntimeSpec keeps the names in step with runtime-spec.
type Config struct {
	Process     *ConfigProcess    `json:"process,omitempty"`
	Root        *specs.Root       `json:"root,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	Mounts      []specs.Mount     `json:"mounts,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Linux       *ConfigLinux      `json:"linux,omitempty"`
}

// ConfigProcess is the template of every process the init starts (specs.Process).
type ConfigProcess struct {
	Env             []string                 `json:"env,omitempty"`
	Capabilities    *specs.LinuxCapabilities `json:"capabilities,omitempty"`
	Rlimits         []specs.POSIXRlimit      `json:"rlimits,omitempty"`
	NoNewPrivileges bool                     `json:"noNewPrivileges,omitempty"`
}

// ConfigLinux is the init's part of specs.Linux.
type ConfigLinux struct {
	Devices       []specs.LinuxDevice `json:"devices,omitempty"`
	MaskedPaths   []string            `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string            `json:"readonlyPaths,omitempty"`
	// Seccomp is the specs.LinuxSeccomp profile, left encoded: the backend sends the default
	// profile compiled (StartMessage.Seccomp), and the init compiles only another one.
	Seccomp json.RawMessage `json:"seccomp,omitempty"`
}

// hasSeccomp reports whether the document has a seccomp profile.
func (l *ConfigLinux) hasSeccomp() bool {
	return len(l.Seccomp) > 0 && string(l.Seccomp) != "null"
}

// seccompProfile decodes the profile; nil when the document has none.
func (l *ConfigLinux) seccompProfile() (*specs.LinuxSeccomp, error) {
	if !l.hasSeccomp() {
		return nil, nil
	}
	var sc specs.LinuxSeccomp
	if err := json.Unmarshal(l.Seccomp, &sc); err != nil {
		return nil, err
	}
	return &sc, nil
}
