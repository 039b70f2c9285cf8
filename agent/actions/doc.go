// Package actions runs the action DSL of tasks and LRPs (bbs/models.Action) inside an
// isolation.Container.
//
// A Runner is made per container with the things the actions need: the container, the cell's
// download cache, the environment, and the log sinks. Runner.Run executes a validated action
// tree and returns nil or an error whose Reason is the crash or failure reason reported to the
// BBS:
//
//	r, err := actions.NewRunner(actions.Config{Container: c, Cache: cache, Env: env,
//		Instance: &actions.InstanceEnv{GUID: guid, Index: 0, HostIP: ip, Ports: ports},
//		Output: appLog, Progress: cellLog})
//	...
//	if err := r.Run(ctx, lrp.Action); err != nil {
//		reason := actions.Reason(err) // "exited with status 1", "timed out after 5s", ...
//	}
//
// # Semantics of each node
//
//   - download: Cache.Fetch(from, cache_key, checksum), then StreamIn into the directory
//     `to`. The artifact type is decided by content, not by the URL (Cloud Controller droplet
//     URLs have no extension): a gzip stream holding a tar, or a plain tar, is unpacked into
//     `to`; anything else is written as one file named by the base name of the URL's path,
//     mode 0644, inside `to`. A non-empty user other than root fails with an error wrapping
//     isolation.ErrUnsupported: the isolation interface cannot set file ownership.
//   - upload: StreamOut(from); when from names a regular file its content is PUT to `to`
//     (application/octet-stream, with a Content-Length), otherwise the tar stream is PUT
//     (application/x-tar). A non-2xx answer fails the action. The user rule is as download's.
//   - run: Container.Run with the environment Config.Env, then the instance variables
//     (InstanceEnv.Vars), then the action's env — later entries win, and the backend puts the
//     container's own env before all of them. Output goes to Config.Output (unless
//     suppress_log_output), each process with its own line buffers when the sink is a
//     logs.Forker. A non-zero exit fails with *ExitError, reason "exited with status N"
//     (" (out of memory)" appended when the container reports an OOM event). When ctx ends
//     the process gets SignalTerminate, then SignalKill after Config.GracePeriod.
//   - timeout: the child is cancelled (as above) after timeout_ms; reason "timed out after
//     5s".
//   - try: the child's failure is logged to Config.Logger and swallowed; cancellation is
//     not.
//   - parallel: all children run; after all finish, the first error (in finishing order) is
//     returned.
//   - serial: children run in order; the first failure stops the sequence and is returned.
//   - codependent: all children run; when any one finishes, successfully or not, the others
//     are cancelled. The result is the first finisher's error, or ErrCodependentExited
//     ("codependent action exited") when it succeeded while others were still running.
//   - emit_progress: start_message before, success_message after success (to the Progress
//     sink's stdout), "<failure_message_prefix>: <reason>" after a failure (its stderr);
//     nothing on cancellation.
//
// When ctx ends, Run returns an error for which errors.Is(err, ErrCancelled) holds (reason
// "cancelled"), after every process it started has exited.
//
// # Process ids and resuming
//
// With Config.ProcessIDPrefix set, every run node gets a deterministic process id: the prefix
// plus its position in the tree ("action-r.1.0" is the first child of the second child of the
// root), so a tree runs once per container. With Config.Resume a run node first attaches to a
// process of that id (running or exited) and starts one only when there is none, so an agent
// restarted while containers kept running can resume waiting on the instance's action. Resume
// does not make download or upload nodes idempotent: resume only trees of run-like nodes (the
// LRP action, not its setup). Without a prefix the backend names processes.
package actions
