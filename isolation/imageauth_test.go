package isolation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A logged or encoded ImageAuth never shows its password, whichever way it is printed.
func TestImageAuthHidesThePassword(t *testing.T) {
	auth := ImageAuth{Username: "deployer", Password: "s3cret"}
	spec := ContainerSpec{Handle: "h", ImageAuth: auth}
	var out bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		slog.New(h).Info("create", "auth", auth, "spec", spec)
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&out, f+"\n", auth)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(b)
	if strings.Contains(out.String(), "s3cret") {
		t.Fatalf("the password shows:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "deployer") {
		t.Fatalf("the user name does not show:\n%s", out.String())
	}
	var back ContainerSpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ImageAuth != (ImageAuth{Username: "deployer"}) {
		t.Fatalf("decoded %+v", back.ImageAuth)
	}
	var anon ImageAuth
	if err := anon.UnmarshalText([]byte("anonymous")); err != nil || !anon.IsZero() {
		t.Fatalf("anonymous: %+v, %v", anon, err)
	}
	if err := anon.UnmarshalText([]byte("root:pw")); err == nil {
		t.Fatal("an unknown form decoded")
	}
}
