package cache

import (
	"errors"
	"fmt"
	"net/url"
)

// Sentinel error classes, wrapped with %w and a message saying what and why.
var (
	// ErrInvalid: a malformed argument or configuration (the message names it).
	ErrInvalid = errors.New("invalid argument")
	// ErrDownload: the HTTP request failed or answered with a non-2xx status.
	ErrDownload = errors.New("download failed")
	// ErrChecksumMismatch: the content does not match the expected checksum (see
	// ChecksumError).
	ErrChecksumMismatch = errors.New("checksum mismatch")
)

// ChecksumError reports downloaded content that does not match its expected checksum.
type ChecksumError struct {
	URL       string // as requested; Error leaves out its credentials and query
	Algorithm string // "sha256" or "sha1"
	Expected  string // lower-case hex
	Actual    string // lower-case hex
}

// Error is "checksum mismatch for <url>: expected sha256 <x>, got <y>".
func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s: expected %s %s, got %s", redact(e.URL), e.Algorithm, e.Expected, e.Actual)
}

// Reason is the failure reason for crash reports and task failures: the same text as Error.
func (e *ChecksumError) Reason() string { return e.Error() }

// Is makes errors.Is(err, ErrChecksumMismatch) true.
func (e *ChecksumError) Is(target error) bool { return target == ErrChecksumMismatch }

// IsInvalid reports whether err is or wraps ErrInvalid.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }

// IsDownload reports whether err is or wraps ErrDownload.
func IsDownload(err error) bool { return errors.Is(err, ErrDownload) }

// IsChecksumMismatch reports whether err is or wraps ErrChecksumMismatch.
func IsChecksumMismatch(err error) bool { return errors.Is(err, ErrChecksumMismatch) }

// redact drops the credentials and query of a URL for messages: artifact URLs are often
// signed, and errors end up in crash reports and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<malformed URL>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
