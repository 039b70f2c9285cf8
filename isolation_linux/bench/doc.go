// Command bench prints the cost of a container start on this host — create, run /bin/true,
// wait, destroy — for the trellis Linux backend (user namespace, cgroup, overlay and hardening
// on), next to `runc run` and `crun run` of /bin/true on the same busybox rootfs measured in
// the same run, as p50/p95 and ratios; a second trellis line adds CNI bridge networking.
//
// It needs root, busybox-static, runc and crun: hack/bench.d/20-isolation.sh runs it.
package main
