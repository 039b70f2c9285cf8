package bbs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
)

// ErrInvalidRequest classes a request the server cannot parse: malformed JSON, unknown fields,
// a bad query parameter or path segment. It answers 400 with error.type "InvalidRequest".
// (A well-formed record that fails validation is models.ErrInvalidRecord, 422.)
var ErrInvalidRequest = errors.New("invalid request")

// typeInvalidRequest is the error.type of ErrInvalidRequest.
const typeInvalidRequest = "InvalidRequest"

// requestError is an error the server raised about the request itself (parsing, size,
// identity), as opposed to one the store returned; only the latter count as store errors.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// reqErr builds a requestError of class (one of the sentinels) with a message.
func reqErr(class error, format string, args ...any) error {
	return &requestError{fmt.Errorf("%w: %s", class, fmt.Sprintf(format, args...))}
}

// classify maps an error to its HTTP status and API error.type. Unknown errors are 500
// "Internal"; their text is not sent to the caller.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return http.StatusBadRequest, typeInvalidRequest
	case errors.Is(err, models.ErrInvalidRecord):
		return http.StatusUnprocessableEntity, models.ErrorType(err)
	case errors.Is(err, models.ErrNotFound):
		return http.StatusNotFound, models.ErrorType(err)
	case errors.Is(err, models.ErrAlreadyExists), errors.Is(err, models.ErrInvalidTransition),
		errors.Is(err, models.ErrConflict), errors.Is(err, models.ErrLockHeld):
		return http.StatusConflict, models.ErrorType(err)
	case errors.Is(err, models.ErrForbidden):
		return http.StatusForbidden, models.ErrorType(err)
	case errors.Is(err, models.ErrUnauthenticated):
		return http.StatusUnauthorized, models.ErrorType(err)
	case errors.Is(err, models.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, models.ErrorType(err)
	case errors.Is(err, models.ErrCompacted):
		return http.StatusGone, models.ErrorType(err)
	case errors.Is(err, models.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, models.ErrorType(models.ErrUnavailable)
	}
	return http.StatusInternalServerError, "Internal"
}

// writeError answers err in the API's error format and logs it at warn (5xx) or debug (4xx).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, typ := classify(err)
	msg := err.Error()
	switch {
	case status >= 500:
		s.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
		if status == http.StatusInternalServerError {
			msg = "internal error"
		}
	default:
		s.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	}
	var re *requestError
	if !errors.As(err, &re) {
		s.metrics.storeErrors.WithLabelValues(typ).Inc()
	}
	s.writeJSON(w, status, client.ErrorResponse{Error: client.ErrorBody{Type: typ, Message: msg}})
}

// writeJSON answers v with status. Image passwords in v are removed (see redacted).
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	s.writeJSONWithSecrets(w, status, redacted(v))
}

// writeJSONWithSecrets answers v as it is, image passwords included: only for the cell that
// pulls the image (desiredLRPForCaller, taskForCaller).
func (s *Server) writeJSONWithSecrets(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.logger.Warn("encode response", "error", err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"type":"Internal","message":"internal error"}}` + "\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// readBody reads the request body up to the configured limit. Errors: TooLarge.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, reqErr(models.ErrTooLarge, "request body of %d bytes is over the limit of %d bytes", r.ContentLength, s.cfg.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, reqErr(models.ErrTooLarge, "request body is over the limit of %d bytes", s.cfg.MaxBodyBytes)
		}
		return nil, reqErr(ErrInvalidRequest, "read request body: %v", err)
	}
	return body, nil
}

// decode reads the body into v strictly: malformed JSON, unknown fields or trailing data are
// ErrInvalidRequest. An empty body is refused unless allowEmpty (v then stays zero).
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return reqErr(ErrInvalidRequest, "request body is empty; want a JSON object")
	}
	if err := models.DecodeStrict(bytes.NewReader(body), v); err != nil {
		return reqErr(ErrInvalidRequest, "%v", err)
	}
	return nil
}

// pathIndex parses the {index} path segment. Errors: InvalidRequest.
func pathIndex(r *http.Request) (int32, error) {
	s := r.PathValue("index")
	i, err := strconv.ParseInt(s, 10, 32)
	if err != nil || i < 0 {
		return 0, reqErr(ErrInvalidRequest, "index %q is not a non-negative integer", s)
	}
	return int32(i), nil
}

// queryBool parses an optional boolean query parameter. Errors: InvalidRequest.
func queryBool(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, reqErr(ErrInvalidRequest, "query parameter %s=%q is not a boolean", name, s)
	}
	return b, nil
}

// logAttrs are the attributes of a request's log line.
func logAttrs(r *http.Request, status int, id string) []slog.Attr {
	return []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", r.Pattern),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.String("identity", id),
	}
}
