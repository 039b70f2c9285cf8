package testprog

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// RootEnv names the environment variable holding the host directory that stands for the
// container's "/", for backends whose processes see host paths.
const RootEnv = "TRELLIS_TESTPROG_ROOT"

// exitTerminated is what Sleep exits with on terminate, as a shell reports SIGTERM.
const exitTerminated = 143

// Main runs the program argv encodes (isolationtest.Program.Argv) and returns its exit status.
// Usage errors exit 2.
func Main(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog, err := isolationtest.ParseArgv(argv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	root := os.Getenv(RootEnv)
	switch prog.Kind {
	case isolationtest.KindExit:
		return prog.Code
	case isolationtest.KindEcho:
		io.WriteString(stdout, prog.Stdout)
		io.WriteString(stderr, prog.Stderr)
		return 0
	case isolationtest.KindSleep:
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		io.WriteString(stdout, isolationtest.ReadyLine)
		<-term
		return exitTerminated
	case isolationtest.KindIgnoreTerm:
		signal.Ignore(syscall.SIGTERM)
		io.WriteString(stdout, isolationtest.ReadyLine)
		for {
			time.Sleep(time.Hour)
		}
	case isolationtest.KindCat:
		if _, err := io.Copy(stdout, stdin); err != nil {
			fmt.Fprintln(stderr, "cat:", err)
			return 1
		}
		return 0
	case isolationtest.KindPrintEnv:
		v, ok := os.LookupEnv(prog.Name)
		if !ok {
			return 1
		}
		io.WriteString(stdout, v+"\n")
		return 0
	case isolationtest.KindPrintCwd:
		wd, err := os.Getwd()
		if err != nil {
			fmt.Fprintln(stderr, "pwd:", err)
			return 1
		}
		io.WriteString(stdout, containerPath(root, wd)+"\n")
		return 0
	case isolationtest.KindWriteFile:
		if err := os.WriteFile(hostPath(root, prog.Path), []byte(prog.Content), 0o644); err != nil {
			fmt.Fprintln(stderr, "write-file:", err)
			return 1
		}
		return 0
	case isolationtest.KindReadFile:
		data, err := os.ReadFile(hostPath(root, prog.Path))
		if err != nil {
			fmt.Fprintln(stderr, "read-file:", err)
			return 1
		}
		stdout.Write(data)
		return 0
	case isolationtest.KindListDir:
		entries, err := os.ReadDir(hostPath(root, prog.Path))
		if err != nil {
			fmt.Fprintln(stderr, "list-dir:", err)
			return 1
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			io.WriteString(stdout, n+"\n")
		}
		return 0
	}
	fmt.Fprintf(stderr, "test program: kind %q has no implementation\n", prog.Kind)
	return 2
}

// hostPath maps a container path to the host: absolute slash paths go under root when set;
// relative paths stay relative to the working directory.
func hostPath(root, p string) string {
	if root == "" || !strings.HasPrefix(p, "/") {
		return filepath.FromSlash(p)
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// containerPath maps a host directory back to the container's view of it under root.
func containerPath(root, dir string) string {
	if root == "" {
		return filepath.ToSlash(dir)
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return filepath.ToSlash(dir)
	}
	if rel == "." {
		return "/"
	}
	return "/" + filepath.ToSlash(rel)
}
