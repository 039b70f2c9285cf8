// Command wintestprog is the isolationtest program vocabulary for process-mode containers:
// package testprog's programs, with the container's directory taken from
// TRELLIS_CONTAINER_DIR, terminate received as CTRL_BREAK (which Go delivers as
// os.Interrupt) as well as CTRL_SHUTDOWN/CTRL_CLOSE (syscall.SIGTERM), and one more program
// for the process-tree test:
//
//	spawn-sleep PIDFILE   start a child "sleep", write its pid to PIDFILE, print "ready"
//	                      and sleep until killed
//	fill-sleep FILE N     write N bytes to FILE, print "ready" and sleep until killed (for
//	                      the disk watchdog test)
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/trellis-run/trellis/isolation/isolationtest"
	"github.com/trellis-run/trellis/isolation/isolationtest/testprog"
)

func main() {
	if dir := os.Getenv("TRELLIS_CONTAINER_DIR"); dir != "" && os.Getenv(testprog.RootEnv) == "" {
		os.Setenv(testprog.RootEnv, dir)
	}
	args := os.Args[1:]
	if len(args) == 0 {
		os.Exit(testprog.Main(args, os.Stdin, os.Stdout, os.Stderr))
	}
	switch args[0] {
	case string(isolationtest.KindSleep):
		term := make(chan os.Signal, 1)
		signal.Notify(term, os.Interrupt, syscall.SIGTERM)
		fmt.Print(isolationtest.ReadyLine)
		<-term
		os.Exit(143)
	case string(isolationtest.KindIgnoreTerm):
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		fmt.Print(isolationtest.ReadyLine)
		for {
			time.Sleep(time.Hour)
		}
	case "fill-sleep":
		if len(args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: fill-sleep FILE BYTES")
			os.Exit(2)
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "fill-sleep:", err)
			os.Exit(2)
		}
		if err := os.WriteFile(inContainer(args[1]), make([]byte, n), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fill-sleep:", err)
			os.Exit(1)
		}
		fmt.Print(isolationtest.ReadyLine)
		for {
			time.Sleep(time.Hour)
		}
	case "spawn-sleep":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: spawn-sleep PIDFILE")
			os.Exit(2)
		}
		child := exec.Command(os.Args[0], string(isolationtest.KindSleep))
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn-sleep:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(inContainer(args[1]), []byte(strconv.Itoa(child.Process.Pid)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "spawn-sleep:", err)
			os.Exit(1)
		}
		fmt.Print(isolationtest.ReadyLine)
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(testprog.Main(args, os.Stdin, os.Stdout, os.Stderr))
}

// inContainer maps a container path ("/x") onto the container's directory.
func inContainer(p string) string {
	if root := os.Getenv(testprog.RootEnv); root != "" && len(p) > 0 && p[0] == '/' {
		return filepath.Join(root, filepath.FromSlash(p))
	}
	return p
}
