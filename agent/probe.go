package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
)

// Health-check timing defaults (Diego's: a short interval while starting, 1 s checks).
const (
	defaultCheckInterval = 500 * time.Millisecond
	defaultCheckTimeout  = time.Second
	// defaultStartTimeout bounds the startup checks of an LRP without start_timeout_ms.
	defaultStartTimeout = 60 * time.Second
)

// errUnhealthy marks a health-check failure; its text is the crash reason.
var errUnhealthy = errors.New("health check failed")

// prober runs the checks of a CheckDefinition against one instance. It is the agent's adapter
// over TCP and HTTP checks: each check dials the address addr returns for its port.
type prober struct {
	checks []models.Check
	addr   func(port uint32) string
	sink   logs.Sink
	client *http.Client
}

func newProber(def *models.CheckDefinition, addr func(port uint32) string, sink logs.Sink) *prober {
	p := &prober{addr: addr, sink: sink, client: &http.Client{
		// Each check sets its own deadline through its context; never follow redirects to
		// other hosts: a check answers for this instance only.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}}
	if def != nil {
		p.checks = def.Checks
	}
	return p
}

// empty reports whether there is nothing to check (the instance is healthy once it runs).
func (p *prober) empty() bool { return len(p.checks) == 0 }

// interval is the shortest interval of the checks.
func (p *prober) interval() time.Duration {
	iv := time.Duration(0)
	for _, c := range p.checks {
		ms := int64(0)
		switch {
		case c.TCP != nil:
			ms = c.TCP.IntervalMs
		case c.HTTP != nil:
			ms = c.HTTP.IntervalMs
		}
		d := time.Duration(ms) * time.Millisecond
		if d <= 0 {
			d = defaultCheckInterval
		}
		if iv == 0 || d < iv {
			iv = d
		}
	}
	return iv
}

// once runs every check one time and returns the first failure.
func (p *prober) once(ctx context.Context) error {
	for _, c := range p.checks {
		if err := p.check(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func timeoutOf(ms int64) time.Duration {
	if ms <= 0 {
		return defaultCheckTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

func (p *prober) check(ctx context.Context, c models.Check) error {
	switch {
	case c.TCP != nil:
		ctx, cancel := context.WithTimeout(ctx, timeoutOf(c.TCP.TimeoutMs))
		defer cancel()
		addr := p.addr(c.TCP.Port)
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp check of port %d (%s): %w", c.TCP.Port, addr, err)
		}
		conn.Close()
		return nil
	case c.HTTP != nil:
		ctx, cancel := context.WithTimeout(ctx, timeoutOf(c.HTTP.TimeoutMs))
		defer cancel()
		path := c.HTTP.Path
		if path == "" {
			path = "/"
		}
		addr := p.addr(c.HTTP.Port)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return fmt.Errorf("http check of port %d: %w", c.HTTP.Port, err)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return fmt.Errorf("http check of port %d (%s%s): %w", c.HTTP.Port, addr, path, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("http check of port %d (%s%s): status %d", c.HTTP.Port, addr, path, resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("check sets neither tcp nor http")
}

// waitHealthy polls until every check passes once, or startTimeout passes (error wrapping
// errUnhealthy with the last failure), or ctx ends (ctx's error).
func (p *prober) waitHealthy(ctx context.Context, startTimeout time.Duration) error {
	if p.empty() {
		return nil
	}
	deadline := time.Now().Add(startTimeout)
	t := time.NewTicker(p.interval())
	defer t.Stop()
	var last error
	for {
		if last = p.once(ctx); last == nil {
			fmt.Fprintln(p.sink.Stdout(), "healthy")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(p.sink.Stderr(), "not healthy within %s: %v\n", startTimeout, last)
			return fmt.Errorf("%w: not healthy within %s: %v", errUnhealthy, startTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// monitor polls the checks as liveness checks until one fails (error wrapping errUnhealthy)
// or ctx ends (ctx's error).
func (p *prober) monitor(ctx context.Context) error {
	if p.empty() {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTicker(p.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := p.once(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(p.sink.Stderr(), "liveness check failed: %v\n", err)
			return fmt.Errorf("%w: %v", errUnhealthy, err)
		}
	}
}

// checkAddress returns the address a check of port dials: the container's own address when
// it has one (checks run against the instance, as Diego's run inside the container), else the
// host address of the port's mapping.
func checkAddress(hostIP, containerIP string, ports []models.PortMapping) func(uint32) string {
	return func(port uint32) string {
		if containerIP != "" {
			return net.JoinHostPort(containerIP, strconv.FormatUint(uint64(port), 10))
		}
		for _, m := range ports {
			if m.ContainerPort == port {
				return net.JoinHostPort(hostIP, strconv.FormatUint(uint64(m.HostPort), 10))
			}
		}
		return net.JoinHostPort(hostIP, strconv.FormatUint(uint64(port), 10))
	}
}
