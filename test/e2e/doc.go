// Package e2e drives a real trellis dev cluster only through the trellis binary and its HTTP
// API, as an operator would. `go test ./test/e2e/` builds the binary once, starts clusters in
// temporary directories on free loopback ports, and stops them at the end of each test.
package e2e
