// Command trellis-testprog runs one program of the isolationtest vocabulary; its arguments are
// isolationtest.Program.Argv ("exit 3", "echo OUT ERR", "sleep", ...). Backend harnesses put
// it in their test rootfs (Linux, built with CGO_ENABLED=0) or run it as an .exe (Windows).
package main
