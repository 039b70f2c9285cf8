// Package standalone runs a complete BBS in one process: etcd (an embedded single-node member
// by default, or an external cluster), the store over it, and the HTTP server. `trellis bbs` and
// `trellis dev` use it; tests use it to get a real BBS in a few tens of milliseconds.
package standalone
