package isolationwindows

import (
	"context"
	"io"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// driver is what differs between the modes: how a container's isolation is made, how its
// processes start and end, and where its usage is read. The Backend does everything else
// (validation, records, ports, properties, logs, streaming) the same way for both.
// Every method may be called concurrently for different containers; for one container the
// Backend serialises create, open, stop and destroy.
type driver interface {
	// create makes the container's isolation for rec (filled in: RootDir, Mounts,
	// ContainerIP, JobName or SystemID/EndpointID) and starts it. On error it leaves
	// nothing behind.
	create(ctx context.Context, rec *containerRecord) error
	// open reacquires the isolation of a container a previous Backend created. It fails
	// when the isolation is gone; the container is then reported stopped.
	open(ctx context.Context, rec *containerRecord) error
	// start runs a process in the container. Its stdout and stderr go to the files at
	// l.stdoutPath and l.stderrPath, which outlive the Backend.
	start(ctx context.Context, rec *containerRecord, l launch) (osProcess, error)
	// reattach finds a process an earlier Backend started, by pid and creation time. It
	// returns isolation.ErrNotFound when the process no longer exists.
	reattach(ctx context.Context, rec *containerRecord, pr processRecord) (osProcess, error)
	// terminate asks every process of the container to stop (console control event in
	// process mode, HCS shutdown in container mode).
	terminate(ctx context.Context, rec *containerRecord) error
	// kill ends every process of the container at once with exit status 137.
	kill(ctx context.Context, rec *containerRecord) error
	// destroy releases the isolation (job, compute system, endpoint, scratch layer). It is
	// idempotent.
	destroy(ctx context.Context, rec *containerRecord) error
	// metrics reads the container's usage.
	metrics(ctx context.Context, rec *containerRecord) (isolation.Metrics, error)
	// events returns the kernel events seen for the container since the last call
	// (isolation.EventOutOfMemory).
	events(rec *containerRecord) []string
	// close releases what the driver holds for all containers without ending them.
	close() error
}

// launch is a process to start, in host terms.
type launch struct {
	// path is the program: a host path in process mode, a path in the container in
	// container mode.
	path string
	args []string
	// env is the complete environment (KEY=VALUE).
	env []string
	// dir is the working directory: a host path in process mode, a container path ("C:\...")
	// in container mode.
	dir                    string
	stdin                  io.Reader
	stdoutPath, stderrPath string
}

// osProcess is a started (or reattached) process.
type osProcess interface {
	// pid is the process id on the host (process mode) or in the container.
	pid() int
	// creationTime identifies the process beside its pid (0 where the platform has none).
	creationTime() uint64
	// wait blocks until the process exits and returns its exit status; all its output is
	// in the log files when it returns.
	wait() (int, error)
	// terminate asks the process to stop (a console control event).
	terminate() error
	// kill ends the process with exit status 137.
	kill() error
	// release frees the handle without affecting the process.
	release()
}

// exitKilled is the status of a process ended by kill, as a shell reports SIGKILL.
const exitKilled = 137

// outputPoll is how often a process's log files are read while it runs.
const outputPoll = 10 * time.Millisecond
