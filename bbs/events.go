package bbs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// streamStartGrace is how long a stream resuming from a past revision waits for the store to
// refuse it (Compacted) before committing to a 200 answer. etcd reports compaction on its first
// watch response, well within this.
const streamStartGrace = 250 * time.Millisecond

// EventCursor is the position of one event in the change stream, sent as the SSE id: the
// revision and the event's place among the events of that revision (one transaction may change
// several records). It is written "<revision>" for the first event of a revision and
// "<revision>.<n>" for the next ones, so that a client resuming with Last-Event-ID gets the
// rest of a revision it saw only part of.
type EventCursor struct {
	Revision int64
	N        int
}

func (c EventCursor) String() string {
	if c.N == 0 {
		return strconv.FormatInt(c.Revision, 10)
	}
	return strconv.FormatInt(c.Revision, 10) + "." + strconv.Itoa(c.N)
}

// ParseEventCursor parses an SSE id written by the server. Errors: ErrInvalidRequest.
func ParseEventCursor(s string) (EventCursor, error) {
	revPart, nPart, hasN := strings.Cut(s, ".")
	rev, err := strconv.ParseInt(revPart, 10, 64)
	if err != nil || rev <= 0 {
		return EventCursor{}, fmt.Errorf("%w: event id %q is not <revision>[.<n>]", ErrInvalidRequest, s)
	}
	c := EventCursor{Revision: rev}
	if hasN {
		n, err := strconv.Atoi(nPart)
		if err != nil || n <= 0 {
			return EventCursor{}, fmt.Errorf("%w: event id %q is not <revision>[.<n>]", ErrInvalidRequest, s)
		}
		c.N = n
	}
	return c, nil
}

// events streams store changes as server-sent events. Where it starts:
//   - Last-Event-ID: <cursor> (a reconnecting client): right after that event;
//   - ?after=<revision>: every change after that revision (list, then watch from the list's
//     revision);
//   - neither: changes from now on.
//
// A start revision the store no longer keeps answers 410 Compacted before the stream begins.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	q := r.URL.Query()
	filter := store.EventFilter{CellID: q.Get("cell_id"), ProcessGuid: q.Get("process_guid")}
	var from int64
	var skip EventCursor // events up to and including this one were delivered already
	switch last, after := r.Header.Get("Last-Event-ID"), q.Get("after"); {
	case last != "":
		c, err := ParseEventCursor(last)
		if err != nil {
			return &requestError{err}
		}
		skip, from = c, c.Revision-1
	case after != "":
		rev, err := strconv.ParseInt(after, 10, 64)
		if err != nil || rev < 0 {
			return reqErr(ErrInvalidRequest, "query parameter after=%q is not a revision", after)
		}
		from = rev
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel) // server shutdown ends the stream
	defer stop()

	evc := make(chan store.Event, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- s.store.Watch(ctx, from, filter, func(ev store.Event) error {
			select {
			case evc <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	st := &sseStream{w: w, rc: http.NewResponseController(w), skip: skip}
	if from == 0 {
		st.start()
	} else {
		// Wait for the first event, a refusal, or the grace period, so that a compacted
		// revision still gets a proper 410.
		grace := time.NewTimer(streamStartGrace)
		defer grace.Stop()
		select {
		case ev := <-evc:
			st.start()
			if err := st.send(ev); err != nil {
				return nil
			}
		case err := <-errc:
			if ctx.Err() == nil {
				return err
			}
			return nil
		case <-grace.C:
			st.start()
		case <-ctx.Done():
			return nil
		}
	}
	s.metrics.eventStreams.Inc()
	defer s.metrics.eventStreams.Dec()

	keepalive := time.NewTicker(s.cfg.EventKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case ev := <-evc:
			// Whatever else is already waiting goes out with it in one flush: in a burst
			// (a batch of placements) a stream then costs a write per burst, not per event.
			err := st.write(ev)
		burst:
			for n := 1; err == nil && n < maxEventsPerFlush; n++ {
				select {
				case ev = <-evc:
					err = st.write(ev)
				default:
					break burst
				}
			}
			if err == nil {
				err = st.rc.Flush()
			}
			if err != nil {
				return nil // the client went away
			}
		case err := <-errc:
			// Watch has returned, so every event it produced is already in evc.
			for drained := false; !drained; {
				select {
				case ev := <-evc:
					if st.send(ev) != nil {
						return nil
					}
				default:
					drained = true
				}
			}
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("event stream ended by the store", "error", err)
				// The stream has begun: say why in-band, then end it; the client
				// reconnects with Last-Event-ID.
				_ = st.comment("error: " + models.ErrorType(err) + ": " + err.Error())
			}
			return nil
		case <-keepalive.C:
			if st.comment("keepalive") != nil {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// sseStream writes server-sent events and numbers them with EventCursors.
type sseStream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	skip EventCursor
	cur  EventCursor
}

func (s *sseStream) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
	s.w.WriteHeader(http.StatusOK)
	_ = s.rc.Flush()
}

// maxEventsPerFlush bounds how many waiting events a stream writes before it flushes.
const maxEventsPerFlush = 64

// send writes one event (unless the client saw it before the reconnect) and flushes it.
func (s *sseStream) send(ev store.Event) error {
	if err := s.write(ev); err != nil {
		return err
	}
	return s.rc.Flush()
}

// write writes one event, unless the client saw it before the reconnect, without flushing.
func (s *sseStream) write(ev store.Event) error {
	if ev.Revision == s.cur.Revision {
		s.cur.N++
	} else {
		s.cur = EventCursor{Revision: ev.Revision}
	}
	if s.cur.Revision < s.skip.Revision || s.cur.Revision == s.skip.Revision && s.cur.N <= s.skip.N {
		return nil
	}
	data, err := json.Marshal(redacted(ev))
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	_, err = fmt.Fprintf(s.w, "id: %s\nevent: %s\ndata: %s\n\n", s.cur, ev.Type, data)
	return err
}

// comment writes an SSE comment line (ignored by clients; keeps proxies from timing out).
func (s *sseStream) comment(text string) error {
	text = strings.ReplaceAll(text, "\n", " ")
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	return s.rc.Flush()
}
