// Package integration holds the brain's end-to-end tests with real cell agents: a BBS on
// embedded etcd, one or more brains and in-process agents on isolation/isolationtest's
// in-memory backend, all talking over mutual TLS. It has no code of its own; the tests live
// apart from package brain so that the brain itself never depends on the agent (make check
// guards that).
//
//	go test ./brain/integration/
package integration
