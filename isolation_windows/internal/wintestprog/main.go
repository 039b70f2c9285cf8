// Command wintestprog is the isolationtest program vocabulary for process-mode containers:
// package testprog's programs, with the container's directory taken from
// TRELLIS_CONTAINER_DIR, terminate received as CTRL_BREAK (which Go delivers as
// os.Interrupt) as well as CTRL_SHUTDOWN/CTRL_CLOSE (syscall.SIGTERM), and one more program
// for the process-tree test:
//
//	spawn-sleep PIDFILE   start a child "sleep", write its pid to PIDFILE, print "ready"
//	                      and sleep until killed
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
		pidFile := args[1]
		if root := os.Getenv(testprog.RootEnv); root != "" && len(pidFile) > 0 && pidFile[0] == '/' {
			pidFile = filepath.Join(root, filepath.FromSlash(pidFile))
		}
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(child.Process.Pid)), 0o644); err != nil {
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
