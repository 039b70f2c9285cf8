package resources

import (
	"fmt"
	"math"
	"strconv"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/trellis-run/trellis/isolation"
)

// CPU weight and share ranges.
//
// A container's cpu_weight (1–100, Diego's scale) becomes cgroup v1 cpu.shares as
// weight×1024/100 with a floor of MinCPUShares, so weight 100 is the kernel default of 1024
// shares and weight 1 is 10 shares. On cgroup v2 the shares become cpu.weight (1–10000) with the
// conversion runc and crun use, so the same OCI spec gives the same value under every runtime:
// weight 100 → 1024 shares → cpu.weight 39; weight 1 → 10 shares → cpu.weight 1.
const (
	MaxCPUWeight = 100
	// DefaultCPUShares is the kernel's cpu.shares for a cgroup nobody configured.
	DefaultCPUShares = 1024
	// MinCPUShares and MaxCPUShares bound cgroup v1 cpu.shares.
	MinCPUShares = 2
	MaxCPUShares = 262144
)

// Setting is one value written to one cgroup interface file.
type Setting struct {
	// Controller is the v1 hierarchy the file lives in ("memory", "cpu", "pids"); on v2,
	// where every file lives in one directory, it names the controller that must be enabled
	// for the file to exist.
	Controller string
	// File is the interface file's name, e.g. "memory.limit_in_bytes".
	File string
	// Value is written as is.
	Value string
}

// CPUSharesFromWeight maps a cpu_weight (1–100) to cgroup v1 cpu.shares: weight×1024/100, at
// least MinCPUShares. Zero means "not set" and maps to zero.
func CPUSharesFromWeight(weight uint32) uint64 {
	if weight == 0 {
		return 0
	}
	shares := uint64(weight) * DefaultCPUShares / MaxCPUWeight
	return max(shares, MinCPUShares)
}

// CPUWeightFromShares converts cgroup v1 cpu.shares (2–262144) to a cgroup v2 cpu.weight
// (1–10000) linearly, as 1 + (shares−2)×9999/262142 — the mapping runc and crun apply, so
// limits translate identically whichever runtime reads the OCI spec. Zero means "not set".
// Shares outside the v1 range are clamped to it first.
func CPUWeightFromShares(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	shares = min(max(shares, MinCPUShares), MaxCPUShares)
	return 1 + (shares-MinCPUShares)*9999/(MaxCPUShares-MinCPUShares)
}

// ToSpec expresses limits as OCI runtime-spec resources. A zero field in limits leaves the
// corresponding resource unset (no limit). Memory is limited without swap: Swap (the OCI
// memory+swap total) equals Limit and Swappiness is 0.
// Errors: isolation.ErrInvalidSpec when a value is out of range (the message names the field).
func ToSpec(limits isolation.Limits) (*specs.LinuxResources, error) {
	res := &specs.LinuxResources{}
	if limits.MemoryBytes > 0 {
		if limits.MemoryBytes > math.MaxInt64 {
			return nil, fmt.Errorf("%w: limits.memory_bytes %d exceeds %d", isolation.ErrInvalidSpec, limits.MemoryBytes, int64(math.MaxInt64))
		}
		limit := int64(limits.MemoryBytes)
		swap := limit
		swappiness := uint64(0)
		res.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap, Swappiness: &swappiness}
	}
	if limits.CPUWeight > 0 {
		if limits.CPUWeight > MaxCPUWeight {
			return nil, fmt.Errorf("%w: limits.cpu_weight %d is outside 1-%d", isolation.ErrInvalidSpec, limits.CPUWeight, MaxCPUWeight)
		}
		shares := CPUSharesFromWeight(limits.CPUWeight)
		res.CPU = &specs.LinuxCPU{Shares: &shares}
	}
	if limits.Pids > 0 {
		if limits.Pids > math.MaxInt64 {
			return nil, fmt.Errorf("%w: limits.pids %d exceeds %d", isolation.ErrInvalidSpec, limits.Pids, int64(math.MaxInt64))
		}
		pids := int64(limits.Pids)
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return res, nil
}

// V1Settings lists the cgroup v1 files and values that enforce res, in the order they must be
// written. memsw says whether the host accounts swap (memory.memsw.* exists): then
// memory.memsw.limit_in_bytes is set to the memory+swap total (equal to the memory limit: no
// swap); otherwise memory.swappiness 0 keeps the cgroup's pages out of swap. Resources trellis
// does not set are ignored.
func V1Settings(res *specs.LinuxResources, memsw bool) []Setting {
	if res == nil {
		return nil
	}
	var out []Setting
	if m := res.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			// The memory limit goes first: the kernel refuses a memsw limit below it.
			out = append(out, Setting{"memory", "memory.limit_in_bytes", strconv.FormatInt(*m.Limit, 10)})
		}
		switch {
		case memsw && m.Swap != nil && *m.Swap > 0:
			out = append(out, Setting{"memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(*m.Swap, 10)})
		case !memsw && m.Swappiness != nil:
			out = append(out, Setting{"memory", "memory.swappiness", strconv.FormatUint(*m.Swappiness, 10)})
		}
	}
	if c := res.CPU; c != nil && c.Shares != nil && *c.Shares > 0 {
		out = append(out, Setting{"cpu", "cpu.shares", strconv.FormatUint(*c.Shares, 10)})
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		out = append(out, Setting{"pids", "pids.max", strconv.FormatInt(*p.Limit, 10)})
	}
	return out
}

// V2Settings lists the cgroup v2 files and values that enforce res: memory.max,
// memory.swap.max (the OCI memory+swap total minus the memory limit: 0, no swap), cpu.weight
// (converted from shares with CPUWeightFromShares) and pids.max. Resources trellis does not set
// are ignored.
func V2Settings(res *specs.LinuxResources) []Setting {
	if res == nil {
		return nil
	}
	var out []Setting
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		out = append(out, Setting{"memory", "memory.max", strconv.FormatInt(*m.Limit, 10)})
		swap := int64(0)
		if m.Swap != nil && *m.Swap > *m.Limit {
			swap = *m.Swap - *m.Limit
		}
		out = append(out, Setting{"memory", "memory.swap.max", strconv.FormatInt(swap, 10)})
	}
	if c := res.CPU; c != nil && c.Shares != nil && *c.Shares > 0 {
		out = append(out, Setting{"cpu", "cpu.weight", strconv.FormatUint(CPUWeightFromShares(*c.Shares), 10)})
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		out = append(out, Setting{"pids", "pids.max", strconv.FormatInt(*p.Limit, 10)})
	}
	return out
}
