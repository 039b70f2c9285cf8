// Package resources enforces a Linux container's resource limits: memory (without swap), CPU
// weight and process count through cgroups v1 or v2, and disk space through a per-container
// quota-limited directory.
//
// Cgroups. New(parent, handle, limits) makes the container's cgroup — one directory in every v1
// hierarchy on a legacy or hybrid host, one directory in the unified hierarchy on a v2 host
// (chosen with cgroups.Mode from containerd/cgroups) — and writes the limits. The backend moves
// the container's init into it with AddProc, reads usage with Stats, learns of OOM kills with
// WatchOOM and OOMKills (a kernel counter, so it survives a backend restart), ends every process
// with Kill and removes the cgroup with Delete. Load finds a cgroup again after a restart.
//
// Translation is pure and separate: ToSpec turns isolation.Limits into OCI runtime-spec
// resources, V1Settings and V2Settings turn those into the exact cgroup files and values written.
// cpu_weight 1–100 becomes cpu.shares weight×1024/100 (at least 2) on v1 and, on v2, cpu.weight
// 1 + (shares−2)×9999/262142, the conversion runc and crun use.
//
// Adopt(parent, from, handle, limits) renames the cgroup parent/from to parent/handle in every
// v1 hierarchy and writes limits into it: its processes join the container's cgroup without a
// migration (cgroup.procs, a global lock and an RCU wait). cgroup v2 cannot rename cgroups;
// AdoptSupported says whether this host can. Children lists the cgroups under a parent.
//
// Disk. NewDiskQuota(baseDir) manages per-container directories under baseDir whose writes are
// limited: Dir(handle, limitBytes) returns the directory, Usage reports what it holds and
// Release removes it. See DiskQuota and docs/isolation-linux-resources.md for how the limit is
// enforced and how an operator cleans up.
//
// Everything here needs root on Linux; on other systems the constructors fail with an error that
// wraps errors.ErrUnsupported.
package resources
