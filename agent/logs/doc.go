// Package logs captures the stdout and stderr of the processes an agent runs, one bounded file
// per instance, and streams them back for `trellis logs [--follow]`.
//
// A Store owns a directory. Each instance has a key (its instance or task guid) naming the
// file <key>.log; when a line would grow it past the store's per-instance bound, the file is
// rotated to <key>.log.1 (replacing the previous one), so an instance never holds more than
// twice the bound on disk. Files survive an agent restart; a new Writer appends. CloseIdle
// closes the files of logs not written for a while (their writers stay usable; the next line
// opens the file again), so quiet instances hold no file descriptor.
//
// Writers are opened per source ("APP" for the workload, "HEALTH" for health checks, "CELL"
// for the agent's own messages about the instance) and give one io.Writer per stream:
//
//	w, err := store.Writer(logs.SourceApp, logs.Instance{Key: guid, Index: 0})
//	...
//	proc, err := container.Run(ctx, spec, isolation.ProcessIO{Stdout: w.Stdout(), Stderr: w.Stderr()})
//	...
//	w.Close() // flushes a trailing partial line of each stream
//
// Every line is stored as
//
//	2006-01-02T15:04:05.000000000Z [APP/0] OUT the text
//
// (UTC time the line was completed, source and instance index, stream, text; an instance
// without an index, such as a task, is written "[APP]"). A trailing "\r" is dropped, and a line
// longer than MaxLineBytes is split into several. Read parses the lines back into Line values
// and, with follow, keeps streaming new ones until its context ends or the key is removed.
//
// Writer values implement Sink, the interface packages agent/actions and agent/health write
// through.
package logs
