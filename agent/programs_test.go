package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/trellis-run/trellis/isolation/isolationtest"
)

// Programs of the in-memory backend used by these tests, by path.
const (
	// progWeb serves HTTP on $CF_INSTANCE_INTERNAL_IP:$PORT ("hello from <index>") until
	// terminated; it prints "listening" once it accepts connections.
	progWeb = "/bin/web"
	// progHog reports args[0] MiB of memory use (the backend OOM-kills past the limit), then
	// runs until terminated.
	progHog = "/bin/hog"
	// progFill writes a file of args[0] MiB and exits 1 if that fails (a full disk), else
	// runs until terminated.
	progFill = "/bin/fill"
)

// webStarts counts the starts of progWeb by instance guid, so that tests can tell a
// re-attached process from a restarted one.
var webStarts sync.Map // string → *atomic.Int32

func starts(guid string) int32 {
	v, ok := webStarts.Load(guid)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

func registerPrograms(m *isolationtest.Memory) {
	m.RegisterProgram(progWeb, webProgram)
	m.RegisterProgram(progHog, hogProgram)
	m.RegisterProgram(progFill, fillProgram)
}

func fillProgram(ctx context.Context, pc *isolationtest.ProcContext) int {
	mb, _ := strconv.Atoi(pc.Args[0])
	if err := pc.WriteFile("/fill", make([]byte, mb<<20), 0o644); err != nil {
		fmt.Fprintln(pc.Stderr, err)
		return 1
	}
	select {
	case <-ctx.Done():
	case <-pc.Killed():
	}
	return isolationtest.ExitTerminated
}

func webProgram(ctx context.Context, pc *isolationtest.ProcContext) int {
	ip, _ := pc.Getenv("CF_INSTANCE_INTERNAL_IP")
	port, _ := pc.Getenv("PORT")
	index, _ := pc.Getenv("INSTANCE_INDEX")
	guid, _ := pc.Getenv("INSTANCE_GUID")
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	if err != nil {
		fmt.Fprintln(pc.Stderr, err)
		return 1
	}
	v, _ := webStarts.LoadOrStore(guid, new(atomic.Int32))
	v.(*atomic.Int32).Add(1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", index)
	})}
	go srv.Serve(ln)
	fmt.Fprintf(pc.Stdout, "listening on %s\n", ln.Addr())
	fmt.Fprintln(pc.Stderr, "a line on stderr")
	select {
	case <-ctx.Done():
	case <-pc.Killed():
	}
	srv.Close()
	return isolationtest.ExitTerminated
}

func hogProgram(ctx context.Context, pc *isolationtest.ProcContext) int {
	mb, _ := strconv.Atoi(pc.Args[0])
	pc.SetMemoryUsage(uint64(mb) << 20)
	select {
	case <-ctx.Done():
	case <-pc.Killed():
	}
	return isolationtest.ExitTerminated
}
