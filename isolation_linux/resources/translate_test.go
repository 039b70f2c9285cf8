package resources

import (
	"math"
	"slices"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

func TestCPUSharesFromWeight(t *testing.T) {
	tests := []struct {
		weight uint32
		want   uint64
	}{
		{0, 0},
		{1, 10},
		{10, 102},
		{50, 512},
		{99, 1013},
		{100, 1024},
	}
	for _, tt := range tests {
		if got := CPUSharesFromWeight(tt.weight); got != tt.want {
			t.Errorf("CPUSharesFromWeight(%d) = %d, want %d", tt.weight, got, tt.want)
		}
	}
}

func TestCPUWeightFromShares(t *testing.T) {
	tests := []struct {
		shares, want uint64
	}{
		{0, 0},
		{1, 1}, // clamped to the v1 minimum
		{2, 1},
		{10, 1},
		{512, 20},
		{1024, 39},
		{262144, 10000},
		{1 << 20, 10000}, // clamped to the v1 maximum
	}
	for _, tt := range tests {
		if got := CPUWeightFromShares(tt.shares); got != tt.want {
			t.Errorf("CPUWeightFromShares(%d) = %d, want %d", tt.shares, got, tt.want)
		}
	}
	// Monotonic across Diego's whole weight range, and always a valid cpu.weight.
	prev := uint64(0)
	for w := uint32(1); w <= MaxCPUWeight; w++ {
		got := CPUWeightFromShares(CPUSharesFromWeight(w))
		if got < prev || got < 1 || got > 10000 {
			t.Fatalf("weight %d → cpu.weight %d (previous %d)", w, got, prev)
		}
		prev = got
	}
}

func TestToSpecRejects(t *testing.T) {
	tests := []struct {
		name   string
		limits isolation.Limits
	}{
		{"cpu weight above 100", isolation.Limits{CPUWeight: 101}},
		{"memory beyond int64", isolation.Limits{MemoryBytes: math.MaxUint64}},
		{"pids beyond int64", isolation.Limits{Pids: math.MaxInt64 + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ToSpec(tt.limits); !isolation.IsInvalidSpec(err) {
				t.Fatalf("want ErrInvalidSpec, got %v", err)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name      string
		limits    isolation.Limits
		v1Memsw   []Setting
		v1NoMemsw []Setting
		v2        []Setting
	}{
		{
			name:   "no limits",
			limits: isolation.Limits{},
		},
		{
			name:   "everything",
			limits: isolation.Limits{MemoryBytes: 64 << 20, CPUWeight: 50, Pids: 100, DiskBytes: 1 << 30},
			v1Memsw: []Setting{
				{"memory", "memory.limit_in_bytes", "67108864"},
				{"memory", "memory.memsw.limit_in_bytes", "67108864"},
				{"cpu", "cpu.shares", "512"},
				{"pids", "pids.max", "100"},
			},
			v1NoMemsw: []Setting{
				{"memory", "memory.limit_in_bytes", "67108864"},
				{"memory", "memory.swappiness", "0"},
				{"cpu", "cpu.shares", "512"},
				{"pids", "pids.max", "100"},
			},
			v2: []Setting{
				{"memory", "memory.max", "67108864"},
				{"memory", "memory.swap.max", "0"},
				{"cpu", "cpu.weight", "20"},
				{"pids", "pids.max", "100"},
			},
		},
		{
			name:      "weight 1 floors",
			limits:    isolation.Limits{CPUWeight: 1},
			v1Memsw:   []Setting{{"cpu", "cpu.shares", "10"}},
			v1NoMemsw: []Setting{{"cpu", "cpu.shares", "10"}},
			v2:        []Setting{{"cpu", "cpu.weight", "1"}},
		},
		{
			name:      "weight 100 is the default share",
			limits:    isolation.Limits{CPUWeight: 100},
			v1Memsw:   []Setting{{"cpu", "cpu.shares", "1024"}},
			v1NoMemsw: []Setting{{"cpu", "cpu.shares", "1024"}},
			v2:        []Setting{{"cpu", "cpu.weight", "39"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ToSpec(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			if got := V1Settings(res, true); !slices.Equal(got, tt.v1Memsw) {
				t.Errorf("V1Settings(memsw) = %v, want %v", got, tt.v1Memsw)
			}
			if got := V1Settings(res, false); !slices.Equal(got, tt.v1NoMemsw) {
				t.Errorf("V1Settings(no memsw) = %v, want %v", got, tt.v1NoMemsw)
			}
			if got := V2Settings(res); !slices.Equal(got, tt.v2) {
				t.Errorf("V2Settings = %v, want %v", got, tt.v2)
			}
		})
	}
}

func TestV2SwapFromOCI(t *testing.T) {
	// An OCI spec from elsewhere may allow swap: v2 memory.swap.max is the swap part only.
	limit, swap := int64(100), int64(250)
	res, _ := ToSpec(isolation.Limits{MemoryBytes: 100})
	res.Memory.Limit, res.Memory.Swap = &limit, &swap
	got := V2Settings(res)
	want := []Setting{{"memory", "memory.max", "100"}, {"memory", "memory.swap.max", "150"}}
	if !slices.Equal(got, want) {
		t.Fatalf("V2Settings = %v, want %v", got, want)
	}
}

func TestValidNames(t *testing.T) {
	tests := []struct {
		parent, handle string
		want           string
		ok             bool
	}{
		{"trellis", "app-1_a.b", "trellis/app-1_a.b", true},
		{"/trellis/cells/", "h", "trellis/cells/h", true},
		{"trellis", "", "", false},
		{"trellis", ".", "", false},
		{"trellis", "a b", "", false},
		{"trellis/../x", "h", "", false},
		{"", "h", "", false},
		{"trellis", string(make([]byte, 129)), "", false},
	}
	for _, tt := range tests {
		got, err := cgroupPath(tt.parent, tt.handle)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("cgroupPath(%q, %q) = %q, %v; want %q ok=%v", tt.parent, tt.handle, got, err, tt.want, tt.ok)
		}
		if err != nil && !isolation.IsInvalidSpec(err) {
			t.Errorf("cgroupPath(%q, %q): error %v is not ErrInvalidSpec", tt.parent, tt.handle, err)
		}
	}
}
