package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// record is a pointer to a decodable record with a Validate method.
type record[T any] interface {
	*T
	Validate() error
}

// checkDecodeAndValidate is the property every request decoder must have, for arbitrary bytes:
//   - DecodeStrict and Validate never panic, and refuse only with a *FieldError naming a field;
//   - what DecodeStrict accepts, plain json.Unmarshal accepts too, to the same record;
//   - a record that validates re-encodes to JSON that DecodeStrict accepts, that validates
//     again, and that re-encodes to the same bytes (one round trip reaches a fixed point:
//     empty arrays and whitespace inside routes are the only things the first one drops).
func checkDecodeAndValidate[T any, P record[T]](t *testing.T, data []byte) {
	var strict T
	strictErr := DecodeStrict(bytes.NewReader(data), P(&strict))
	if strictErr != nil {
		requireFieldError(t, "DecodeStrict", strictErr)
	}
	var v T
	if err := json.Unmarshal(data, P(&v)); err != nil {
		if strictErr == nil {
			t.Fatalf("DecodeStrict accepted what json.Unmarshal refuses (%v)", err)
		}
		return
	}
	if strictErr == nil && !reflect.DeepEqual(strict, v) {
		t.Fatalf("DecodeStrict and json.Unmarshal disagree:\n%+v\n%+v", strict, v)
	}
	if err := P(&v).Validate(); err != nil {
		requireFieldError(t, "Validate", err)
		return
	}
	first, err := json.Marshal(P(&v))
	if err != nil {
		t.Fatalf("a valid record does not encode: %v", err)
	}
	var again T
	if err := DecodeStrict(bytes.NewReader(first), P(&again)); err != nil {
		t.Fatalf("the encoding of a valid record does not decode strictly: %v\n%s", err, first)
	}
	if err := P(&again).Validate(); err != nil {
		t.Fatalf("a valid record no longer validates after a round trip: %v\n%s", err, first)
	}
	second, err := json.Marshal(P(&again))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("round trip changed the record:\n%s\n%s", first, second)
	}
}

func requireFieldError(t *testing.T, what string, err error) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" || !IsInvalidRecord(err) {
		t.Fatalf("%s: got %T %v, want a *FieldError with a field and a reason", what, err, err)
	}
}

// addSeeds adds the JSON of each record, the shipped examples matching glob, and a few broken
// documents.
func addSeeds(f *testing.F, glob string, records ...any) {
	for _, r := range records {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	paths, _ := filepath.Glob(filepath.Join("..", "..", "examples", glob))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{``, `{}`, `null`, `[]`, `{"x":1}`, `{"routes":{"a":`, `{} {}`, `{"instances":-1}`} {
		f.Add([]byte(s))
	}
}

func FuzzDecodeDesiredLRP(f *testing.F) {
	deep := validLRP()
	deep.Action = &Action{Timeout: &TimeoutAction{TimeoutMs: 5, Action: &Action{EmitProgress: &EmitProgressAction{
		Action: &Action{Parallel: &ParallelAction{Actions: []*Action{{Upload: &UploadAction{From: "/a", To: "http://h/u"}}}}},
	}}}}
	addSeeds(f, "lrp-*.json", validLRP(), deep)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAndValidate[DesiredLRP](t, data)
	})
}

func FuzzDecodeDesiredLRPUpdate(f *testing.F) {
	addSeeds(f, "update-*.json",
		DesiredLRPUpdate{Instances: i32(4), Routes: json.RawMessage(`{"http":[]}`), Annotation: str("a"), RestartPolicy: &RestartPolicy{MaxRestarts: 2}},
		DesiredLRPUpdate{Instances: i32(0)})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAndValidate[DesiredLRPUpdate](t, data)
	})
}

func FuzzDecodeTask(f *testing.F) {
	addSeeds(f, "task-*.json", validTask())
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAndValidate[Task](t, data)
	})
}

func FuzzDecodeCellPresence(f *testing.F) {
	addSeeds(f, "cell-*.json", validCell())
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAndValidate[CellPresence](t, data)
	})
}

// FuzzParseRootFS checks, for arbitrary strings: no panic; a refusal is a *FieldError for
// "rootfs" and returns nothing else; an accepted URI has a known scheme that RootFSScheme
// agrees on, is provided by its scheme's provider, and writing it back from (scheme, rest)
// parses to the same (scheme, rest).
func FuzzParseRootFS(f *testing.F) {
	for _, s := range []string{
		"preloaded:cflinuxfs4", "docker:///busybox", "docker:///cloudfoundry/grace#v1",
		"docker://localhost:5000/a/b:c@sha256:" + strings.Repeat("0", 64), "oci://ghcr.io/x/y",
		"", "ftp://x", "docker://", "docker:///A", "preloaded:a b", "docker:///a__b.c-d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		scheme, rest, err := ParseRootFS(uri)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "rootfs" || scheme != "" || rest != "" {
				t.Fatalf("refusal of %q: (%q, %q, %T %v)", uri, scheme, rest, err, err)
			}
			return
		}
		if got := RootFSScheme(uri); got != scheme {
			t.Fatalf("RootFSScheme(%q) = %q, ParseRootFS says %q", uri, got, scheme)
		}
		provider := scheme
		if scheme == RootFSSchemePreloaded {
			provider = uri
			if uri != PreloadedRootFS(rest) {
				t.Fatalf("preloaded %q parsed to stack %q", uri, rest)
			}
		}
		if got, ok := RequiredRootFSProvider(uri); !ok || got != provider {
			t.Fatalf("RequiredRootFSProvider(%q) = %q, %v; want %q", uri, got, ok, provider)
		}
		if err := ValidateRootFSProvider("p", provider); err != nil {
			t.Fatalf("provider %q of %q does not validate: %v", provider, uri, err)
		}
		if !RootFSProvidedBy(uri, []string{provider}) {
			t.Fatalf("%q is not provided by %q", uri, provider)
		}
		if scheme == RootFSSchemePreloaded {
			return
		}
		canonical := scheme + "://" + rest
		if strings.HasPrefix(uri, scheme+":///") {
			canonical = scheme + ":///" + rest
		}
		s2, r2, err := ParseRootFS(canonical)
		if err != nil || s2 != scheme || r2 != rest {
			t.Fatalf("%q → (%q, %q); its canonical form %q → (%q, %q, %v)", uri, scheme, rest, canonical, s2, r2, err)
		}
	})
}
