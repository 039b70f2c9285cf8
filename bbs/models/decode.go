package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// DecodeStrict decodes exactly one JSON value from r into v, as the BBS server reads request
// bodies. It refuses:
//
//   - an empty body, malformed or truncated JSON, and data after the value: a *FieldError for
//     field "body" (giving the byte offset where the decoder knows it);
//   - a field v has no place for: a *FieldError naming the field ("unknown field");
//   - a value of the wrong JSON type: a *FieldError naming the field's JSON path.
//
// Each *FieldError wraps ErrInvalidRecord. An error reading r (for example an
// *http.MaxBytesError) is returned wrapped with %w, not as a *FieldError, so the caller can
// map it to its own class. DecodeStrict does not validate v; call its Validate method.
func DecodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	// Anything but whitespace after the value is refused.
	if _, err := dec.Token(); err != io.EOF {
		if err == nil || isSyntaxOrEOF(err) {
			return fieldErr("body", "unexpected data after the JSON value at byte %d", dec.InputOffset())
		}
		return fmt.Errorf("read request body: %w", err)
	}
	return nil
}

func isSyntaxOrEOF(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}

// maxEchoedFieldName bounds how much of an unknown field's name an error repeats.
const maxEchoedFieldName = 128

// decodeError maps an error of json.Decoder.Decode to a *FieldError where it is the input's
// fault.
func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		invalidTo *json.InvalidUnmarshalError
	)
	switch {
	case errors.Is(err, io.EOF):
		return fieldErr("body", "is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fieldErr("body", "JSON ends early: the document is truncated")
	case errors.As(err, &syntax):
		return fieldErr("body", "malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return fieldErr(field, "must be %s, got JSON %s", describeGoType(typeErr), typeErr.Value)
	case errors.As(err, &invalidTo):
		return err // a programming error of the caller, not of the input
	}
	if name, ok := unknownFieldName(err); ok {
		switch {
		case name == "":
			return fieldErr("body", "has a field with an empty name")
		case len(name) > maxEchoedFieldName:
			return fieldErr(name[:maxEchoedFieldName]+"...", "unknown field")
		}
		return fieldErr(name, "unknown field")
	}
	return fmt.Errorf("read request body: %w", err)
}

// unknownFieldName extracts the name from encoding/json's `json: unknown field "x"` error,
// which has no type of its own.
func unknownFieldName(err error) (string, bool) {
	const prefix = "json: unknown field "
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return "", false
	}
	name, uerr := strconv.Unquote(msg[len(prefix):])
	if uerr != nil {
		return msg[len(prefix):], true
	}
	return name, true
}

func describeGoType(e *json.UnmarshalTypeError) string {
	if e.Type == nil {
		return "another type"
	}
	switch k := e.Type.Kind(); k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer that fits " + k.String()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer that fits " + k.String()
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "a " + e.Type.String()
}
