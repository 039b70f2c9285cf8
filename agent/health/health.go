package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
)

// Sentinel error classes.
var (
	// ErrUnhealthy: a health check failed (see Failure).
	ErrUnhealthy = errors.New("health check failed")
	// ErrInvalid: a malformed Config or check definition.
	ErrInvalid = errors.New("invalid health check")
)

// Defaults of Config.
const (
	DefaultInterval         = time.Second
	DefaultStartupInterval  = 100 * time.Millisecond
	DefaultTimeout          = time.Second
	DefaultFailureThreshold = 1
)

// Config configures a Checker.
type Config struct {
	// Resolve maps a container port to the "host:port" to dial. Required.
	Resolve func(port uint32) (addr string, err error)
	// Sink receives a line per check failure (stderr) and one when startup passes (stdout);
	// nil discards them. Use a logs.Writer with source logs.SourceHealth.
	Sink logs.Sink
	// Logger receives the checker's own records; nil discards them.
	Logger *slog.Logger
	// Interval is the liveness polling interval of checks without interval_ms.
	Interval time.Duration
	// StartupInterval is the startup polling interval (a check's shorter interval_ms wins).
	StartupInterval time.Duration
	// Timeout bounds each probe of checks without timeout_ms.
	Timeout time.Duration
	// FailureThreshold is how many liveness failures in a row of one check fail the instance.
	FailureThreshold int
}

// DefaultConfig returns a Config with the default intervals, timeout and threshold; Resolve
// must still be set.
func DefaultConfig() Config {
	return Config{
		Interval:         DefaultInterval,
		StartupInterval:  DefaultStartupInterval,
		Timeout:          DefaultTimeout,
		FailureThreshold: DefaultFailureThreshold,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Resolve == nil:
		return fmt.Errorf("health config: Resolve is required: %w", ErrInvalid)
	case c.Interval <= 0:
		return fmt.Errorf("health config: Interval must be positive, got %v: %w", c.Interval, ErrInvalid)
	case c.StartupInterval <= 0:
		return fmt.Errorf("health config: StartupInterval must be positive, got %v: %w", c.StartupInterval, ErrInvalid)
	case c.Timeout <= 0:
		return fmt.Errorf("health config: Timeout must be positive, got %v: %w", c.Timeout, ErrInvalid)
	case c.FailureThreshold < 1:
		return fmt.Errorf("health config: FailureThreshold must be at least 1, got %d: %w", c.FailureThreshold, ErrInvalid)
	}
	return nil
}

// Failure is a failed health check.
type Failure struct {
	// Check names the check: "tcp port 8080" or "http port 8080 path /health".
	Check string
	// Err is the last probe's error.
	Err error
	// StartTimeout is set when the check never passed during startup.
	StartTimeout time.Duration
}

// Error is "health check failed: <check>: <error>", or for startup "health check failed:
// <check> did not pass within <timeout>: <error>".
func (f *Failure) Error() string {
	if f.StartTimeout > 0 {
		return fmt.Sprintf("%v: %s did not pass within %v: %v", ErrUnhealthy, f.Check, f.StartTimeout, f.Err)
	}
	return fmt.Sprintf("%v: %s: %v", ErrUnhealthy, f.Check, f.Err)
}

// Reason is the crash reason: the same text as Error.
func (f *Failure) Reason() string { return f.Error() }

// Is makes errors.Is(err, ErrUnhealthy) true.
func (f *Failure) Is(target error) bool { return target == ErrUnhealthy }

// Unwrap returns the last probe's error.
func (f *Failure) Unwrap() error { return f.Err }

// Checker probes the checks of one instance. It is safe for concurrent use.
type Checker struct {
	cfg    Config
	sink   logs.Sink
	log    *slog.Logger
	sinkMu sync.Mutex
}

// NewChecker returns a Checker for cfg.
// Errors: ErrInvalid (cfg.Validate).
func NewChecker(cfg Config) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Checker{cfg: cfg, sink: cfg.Sink, log: cfg.Logger}
	if c.sink == nil {
		c.sink = logs.Discard
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// probe is one check with its effective settings.
type probe struct {
	check    models.Check
	name     string
	interval time.Duration // liveness; 0 means Config.Interval
	timeout  time.Duration
}

func (c *Checker) probes(def *models.CheckDefinition) ([]probe, error) {
	if def == nil || len(def.Checks) == 0 {
		return nil, fmt.Errorf("health checks: the definition lists no check: %w", ErrInvalid)
	}
	ps := make([]probe, len(def.Checks))
	for i, chk := range def.Checks {
		var intervalMs, timeoutMs int64
		p := probe{check: chk}
		switch {
		case chk.TCP != nil && chk.HTTP == nil:
			p.name = "tcp port " + strconv.FormatUint(uint64(chk.TCP.Port), 10)
			intervalMs, timeoutMs = chk.TCP.IntervalMs, chk.TCP.TimeoutMs
		case chk.HTTP != nil && chk.TCP == nil:
			path := chk.HTTP.Path
			if path == "" {
				path = "/"
			}
			p.name = "http port " + strconv.FormatUint(uint64(chk.HTTP.Port), 10) + " path " + path
			intervalMs, timeoutMs = chk.HTTP.IntervalMs, chk.HTTP.TimeoutMs
		default:
			return nil, fmt.Errorf("health check %d: set exactly one of tcp and http: %w", i, ErrInvalid)
		}
		if intervalMs < 0 || timeoutMs < 0 {
			return nil, fmt.Errorf("health check %d (%s): negative interval or timeout: %w", i, p.name, ErrInvalid)
		}
		p.interval = time.Duration(intervalMs) * time.Millisecond
		if p.interval == 0 {
			p.interval = c.cfg.Interval
		}
		p.timeout = time.Duration(timeoutMs) * time.Millisecond
		if p.timeout == 0 {
			p.timeout = c.cfg.Timeout
		}
		ps[i] = p
	}
	return ps, nil
}

// Probe runs one check once.
// Errors: the reason the check failed (resolve, dial, status, timeout), or ErrInvalid.
func (c *Checker) Probe(ctx context.Context, chk models.Check) error {
	ps, err := c.probes(&models.CheckDefinition{Checks: []models.Check{chk}})
	if err != nil {
		return err
	}
	return c.probe(ctx, ps[0])
}

func (c *Checker) probe(ctx context.Context, p probe) error {
	var port uint32
	if p.check.TCP != nil {
		port = p.check.TCP.Port
	} else {
		port = p.check.HTTP.Port
	}
	addr, err := c.cfg.Resolve(port)
	if err != nil {
		return fmt.Errorf("resolve port %d: %w", port, err)
	}
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if p.check.TCP != nil {
		var d net.Dialer
		conn, err := d.DialContext(pctx, "tcp", addr)
		if err != nil {
			return timeoutError(err, pctx, p.timeout)
		}
		return conn.Close()
	}
	path := p.check.HTTP.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := getOnce(pctx, req)
	if err != nil {
		return timeoutError(err, pctx, p.timeout)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %s, want 200 OK", req.URL, resp.Status)
	}
	return nil
}

// getOnce sends req on a connection of its own and reads the response head and at most 4 KiB
// of body, all within ctx: a fresh connection per probe, as a client that only checks liveness
// would make, and no redirect followed (a 3xx is not a 200). It speaks HTTP/1.1 on the
// connection directly rather than through an http.Transport, whose connection pool and
// per-connection goroutines are overhead for a connection used once; a cell probes every
// instance every interval.
func getOnce(ctx context.Context, req *http.Request) (*http.Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", req.URL.Host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.Close = true // "Connection: close"
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if err != nil && resp.StatusCode == http.StatusOK {
		return nil, err
	}
	return resp, nil
}

// timeoutError names the probe timeout when it is what ended err: the probe's context, or the
// connection deadline taken from it (which may pass a moment before the context says so).
func timeoutError(err error, pctx context.Context, timeout time.Duration) error {
	if errors.Is(pctx.Err(), context.Canceled) {
		return fmt.Errorf("%w: %w", context.Canceled, err)
	}
	if errors.Is(pctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("no answer within %v: %w", timeout, err)
	}
	return err
}

// report writes one line to the sink.
func (c *Checker) report(stderr bool, line string) {
	c.sinkMu.Lock()
	defer c.sinkMu.Unlock()
	w := c.sink.Stdout()
	if stderr {
		w = c.sink.Stderr()
	}
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		c.log.Warn("writing health check line", "line", line, "error", err)
	}
}

// WaitHealthy polls every check of def until each has passed once, or until startTimeout
// (zero: no limit) passes or ctx ends. It returns nil once all passed.
// Errors: *Failure (ErrUnhealthy) naming a check that never passed and its last error,
// ErrInvalid (def), ctx's error.
func (c *Checker) WaitHealthy(ctx context.Context, def *models.CheckDefinition, startTimeout time.Duration) error {
	ps, err := c.probes(def)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline <-chan time.Time
	if startTimeout > 0 {
		t := time.NewTimer(startTimeout)
		defer t.Stop()
		deadline = t.C
	}
	type state struct {
		mu      sync.Mutex
		last    error
		passed  bool
		written string
	}
	states := make([]*state, len(ps))
	done := make(chan int, len(ps))
	for i, p := range ps {
		st := &state{}
		states[i] = st
		interval := min(c.cfg.StartupInterval, p.interval)
		go func() {
			for {
				err := c.probe(wctx, p)
				if wctx.Err() != nil {
					return
				}
				st.mu.Lock()
				st.last = err
				if err == nil {
					st.passed = true
					st.mu.Unlock()
					done <- i
					return
				}
				if msg := err.Error(); msg != st.written {
					st.written = msg
					c.report(true, fmt.Sprintf("%s failed: %v", p.name, err))
				}
				st.mu.Unlock()
				select {
				case <-wctx.Done():
					return
				case <-time.After(interval):
				}
			}
		}()
	}
	for passed := 0; passed < len(ps); {
		select {
		case <-done:
			passed++
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			cancel()
			for i, st := range states {
				st.mu.Lock()
				last, ok := st.last, st.passed
				st.mu.Unlock()
				if ok {
					continue
				}
				if last == nil {
					last = errors.New("no probe finished")
				}
				f := &Failure{Check: ps[i].name, Err: last, StartTimeout: startTimeout}
				c.report(true, f.Error())
				return f
			}
			return nil // every check passed just as the deadline fired
		}
	}
	c.report(false, "healthy: "+names(ps)+" passed")
	return nil
}

// Monitor polls every check of def at its interval and returns when one has failed
// Config.FailureThreshold times in a row. It returns ctx's error when ctx ends first.
// Errors: *Failure (ErrUnhealthy), ErrInvalid (def), ctx's error.
func (c *Checker) Monitor(ctx context.Context, def *models.CheckDefinition) error {
	ps, err := c.probes(def)
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan *Failure, len(ps))
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(p.interval)
			defer t.Stop()
			streak := 0
			for {
				select {
				case <-mctx.Done():
					return
				case <-t.C:
				}
				err := c.probe(mctx, p)
				if mctx.Err() != nil {
					return
				}
				if err == nil {
					streak = 0
					continue
				}
				streak++
				c.report(true, fmt.Sprintf("%s failed (%d of %d): %v", p.name, streak, c.cfg.FailureThreshold, err))
				if streak >= c.cfg.FailureThreshold {
					failed <- &Failure{Check: p.name, Err: err}
					return
				}
			}
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	select {
	case f := <-failed:
		c.log.Info("instance failed its liveness check", "check", f.Check, "error", f.Err)
		return f
	case <-ctx.Done():
		return ctx.Err()
	}
}

func names(ps []probe) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.name
	}
	return s
}
