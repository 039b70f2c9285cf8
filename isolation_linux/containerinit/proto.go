package containerinit

import (
	"errors"
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

// Argv0 is the argv[0] under which the backend executes its binary as a container's init.
const Argv0 = "trellis-container-init"

// File descriptors of the init. Only FdBinary and FdStart are set when the init is executed
// (3 to 6 hold /dev/null until then); the others arrive with the StartMessage on FdStart,
// which the init moves to these numbers. The init's argv[1] names it in its log: the
// container's handle, or PoolLabel for an init started ahead of its container.
const (
	FdSync      = 3 // write end of a pipe: one JSON line, a SyncMessage
	FdListener  = 4 // the listening seqpacket socket <state>/init.sock
	FdConfig    = 5 // config.json, read-only
	FdProcesses = 6 // <state>/processes, where the init records exit codes
	FdBinary    = 7 // the sealed init binary, which the backend executes by this number
	// FdStart is the init's end of a seqpacket socket pair on which the backend, once the
	// init is in its container's cgroups, sends the StartMessage. The init does nothing of
	// its own before that; end of file (the backend failed, closed or died) makes it exit.
	FdStart = 8
)

// StartFiles is the number of descriptors attached to the StartMessage: sync, listener,
// config, processes (moved to FdSync..FdProcesses) and the init's log (moved to 1 and 2).
const StartFiles = 5

// AnnotationOverlay is the config.json annotation holding the overlay mount options
// (lowerdir, upperdir, workdir) of the root filesystem, which the OCI spec has no field for:
// Root.Path is the mount point.
const AnnotationOverlay = "dev.trellis.rootfs.overlay"

// SyncMessage is the init's one report on FdSync: ready, or why setup failed.
type SyncMessage struct {
	Ready bool   `json:"ready,omitempty"`
	Error string `json:"error,omitempty"`
}

// The init protocol. The backend talks to a container's init over the unix seqpacket socket
// <state>/init.sock: one request per connection, one JSON packet each way, with file
// descriptors attached to the request packet (SCM_RIGHTS) where an operation needs them. A
// "wait" connection stays open until the process exits; closing it abandons the wait. A "run"
// request with Watch set is a run and a wait on one connection: the reply with the pid, then,
// once the process has exited, a second one with its exit code (an init that predates Watch
// closes the connection after the first).

// Operations.
const (
	OpPing      = "ping"               // reply at once; proves the init serves
	OpRun       = "run"                // fds: stdin, stdout, stderr; starts Process
	OpWait      = "wait"               // replies when process ID has exited, with its exit code
	OpSignal    = "signal"             // delivers Signal to process ID
	OpStop      = "stop"               // SIGTERM everything, SIGKILL after GraceMillis (at once with Kill)
	OpStreamIn  = "stream-entries-in"  // fds: a pipe's read end carrying entries (entry.go), optionally the archive file their offsets are in; creates them at Path
	OpStreamOut = "stream-entries-out" // fds: a pipe's write end; replies, then writes Path as entries
)

// MaxPacket bounds one protocol packet (the environment and arguments of a process fit easily).
const MaxPacket = 1 << 20

// Request is one request to the init.
type Request struct {
	Op          string          `json:"op"`
	ID          string          `json:"id,omitempty"`
	Process     *ProcessRequest `json:"process,omitempty"`
	Signal      int             `json:"signal,omitempty"`
	Path        string          `json:"path,omitempty"`
	GraceMillis int64           `json:"grace_ms,omitempty"`
	Kill        bool            `json:"kill,omitempty"`
	// Watch (OpRun) keeps the connection for the process's exit code, as OpWait would.
	Watch bool `json:"watch,omitempty"`
}

// ProcessRequest is the process of an OpRun request.
type ProcessRequest struct {
	ID      string   `json:"id"`
	Path    string   `json:"path"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Dir     string   `json:"dir,omitempty"`
	User    string   `json:"user,omitempty"`
	Rlimits []Rlimit `json:"rlimits,omitempty"`
}

// Rlimit is one resource limit of a process (Resource is the RLIMIT_* number).
type Rlimit struct {
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// Error classes carried in Response.Class, mapped back onto isolation's sentinels.
const (
	classNotFound    = "not_found"
	classInvalid     = "invalid"
	classStopped     = "stopped"
	classUnsupported = "unsupported"
	classExists      = "exists"
)

// Response is the init's reply.
type Response struct {
	Error    string `json:"error,omitempty"`
	Class    string `json:"class,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
}

// ErrorResponse turns an init-side error into a response, keeping its class.
// A nil error is a plain success.
func ErrorResponse(err error) Response {
	if err == nil {
		return Response{}
	}
	r := Response{Error: err.Error()}
	switch {
	case errors.Is(err, isolation.ErrNotFound):
		r.Class = classNotFound
	case errors.Is(err, isolation.ErrInvalidSpec):
		r.Class = classInvalid
	case errors.Is(err, isolation.ErrStopped):
		r.Class = classStopped
	case errors.Is(err, isolation.ErrAlreadyExists):
		r.Class = classExists
	case isolation.IsUnsupported(err):
		r.Class = classUnsupported
	}
	return r
}

// Err rebuilds the error of a response on the backend side; nil when it carries none.
func (r Response) Err() error {
	if r.Error == "" {
		return nil
	}
	var class error
	switch r.Class {
	case classNotFound:
		class = isolation.ErrNotFound
	case classInvalid:
		class = isolation.ErrInvalidSpec
	case classStopped:
		class = isolation.ErrStopped
	case classExists:
		class = isolation.ErrAlreadyExists
	case classUnsupported:
		class = isolation.ErrUnsupported
	default:
		return fmt.Errorf("%w: %s", ErrInit, r.Error)
	}
	// The message already names the class; wrap without repeating it.
	return &classedError{msg: r.Error, class: class}
}

type classedError struct {
	msg   string
	class error
}

func (e *classedError) Error() string { return e.msg }
func (e *classedError) Unwrap() error { return e.class }

// ErrInit: a container's init failed or does not answer. Errors wrap it and say what the init
// was asked and why it failed.
var ErrInit = errors.New("container init")

// ValidID is the rule for process ids, which name a directory in the state dir: 1 to 128 of
// [A-Za-z0-9_.-], and neither "." nor "..". (isolation.ContainerSpec's rule for handles.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
