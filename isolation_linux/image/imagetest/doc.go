// Package imagetest serves images from a real registry on loopback for tests of everything
// that pulls them (the image store, the Linux backend, the agent, the BBS's tag pinning): a
// go-containerregistry pkg/registry server that counts the requests it serves and can demand
// basic auth or corrupt blobs, and images built in the test from the host's static busybox.
//
// It is a test helper: only _test.go files import it.
package imagetest
