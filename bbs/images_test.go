package bbs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation_linux/image"
	"github.com/trellis-run/trellis/isolation_linux/image/imagetest"
)

// imageEnv is an insecure BBS on loopback whose every log line, at debug level, is kept.
type imageEnv struct {
	t    *testing.T
	url  string
	logs *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newImageEnv(t *testing.T, modify func(*bbs.Config)) *imageEnv {
	t.Helper()
	cfg := bbs.DefaultConfig()
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.Insecure = true
	cfg.ImageResolver = image.Resolver{}
	if modify != nil {
		modify(&cfg)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := bbs.NewServer(cfg, newStore(t), logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-srv.Ready()
	return &imageEnv{t: t, url: "http://" + srv.Addr().String(), logs: logs}
}

// do sends a request as identity and returns the status and the raw body.
func (e *imageEnv) do(method, path, identity string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(mustJSON(body))
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(bbs.IdentityHeader, identity)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

func imageLRP(guid, rootfs string) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid, Domain: "d", RootFS: rootfs, Instances: 1, MemoryMB: 64, DiskMB: 64,
		Action: &models.Action{Run: &models.RunAction{}},
	}
}

func decodeLRP(t *testing.T, b []byte) *models.DesiredLRP {
	t.Helper()
	var lrp models.DesiredLRP
	if err := json.Unmarshal(b, &lrp); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return &lrp
}

// TestDesireLRPPinsImageTag: the tag is resolved once, at desire time; a tag pushed again
// afterwards changes neither the record nor what a scale-up creates.
func TestDesireLRPPinsImageTag(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	first := reg.Push(t, "apps/web:v1", imagetest.Image(t, v1.Config{Cmd: []string{"/bin/true"}}, imagetest.Marker(t, "first")), nil)
	e := newImageEnv(t, nil)

	rootfs := "docker://" + reg.Host + "/apps/web:v1"
	status, body := e.do("POST", "/v1/desired_lrps", "operator", imageLRP("web", rootfs))
	if status != http.StatusCreated {
		t.Fatalf("desire: %d %s", status, body)
	}
	want := rootfs + "@" + first
	if got := decodeLRP(t, body).RootFS; got != want {
		t.Fatalf("stored rootfs %q, want %q", got, want)
	}

	second := reg.Push(t, "apps/web:v1", imagetest.Image(t, v1.Config{Cmd: []string{"/bin/true"}}, imagetest.Marker(t, "second")), nil)
	if second == first {
		t.Fatal("the re-pushed image has the same digest")
	}
	status, body = e.do("PATCH", "/v1/desired_lrps/web", "operator", models.DesiredLRPUpdate{Instances: ptr(int32(3))})
	if status != http.StatusOK {
		t.Fatalf("scale up: %d %s", status, body)
	}
	if got := decodeLRP(t, body).RootFS; got != want {
		t.Fatalf("after the tag moved and a scale-up the rootfs is %q, want %q", got, want)
	}

	// A reference with a digest is stored as given, without a registry round trip.
	reg.Reset()
	pinned := "docker://" + reg.Host + "/apps/web@" + second
	status, body = e.do("POST", "/v1/desired_lrps", "operator", imageLRP("web2", pinned))
	if status != http.StatusCreated || decodeLRP(t, body).RootFS != pinned {
		t.Fatalf("desire by digest: %d %s", status, body)
	}
	if n := reg.Count("HEAD", "/manifests/") + reg.Count("GET", "/manifests/"); n != 0 {
		t.Fatalf("a digest reference cost %d manifest requests", n)
	}
}

// TestDesireLRPImageErrors: what the operator is told when the image cannot be resolved.
func TestDesireLRPImageErrors(t *testing.T) {
	const password = "hunter2-Sekret"
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "apps/public:v1", imagetest.Image(t, v1.Config{}, imagetest.Marker(t, "public")), nil)
	private := imagetest.NewRegistry(t)
	private.RequireAuth("robot", password)
	private.Push(t, "apps/secret:v1", imagetest.Image(t, v1.Config{}, imagetest.Marker(t, "secret")), imagetest.Auth("robot", password))

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	go func() { // accepts and never answers
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			go func() { <-hang; c.Close() }()
		}
	}()

	e := newImageEnv(t, func(c *bbs.Config) { c.ImageResolution.Timeout = 500 * time.Millisecond })
	tests := []struct {
		name       string
		rootfs     string
		user, pass string
		status     int
		typ        string
		field      string // what the message starts with
		says       string
	}{
		{"missing tag", "docker://" + reg.Host + "/apps/public:v9", "", "", 422, "InvalidRecord", "rootfs:", "not found"},
		{"missing repository", "docker://" + reg.Host + "/apps/nothing:v1", "", "", 422, "InvalidRecord", "rootfs:", "not found"},
		{"private without credentials", "docker://" + private.Host + "/apps/secret:v1", "", "", 422, "InvalidRecord", "rootfs:", "set image_username and image_password"},
		{"private with a wrong password", "docker://" + private.Host + "/apps/secret:v1", "robot", password + "x", 422, "InvalidRecord", "image_password:", "refused"},
		{"registry unreachable", "docker://" + deadAddr + "/apps/public:v1", "", "", 503, "Unavailable", "", "rootfs: resolving"},
		{"registry does not answer", "docker://" + slow.Addr().String() + "/apps/public:v1", "robot", password, 503, "Unavailable", "", "no answer from the registry within 500ms"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lrp := imageLRP(fmt.Sprintf("bad-%d", i), tt.rootfs)
			lrp.ImageUsername, lrp.ImagePassword = tt.user, tt.pass
			start := time.Now()
			status, body := e.do("POST", "/v1/desired_lrps", "operator", lrp)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("the answer took %v", took)
			}
			var er struct {
				Error struct{ Type, Message string }
			}
			json.Unmarshal(body, &er)
			if status != tt.status || er.Error.Type != tt.typ || !strings.HasPrefix(er.Error.Message, tt.field) || !strings.Contains(er.Error.Message, tt.says) {
				t.Fatalf("got %d %s, want %d %s starting %q saying %q", status, body, tt.status, tt.typ, tt.field, tt.says)
			}
			if strings.Contains(string(body), password) {
				t.Fatalf("the answer carries the password: %s", body)
			}
			if status, _ := e.do("GET", "/v1/desired_lrps/"+lrp.ProcessGuid, "operator", nil); status != http.StatusNotFound {
				t.Fatalf("a refused LRP was stored (GET answered %d)", status)
			}
		})
	}
	t.Run("private with credentials", func(t *testing.T) {
		lrp := imageLRP("private-ok", "docker://"+private.Host+"/apps/secret:v1")
		lrp.ImageUsername, lrp.ImagePassword = "robot", password
		if status, body := e.do("POST", "/v1/desired_lrps", "operator", lrp); status != http.StatusCreated || !strings.Contains(decodeLRP(t, body).RootFS, "@sha256:") {
			t.Fatalf("desire: %d %s", status, body)
		}
	})
	if strings.Contains(e.logs.String(), password) {
		t.Fatal("a BBS log line carries the password")
	}
}

// TestImageResolutionSkip: an air-gapped BBS stores image URIs as given.
func TestImageResolutionSkip(t *testing.T) {
	e := newImageEnv(t, func(c *bbs.Config) { c.ImageResolution.Skip = true })
	rootfs := "docker://127.0.0.1:1/apps/web:v1" // nothing listens there
	status, body := e.do("POST", "/v1/desired_lrps", "operator", imageLRP("web", rootfs))
	if status != http.StatusCreated || decodeLRP(t, body).RootFS != rootfs {
		t.Fatalf("desire: %d %s", status, body)
	}
}

// TestImagePasswordRedacted: the password is stored for the cell that pulls the image and
// appears in no other answer (get, list, update, events, to operator, brain or another cell)
// and in no log line.
func TestImagePasswordRedacted(t *testing.T) {
	const password = "correct-horse-battery-staple"
	reg := imagetest.NewRegistry(t)
	reg.RequireAuth("robot", password)
	reg.Push(t, "apps/secret:v1", imagetest.Image(t, v1.Config{}, imagetest.Marker(t, "secret")), imagetest.Auth("robot", password))
	e := newImageEnv(t, nil)

	// Follow the event stream while everything happens.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := &syncBuffer{}
	streamDone := make(chan struct{})
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events", nil)
	req.Header.Set(bbs.IdentityHeader, "cell:cell-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(streamDone)
		io.Copy(events, resp.Body)
		resp.Body.Close()
	}()

	var answers []string
	call := func(method, path, identity string, body any, want int) []byte {
		t.Helper()
		status, b := e.do(method, path, identity, body)
		if status != want {
			t.Fatalf("%s %s as %s: %d %s", method, path, identity, status, b)
		}
		answers = append(answers, method+" "+path+" as "+identity+": "+string(b))
		return b
	}

	lrp := imageLRP("private", "docker://"+reg.Host+"/apps/secret:v1")
	lrp.ImageUsername, lrp.ImagePassword = "robot", password
	created := decodeLRP(t, call("POST", "/v1/desired_lrps", "operator", lrp, 201))
	if created.ImageUsername != "robot" || created.ImagePassword != "" {
		t.Fatalf("created record: user %q password %q", created.ImageUsername, created.ImagePassword)
	}
	task := &models.Task{TaskGuid: "private-task", Domain: "d", RootFS: "docker://" + reg.Host + "/apps/secret:v1",
		ImageUsername: "robot", ImagePassword: password, MemoryMB: 64, DiskMB: 64,
		Action: &models.Action{Run: &models.RunAction{}}}
	call("POST", "/v1/tasks", "operator", task, 201)
	for _, id := range []string{"operator", "brain", "cell:cell-1"} {
		call("GET", "/v1/desired_lrps/private", id, nil, 200)
		call("GET", "/v1/desired_lrps", id, nil, 200)
		call("GET", "/v1/tasks/private-task", id, nil, 200)
		call("GET", "/v1/tasks", id, nil, 200)
	}
	call("PATCH", "/v1/desired_lrps/private", "operator", models.DesiredLRPUpdate{Annotation: ptr("x")}, 200)
	call("POST", "/v1/actual_lrps/private/0/place", "brain", map[string]any{"cell_id": "cell-1"}, 200)
	call("POST", "/v1/tasks/private-task/place", "brain", map[string]any{"cell_id": "cell-1"}, 200)
	for _, id := range []string{"operator", "brain", "cell:cell-2"} {
		call("GET", "/v1/desired_lrps/private", id, nil, 200)
		call("GET", "/v1/tasks/private-task", id, nil, 200)
		call("GET", "/v1/tasks?cell_id=cell-1", id, nil, 200)
	}
	for _, a := range answers {
		if strings.Contains(a, password) {
			t.Fatalf("an answer carries the password: %s", a)
		}
	}

	// The cell the work is placed on reads it.
	if status, b := e.do("GET", "/v1/desired_lrps/private", "cell:cell-1", nil); status != 200 || decodeLRP(t, b).ImagePassword != password {
		t.Fatalf("the placed cell's read of the LRP: %d %s", status, b)
	}
	status, b := e.do("GET", "/v1/tasks/private-task", "cell:cell-1", nil)
	var got models.Task
	json.Unmarshal(b, &got)
	if status != 200 || got.ImagePassword != password {
		t.Fatalf("the placed cell's read of the task: %d %s", status, b)
	}

	time.Sleep(200 * time.Millisecond) // let the last events arrive
	cancel()
	<-streamDone
	if !strings.Contains(events.String(), "desired_lrp_changed") || !strings.Contains(events.String(), "task_changed") {
		t.Fatalf("the event stream missed the changes: %s", events.String())
	}
	if strings.Contains(events.String(), password) {
		t.Fatal("an event carries the password")
	}
	if strings.Contains(e.logs.String(), password) {
		t.Fatal("a BBS log line carries the password")
	}
}
