package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/etcd"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// shared is the one embedded etcd of this test package; each test works under a prefix of
// its own (see newStore), so tests neither see nor clean up each other's records.
var shared *etcd.Embedded

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "trellis-store-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cfg := etcd.DefaultConfig()
	cfg.DataDir = dir
	shared, err = etcd.StartEmbedded(context.Background(), cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer shared.Close()
	return m.Run()
}

var prefixes atomic.Int64

// newStore returns a Store over the shared etcd under a fresh prefix.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	return newStoreOn(t, shared.Client())
}

func newStoreOn(t *testing.T, client *clientv3.Client) *store.Store {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	prefix := fmt.Sprintf("/test/%s-%d/", name, prefixes.Add(1))
	return store.New(client, store.Options{
		Prefix: prefix,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// startEtcd starts a private embedded etcd for tests that stop, restart or compact it.
func startEtcd(t *testing.T, dir string) *etcd.Embedded {
	t.Helper()
	cfg := etcd.DefaultConfig()
	cfg.DataDir = dir
	e, err := etcd.StartEmbedded(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func desiredLRP(guid string, instances int32) *models.DesiredLRP {
	return &models.DesiredLRP{
		ProcessGuid: guid,
		Domain:      "apps",
		RootFS:      "preloaded:cflinuxfs4",
		Instances:   instances,
		MemoryMB:    256,
		DiskMB:      512,
		Action:      &models.Action{Run: &models.RunAction{Path: "/app/run"}},
	}
}

func task(guid string) *models.Task {
	return &models.Task{
		TaskGuid: guid,
		Domain:   "staging",
		RootFS:   "docker:///busybox",
		MemoryMB: 128,
		DiskMB:   128,
		Action:   &models.Action{Run: &models.RunAction{Path: "/bin/stage"}},
	}
}

func cell(id string) *models.CellPresence {
	return &models.CellPresence{
		CellID:          id,
		Zone:            "z1",
		Address:         "10.0.0.1:1800",
		OS:              "linux",
		Capacity:        models.Resources{MemoryMB: 8192, DiskMB: 65536, Containers: 250},
		RootFSProviders: []string{"preloaded:cflinuxfs4", "docker"},
	}
}

func lrpKey(guid string, index int32) models.ActualLRPKey {
	return models.ActualLRPKey{ProcessGuid: guid, Index: index, Domain: "apps"}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantErr fails unless err wraps class (class nil: err must be nil).
func wantErr(t *testing.T, err, class error, what string) {
	t.Helper()
	switch {
	case class == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case class != nil && !errors.Is(err, class):
		t.Fatalf("%s: error = %v, want %v", what, err, class)
	}
}
