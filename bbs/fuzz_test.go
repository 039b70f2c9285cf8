package bbs_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trellis-run/trellis/bbs"
)

// fuzzServer is an insecure server on a real store, driven through its Handler.
func fuzzServer(f *testing.F) http.Handler {
	f.Helper()
	cfg := bbs.DefaultConfig()
	cfg.Insecure = true
	srv, err := bbs.NewServer(cfg, newStore(f), nil)
	if err != nil {
		f.Fatal(err)
	}
	return srv.Handler()
}

// post sends body and fails on a 5xx (the decoders must class every input) — a panic fails the
// fuzz run by itself.
func post(t *testing.T, h http.Handler, method, path, identity string, body []byte) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set(bbs.IdentityHeader, identity)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s with %q: %d %s", method, path, body, rec.Code, rec.Body.String())
	}
}

func FuzzDesireLRPRequest(f *testing.F) {
	h := fuzzServer(f)
	for _, seed := range []string{
		string(mustJSON(testLRP("seed", 1))),
		`{"process_guid":"a","domain":"d","rootfs":"docker:///x","instances":1,"memory_mb":1,"disk_mb":1,"action":{"serial":{"actions":[{"run":{"path":"/x","user":"u"}}]}}}`,
		`{"process_guid":"a","routes":{"x":[1,2]},"action":{"timeout":{"action":null}}}`,
		`{"instances":1e40}`, `[]`, `null`, `{"process_guid":"\u0000"}`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		post(t, h, http.MethodPost, "/v1/desired_lrps", "operator", body)
	})
}

func FuzzUpdateDesiredLRPRequest(f *testing.F) {
	h := fuzzServer(f)
	for _, seed := range []string{`{"instances":3}`, `{"routes":{"a":1},"annotation":"x"}`, `{"restart_policy":{"max_restarts":-1}}`, `{"instances":-1}`, `1`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		post(t, h, http.MethodPatch, "/v1/desired_lrps/seed", "operator", body)
	})
}

func FuzzDesireTaskRequest(f *testing.F) {
	h := fuzzServer(f)
	for _, seed := range []string{string(mustJSON(testTask("seed"))), `{"task_guid":"t","completion_callback_url":"http://%zz"}`, `{"action":{}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		post(t, h, http.MethodPost, "/v1/tasks", "operator", body)
	})
}

func FuzzHeartbeatRequest(f *testing.F) {
	h := fuzzServer(f)
	for _, seed := range []string{string(mustJSON(testCell("a"))), `{"cell_id":"a","capacity":{"memory_mb":-5}}`, `{"rootfs_providers":[""]}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		post(t, h, http.MethodPut, "/v1/cells/a/presence", "cell:a", body)
	})
}

// FuzzActualLRPActionRequest posts arbitrary bodies to every instance and task action.
func FuzzActualLRPActionRequest(f *testing.F) {
	h := fuzzServer(f)
	actions := []struct{ path, identity string }{
		{"/v1/actual_lrps/g/0/place", "brain"},
		{"/v1/actual_lrps/g/0/fail_placement", "brain"},
		{"/v1/actual_lrps/g/0/restart", "brain"},
		{"/v1/actual_lrps/g/0/retire", "brain"},
		{"/v1/actual_lrps/g/0/suspect", "brain"},
		{"/v1/actual_lrps/g/0/unclaimed", "brain"},
		{"/v1/actual_lrps/g/0/claim", "cell:a"},
		{"/v1/actual_lrps/g/0/start", "cell:a"},
		{"/v1/actual_lrps/g/0/crash", "cell:a"},
		{"/v1/actual_lrps/g/0/reject", "cell:a"},
		{"/v1/actual_lrps/g/0/remove", "cell:a"},
		{"/v1/actual_lrps/g/0/evacuate", "cell:a"},
		{"/v1/tasks/t/place", "brain"},
		{"/v1/tasks/t/fail", "brain"},
		{"/v1/tasks/t/start", "cell:a"},
		{"/v1/tasks/t/complete", "cell:a"},
		{"/v1/locks/l", "brain"},
		{"/v1/domains/d", "operator"},
	}
	for i, seed := range []string{`{"cell_id":"a","revision":1}`, `{"instance_guid":"i","cell_id":"a","net_info":{"ports":[{"container_port":1}]}}`,
		`{"presence":"SUSPECT"}`, `{"owner":"o","ttl_ms":5000}`, `{"ttl_seconds":-1}`, `{}`, ``} {
		f.Add(uint8(i), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		a := actions[int(which)%len(actions)]
		method := http.MethodPost
		if a.path == "/v1/locks/l" || a.path == "/v1/domains/d" {
			method = http.MethodPut
		}
		post(t, h, method, a.path, a.identity, body)
	})
}
