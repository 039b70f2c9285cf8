package bbs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

type seenEvent struct {
	Revision int64
	Type     store.EventType
	Key      string
}

func describe(ev store.Event) seenEvent {
	s := seenEvent{Revision: ev.Revision, Type: ev.Type}
	switch {
	case ev.DesiredLRP != nil:
		s.Key = "desired/" + ev.DesiredLRP.ProcessGuid
	case ev.ActualLRP != nil:
		s.Key = fmt.Sprintf("actual/%s/%d/%s", ev.ActualLRP.ProcessGuid, ev.ActualLRP.Index, ev.ActualLRP.Presence)
	case ev.Task != nil:
		s.Key = "task/" + ev.Task.TaskGuid
	case ev.Cell != nil:
		s.Key = "cell/" + ev.Cell.CellID
	}
	return s
}

// TestEventStreamResumesAfterDisconnect: the client's stream delivers exactly what the store's
// own watch delivers — same events, same order — although every connection is cut several
// times while changes are being made.
func TestEventStreamResumesAfterDisconnect(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	st := e.store
	start, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []seenEvent
	streamCtx, stopStream := context.WithCancel(ctx)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- e.client("brain").Events(streamCtx, store.EventFilter{}, start, func(ev store.Event) error {
			mu.Lock()
			got = append(got, describe(ev))
			mu.Unlock()
			return nil
		})
	}()
	waitFor := func(rev int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(got)
			last := int64(0)
			if n > 0 {
				last = got[n-1].Revision
			}
			mu.Unlock()
			if last >= rev {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("stream did not reach revision %d", rev)
	}

	drops := 0
	// Writes go straight to the store, so cutting the HTTP connections touches only the stream.
	for round := 0; round < 4; round++ {
		guid := "app-" + strconv.Itoa(round)
		lrp, err := st.DesireLRP(ctx, testLRP(guid, 3)) // one revision, four events
		if err != nil {
			t.Fatal(err)
		}
		if round%2 == 0 {
			waitFor(lrp.Revision) // cut after delivery ...
		} // ... or while the events may still be in flight
		drops += e.conns.dropNext(t)
		n := int32(1)
		if _, err := st.UpdateDesiredLRP(ctx, guid, models.DesiredLRPUpdate{Instances: &n}, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DesireTask(ctx, testTask("task-"+strconv.Itoa(round))); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, testCell("cell-"+strconv.Itoa(round)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		drops += e.conns.dropNext(t)
	}
	final, err := st.DesireTask(ctx, testTask("final"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(final.Revision)
	stopStream()
	if err := <-streamDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Events returned %v, want context.Canceled", err)
	}
	if drops < 4 {
		t.Fatalf("only %d connections were cut; the test did not exercise reconnection", drops)
	}

	// The reference: the store's own watch from the same revision.
	var want []seenEvent
	errDone := errors.New("done")
	err = st.Watch(ctx, start, store.EventFilter{}, func(ev store.Event) error {
		want = append(want, describe(ev))
		if ev.Revision >= final.Revision {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Fatalf("reference watch: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("stream delivered %d events, the store %d\n got: %v\nwant: %v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	t.Logf("%d events over %d cut connections", len(got), drops)
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ id, typ, data string }

// openStream opens GET /v1/events raw and returns the status and a reader of events and
// comments.
func openStream(t *testing.T, e *env, query, lastID string) (*http.Response, *bufio.Reader) {
	t.Helper()
	tc, err := certs.ClientTLSConfig(e.pki.CAFile, e.pki.Brain.CertFile, e.pki.Brain.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	t.Cleanup(hc.CloseIdleConnections)
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, e.url+"/v1/events"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// next reads the next event, returning comments seen on the way.
func next(t *testing.T, r *bufio.Reader) (sseEvent, []string) {
	t.Helper()
	var ev sseEvent
	var comments []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.data != "" {
				return ev, comments
			}
		case strings.HasPrefix(line, ": "):
			comments = append(comments, strings.TrimPrefix(line, ": "))
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

// TestEventStreamFormat checks the wire format: ids are revision cursors, a Last-Event-ID in the
// middle of a revision resumes with the rest of it, the filter applies, and an idle stream gets
// keepalive comments.
func TestEventStreamFormat(t *testing.T) {
	e := newEnv(t, func(c *bbs.Config) { c.EventKeepalive = 50 * time.Millisecond })
	ctx := ctxT(t)
	before, _ := e.store.Revision(ctx)
	lrp, err := e.store.DesireLRP(ctx, testLRP("fmt", 2)) // 3 events at one revision
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.DesireLRP(ctx, testLRP("other", 1)); err != nil {
		t.Fatal(err)
	}

	resp, r := openStream(t, e, fmt.Sprintf("?after=%d&process_guid=fmt", before), "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rev := strconv.FormatInt(lrp.Revision, 10)
	wantIDs := []string{rev, rev + ".1", rev + ".2"}
	for i, want := range wantIDs {
		ev, _ := next(t, r)
		var decoded store.Event
		if err := json.Unmarshal([]byte(ev.data), &decoded); err != nil {
			t.Fatalf("event %d data: %v", i, err)
		}
		if ev.id != want || ev.typ != string(decoded.Type) || decoded.Revision != lrp.Revision {
			t.Fatalf("event %d: id %q type %q revision %d; want id %q", i, ev.id, ev.typ, decoded.Revision, want)
		}
		if decoded.DesiredLRP != nil && decoded.DesiredLRP.ProcessGuid != "fmt" || decoded.ActualLRP != nil && decoded.ActualLRP.ProcessGuid != "fmt" {
			t.Fatalf("event %d escaped the process_guid filter: %s", i, ev.data)
		}
	}
	// Nothing else matches the filter: the stream now carries keepalive comments only.
	resp.Body.Close()

	// Resume after the second event of the revision: only the third comes again.
	_, r = openStream(t, e, "?process_guid=fmt", rev+".1")
	ev, _ := next(t, r)
	if ev.id != rev+".2" {
		t.Fatalf("resumed at %q, want %q", ev.id, rev+".2")
	}
	time.Sleep(120 * time.Millisecond) // idle: keepalives go out before the next event
	n := int32(0)
	if _, err := e.store.UpdateDesiredLRP(ctx, "fmt", models.DesiredLRPUpdate{Instances: &n}, 0); err != nil {
		t.Fatal(err)
	}
	ev, comments := next(t, r)
	if !strings.HasPrefix(ev.id, strconv.FormatInt(lrp.Revision+2, 10)) {
		t.Fatalf("next event id %q, want revision %d", ev.id, lrp.Revision+2)
	}
	if len(comments) == 0 || comments[0] != "keepalive" {
		t.Fatalf("no keepalive comment on an idle stream: %v", comments)
	}

	for _, bad := range []struct{ query, lastID string }{{"?after=x", ""}, {"", "12.x"}, {"", "0"}} {
		resp, _ := openStream(t, e, bad.query, bad.lastID)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("query %q Last-Event-ID %q: status %d, want 400", bad.query, bad.lastID, resp.StatusCode)
		}
	}
}

// TestEventStreamCompacted: a revision etcd has compacted away answers 410 before the stream
// starts, and the client reports Compacted instead of retrying.
func TestEventStreamCompacted(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	old, _ := e.store.Revision(ctx)
	for i := 0; i < 3; i++ {
		if _, err := e.store.DesireTask(ctx, testTask("c"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	now, _ := e.store.Revision(ctx)
	if _, err := sharedEtcd(t).Client().Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	resp, r := openStream(t, e, fmt.Sprintf("?after=%d", old), "")
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("status %d, want 410", resp.StatusCode)
	}
	body, _ := r.ReadString('\n')
	if !strings.Contains(body, `"Compacted"`) {
		t.Fatalf("410 body %q lacks type Compacted", body)
	}
	err := e.client("brain").Events(ctx, store.EventFilter{}, old, func(store.Event) error { return nil })
	if !models.IsCompacted(err) {
		t.Fatalf("client Events from a compacted revision = %v, want Compacted", err)
	}
}
