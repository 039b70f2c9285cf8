package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
)

// identityHeader carries the identity in insecure mode (bbs.IdentityHeader).
const identityHeader = "X-Trellis-Identity"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// APIError is an error answered by the BBS. It unwraps to the models sentinel of its Type, so
// models.IsNotFound(err) and friends work.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Type is the API error type ("NotFound", "InvalidRecord", "InvalidRequest", ...).
	Type string
	// Message is the server's explanation.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("bbs: %s (%d %s)", e.Message, e.Status, e.Type)
}

// Unwrap returns the models sentinel of the type: "InvalidRequest" maps to
// models.ErrInvalidRecord, an unknown type to nil.
func (e *APIError) Unwrap() error {
	if e.Type == "InvalidRequest" {
		return models.ErrInvalidRecord
	}
	return models.ErrorFromType(e.Type)
}

// Client calls one BBS. It is safe for concurrent use.
type Client struct {
	cfg    Config
	base   string       // URL without a trailing slash
	http   *http.Client // bounded by cfg.Timeout
	stream *http.Client // for event streams: no overall timeout
	// lease carries the renewals that keep the caller alive in the BBS's eyes (a cell's
	// presence, the brain's lock) over a connection of their own: behind a draining cell's
	// hundreds of evacuations on MaxConns connections, a heartbeat waited longer than the
	// presence TTL and the cell was taken for dead.
	lease *http.Client
}

// New builds a client; it loads the TLS files but does not contact the server.
// Errors: ErrInvalidConfig, or the TLS files could not be loaded.
func New(cfg Config) (*Client, error) {
	def := DefaultConfig()
	if cfg.Timeout == 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.EventIdleTimeout == 0 {
		cfg.EventIdleTimeout = def.EventIdleTimeout
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = def.ReconnectDelay
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := strings.TrimRight(cfg.URL, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.MaxConnsPerHost = cfg.MaxConns
	if !cfg.Insecure {
		tc, err := certs.ClientTLSConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	ltr := tr.Clone()
	ltr.MaxConnsPerHost, ltr.MaxIdleConnsPerHost = 1, 1
	return &Client{
		cfg:    cfg,
		base:   base,
		http:   &http.Client{Transport: tr, Timeout: cfg.Timeout},
		stream: &http.Client{Transport: tr},
		lease:  &http.Client{Transport: ltr, Timeout: cfg.Timeout},
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
	c.lease.CloseIdleConnections()
}

// request is one API call.
type request struct {
	method string
	path   string // already escaped
	query  url.Values
	header http.Header
	body   any  // JSON-encoded when non-nil
	lease  bool // a lease renewal: sent over the lease connection
}

// newRequest builds the HTTP request of r.
func (c *Client) newRequest(ctx context.Context, r request) (*http.Request, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		data, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", r.method, r.path, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.cfg.Insecure && c.cfg.Identity != "" {
		req.Header.Set(identityHeader, c.cfg.Identity)
	}
	return req, nil
}

// do sends r and decodes a 2xx answer into out (when non-nil). Errors: *APIError for an error
// answer; models.ErrUnavailable wrapped for a transport failure.
func (c *Client) do(ctx context.Context, r request, out any) error {
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return err
	}
	hc := c.http
	if r.lease {
		hc = c.lease
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("client: %s %s: %w", r.method, r.path, ctx.Err())
		}
		return fmt.Errorf("client: %s %s: %w: %w", r.method, r.path, models.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readAPIError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", r.method, r.path, err)
	}
	return nil
}

// readAPIError turns an error answer into an *APIError; an answer not in the API's format (a
// proxy's page) keeps its status and a type derived from it.
func readAPIError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var er ErrorResponse
	if err := json.Unmarshal(data, &er); err == nil && er.Error.Type != "" {
		return &APIError{Status: resp.StatusCode, Type: er.Error.Type, Message: er.Error.Message}
	}
	typ := "Internal"
	switch resp.StatusCode {
	case http.StatusNotFound:
		typ = "NotFound"
	case http.StatusUnauthorized:
		typ = "Unauthenticated"
	case http.StatusForbidden:
		typ = "Forbidden"
	case http.StatusRequestEntityTooLarge:
		typ = "TooLarge"
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		typ = "Unavailable"
	}
	msg := strings.TrimSpace(string(data))
	if msg == "" {
		msg = resp.Status
	}
	return &APIError{Status: resp.StatusCode, Type: typ, Message: msg}
}

// Info returns the server version, the caller's identity as the server sees it, and the store's
// current revision.
func (c *Client) Info(ctx context.Context) (*InfoResponse, error) {
	var out InfoResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/info"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health checks that the server and its store answer. Errors: Unavailable.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, request{method: http.MethodGet, path: "/healthz"}, nil)
}

// Revision returns the store's current revision (from GET /v1/info).
func (c *Client) Revision(ctx context.Context) (int64, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.Revision, nil
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }

// msDuration renders d as whole milliseconds for a query or body.
func msDuration(d time.Duration) int64 { return d.Milliseconds() }
