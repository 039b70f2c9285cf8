// Package containerinit is a container's pid 1 for the Linux isolation backend, and the
// protocol the backend speaks with it.
//
// The init is the trellis binary itself, executed by the backend as Argv0 from a sealed memory
// copy, in new namespaces; it does nothing of its own until the backend, having placed it in
// the container's cgroup, sends it the container on FdStart (a StartMessage with the
// container's descriptors). The backend may execute inits ahead of their containers and keep
// them waiting there (its pool of inits); an init serves one container. It takes over from this
// package's init function, before the rest of the program initialises (see init in
// init_linux.go), so its imports are deliberately few: the standard library's lower layers,
// x/sys/unix, the runtime-spec types and package isolation. Do not import packages that pull
// in net, log/slog or runtime/debug here.
//
// From config.json (an OCI runtime-spec document) the init mounts the overlay root and the
// container's tree, masks and write-protects paths, pivots into the root, and confines one
// dedicated thread to the process template (capabilities, no_new_privs, seccomp) from which
// every container process is forked. It then serves Request packets on a unix seqpacket
// socket: run, wait, signal, stop, stream-in and stream-out. docs/isolation-linux.md describes
// the protocol and the start path.
//
// The untagged files (protocol, user and environment resolution) build everywhere, so the
// backend's pure spec translation can use them.
package containerinit
