package network

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

func TestContainerID(t *testing.T) {
	tests := []struct {
		handle string
		same   bool
	}{
		{"app-guid_0.1", true},
		{"A", true},
		{"-leading-dash", false},
		{"_leading_underscore", false},
		{".", false},
		{"..", false},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.handle, func(t *testing.T) {
			id := containerID(tt.handle)
			if (id == tt.handle) != tt.same {
				t.Errorf("containerID(%q) = %q, want handle kept: %v", tt.handle, id, tt.same)
			}
			if !cniName.MatchString(id) {
				t.Errorf("containerID(%q) = %q is not a valid CNI container id", tt.handle, id)
			}
			if id != containerID(tt.handle) {
				t.Errorf("containerID(%q) is not stable", tt.handle)
			}
			if other, dup := seen[id]; dup {
				t.Errorf("containerID(%q) = containerID(%q) = %q", tt.handle, other, id)
			}
			seen[id] = tt.handle
		})
	}
}

func TestValidateNetIn(t *testing.T) {
	tests := []struct {
		name  string
		netIn []isolation.NetIn
		field string // empty: valid
	}{
		{"none", nil, ""},
		{"allocate twice for one port", []isolation.NetIn{{ContainerPort: 8080}, {ContainerPort: 8080}}, ""},
		{"explicit", []isolation.NetIn{{HostPort: 61500, ContainerPort: 8080}, {ContainerPort: 2222}}, ""},
		{"container port 0", []isolation.NetIn{{ContainerPort: 8080}, {}}, "NetIn[1].ContainerPort"},
		{"container port too big", []isolation.NetIn{{ContainerPort: 65536}}, "NetIn[0].ContainerPort"},
		{"host port too big", []isolation.NetIn{{HostPort: 65536, ContainerPort: 1}}, "NetIn[0].HostPort"},
		{"host port twice", []isolation.NetIn{{HostPort: 7000, ContainerPort: 1}, {HostPort: 7000, ContainerPort: 2}}, "NetIn[1].HostPort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateNetIn(tt.netIn)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("validateNetIn = %v", err)
				}
				return
			}
			if !isolation.IsInvalidSpec(err) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("validateNetIn = %v, want invalid spec naming %s", err, tt.field)
			}
		})
	}
}

func TestPortAllocator(t *testing.T) {
	allFree := func(uint32) bool { return true }
	tests := []struct {
		name     string
		min, max uint32
		next     uint32
		used     map[uint32]string
		bound    map[uint32]bool
		netIn    []isolation.NetIn
		want     []uint32 // host ports; nil with wantErr
		wantNext uint32
		wantErr  error
	}{
		{
			name: "from the bottom", min: 100, max: 104,
			netIn: []isolation.NetIn{{ContainerPort: 1}, {ContainerPort: 2}},
			want:  []uint32{100, 101}, wantNext: 102,
		},
		{
			name: "round robin from the cursor, wrapping", min: 100, max: 104, next: 104,
			netIn: []isolation.NetIn{{ContainerPort: 1}, {ContainerPort: 2}},
			want:  []uint32{104, 100}, wantNext: 101,
		},
		{
			name: "skips held and bound ports", min: 100, max: 104,
			used: map[uint32]string{100: "x"}, bound: map[uint32]bool{101: true},
			netIn: []isolation.NetIn{{ContainerPort: 1}},
			want:  []uint32{102}, wantNext: 103,
		},
		{
			name: "explicit port is not handed out again", min: 100, max: 104,
			netIn: []isolation.NetIn{{HostPort: 100, ContainerPort: 1}, {ContainerPort: 2}},
			want:  []uint32{100, 101}, wantNext: 102,
		},
		{
			name: "explicit port outside the range", min: 100, max: 104,
			netIn: []isolation.NetIn{{HostPort: 5000, ContainerPort: 1}},
			want:  []uint32{5000}, wantNext: 0,
		},
		{
			name: "cursor outside a changed range restarts at min", min: 100, max: 104, next: 9000,
			netIn: []isolation.NetIn{{ContainerPort: 1}},
			want:  []uint32{100}, wantNext: 101,
		},
		{
			name: "exhausted", min: 100, max: 101,
			used: map[uint32]string{100: "x"}, bound: map[uint32]bool{101: true},
			netIn: []isolation.NetIn{{ContainerPort: 1}}, wantErr: ErrPortsExhausted,
		},
		{
			name: "exhausted within one request", min: 100, max: 101,
			netIn:   []isolation.NetIn{{ContainerPort: 1}, {ContainerPort: 2}, {ContainerPort: 3}},
			wantErr: ErrPortsExhausted,
		},
		{
			name: "explicit port held by a container", min: 100, max: 104,
			used:  map[uint32]string{5000: "x"},
			netIn: []isolation.NetIn{{HostPort: 5000, ContainerPort: 1}}, wantErr: ErrPortInUse,
		},
		{
			name: "explicit port bound by a host process", min: 100, max: 104,
			bound: map[uint32]bool{5000: true},
			netIn: []isolation.NetIn{{HostPort: 5000, ContainerPort: 1}}, wantErr: ErrPortInUse,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := portAllocator{min: tt.min, max: tt.max, next: tt.next, used: tt.used, isFree: allFree}
			if tt.bound != nil {
				a.isFree = func(p uint32) bool { return !tt.bound[p] }
			}
			got, err := a.assign(tt.netIn)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !isolation.IsInsufficientResources(err) {
					t.Fatalf("assign = %v, %v; want %v", got, err, tt.wantErr)
				}
				if a.next != tt.next {
					t.Errorf("failed assign moved the cursor to %d", a.next)
				}
				return
			}
			if err != nil {
				t.Fatalf("assign: %v", err)
			}
			for i, p := range got {
				if p.HostPort != tt.want[i] || p.ContainerPort != tt.netIn[i].ContainerPort {
					t.Errorf("assign[%d] = %+v, want host port %d for container port %d", i, p, tt.want[i], tt.netIn[i].ContainerPort)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("assign returned %d mappings, want %d", len(got), len(tt.want))
			}
			if tt.wantNext != 0 && a.next != tt.wantNext {
				t.Errorf("cursor = %d, want %d", a.next, tt.wantNext)
			}
		})
	}
}

func TestBuildConfList(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MTU = 1400
	b, err := buildConfList(cfg, "/state/ipam")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("config is not JSON: %v\n%s", err, b)
	}
	if got.Name != "trellis" || got.CNIVersion != cniVersion || len(got.Plugins) != 1 {
		t.Fatalf("config list header: %s", b)
	}
	bridge := got.Plugins[0]
	for k, want := range map[string]any{
		"type": "bridge", "bridge": "trellis0", "isGateway": true, "ipMasq": false,
		"hairpinMode": true, "mtu": 1400.0,
	} {
		if bridge[k] != want {
			t.Errorf("bridge %s = %v, want %v", k, bridge[k], want)
		}
	}
	ipam, _ := bridge["ipam"].(map[string]any)
	if ipam["type"] != "host-local" || ipam["dataDir"] != "/state/ipam" ||
		!strings.Contains(string(b), `"subnet": "10.254.0.0/22"`) || !strings.Contains(string(b), `"dst": "0.0.0.0/0"`) {
		t.Errorf("ipam = %v", ipam)
	}

	cfg.MTU = 0
	b, _ = buildConfList(cfg, "/state/ipam")
	if strings.Contains(string(b), "mtu") {
		t.Errorf("MTU 0 should leave the plugin default, got %s", b)
	}
}
