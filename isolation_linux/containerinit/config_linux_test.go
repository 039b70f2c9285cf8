package containerinit

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestConfigMatchesRuntimeSpec checks every field of Config, ConfigProcess and ConfigLinux
// against the runtime-spec type it stands for: a field of the same JSON name and type (the
// encoded seccomp profile excepted), so that a config.json the backend writes from a
// specs.Spec decodes into Config with nothing the init needs lost.
func TestConfigMatchesRuntimeSpec(t *testing.T) {
	for _, pair := range []struct{ ours, theirs reflect.Type }{
		{reflect.TypeOf(Config{}), reflect.TypeOf(specs.Spec{})},
		{reflect.TypeOf(ConfigProcess{}), reflect.TypeOf(specs.Process{})},
		{reflect.TypeOf(ConfigLinux{}), reflect.TypeOf(specs.Linux{})},
	} {
		theirs := map[string]reflect.StructField{}
		for i := 0; i < pair.theirs.NumField(); i++ {
			f := pair.theirs.Field(i)
			theirs[jsonName(f)] = f
		}
		for i := 0; i < pair.ours.NumField(); i++ {
			f := pair.ours.Field(i)
			g, ok := theirs[jsonName(f)]
			if !ok {
				t.Errorf("%s.%s: %s has no field %q", pair.ours.Name(), f.Name, pair.theirs.Name(), jsonName(f))
				continue
			}
			switch {
			case f.Type == reflect.TypeOf(json.RawMessage{}):
			case f.Type.Kind() == reflect.Pointer && f.Type.Elem().PkgPath() == pair.ours.PkgPath():
				// One of ours, checked in its own pair.
			case f.Type != g.Type:
				t.Errorf("%s.%s is %v, %s.%s is %v", pair.ours.Name(), f.Name, f.Type, pair.theirs.Name(), g.Name, g.Type)
			}
		}
	}
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// A whole runtime-spec document, every field set, read as the init reads it.
func TestConfigDecodesASpec(t *testing.T) {
	s, b := populatedSpec(t)
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Process == nil || c.Root == nil || c.Linux == nil {
		t.Fatalf("decoded %+v", c)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"process.env", c.Process.Env, s.Process.Env},
		{"process.capabilities", c.Process.Capabilities, s.Process.Capabilities},
		{"process.rlimits", c.Process.Rlimits, s.Process.Rlimits},
		{"process.noNewPrivileges", c.Process.NoNewPrivileges, s.Process.NoNewPrivileges},
		{"root", c.Root, s.Root},
		{"hostname", c.Hostname, s.Hostname},
		{"mounts", c.Mounts, s.Mounts},
		{"annotations", c.Annotations, s.Annotations},
		{"linux.devices", c.Linux.Devices, s.Linux.Devices},
		{"linux.maskedPaths", c.Linux.MaskedPaths, s.Linux.MaskedPaths},
		{"linux.readonlyPaths", c.Linux.ReadonlyPaths, s.Linux.ReadonlyPaths},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("%s: decoded %#v, the spec has %#v", f.name, f.got, f.want)
		}
	}
	profile, err := c.Linux.seccompProfile()
	if err != nil || !reflect.DeepEqual(profile, s.Linux.Seccomp) {
		t.Errorf("linux.seccomp: decoded %+v (%v), the spec has %+v", profile, err, s.Linux.Seccomp)
	}
	if profile, err := (&ConfigLinux{}).seccompProfile(); profile != nil || err != nil {
		t.Errorf("no seccomp: %+v, %v", profile, err)
	}
}
