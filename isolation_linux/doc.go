// Package isolationlinux is the Linux isolation backend: namespaces (user namespaces by
// default), cgroups v1 and v2, an overlay rootfs with pivot_root, CNI networking and the
// hardening of a production runtime.
package isolationlinux
