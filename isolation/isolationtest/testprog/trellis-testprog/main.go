package main

import (
	"os"

	"github.com/trellis-run/trellis/isolation/isolationtest/testprog"
)

func main() {
	os.Exit(testprog.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
