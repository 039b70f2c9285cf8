package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// maxEventBytes bounds one event line (a DesiredLRP with its routes and previous value).
const maxEventBytes = 8 << 20

// maxReconnectDelay caps the wait between reconnections.
const maxReconnectDelay = 5 * time.Second

// fnError marks an error returned by the caller's callback, which ends Events.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// Events calls fn for every change matching filter after afterRevision (0 = from the store's
// current revision), in order, until ctx ends (returning ctx.Err()) or fn returns an error
// (returned as is). A dropped or stalled connection is reopened with Last-Event-ID, so no event
// is lost or repeated. Errors: Compacted (the revision is no longer kept: list again and watch
// from the list's revision), or another *APIError the server answered when (re)connecting
// (Unauthenticated, Forbidden, InvalidRequest). Unavailable servers are retried, not returned.
func (c *Client) Events(ctx context.Context, filter store.EventFilter, afterRevision int64, fn func(store.Event) error) error {
	if afterRevision == 0 {
		// Pin "now" to a revision so that a reconnect before the first event loses nothing.
		rev, err := c.revisionRetrying(ctx)
		if err != nil {
			return err
		}
		afterRevision = rev
	}
	lastID := ""
	delay := c.cfg.ReconnectDelay
	for {
		delivered, err := c.streamOnce(ctx, filter, afterRevision, &lastID, fn)
		var fe *fnError
		var ae *APIError
		switch {
		case errors.As(err, &fe):
			return fe.err
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &ae) && !retryableStatus(ae.Status):
			return err
		}
		if delivered {
			delay = c.cfg.ReconnectDelay
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, maxReconnectDelay)
	}
}

// Watch is Events under the name of store.Interface.
func (c *Client) Watch(ctx context.Context, fromRevision int64, filter store.EventFilter, fn func(store.Event) error) error {
	return c.Events(ctx, filter, fromRevision, fn)
}

func retryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// revisionRetrying reads the current revision, retrying while the server is unavailable.
func (c *Client) revisionRetrying(ctx context.Context) (int64, error) {
	delay := c.cfg.ReconnectDelay
	for {
		rev, err := c.Revision(ctx)
		var ae *APIError
		if err == nil || ctx.Err() != nil || errors.As(err, &ae) && !retryableStatus(ae.Status) {
			return rev, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxReconnectDelay)
	}
}

// streamOnce opens one stream connection and reads it until it ends, updating *lastID with
// each event's id. delivered reports whether any event arrived.
func (c *Client) streamOnce(ctx context.Context, filter store.EventFilter, after int64, lastID *string, fn func(store.Event) error) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := url.Values{}
	if filter.CellID != "" {
		q.Set("cell_id", filter.CellID)
	}
	if filter.ProcessGuid != "" {
		q.Set("process_guid", filter.ProcessGuid)
	}
	var h http.Header
	if *lastID != "" {
		h = http.Header{"Last-Event-ID": {*lastID}}
	} else {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	req, err := c.newRequest(ctx, request{method: http.MethodGet, path: "/v1/events", query: q, header: h})
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")

	// A connection that stays silent past the idle timeout is dead (the server sends keepalive
	// comments); cancelling ends the body read below.
	idle := time.AfterFunc(c.cfg.EventIdleTimeout, cancel)
	defer idle.Stop()

	resp, err := c.stream.Do(req)
	if err != nil {
		return false, fmt.Errorf("client: event stream: %w: %w", models.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, readAPIError(resp)
	}

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes)
	var id, typ string
	var data strings.Builder
	for sc.Scan() {
		idle.Reset(c.cfg.EventIdleTimeout)
		line := sc.Text()
		if line == "" { // dispatch
			if data.Len() > 0 {
				var ev store.Event
				if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
					return delivered, fmt.Errorf("client: event %s (%s): decode: %w", id, typ, err)
				}
				if err := fn(ev); err != nil {
					return delivered, &fnError{err}
				}
				delivered = true
				if id != "" {
					*lastID = id
				}
			}
			id, typ = "", ""
			data.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // comment: keepalive or an in-band note
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			typ = value
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		}
	}
	if err := sc.Err(); err != nil {
		return delivered, fmt.Errorf("client: event stream: %w: %w", models.ErrUnavailable, err)
	}
	return delivered, fmt.Errorf("client: event stream: %w: the server ended the stream", models.ErrUnavailable)
}
