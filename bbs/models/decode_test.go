package models

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		field  string // "" = decodes
		reason string
	}{
		{"valid", `{"process_guid":"p","domain":"d","instances":2}`, "", ""},
		{"whitespace after", "{\"process_guid\":\"p\"}\n\t ", "", ""},
		{"empty", ``, "body", "is empty"},
		{"only whitespace", "  \n", "body", "is empty"},
		{"malformed", `{"process_guid": "a",, }`, "body", "malformed JSON at byte 22"},
		{"truncated", `{"process_guid": "a"`, "body", "JSON ends early"},
		{"not an object", `[1,2]`, "body", "must be an object"},
		{"trailing object", `{"process_guid":"a"}{"process_guid":"b"}`, "body", "unexpected data after the JSON value at byte"},
		{"trailing garbage", `{"process_guid":"a"} x`, "body", "unexpected data after the JSON value"},
		{"trailing bracket", `{"process_guid":"a"}]`, "body", "unexpected data after the JSON value"},
		{"unknown field", `{"process_guid":"a","procces_guid":"b"}`, "procces_guid", "unknown field"},
		{"unknown nested field", `{"action":{"run":{"path":"/x","pth":"y"}}}`, "pth", "unknown field"},
		{"wrong type", `{"instances":"3"}`, "instances", "must be an integer that fits int32, got JSON string"},
		{"out of range", `{"instances":3000000000}`, "instances", "got JSON number 3000000000"},
		{"negative unsigned", `{"cpu_weight":-1}`, "cpu_weight", "must be a non-negative integer that fits uint32"},
		{"nested wrong type", `{"action":{"run":{"path":7}}}`, "action.run.path", "must be a string, got JSON number"},
		{"wrong type in array", `{"ports":["80"]}`, "ports", "got JSON string"},
		{"string for object", `{"action":"run"}`, "action", "must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d DesiredLRP
			err := DecodeStrict(strings.NewReader(tt.body), &d)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			assertField(t, err, tt.field)
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q does not say %q", err, tt.reason)
			}
		})
	}
}

// A read error is the caller's to classify: it comes back wrapped, not as a FieldError.
func TestDecodeStrictReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	var d DesiredLRP
	err := DecodeStrict(iotest.ErrReader(boom), &d)
	var fe *FieldError
	if !errors.Is(err, boom) || errors.As(err, &fe) {
		t.Fatalf("got %T %v, want the read error wrapped", err, err)
	}

	// The server limits bodies with http.MaxBytesReader; the limit error must survive.
	rec := httptest.NewRecorder()
	body := http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(`{"annotation":"`+strings.Repeat("a", 100)+`"}`)), 32)
	err = DecodeStrict(body, &d)
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) {
		t.Fatalf("got %T %v, want *http.MaxBytesError wrapped", err, err)
	}

	// A read error after the value, while looking for trailing data, is not blamed on the body.
	err = DecodeStrict(io.MultiReader(strings.NewReader(`{}`), iotest.ErrReader(boom)), &d)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the trailing read error wrapped", err)
	}
}

// A body that decodes strictly and validates is the record the operator meant.
func TestDecodeStrictThenValidate(t *testing.T) {
	body := `{
		"process_guid": "web",
		"domain": "cf-apps",
		"rootfs": "preloaded:cflinuxfs4",
		"instances": 2,
		"memory_mb": 128,
		"disk_mb": 256,
		"action": {"serial": {"actions": [{"run": {"path": "/bin/a"}}, {"run": {"path": ""}}]}}
	}`
	var d DesiredLRP
	if err := DecodeStrict(strings.NewReader(body), &d); err != nil {
		t.Fatal(err)
	}
	assertField(t, d.Validate(), "action.serial.actions[1].run.path")
}

// The example documents shipped in examples/ decode strictly and validate.
func TestShippedExamplesValidate(t *testing.T) {
	for glob, newRecord := range map[string]func() interface{ Validate() error }{
		"lrp-*.json":  func() interface{ Validate() error } { return &DesiredLRP{} },
		"task-*.json": func() interface{ Validate() error } { return &Task{} },
	} {
		paths, err := filepath.Glob(filepath.Join("..", "..", "examples", glob))
		if err != nil || len(paths) == 0 {
			t.Fatalf("no examples match %s: %v", glob, err)
		}
		for _, p := range paths {
			t.Run(filepath.Base(p), func(t *testing.T) {
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				rec := newRecord()
				if err := DecodeStrict(f, rec); err != nil {
					t.Fatal(err)
				}
				if err := rec.Validate(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestDecodeStrictOddFieldNames(t *testing.T) {
	var d DesiredLRP
	assertField(t, DecodeStrict(strings.NewReader(`{"":1}`), &d), "body")
	long := strings.Repeat("k", 1000)
	assertField(t, DecodeStrict(strings.NewReader(`{"`+long+`":1}`), &d), long[:128]+"...")
	assertField(t, DecodeStrict(strings.NewReader(`{"a\"b":1}`), &d), `a"b`)
}
