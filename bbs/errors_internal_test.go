package bbs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// failingStore answers DesiredLRP with a fixed error: a narrow stand-in to check how each error
// class reaches the wire. Every other method panics (nil embedded interface), so the test cannot
// pass by accident through another path.
type failingStore struct {
	store.Interface
	err error
}

func (f failingStore) DesiredLRP(context.Context, string) (*models.DesiredLRP, error) {
	return nil, f.err
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		typ    string
	}{
		{fmt.Errorf("x: %w", models.ErrNotFound), 404, "NotFound"},
		{&models.FieldError{Field: "instances", Reason: "bad"}, 422, "InvalidRecord"},
		{fmt.Errorf("x: %w", models.ErrAlreadyExists), 409, "AlreadyExists"},
		{&models.TransitionError{Record: "r", From: "A", To: "B"}, 409, "InvalidTransition"},
		{fmt.Errorf("x: %w", models.ErrConflict), 409, "Conflict"},
		{fmt.Errorf("x: %w", models.ErrLockHeld), 409, "LockHeld"},
		{fmt.Errorf("x: %w", models.ErrForbidden), 403, "Forbidden"},
		{fmt.Errorf("x: %w", models.ErrCompacted), 410, "Compacted"},
		{fmt.Errorf("x: %w", models.ErrUnavailable), 503, "Unavailable"},
		{context.DeadlineExceeded, 503, "Unavailable"},
		{errors.New("etcdserver: secret internal detail"), 500, "Internal"},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Insecure = true
			s, err := NewServer(cfg, failingStore{err: tt.err}, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/desired_lrps/x", nil))
			var er client.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if rec.Code != tt.status || er.Error.Type != tt.typ {
				t.Fatalf("got %d %s, want %d %s", rec.Code, er.Error.Type, tt.status, tt.typ)
			}
			if tt.status == 500 && strings.Contains(er.Error.Message, "secret") {
				t.Fatalf("a 500 leaked the internal error: %q", er.Error.Message)
			}
			if tt.status != 500 && er.Error.Message != tt.err.Error() {
				t.Fatalf("message %q, want the error's text %q", er.Error.Message, tt.err.Error())
			}
			// The client maps the type back to the class.
			ae := &client.APIError{Status: rec.Code, Type: er.Error.Type, Message: er.Error.Message}
			if tt.status != 500 && !errors.Is(ae, models.ErrorFromType(tt.typ)) {
				t.Fatalf("client error %v does not unwrap to %s", ae, tt.typ)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"tls", func(c *Config) { c.TLS = TLSConfig{"ca", "crt", "key"} }, ""},
		{"no tls", func(c *Config) {}, "tls.ca_file"},
		{"insecure loopback", func(c *Config) { c.Insecure = true }, ""},
		{"insecure localhost", func(c *Config) { c.Insecure, c.ListenAddress = true, "localhost:1" }, ""},
		{"insecure ipv6 loopback", func(c *Config) { c.Insecure, c.ListenAddress = true, "[::1]:1" }, ""},
		{"insecure all interfaces", func(c *Config) { c.Insecure, c.ListenAddress = true, ":8889" }, "loopback"},
		{"bad address", func(c *Config) { c.Insecure, c.ListenAddress = true, "nope" }, "listen_address"},
		{"zero keepalive", func(c *Config) { c.Insecure, c.EventKeepalive = true, 0 }, "event_keepalive"},
		{"zero body limit", func(c *Config) { c.Insecure, c.MaxBodyBytes = true, 0 }, "max_body_bytes"},
		{"presence ttl above max", func(c *Config) { c.Insecure, c.PresenceTTL = true, c.MaxPresenceTTL*2 }, "max_presence_ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

func TestEventCursor(t *testing.T) {
	for _, c := range []EventCursor{{Revision: 7}, {Revision: 7, N: 3}} {
		got, err := ParseEventCursor(c.String())
		if err != nil || got != c {
			t.Fatalf("round trip of %+v = %+v, %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "0", "-1", "7.", "7.0", "7.-1", "x", "7.3.1"} {
		if _, err := ParseEventCursor(bad); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("ParseEventCursor(%q) = %v, want ErrInvalidRequest", bad, err)
		}
	}
}
