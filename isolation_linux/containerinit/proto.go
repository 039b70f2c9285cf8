package isolationlinux

import (
	"errors"
	"fmt"

	"github.com/trellis-run/trellis/isolation"
)

// The init protocol. The backend talks to a container's init over the unix seqpacket socket
// <state>/init.sock: one request per connection, one JSON packet each way, with file
// descriptors attached to the request packet (SCM_RIGHTS) where an operation needs them. A
// "wait" connection stays open until the process exits; closing it abandons the wait.

// Operations.
const (
	opPing      = "ping"       // reply at once; proves the init serves
	opRun       = "run"        // fds: stdin, stdout, stderr; starts Process
	opWait      = "wait"       // replies when process ID has exited, with its exit code
	opSignal    = "signal"     // delivers Signal to process ID
	opStop      = "stop"       // SIGTERM everything, SIGKILL after GraceMillis (at once with Kill)
	opStreamIn  = "stream-in"  // fds: the read end of a pipe carrying a tar; unpacks it at Path
	opStreamOut = "stream-out" // fds: the write end of a pipe; replies, then writes Path as tar
)

// maxPacket bounds one protocol packet (the environment and arguments of a process fit easily).
const maxPacket = 1 << 20

type initRequest struct {
	Op          string          `json:"op"`
	ID          string          `json:"id,omitempty"`
	Process     *processRequest `json:"process,omitempty"`
	Signal      int             `json:"signal,omitempty"`
	Path        string          `json:"path,omitempty"`
	GraceMillis int64           `json:"grace_ms,omitempty"`
	Kill        bool            `json:"kill,omitempty"`
}

type processRequest struct {
	ID      string       `json:"id"`
	Path    string       `json:"path"`
	Args    []string     `json:"args,omitempty"`
	Env     []string     `json:"env,omitempty"`
	Dir     string       `json:"dir,omitempty"`
	User    string       `json:"user,omitempty"`
	Rlimits []rlimitSpec `json:"rlimits,omitempty"`
}

type rlimitSpec struct {
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// Error classes carried in initResponse.Class, mapped back onto isolation's sentinels.
const (
	classNotFound    = "not_found"
	classInvalid     = "invalid"
	classStopped     = "stopped"
	classUnsupported = "unsupported"
	classExists      = "exists"
)

type initResponse struct {
	Error    string `json:"error,omitempty"`
	Class    string `json:"class,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
}

// errorResponse turns an init-side error into a response, keeping its class.
// A nil error is a plain success.
func errorResponse(err error) initResponse {
	if err == nil {
		return initResponse{}
	}
	r := initResponse{Error: err.Error()}
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

// err rebuilds the error of a response on the backend side; nil when it carries none.
func (r initResponse) err() error {
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

// validID is the rule for process ids (they name a directory in the state dir).
func validID(id string) bool {
	return id != "." && id != ".." && handlePattern.MatchString(id)
}
