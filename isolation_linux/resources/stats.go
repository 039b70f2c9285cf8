package resources

// Stats is a cgroup's resource usage.
type Stats struct {
	// MemoryBytes is the working set: memory charged to the cgroup minus inactive file cache
	// (what the kernel would reclaim first), as kubelet and cAdvisor report it.
	MemoryBytes uint64
	// MemoryLimitBytes is the enforced memory limit; 0 when unlimited.
	MemoryLimitBytes uint64
	// CPUNanos is the cumulative CPU time used by every process the cgroup ever held.
	CPUNanos uint64
	// Pids is the number of tasks (threads included) in the cgroup now.
	Pids uint64
}
