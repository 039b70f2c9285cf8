package containerinit

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// populatedSpec is a runtime-spec document with every field set (populate), and its JSON.
func populatedSpec(t *testing.T) (*specs.Spec, []byte) {
	t.Helper()
	var s specs.Spec
	populate(reflect.ValueOf(&s).Elem(), 0)
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return &s, b
}

// The warm-up must reach the types a container's config.json holds deep down: the seccomp
// rules' arguments, the id mappings, the cgroup limits.
func TestPopulateReachesNestedSpecTypes(t *testing.T) {
	_, b := populatedSpec(t)
	for _, key := range []string{`"syscalls":[{`, `"args":[{`, `"uidMappings":[{`, `"memory":{`, `"rlimits":[{`, `"annotations":{"k"`, `"mounts":[{`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("populated spec lacks %s", key)
		}
	}
	var back specs.Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("populated spec does not decode: %v", err)
	}
	if back.Linux == nil || back.Linux.Seccomp == nil || len(back.Linux.Seccomp.Syscalls) != 1 {
		t.Fatalf("decoded spec lost the seccomp rules: %+v", back.Linux)
	}
}

func TestWarmUpLeavesNothingBehind(t *testing.T) {
	warmUp() // must not panic on any of the protocol's types
	var m StartMessage
	if err := json.Unmarshal([]byte(`{"handle":"h"}`), &m); err != nil || m.Handle != "h" || m.Seccomp != nil {
		t.Fatalf("StartMessage after warm-up: %+v, %v", m, err)
	}
}
