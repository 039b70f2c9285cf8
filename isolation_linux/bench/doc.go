// Command bench prints the cost of a container start on this host — create, run /bin/true,
// wait, destroy — for the trellis Linux backend (user namespace, cgroup, overlay and hardening
// on) in its default configuration (the pool of started container inits on) and with the pool
// off, next to `runc run` and `crun run` of /bin/true on the same busybox rootfs measured in
// the same run, as p50/p95 and ratios to crun; a last trellis line adds CNI bridge networking.
// Its directories are on a shared mount, as on a systemd host, which the pool needs.
//
// It needs root, busybox-static, runc and crun: hack/bench.d/20-isolation.sh runs it.
package main
