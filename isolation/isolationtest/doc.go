// Package isolationtest holds the conformance suite every isolation.Backend runs, and Memory, an
// in-memory backend proven faithful by that suite, for tests of the agent and for simulated
// cells at scale.
//
// # Running the suite against a backend
//
// A backend's test file builds a Harness and calls RunConformance:
//
//	func TestConformance(t *testing.T) {
//		isolationtest.RunConformance(t, isolationtest.Harness{
//			New: func(t *testing.T) isolation.Backend {
//				b, err := isolationlinux.New(ctx, isolationlinux.Config{StateDir: t.TempDir(), ...})
//				if err != nil {
//					t.Fatal(err)
//				}
//				t.Cleanup(func() { b.Close() })
//				return b
//			},
//			Reopen:  func(t *testing.T, b isolation.Backend) isolation.Backend { ... same StateDir ... },
//			RootFS:  "preloaded:busybox",
//			Program: func(p isolationtest.Program) isolation.ProcessSpec { ... },
//			Skip:    map[string]string{"Info/MappedPorts": "no CNI plugins on this host"},
//		})
//	}
//
// The suite never assumes a shell. It speaks a small vocabulary of test programs (Program:
// Exit, Echo, Sleep, IgnoreTerm, Cat, PrintEnv, PrintCwd, WriteFile, ReadFile, ListDir; see
// the Kind constants for the exact behaviour each must have), and Harness.Program maps each to
// a ProcessSpec the backend can run: busybox applets or "sh -c" on a Linux rootfs, or a helper
// executable. Program.Argv encodes a program as a command line ("exit 3", "echo OUT ERR", ...)
// for a helper binary that implements the vocabulary, so a harness can simply return
// ProcessSpec{Path: helper, Args: p.Argv()}. Sleep and IgnoreTerm must print ReadyLine once a
// terminate signal would find them ready (handler installed); the suite signals only then.
//
// Each subtest runs on a fresh backend from Harness.New, under a stable name (SubtestNames);
// Harness.Skip skips one subtest ("Stream/Modes") or a group ("Reopen") with a reason, and
// fails the suite if it names no subtest, so skips cannot go stale silently. Without
// Harness.Reopen the Reopen group is skipped.
//
// # The contract the suite pins down
//
// Where isolation's comments leave room, the suite decides, and every backend must agree:
//
//   - An unknown rootfs scheme is ErrUnsupported; a RootFS that is not a URI is ErrInvalidSpec.
//   - Handles "." and ".." are invalid (backends name directories after handles).
//   - ErrInvalidSpec messages name the offending field ("Limits.CPUWeight", "NetIn[0].HostPort",
//     "Env", "Dir", "Path", "ID"); the suite matches field names case- and punctuation-blind.
//   - Run with the id of a running process is ErrAlreadyExists (Memory also refuses the id of
//     an exited one, whose status Attach still serves).
//   - Run's ctx bounds the start only; cancelling it does not end the process.
//   - Wait returns only after the process's output has reached the ProcessIO writers, and
//     returns ctx's error (wrapped) when ctx ends first. It may be called many times, on the
//     process Run returned and on processes Attach returned, each call seeing the same status.
//   - Exit statuses: 143 for a program that exits on terminate, 137 for a kill, by SignalKill,
//     by Stop after its grace, or by Stop with kill.
//   - Stop returns once every process has exited; the container then refuses Run and StreamIn
//     with ErrStopped but still answers Info (State "stopped") and StreamOut.
//   - Attach works on an exited process (Wait returns its status) for as long as the container
//     exists, and across a backend reopen. Info.ProcessIDs lists processes not yet exited.
//   - StreamIn roots archive member names at the destination: "../x" and "/x" land at dst/x. A
//     name climbing in its middle ("a/../../x") may be clamped or refused (ErrInvalidSpec) but
//     never lands above dst. Symlinks resolve inside the container's root: a member "up/x"
//     under a symlink "up" -> "../../.." lands at the container's /x, never on the host.
//   - StreamOut names members after the base name of the path ("d/", "d/a.txt"); a missing
//     path is ErrNotFound, reported by StreamOut itself, not by the reader.
//   - BulkMetrics leaves unknown handles out; Destroy is idempotent.
//
// # The in-memory backend
//
// Memory (NewMemory(DefaultMemoryConfig())) implements every method with real semantics:
// validated specs, unique handles, properties with an index for List, a filesystem per
// container (tar in and out, symlinks and hard links resolved inside it, modes kept, a disk
// limit), processes as Go functions registered by path (RegisterProgram; the vocabulary is at
// TestProgramPath, so MemoryProgram is its Harness.Program), stdin/stdout/stderr, exit codes,
// terminate (the program's ctx is cancelled) and kill (exit 137 at once), Stop with grace,
// capacity accounting (ErrInsufficientResources), NetIn host-port allocation from a range,
// container addresses from a loopback subnet, InjectEvent for kernel events (an OOM kills the
// container's processes), and restarts: ReopenMemory(m.State()) is a new backend over the same
// state, as a restarted agent sees the host. MemoryHarness runs it under the suite.
//
// It is built for simulated cells: a container costs a few hundred bytes until files or
// processes are added, and operations take one of 64 shard locks plus a short host-wide lock.
package isolationtest
