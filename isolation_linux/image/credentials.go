package image

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Credentials authenticate to a private registry (HTTP basic, or the registry's token
// service when it asks for one). The zero value pulls anonymously. The password is never
// logged and never appears in an error string: String, GoString and LogValue redact it,
// and errors of this package have it scrubbed.
type Credentials struct {
	Username string
	Password string
}

// IsZero reports whether c is anonymous.
func (c Credentials) IsZero() bool { return c.Username == "" && c.Password == "" }

// String describes c with the password redacted.
func (c Credentials) String() string {
	if c.IsZero() {
		return "anonymous"
	}
	return "user " + c.Username + " (password redacted)"
}

// GoString keeps %#v from printing the password.
func (c Credentials) GoString() string { return "image.Credentials{" + c.String() + "}" }

// LogValue keeps slog from printing the password.
func (c Credentials) LogValue() slog.Value {
	if c.IsZero() {
		return slog.StringValue("anonymous")
	}
	return slog.GroupValue(slog.String("username", c.Username), slog.Bool("password", c.Password != ""))
}

func (c Credentials) authenticator() authn.Authenticator {
	if c.IsZero() {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password})
}

// errorClasses are what a scrubbed error still matches with errors.Is.
var errorClasses = []error{
	ErrInvalidReference, ErrUnauthorized, ErrNotFound, ErrRegistry, ErrDigestMismatch,
	ErrInvalidImage, ErrClosed, context.Canceled, context.DeadlineExceeded,
}

// scrubbedError is an error whose text had a secret removed. It unwraps only to the error
// classes the original matched, so that no caller can reach the original text.
type scrubbedError struct {
	msg     string
	classes []error
}

func (e *scrubbedError) Error() string   { return e.msg }
func (e *scrubbedError) Unwrap() []error { return e.classes }

// scrub returns err with every occurrence of the password replaced, keeping its classes. A
// registry or proxy that echoes a request back must not put a password into a crash reason.
func (c Credentials) scrub(err error) error {
	if err == nil || c.Password == "" || !strings.Contains(err.Error(), c.Password) {
		return err
	}
	var classes []error
	for _, cl := range errorClasses {
		if errors.Is(err, cl) {
			classes = append(classes, cl)
		}
	}
	return &scrubbedError{msg: strings.ReplaceAll(err.Error(), c.Password, "<redacted>"), classes: classes}
}
