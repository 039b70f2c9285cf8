package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
)

// ports maps container ports to loopback addresses, as an agent maps them to host ports.
type ports struct {
	mu sync.Mutex
	m  map[uint32]string
}

func (p *ports) set(port uint32, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[port] = addr
}

func (p *ports) resolve(port uint32) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	addr, ok := p.m[port]
	if !ok {
		return "", fmt.Errorf("container port %d is not mapped", port)
	}
	return addr, nil
}

// sink collects lines.
type sink struct {
	mu         sync.Mutex
	out, errs  []string
	outW, errW lineSink
}

type lineSink struct {
	s   *sink
	err bool
}

func (l lineSink) Write(b []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l.err {
			l.s.errs = append(l.s.errs, line)
		} else {
			l.s.out = append(l.s.out, line)
		}
	}
	return len(b), nil
}

func (s *sink) Stdout() io.Writer { return lineSink{s: s} }
func (s *sink) Stderr() io.Writer { return lineSink{s: s, err: true} }

func (s *sink) errLines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

func newChecker(t *testing.T, p *ports, s logs.Sink, mod func(*Config)) *Checker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Resolve = p.resolve
	cfg.Sink = s
	cfg.Interval = 50 * time.Millisecond
	cfg.StartupInterval = 20 * time.Millisecond
	cfg.Timeout = 500 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewChecker(cfg)
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	return c
}

// tcpListener accepts and closes connections on loopback.
func tcpListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// httpServer answers path with the status in code, counting requests.
func httpServer(t *testing.T, path string, code *atomic.Int32, hits *atomic.Int32) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func tcpCheck(port uint32) models.Check { return models.Check{TCP: &models.TCPCheck{Port: port}} }

func httpCheck(port uint32, path string) models.Check {
	return models.Check{HTTP: &models.HTTPCheck{Port: port, Path: path}}
}

func def(checks ...models.Check) *models.CheckDefinition {
	return &models.CheckDefinition{Checks: checks}
}

func TestProbe(t *testing.T) {
	var ok, bad atomic.Int32
	ok.Store(200)
	bad.Store(503)
	p := &ports{m: map[uint32]string{
		8080: tcpListener(t).Addr().String(),
		8081: closedPort(t),
		8082: httpServer(t, "/health", &ok, nil),
		8083: httpServer(t, "/health", &bad, nil),
	}}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	p.set(8084, strings.TrimPrefix(slow.URL, "http://"))
	// A redirect to a healthy page is not followed; a 200 with a cut-off body is a failure.
	var conns atomic.Int32
	odd := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/health", http.StatusFound)
		case "/cut":
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("short"))
			panic(http.ErrAbortHandler)
		default:
			if r.Header.Get("Connection") != "close" {
				w.WriteHeader(http.StatusBadRequest) // a probe never keeps its connection
				return
			}
			w.WriteHeader(http.StatusOK)
		}
	}))
	odd.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	odd.Start()
	t.Cleanup(odd.Close)
	p.set(8085, strings.TrimPrefix(odd.URL, "http://"))
	c := newChecker(t, p, nil, nil)
	for _, tc := range []struct {
		name  string
		check models.Check
		want  string // "" passes; else a substring of the error
	}{
		{"tcp open", tcpCheck(8080), ""},
		{"tcp refused", tcpCheck(8081), "refused"},
		{"http 200", httpCheck(8082, "/health"), ""},
		{"http wrong path", httpCheck(8082, "/other"), "404"},
		{"http 503", httpCheck(8083, "/health"), "503"},
		{"http timeout", models.Check{HTTP: &models.HTTPCheck{Port: 8084, TimeoutMs: 100}}, "no answer within 100ms"},
		{"http redirect not followed", httpCheck(8085, "/moved"), "302"},
		{"http body cut off", httpCheck(8085, "/cut"), "EOF"},
		{"http connection closed after", httpCheck(8085, "/health"), ""},
		{"unmapped port", tcpCheck(9999), "not mapped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Probe(context.Background(), tc.check)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Probe = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Every probe of the server opened a connection of its own.
	before := conns.Load()
	for range 3 {
		if err := c.Probe(context.Background(), httpCheck(8085, "/health")); err != nil {
			t.Fatal(err)
		}
	}
	if got := conns.Load() - before; got != 3 {
		t.Fatalf("3 probes opened %d connections, want 3", got)
	}
}

func TestWaitHealthy(t *testing.T) {
	t.Run("passes once every check passed", func(t *testing.T) {
		var code atomic.Int32
		code.Store(200)
		p := &ports{m: map[uint32]string{8080: tcpListener(t).Addr().String(), 8081: httpServer(t, "/", &code, nil)}}
		s := &sink{}
		c := newChecker(t, p, s, nil)
		if err := c.WaitHealthy(context.Background(), def(tcpCheck(8080), httpCheck(8081, "")), 5*time.Second); err != nil {
			t.Fatalf("WaitHealthy: %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.out) != 1 || !strings.HasPrefix(s.out[0], "healthy") {
			t.Errorf("stdout lines %q, want one \"healthy\" line", s.out)
		}
	})
	t.Run("waits for a slow starter", func(t *testing.T) {
		addr := closedPort(t)
		p := &ports{m: map[uint32]string{8080: addr}}
		s := &sink{}
		c := newChecker(t, p, s, nil)
		go func() {
			time.Sleep(200 * time.Millisecond)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("listen again on %s: %v", addr, err)
				return
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					conn.Close()
				}
			}()
		}()
		start := time.Now()
		if err := c.WaitHealthy(context.Background(), def(tcpCheck(8080)), 5*time.Second); err != nil {
			t.Fatalf("WaitHealthy: %v", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("healthy after %v, before the listener existed", d)
		}
		// Repeated identical failures while starting are written once.
		if lines := s.errLines(); len(lines) != 1 || !strings.Contains(lines[0], "tcp port 8080 failed") {
			t.Errorf("stderr lines %q, want the startup failure once", lines)
		}
	})
	t.Run("start timeout", func(t *testing.T) {
		var code atomic.Int32
		code.Store(200)
		p := &ports{m: map[uint32]string{8080: httpServer(t, "/", &code, nil), 8081: closedPort(t)}}
		s := &sink{}
		c := newChecker(t, p, s, nil)
		start := time.Now()
		err := c.WaitHealthy(context.Background(), def(httpCheck(8080, "/"), tcpCheck(8081)), 300*time.Millisecond)
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("gave up after %v, want about 300ms", d)
		}
		var f *Failure
		if !errors.As(err, &f) || !errors.Is(err, ErrUnhealthy) {
			t.Fatalf("err = %v, want a *Failure", err)
		}
		if !strings.HasPrefix(f.Reason(), "health check failed") || f.Check != "tcp port 8081" || !strings.Contains(f.Reason(), "refused") {
			t.Errorf("reason %q, want \"health check failed\" naming tcp port 8081 and its last error", f.Reason())
		}
		if lines := s.errLines(); len(lines) < 2 || lines[len(lines)-1] != err.Error() {
			t.Errorf("stderr lines %q, want the failures ending with the final one", lines)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		p := &ports{m: map[uint32]string{8080: closedPort(t)}}
		c := newChecker(t, p, nil, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := c.WaitHealthy(ctx, def(tcpCheck(8080)), 0); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's error", err)
		}
	})
}

func TestMonitor(t *testing.T) {
	for _, threshold := range []int{1, 3} {
		t.Run(fmt.Sprintf("threshold %d", threshold), func(t *testing.T) {
			var code, hits atomic.Int32
			code.Store(200)
			p := &ports{m: map[uint32]string{
				8080: httpServer(t, "/health", &code, &hits),
				8081: tcpListener(t).Addr().String(),
			}}
			s := &sink{}
			c := newChecker(t, p, s, func(cfg *Config) { cfg.FailureThreshold = threshold })
			errc := make(chan error, 1)
			go func() { errc <- c.Monitor(context.Background(), def(httpCheck(8080, "/health"), tcpCheck(8081))) }()
			// Healthy for a while: several probes, no failure.
			deadline := time.Now().Add(5 * time.Second)
			for hits.Load() < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case err := <-errc:
				t.Fatalf("Monitor returned %v while healthy", err)
			default:
			}
			before := hits.Load()
			code.Store(500)
			var err error
			select {
			case err = <-errc:
			case <-time.After(5 * time.Second):
				t.Fatal("Monitor did not return 5s after the check started failing")
			}
			if !strings.HasPrefix(err.Error(), "health check failed: http port 8080 path /health") || !strings.Contains(err.Error(), "500") {
				t.Errorf("err = %v", err)
			}
			if failing := hits.Load() - before; failing < int32(threshold) {
				t.Errorf("failed after %d failing probes, want at least %d", failing, threshold)
			}
			if lines := s.errLines(); len(lines) != threshold {
				t.Errorf("stderr lines %q, want %d (one per failure)", lines, threshold)
			}
		})
	}
	t.Run("a failure streak is reset by a success", func(t *testing.T) {
		// Answers alternate 500, 200, 500, ...: never two failures in a row.
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hits.Add(1)%2 == 1 {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}))
		t.Cleanup(srv.Close)
		p := &ports{m: map[uint32]string{8080: strings.TrimPrefix(srv.URL, "http://")}}
		c := newChecker(t, p, nil, func(cfg *Config) { cfg.FailureThreshold = 2 })
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		if err := c.Monitor(ctx, def(httpCheck(8080, "/"))); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Monitor = %v, want it to run until the context ended", err)
		}
		if n := hits.Load(); n < 4 {
			t.Fatalf("only %d probes in 600ms", n)
		}
	})
}

func TestInvalid(t *testing.T) {
	p := &ports{m: map[uint32]string{}}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Resolve = nil },
		func(c *Config) { c.Interval = 0 },
		func(c *Config) { c.FailureThreshold = 0 },
	} {
		cfg := DefaultConfig()
		cfg.Resolve = p.resolve
		mod(&cfg)
		if _, err := NewChecker(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewChecker = %v, want ErrInvalid", err)
		}
	}
	c := newChecker(t, p, nil, nil)
	for _, d := range []*models.CheckDefinition{nil, def(), def(models.Check{})} {
		if err := c.WaitHealthy(context.Background(), d, time.Second); !errors.Is(err, ErrInvalid) {
			t.Errorf("WaitHealthy(%+v) = %v, want ErrInvalid", d, err)
		}
	}
}
