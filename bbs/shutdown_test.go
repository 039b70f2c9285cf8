package bbs_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/store"
)

// TestMetrics: requests are counted by route template (not by path) and open streams gauged.
func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	brain := e.client("brain")
	for _, g := range []string{"a", "b"} {
		if _, err := brain.DesiredLRP(ctx, g); err == nil {
			t.Fatal("expected NotFound")
		}
	}
	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	go brain.Events(streamCtx, store.EventFilter{}, 0, func(store.Event) error { return nil })

	var text string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, _, body := rawCall(t, e, nil, http.MethodGet, "/metrics", nil, nil)
		text = string(body)
		if strings.Contains(text, "trellis_bbs_event_streams_open 1") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{
		`trellis_bbs_requests_total{code="404",route="GET /v1/desired_lrps/{guid}"} 2`,
		`trellis_bbs_request_duration_seconds_count{code="404",route="GET /v1/desired_lrps/{guid}"} 2`,
		`trellis_bbs_store_errors_total{type="NotFound"} 2`,
		`trellis_bbs_event_streams_open 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestShutdownEndsEventStreams: a graceful shutdown does not wait for event streams to end by
// themselves.
func TestShutdownEndsEventStreams(t *testing.T) {
	p := devPKI(t)
	cfg := bbs.DefaultConfig()
	cfg.TLS = bbs.TLSConfig{CAFile: p.CAFile, CertFile: p.Server.CertFile, KeyFile: p.Server.KeyFile}
	srv, err := bbs.NewServer(cfg, newStore(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	<-srv.Ready()
	e := &env{t: t, pki: p, url: "https://" + srv.Addr().String()}
	resp, _ := openStream(t, e, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream status %d", resp.StatusCode)
	}
	started := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve waited for the event stream")
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
	t.Logf("shutdown took %v", time.Since(started))
}
