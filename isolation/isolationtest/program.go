package isolationtest

import (
	"fmt"
	"strconv"
)

// ProgramKind names one behaviour of the abstract test-program vocabulary.
type ProgramKind string

// The test-program vocabulary. Every harness maps each kind to a real ProcessSpec whose process
// behaves exactly as documented here; the conformance suite asserts on nothing else.
const (
	// KindExit exits with Program.Code without writing anything.
	KindExit ProgramKind = "exit"
	// KindEcho writes Program.Stdout to stdout and Program.Stderr to stderr, byte for byte (no
	// newline added), then exits 0.
	KindEcho ProgramKind = "echo"
	// KindSleep writes "ready\n" to stdout once a terminate signal would reach it, then sleeps
	// until signalled: it exits 143 on terminate and 137 on kill.
	KindSleep ProgramKind = "sleep"
	// KindIgnoreTerm writes "ready\n" to stdout once it ignores terminate, then runs until
	// killed (exit 137). A terminate signal does not end it.
	KindIgnoreTerm ProgramKind = "ignore-term"
	// KindCat copies stdin to stdout byte for byte and exits 0 at end of input.
	KindCat ProgramKind = "cat"
	// KindPrintEnv writes the value of the environment variable Program.Name followed by "\n"
	// and exits 0; it exits 1 without output when the variable is unset.
	KindPrintEnv ProgramKind = "printenv"
	// KindPrintCwd writes the absolute working directory, as a slash-separated path inside the
	// container, followed by "\n" and exits 0.
	KindPrintCwd ProgramKind = "pwd"
	// KindWriteFile writes Program.Content to Program.Path (relative paths are resolved against
	// the working directory), creating or truncating the file but not its parent, and exits 0;
	// it exits 1 when the write fails.
	KindWriteFile ProgramKind = "write-file"
	// KindReadFile writes the content of Program.Path to stdout and exits 0; it exits 1
	// without stdout output when the file cannot be read.
	KindReadFile ProgramKind = "read-file"
	// KindListDir writes the names of the entries of directory Program.Path, one per line
	// ("\n"), in any order, without "." and "..", and exits 0; it exits 1 when the directory
	// cannot be read.
	KindListDir ProgramKind = "list-dir"
)

// ReadyLine is what KindSleep and KindIgnoreTerm write to stdout once they are ready for signals.
const ReadyLine = "ready\n"

// Kinds lists every ProgramKind, for harnesses that check they map them all.
var Kinds = []ProgramKind{
	KindExit, KindEcho, KindSleep, KindIgnoreTerm, KindCat, KindPrintEnv, KindPrintCwd,
	KindWriteFile, KindReadFile, KindListDir,
}

// Program is one abstract test program: a Kind and the arguments that kind uses.
type Program struct {
	Kind    ProgramKind
	Code    int    // KindExit
	Stdout  string // KindEcho
	Stderr  string // KindEcho
	Name    string // KindPrintEnv
	Path    string // KindWriteFile, KindReadFile, KindListDir
	Content string // KindWriteFile
}

// Exit returns a program that exits with code.
func Exit(code int) Program { return Program{Kind: KindExit, Code: code} }

// Echo returns a program that writes stdout and stderr to the matching streams.
func Echo(stdout, stderr string) Program {
	return Program{Kind: KindEcho, Stdout: stdout, Stderr: stderr}
}

// Sleep returns a program that runs until signalled (143 on terminate, 137 on kill).
func Sleep() Program { return Program{Kind: KindSleep} }

// IgnoreTerm returns a program that survives terminate and dies only when killed.
func IgnoreTerm() Program { return Program{Kind: KindIgnoreTerm} }

// Cat returns a program that copies stdin to stdout.
func Cat() Program { return Program{Kind: KindCat} }

// PrintEnv returns a program that prints the value of the environment variable name.
func PrintEnv(name string) Program { return Program{Kind: KindPrintEnv, Name: name} }

// PrintCwd returns a program that prints its working directory.
func PrintCwd() Program { return Program{Kind: KindPrintCwd} }

// WriteFile returns a program that writes content to path.
func WriteFile(path, content string) Program {
	return Program{Kind: KindWriteFile, Path: path, Content: content}
}

// ReadFile returns a program that prints the content of path.
func ReadFile(path string) Program { return Program{Kind: KindReadFile, Path: path} }

// ListDir returns a program that prints the entry names of directory path.
func ListDir(path string) Program { return Program{Kind: KindListDir, Path: path} }

// Argv encodes p as a command line, the kind first: ["exit", "3"], ["echo", out, err],
// ["sleep"], ["printenv", name], ["write-file", path, content], ... A helper binary that
// implements the vocabulary (package testprog) takes exactly these arguments, so a harness can
// map every program to ProcessSpec{Path: helper, Args: p.Argv()}.
func (p Program) Argv() []string {
	switch p.Kind {
	case KindExit:
		return []string{string(p.Kind), strconv.Itoa(p.Code)}
	case KindEcho:
		return []string{string(p.Kind), p.Stdout, p.Stderr}
	case KindPrintEnv:
		return []string{string(p.Kind), p.Name}
	case KindWriteFile:
		return []string{string(p.Kind), p.Path, p.Content}
	case KindReadFile, KindListDir:
		return []string{string(p.Kind), p.Path}
	default:
		return []string{string(p.Kind)}
	}
}

// ParseArgv is the inverse of Program.Argv.
func ParseArgv(argv []string) (Program, error) {
	if len(argv) == 0 {
		return Program{}, fmt.Errorf("test program: empty command line")
	}
	kind := ProgramKind(argv[0])
	args := argv[1:]
	want := map[ProgramKind]int{
		KindExit: 1, KindEcho: 2, KindSleep: 0, KindIgnoreTerm: 0, KindCat: 0, KindPrintEnv: 1,
		KindPrintCwd: 0, KindWriteFile: 2, KindReadFile: 1, KindListDir: 1,
	}
	n, ok := want[kind]
	if !ok {
		return Program{}, fmt.Errorf("test program: unknown kind %q", kind)
	}
	if len(args) != n {
		return Program{}, fmt.Errorf("test program %s: want %d arguments, got %d", kind, n, len(args))
	}
	p := Program{Kind: kind}
	switch kind {
	case KindExit:
		code, err := strconv.Atoi(args[0])
		if err != nil {
			return Program{}, fmt.Errorf("test program exit: code %q: %w", args[0], err)
		}
		p.Code = code
	case KindEcho:
		p.Stdout, p.Stderr = args[0], args[1]
	case KindPrintEnv:
		p.Name = args[0]
	case KindWriteFile:
		p.Path, p.Content = args[0], args[1]
	case KindReadFile, KindListDir:
		p.Path = args[0]
	}
	return p, nil
}

// String returns the program's command line, for test failure messages.
func (p Program) String() string { return fmt.Sprintf("%q", p.Argv()) }
