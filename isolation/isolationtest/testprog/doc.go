// Package testprog implements the isolationtest program vocabulary as a real process, for
// backends whose harness runs an executable rather than Go functions: the Linux backend copies
// a static build into its test rootfs, the Windows backend runs the .exe under wine. Build the
// binary from ./trellis-testprog and map every program to
//
//	isolation.ProcessSpec{Path: "/path/in/container/trellis-testprog", Args: p.Argv()}
//
// Terminate arrives as SIGTERM on Unix and as CTRL_SHUTDOWN / CTRL_CLOSE on Windows (Go
// delivers both as syscall.SIGTERM); Sleep answers it with exit 143.
//
// A backend whose processes see host paths (a Windows job object with a private directory)
// sets RootEnv in the process environment to that directory: absolute slash paths given to
// WriteFile, ReadFile and ListDir are then resolved under it, and PrintCwd prints the working
// directory relative to it, with slashes, as the container sees it.
package testprog
