package actions

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
)

func TestRunEnvAssembly(t *testing.T) {
	e := newEnv(t, "FROM_CONTAINER=c", "OVER=container")
	r := e.runner(Config{
		Env: []string{"FROM_WORK=w", "OVER=work"},
		Instance: &InstanceEnv{
			GUID: "g-1", Index: 4, HostIP: "10.0.0.5", ContainerIP: "10.255.0.9",
			Ports: []models.PortMapping{{ContainerPort: 8080, HostPort: 61001}, {ContainerPort: 2222, HostPort: 61002}},
		},
	})
	a := run(progEnv)
	a.Run.Env = []models.EnvironmentVariable{{Name: "OVER", Value: "action"}, {Name: "FROM_ACTION", Value: "a"}}
	if err := r.Run(context.Background(), a); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := map[string]string{}
	var order []string
	for _, l := range e.lines() {
		kv := strings.TrimPrefix(l, "APP OUT ")
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v // later entries win, as in a process environment
		order = append(order, k)
	}
	want := map[string]string{
		"FROM_CONTAINER":          "c",
		"FROM_WORK":               "w",
		"FROM_ACTION":             "a",
		"OVER":                    "action",
		"INSTANCE_GUID":           "g-1",
		"INSTANCE_INDEX":          "4",
		"CF_INSTANCE_GUID":        "g-1",
		"CF_INSTANCE_INDEX":       "4",
		"CF_INSTANCE_IP":          "10.0.0.5",
		"CF_INSTANCE_INTERNAL_IP": "10.255.0.9",
		"PORT":                    "8080",
		"CF_INSTANCE_PORT":        "61001",
		"CF_INSTANCE_ADDR":        "10.0.0.5:61001",
		"CF_INSTANCE_PORTS":       `[{"external":61001,"internal":8080},{"external":61002,"internal":2222}]`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// Container env first, then the work's, then the instance's, then the action's.
	idx := func(k string) int { return slices.Index(order, k) }
	if !(idx("FROM_CONTAINER") < idx("FROM_WORK") && idx("FROM_WORK") < idx("INSTANCE_GUID") && idx("INSTANCE_GUID") < idx("FROM_ACTION")) {
		t.Errorf("environment order %v, want container, work, instance, action", order)
	}

	t.Run("task without instance or ports", func(t *testing.T) {
		vars := InstanceEnv{GUID: "g"}.Vars()
		if slices.ContainsFunc(vars, func(s string) bool { return strings.HasPrefix(s, "PORT=") }) {
			t.Errorf("Vars without ports set PORT: %v", vars)
		}
		if !slices.Contains(vars, "CF_INSTANCE_PORTS=[]") {
			t.Errorf("Vars without ports = %v, want CF_INSTANCE_PORTS=[]", vars)
		}
	})
}

func TestRunExitStatusAndOutput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		action *models.Action
		reason string
		lines  []string
	}{
		{"success", prog(isolationtest.Echo("hello\nworld\n", "warn\n")), "",
			[]string{"APP OUT hello", "APP OUT world", "APP ERR warn"}},
		{"exit 3", prog(isolationtest.Exit(3)), "exited with status 3", nil},
		{"partial line flushed at exit", prog(isolationtest.Echo("no newline", "")), "",
			[]string{"APP OUT no newline"}},
		{"suppressed output", &models.Action{Run: &models.RunAction{
			Path: isolationtest.TestProgramPath, Args: isolationtest.Echo("secret\n", "").Argv(), SuppressLogOutput: true,
		}}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			err := e.runner(Config{}).Run(context.Background(), tc.action)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			} else {
				wantReason(t, err, tc.reason)
				var exit *ExitError
				if !errors.Is(err, ErrExited) || !errors.As(err, &exit) || exit.Status != 3 {
					t.Fatalf("err %v: want an *ExitError with status 3 matching ErrExited", err)
				}
			}
			if got := e.lines(); strings.Join(got, "|") != strings.Join(tc.lines, "|") {
				t.Fatalf("logs %q, want %q", got, tc.lines)
			}
		})
	}
}

func TestRunOutOfMemoryReason(t *testing.T) {
	e := newEnv(t)
	errc := make(chan error, 1)
	go func() { errc <- e.runner(Config{}).Run(context.Background(), prog(isolationtest.Sleep())) }()
	waitFor(t, func() bool {
		info, err := e.c.Info(context.Background())
		return err == nil && len(info.ProcessIDs) == 1
	})
	if err := e.backend.InjectEvent(context.Background(), "c1", isolation.EventOutOfMemory); err != nil {
		t.Fatal(err)
	}
	wantReason(t, <-errc, "exited with status 137 (out of memory)")
}

func TestCancelTerminatesThenKills(t *testing.T) {
	t.Run("process ignoring terminate is killed after the grace period", func(t *testing.T) {
		e := newEnv(t)
		const grace = 300 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- e.runner(Config{GracePeriod: grace}).Run(ctx, run(progStubborn)) }()
		<-e.stubbies
		cancel()
		err := <-errc
		wantReason(t, err, "cancelled")
		if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
			t.Errorf("err %v: want ErrCancelled and context.Canceled", err)
		}
		// The program records the kill after the backend reported its exit.
		waitFor(t, func() bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return !e.killAt.IsZero()
		})
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.termAt.IsZero() || e.killAt.IsZero() {
			t.Fatalf("terminate at %v, kill at %v: want both", e.termAt, e.killAt)
		}
		if gap := e.killAt.Sub(e.termAt); gap < grace {
			t.Errorf("kill came %v after terminate, want at least the %v grace", gap, grace)
		}
	})
	t.Run("process honouring terminate stops without a kill", func(t *testing.T) {
		e := newEnv(t)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		start := time.Now()
		go func() { errc <- e.runner(Config{GracePeriod: time.Minute}).Run(ctx, prog(isolationtest.Sleep())) }()
		waitFor(t, func() bool { return len(e.lines()) > 0 }) // "ready"
		cancel()
		err := <-errc
		if !errors.Is(err, ErrCancelled) || !strings.Contains(err.Error(), "exited with status 143") {
			t.Errorf("err = %v, want a cancellation noting exit status 143", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Run took %v; a terminated process should not wait out the grace period", d)
		}
	})
	t.Run("not started after cancellation", func(t *testing.T) {
		e := newEnv(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		wantReason(t, e.runner(Config{}).Run(ctx, run(progCount, "0")), "cancelled")
		if e.starts != 0 {
			t.Errorf("%d processes started under a cancelled context", e.starts)
		}
	})
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	r := e.runner(Config{})
	start := time.Now()
	err := r.Run(context.Background(), timeout(100, prog(isolationtest.Sleep())))
	wantReason(t, err, "timed out after 100ms")
	if !errors.Is(err, ErrTimedOut) {
		t.Errorf("err %v does not match ErrTimedOut", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("timed out after %v, want about 100ms", d)
	}
	if err := r.Run(context.Background(), timeout(5000, delay(10, 0))); err != nil {
		t.Errorf("fast child under a timeout: %v", err)
	}
	// A failure before the deadline is the child's, not a timeout.
	wantReason(t, r.Run(context.Background(), timeout(5000, delay(0, 2))), "exited with status 2")
	if got := (&TimeoutError{Timeout: 5 * time.Second}).Reason(); got != "timed out after 5s" {
		t.Errorf("Reason = %q, want \"timed out after 5s\"", got)
	}
}

func TestTrySerialParallel(t *testing.T) {
	e := newEnv(t)
	r := e.runner(Config{})
	ctx := context.Background()

	t.Run("try swallows failure", func(t *testing.T) {
		if err := r.Run(ctx, serial(try(delay(0, 1)), delay(0, 0, "/after-try"))); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, err := e.readFile("/after-try"); err != nil {
			t.Errorf("the step after try did not run: %v", err)
		}
	})
	t.Run("try does not swallow cancellation", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		wantReason(t, r.Run(cctx, try(prog(isolationtest.Sleep()))), "cancelled")
	})
	t.Run("serial stops at the first failure", func(t *testing.T) {
		err := r.Run(ctx, serial(delay(0, 0, "/s1"), delay(0, 2), delay(0, 0, "/s3")))
		wantReason(t, err, "exited with status 2")
		if _, err := e.readFile("/s1"); err != nil {
			t.Errorf("first step: %v", err)
		}
		if _, err := e.readFile("/s3"); !isolation.IsNotFound(err) {
			t.Errorf("third step ran after a failure (%v)", err)
		}
	})
	t.Run("parallel runs all and returns the first error after all finish", func(t *testing.T) {
		err := r.Run(ctx, parallel(delay(0, 5), delay(200, 0, "/slow"), delay(50, 6)))
		wantReason(t, err, "exited with status 5")
		if _, err := e.readFile("/slow"); err != nil {
			t.Errorf("parallel returned before its slow child finished: %v", err)
		}
	})
	t.Run("parallel success", func(t *testing.T) {
		if err := r.Run(ctx, parallel(delay(10, 0), delay(20, 0))); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCodependent(t *testing.T) {
	e := newEnv(t)
	r := e.runner(Config{GracePeriod: time.Minute})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		action *models.Action
		reason string
	}{
		{"clean exit stops the others", codependent(delay(50, 0), prog(isolationtest.Sleep())), "codependent action exited"},
		{"failure stops the others", codependent(prog(isolationtest.Sleep()), delay(50, 4)), "exited with status 4"},
		{"single child succeeding", codependent(delay(10, 0)), ""},
		{"nested under serial", serial(codependent(delay(20, 7), prog(isolationtest.Sleep())), delay(0, 0)), "exited with status 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := r.Run(ctx, tc.action)
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReason(t, err, tc.reason)
			if tc.reason == "codependent action exited" && !errors.Is(err, ErrCodependentExited) {
				t.Errorf("err %v does not match ErrCodependentExited", err)
			}
			// The sleeping sibling honoured terminate: no one waited out the minute of grace.
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	// Every process the codependent nodes started has exited.
	info, err := e.c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.ProcessIDs) != 0 {
		t.Errorf("processes still running: %v", info.ProcessIDs)
	}
}

func TestEmitProgress(t *testing.T) {
	e := newEnv(t)
	r := e.runner(Config{})
	ctx := context.Background()
	if err := r.Run(ctx, progress("Starting app", "App started", "Failed to start", delay(0, 0))); err != nil {
		t.Fatal(err)
	}
	err := r.Run(ctx, progress("Staging", "Staged", "Failed to stage", delay(0, 9)))
	wantReason(t, err, "exited with status 9")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	r.Run(cctx, progress("", "", "Never shown", prog(isolationtest.Sleep())))
	want := []string{
		"CELL OUT Starting app",
		"CELL OUT App started",
		"CELL OUT Staging",
		"CELL ERR Failed to stage: exited with status 9",
	}
	got := slices.DeleteFunc(e.lines(), func(l string) bool { return strings.HasPrefix(l, "APP ") })
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("progress lines %q, want %q", got, want)
	}
}

// artifactServer serves artifacts by path and counts requests; PUTs are recorded.
type artifactServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	requests map[string]int
	puts     map[string][]byte
	types    map[string]string
}

func newArtifactServer(t *testing.T, files map[string][]byte) *artifactServer {
	s := &artifactServer{files: files, requests: map[string]int{}, puts: map[string][]byte{}, types: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests[r.URL.Path]++
		switch r.Method {
		case http.MethodGet:
			data, ok := s.files[r.URL.Path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write(data)
		case http.MethodPut:
			body, _ := io.ReadAll(r.Body)
			s.puts[r.URL.Path] = body
			s.types[r.URL.Path] = r.Header.Get("Content-Type")
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func download(from, to, key, sum string) *models.Action {
	return &models.Action{Download: &models.DownloadAction{From: from, To: to, CacheKey: key, ChecksumValue: sum}}
}

func TestDownload(t *testing.T) {
	tgz := gzipped(t, tarOf(t, map[string]string{"bin/": "", "bin/start": "#!/bin/sh\nexec app\n", "README": "read me"}))
	plainTar := tarOf(t, map[string]string{"lib.so": "elf"})
	sum := sha256.Sum256(tgz)
	srv := newArtifactServer(t, map[string][]byte{
		"/droplets/abc/download": tgz, // no extension: detected by content
		"/lib.tar":               plainTar,
		"/config/app.json":       []byte(`{"a":1}`),
		"/notes.txt.gz":          gzipped(t, []byte("not a tar")),
	})
	e := newEnv(t)
	r := e.runner(Config{})
	ctx := context.Background()

	droplet := srv.URL + "/droplets/abc/download"
	for range 2 {
		if err := r.Run(ctx, download(droplet, "/home/vcap", "droplet-abc", hex.EncodeToString(sum[:]))); err != nil {
			t.Fatalf("download tgz: %v", err)
		}
	}
	for p, want := range map[string]string{"/home/vcap/bin/start": "#!/bin/sh\nexec app\n", "/home/vcap/README": "read me"} {
		if got, err := e.readFile(p); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if n := srv.requests["/droplets/abc/download"]; n != 1 {
		t.Errorf("droplet downloaded %d times with one cache key, want 1", n)
	}

	if err := r.Run(ctx, parallel(
		download(srv.URL+"/lib.tar", "/lib", "", ""),
		download(srv.URL+"/config/app.json", "/etc/app", "", ""),
		download(srv.URL+"/notes.txt.gz", "/notes", "", ""),
	)); err != nil {
		t.Fatalf("downloads: %v", err)
	}
	for p, want := range map[string]string{
		"/lib/lib.so":         "elf",
		"/etc/app/app.json":   `{"a":1}`,
		"/notes/notes.txt.gz": string(gzipped(t, []byte("not a tar"))),
	} {
		if got, err := e.readFile(p); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}

	t.Run("checksum mismatch", func(t *testing.T) {
		bad := strings.Repeat("0", 64)
		err := r.Run(ctx, download(srv.URL+"/lib.tar", "/x", "lib", bad))
		got := sha256.Sum256(plainTar)
		wantReason(t, err, "checksum mismatch for "+srv.URL+"/lib.tar: expected sha256 "+bad+", got "+hex.EncodeToString(got[:]))
		if !errors.Is(err, ErrDownload) {
			t.Errorf("err %v does not match ErrDownload", err)
		}
	})
	t.Run("missing artifact", func(t *testing.T) {
		err := r.Run(ctx, download(srv.URL+"/nope.tgz", "/x", "", ""))
		if !errors.Is(err, ErrDownload) || !strings.Contains(Reason(err), "404") {
			t.Fatalf("err = %v, want ErrDownload naming the 404", err)
		}
	})
	t.Run("user other than root", func(t *testing.T) {
		a := download(srv.URL+"/lib.tar", "/x", "", "")
		a.Download.User = "vcap"
		if err := r.Run(ctx, a); !isolation.IsUnsupported(err) {
			t.Fatalf("err = %v, want ErrUnsupported", err)
		}
	})
	t.Run("no cache", func(t *testing.T) {
		r, err := NewRunner(Config{Container: e.c})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(ctx, download(srv.URL+"/lib.tar", "/x", "", "")); !errors.Is(err, ErrInvalidAction) {
			t.Fatalf("err = %v, want ErrInvalidAction", err)
		}
	})
}

func TestUpload(t *testing.T) {
	srv := newArtifactServer(t, map[string][]byte{})
	e := newEnv(t)
	r := e.runner(Config{})
	ctx := context.Background()
	if err := e.c.StreamIn(ctx, "/out", bytes.NewReader(tarOf(t, map[string]string{
		"droplet.tgz": "compressed bits", "d/": "", "d/a.txt": "A",
	}))); err != nil {
		t.Fatal(err)
	}
	up := func(from, to string) *models.Action {
		return &models.Action{Upload: &models.UploadAction{From: from, To: to}}
	}
	if err := r.Run(ctx, serial(up("/out/droplet.tgz", srv.URL+"/file"), up("/out/d", srv.URL+"/dir"))); err != nil {
		t.Fatalf("upload: %v", err)
	}
	srv.mu.Lock()
	file, fileType := string(srv.puts["/file"]), srv.types["/file"]
	dir, dirType := srv.puts["/dir"], srv.types["/dir"]
	srv.mu.Unlock()
	if file != "compressed bits" || fileType != "application/octet-stream" {
		t.Errorf("file upload = %q (%s), want the file's content as octet-stream", file, fileType)
	}
	tr := tar.NewReader(bytes.NewReader(dir))
	var names []string
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, hdr.Name)
	}
	if !slices.Contains(names, "d/a.txt") || dirType != "application/x-tar" {
		t.Errorf("directory upload members %v (%s), want a tar holding d/a.txt", names, dirType)
	}
	err := r.Run(ctx, up("/out/missing", srv.URL+"/m"))
	if !errors.Is(err, ErrUpload) || !isolation.IsNotFound(err) {
		t.Errorf("upload of a missing path = %v, want ErrUpload wrapping ErrNotFound", err)
	}
	t.Run("server refuses", func(t *testing.T) {
		refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusForbidden)
		}))
		defer refusing.Close()
		err := r.Run(ctx, up("/out/droplet.tgz", refusing.URL+"/x?token=secret"))
		if !errors.Is(err, ErrUpload) || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "secret") {
			t.Errorf("err = %v, want ErrUpload naming the 403 without the query", err)
		}
	})
}

func TestNestedTreeAndProcessIDs(t *testing.T) {
	tgz := gzipped(t, tarOf(t, map[string]string{"app": "bits"}))
	srv := newArtifactServer(t, map[string][]byte{"/app.tgz": tgz})
	e := newEnv(t)
	r := e.runner(Config{ProcessIDPrefix: "setup"})
	tree := progress("start", "done", "failed", timeout(10_000, serial(
		download(srv.URL+"/app.tgz", "/app", "app", ""),
		codependent(
			serial(delay(20, 0, "/app/marker"), try(delay(0, 1))),
			prog(isolationtest.Sleep()),
		),
	)))
	err := r.Run(context.Background(), tree)
	wantReason(t, err, "codependent action exited")
	if got, err := e.readFile("/app/marker"); err != nil || got != "done" {
		t.Errorf("marker = %q, %v", got, err)
	}
	// Process ids follow the tree: emit_progress.0 → timeout.0 → serial.1 → codependent.1.
	p, err := e.c.Attach(context.Background(), "setup-r.0.0.1.1", isolation.ProcessIO{})
	if err != nil {
		t.Fatalf("Attach to the sleeping process by its tree id: %v", err)
	}
	if status, err := p.Wait(context.Background()); err != nil || status != isolationtest.ExitTerminated {
		t.Errorf("sleeper exit %d, %v; want %d (terminated)", status, err, isolationtest.ExitTerminated)
	}
	if got := e.lines(); !slices.Contains(got, "CELL ERR failed: codependent action exited") {
		t.Errorf("logs %q lack the failure message", got)
	}
}

func TestResumeAttaches(t *testing.T) {
	e := newEnv(t)
	a := run(progCount, "3")
	wantReason(t, e.runner(Config{ProcessIDPrefix: "action"}).Run(context.Background(), a), "exited with status 3")
	// A restarted agent resumes the same tree over a reopened backend: it attaches to the
	// exited process instead of starting another one.
	reopened, err := isolationtest.ReopenMemory(e.backend.State()).Lookup(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	resumed := e.runner(Config{Container: reopened, ProcessIDPrefix: "action", Resume: true})
	wantReason(t, resumed.Run(context.Background(), a), "exited with status 3")
	if e.starts != 1 {
		t.Errorf("program started %d times, want 1", e.starts)
	}
	// Without Resume the same id cannot be reused.
	if err := e.runner(Config{ProcessIDPrefix: "action"}).Run(context.Background(), a); !isolation.IsAlreadyExists(err) {
		t.Errorf("rerun without Resume = %v, want ErrAlreadyExists", err)
	}
	// Without a prefix the same Runner runs a tree any number of times.
	r := e.runner(Config{})
	for range 2 {
		wantReason(t, r.Run(context.Background(), a), "exited with status 3")
	}
}

func TestInvalid(t *testing.T) {
	e := newEnv(t)
	r := e.runner(Config{})
	for _, a := range []*models.Action{nil, {}, serial(), timeout(0, delay(0, 0))} {
		if err := r.Run(context.Background(), a); !errors.Is(err, ErrInvalidAction) {
			t.Errorf("Run(%+v) = %v, want ErrInvalidAction", a, err)
		}
	}
	for _, cfg := range []Config{{}, {Container: e.c, GracePeriod: -1}, {Container: e.c, ProcessIDPrefix: "a.b"}, {Container: e.c, Resume: true}} {
		if _, err := NewRunner(cfg); !errors.Is(err, ErrInvalidAction) {
			t.Errorf("NewRunner(%+v) = %v, want ErrInvalidAction", cfg, err)
		}
	}
	if Reason(nil) != "" {
		t.Error("Reason(nil) is not empty")
	}
	if got := Reason(errors.New("plain")); got != "plain" {
		t.Errorf("Reason of a plain error = %q", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A tar read from a file is handed over as that file, rewound and with its descriptor, so a
// backend can give the file itself to the container; other artifacts come through readers.
func TestArchiveStreamHandsOverTarFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) *os.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	plain := tarOf(t, map[string]string{"a": "1"})
	for _, tc := range []struct {
		name     string
		rc       io.ReadCloser
		wantFile bool
		want     []byte
	}{
		{"tar file", write("a.tar", plain), true, plain},
		{"tar reader", io.NopCloser(bytes.NewReader(plain)), false, plain},
		{"gzipped tar file", write("a.tgz", gzipped(t, plain)), false, plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := archiveStream(tc.rc, -1, "http://blobs/a")
			if err != nil {
				t.Fatal(err)
			}
			if _, isFile := s.(syscall.Conn); isFile != tc.wantFile {
				t.Errorf("stream offers its descriptor: %v, want %v", isFile, tc.wantFile)
			}
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Errorf("stream = %d bytes (%v), want the %d bytes of the tar", len(got), err, len(tc.want))
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if f, ok := tc.rc.(*os.File); ok {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Errorf("closing the stream closed the artifact's file: %v", err)
				}
			}
		})
	}
}
