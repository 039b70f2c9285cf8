// Package isolationlinux is the Linux isolation backend: each container is a pid, mount, uts,
// ipc and network namespace (and, unless privileged, a user namespace mapping container root
// to an unprivileged host uid range), an overlay root filesystem over a cached read-only
// layer entered with pivot_root, a cgroup (package resources), CNI bridge networking (package
// network) and the hardening of a production runtime: masked and read-only paths, the default
// capability set, no_new_privs, a seccomp deny-list, no inherited descriptors, default rlimits.
//
// Every container has a pid-1 init: this very binary, re-executed from a sealed memory copy,
// whose code is package containerinit. It takes over from that package's initialisation,
// before the rest of the program initialises, so linking this package is what makes a binary
// able to serve as the init; main (and TestMain of any package whose tests create containers)
// calls MaybeRunInit first to state it. The init sets up the mounts, then serves the backend
// over a unix socket in the container's state dir: it starts processes, reaps them, records
// exit codes in the state dir and unpacks or packs tar streams inside the container. It keeps
// running when the backend process goes away, so a new Backend over the same Config finds
// every container, attaches to its processes and learns their exit codes.
//
// The container's configuration is an OCI runtime-spec document (BuildSpec, pure and tested
// on every platform) kept as config.json in the state dir; the init acts on it.
//
// Use:
//
//	b, err := isolationlinux.New(ctx, cfg, logger) // cfg from DefaultConfig, Stacks filled in
//	c, err := b.Create(ctx, isolation.ContainerSpec{Handle: "h", RootFS: "preloaded:busybox"})
//	p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/bin/true"}, isolation.ProcessIO{})
//	code, err := p.Wait(ctx)
//	err = b.Destroy(ctx, "h")
//
// See docs/isolation-linux.md for the init protocol, the state dir layout, the uid mapping and
// what survives a restart. On systems other than Linux, New fails with an error wrapping
// errors.ErrUnsupported.
package isolationlinux
