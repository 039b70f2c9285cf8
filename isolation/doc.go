// Package isolation is the one Garden-like interface every isolation backend implements: a
// Backend creates and finds Containers; a Container runs Processes and streams files in and out.
//
// A container is isolation (limits and namespaces) + contents (a rootfs and what is streamed
// into it) + process (what runs). The Linux backend (package isolationlinux) uses namespaces and
// cgroups; the Windows backend (package isolationwindows) uses job objects or HCS. Package
// isolationtest holds an in-memory backend and the conformance suite every backend runs.
//
// Requests a backend cannot honour fail with an error for which IsUnsupported is true; nothing is
// silently ignored.
package isolation
