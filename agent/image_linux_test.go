//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation_linux/image/imagetest"
)

// lockedBuffer keeps every log line of an agent, to look for secrets in.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// imageCell starts a Linux-backend agent that announces the docker scheme and logs, at debug
// level, into the returned buffer.
func imageCell(t *testing.T, e *bbsEnv) (string, *Agent, *lockedBuffer) {
	t.Helper()
	cellID := uniq("img")
	cfg := linuxConfig(t, e, cellID)
	cfg.RootFSProviders["docker"] = ""
	logged := &lockedBuffer{}
	cell := e.clientFor(t, certs.Files{CertFile: cfg.BBS.CertFile, KeyFile: cfg.BBS.KeyFile})
	logger := slog.New(slog.NewTextHandler(logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(context.Background(), cfg, Options{Store: cell, Logger: logger})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		a.Close()
		if t.Failed() {
			t.Logf("agent log:\n%s", logged.String())
		}
	})
	waitFor(t, 10*time.Second, "the cell is present", func() bool {
		_, err := e.operator(t).Cell(context.Background(), cellID)
		return err == nil
	})
	return cellID, a, logged
}

// page fetches path from the instance's own address on port 8080.
func page(t *testing.T, rec *models.ActualLRP, path string) string {
	t.Helper()
	if rec.InstanceAddress == "" {
		t.Fatalf("instance %d has no address of its own: %+v", rec.Index, rec)
	}
	body, err := get(t, fmt.Sprintf("http://%s%s", net.JoinHostPort(rec.InstanceAddress, "8080"), path))
	if err != nil {
		t.Fatalf("GET %s from instance %d: %v", path, rec.Index, err)
	}
	return body
}

// TestLinuxImageLRP: an LRP on docker://… with an empty run action runs the image's
// entrypoint and command in the image's working dir, passes the default health check on the
// image's exposed port, and keeps running the digest pinned at desire time: after the tag is
// pushed again, a scale-up still serves the first content.
func TestLinuxImageLRP(t *testing.T) {
	e := testBBS(t)
	reg := imagetest.NewRegistry(t)
	site := func(s string) v1.Image {
		return imagetest.Image(t, imagetest.HTTPDConfig(8080, "/www"), imagetest.BusyboxLayer(t),
			imagetest.Layer(t, imagetest.File{Path: "www", Dir: true}, imagetest.File{Path: "www/index.html", Body: s}))
	}
	first := reg.Push(t, "apps/site:v1", site("first\n"), nil)
	cellID, _, _ := imageCell(t, e)
	op := e.operator(t)

	guid := uniq("site")
	lrp := &models.DesiredLRP{
		ProcessGuid: guid, Domain: "tests", RootFS: "docker://" + reg.Host + "/apps/site:v1", Instances: 1,
		MemoryMB: 64, DiskMB: 64, StartTimeoutMs: 30000,
		Action: &models.Action{Run: &models.RunAction{}},
	}
	desireAndPlace(t, e, lrp, cellID)
	rec := waitState(t, op, guid, 0, models.ActualLRPStateRunning, 60*time.Second)
	if got := page(t, rec, "/index.html"); got != "first\n" {
		t.Fatalf("instance 0 serves %q", got)
	}
	d, err := op.DesiredLRP(context.Background(), guid)
	if err != nil || !strings.HasSuffix(d.RootFS, "@"+first) {
		t.Fatalf("stored rootfs %q (%v), want it pinned to %s", d.RootFS, err, first)
	}

	reg.Push(t, "apps/site:v1", site("second\n"), nil)
	if _, err := op.UpdateDesiredLRP(context.Background(), guid, models.DesiredLRPUpdate{Instances: ptrTo(int32(2))}, 0); err != nil {
		t.Fatal(err)
	}
	key := models.ActualLRPKey{ProcessGuid: guid, Index: 1, Domain: "tests"}
	if _, err := e.brain(t).PlaceActualLRP(context.Background(), key, cellID, 0); err != nil {
		t.Fatal(err)
	}
	rec1 := waitState(t, op, guid, 1, models.ActualLRPStateRunning, 60*time.Second)
	if got := page(t, rec1, "/index.html"); got != "first\n" {
		t.Fatalf("the scaled-up instance serves %q, want the pinned digest's %q", got, "first\n")
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestLinuxImageTwentyInstances: 20 instances of one image on one cell download each blob
// (the config and every layer) once.
func TestLinuxImageTwentyInstances(t *testing.T) {
	const n = 20
	e := testBBS(t)
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{Cmd: []string{"/bin/sleep", "3600"}}, imagetest.BusyboxLayer(t), imagetest.Marker(t, "twenty"))
	reg.Push(t, "apps/sleeper:v1", img, nil)
	cellID, _, _ := imageCell(t, e)
	op := e.operator(t)
	reg.Reset()

	guid := uniq("many")
	lrp := &models.DesiredLRP{
		ProcessGuid: guid, Domain: "tests", RootFS: "docker://" + reg.Host + "/apps/sleeper:v1", Instances: n,
		MemoryMB: 16, DiskMB: 16, Action: &models.Action{Run: &models.RunAction{}},
	}
	desireAndPlace(t, e, lrp, cellID)
	for i := int32(0); i < n; i++ {
		waitState(t, op, guid, i, models.ActualLRPStateRunning, 120*time.Second)
	}
	for _, d := range imagetest.LayerDigests(t, img) {
		if got := reg.Count("GET", "/blobs/"+d); got != 1 {
			t.Errorf("layer %s was downloaded %d times for %d instances, want once", imagetest.ShortDigest(d), got, n)
		}
	}
	cfgDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Count("GET", "/blobs/"+cfgDigest.String()); got != 1 {
		t.Errorf("the config was downloaded %d times, want once", got)
	}
}

// TestLinuxImagePrivate: a private image runs with the LRP's registry login, and without it
// crashes with a reason that says credentials are missing; the password is in no answer of
// the BBS and no line of the agent's log.
func TestLinuxImagePrivate(t *testing.T) {
	const password = "tr0ub4dor-and-3"
	e := testBBS(t)
	reg := imagetest.NewRegistry(t)
	reg.RequireAuth("robot", password)
	img := imagetest.Image(t, v1.Config{Cmd: []string{"/bin/sleep", "3600"}}, imagetest.BusyboxLayer(t), imagetest.Marker(t, "private"))
	digest := reg.Push(t, "apps/private:v1", img, imagetest.Auth("robot", password))
	cellID, a, logged := imageCell(t, e)
	op := e.operator(t)

	withLogin := &models.DesiredLRP{
		ProcessGuid: uniq("private"), Domain: "tests", RootFS: "docker://" + reg.Host + "/apps/private:v1", Instances: 1,
		MemoryMB: 16, DiskMB: 16, Action: &models.Action{Run: &models.RunAction{}},
		ImageUsername: "robot", ImagePassword: password,
	}
	desireAndPlace(t, e, withLogin, cellID)
	waitState(t, op, withLogin.ProcessGuid, 0, models.ActualLRPStateRunning, 60*time.Second)

	// By digest the BBS does not ask the registry, so the cell is the one refused.
	without := &models.DesiredLRP{
		ProcessGuid: uniq("nologin"), Domain: "tests", RootFS: "docker://" + reg.Host + "/apps/private@" + digest, Instances: 1,
		MemoryMB: 16, DiskMB: 16, Action: &models.Action{Run: &models.RunAction{}},
	}
	desireAndPlace(t, e, without, cellID)
	crashed := waitState(t, op, without.ProcessGuid, 0, models.ActualLRPStateCrashed, 60*time.Second)
	if !strings.Contains(crashed.CrashReason, "the registry wants credentials and none were given") {
		t.Fatalf("crash reason %q does not say why", crashed.CrashReason)
	}

	d, err := op.DesiredLRP(context.Background(), withLogin.ProcessGuid)
	if err != nil || d.ImagePassword != "" || d.ImageUsername != "robot" {
		t.Fatalf("operator read: %+v, %v", d, err)
	}
	for _, c := range a.Containers() {
		if strings.Contains(fmt.Sprint(c), password) {
			t.Fatalf("the agent API shows the password: %+v", c)
		}
	}
	if strings.Contains(logged.String(), password) {
		t.Fatal("an agent log line carries the password")
	}
}
