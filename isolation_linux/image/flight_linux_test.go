//go:build linux

package image

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCanceledPullerDoesNotFailOthers joins two pulls on one slow layer download, cancels
// the first, and checks the second still completes; then checks that when every puller
// gives up, the download stops and leaves nothing behind.
func TestCanceledPullerDoesNotFailOthers(t *testing.T) {
	layer, layer2 := testLayer(t, reg("slow", strings.Repeat("z", 4096))), testLayer(t, reg("slow2", "y"))
	slow := layerDigest(t, layer)
	gate, gate2 := make(chan struct{}), make(chan struct{})
	gates := map[string]chan struct{}{slow: gate, layerDigest(t, layer2): gate2}
	started := make(chan struct{}, 10)
	r := newTestRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if g := gates[filepath.Base(req.URL.Path)]; req.Method == http.MethodGet && g != nil {
				started <- struct{}{}
				select {
				case <-g:
				case <-req.Context().Done():
					return
				}
			}
			next.ServeHTTP(w, req)
		})
	})
	push(t, r.host+"/team/slow:1", testImage(t, v1.Config{}, layer), nil)
	s := newTestStore(t, nil)

	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, err := s.Pull(ctxA, r.host+"/team/slow:1", Credentials{}, nil)
		errA <- err
	}()
	<-started
	resB := make(chan error, 1)
	go func() {
		im, err := s.Pull(context.Background(), r.host+"/team/slow:1", Credentials{}, nil)
		if err == nil {
			im.Release()
		}
		resB <- err
	}()
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, f := range s.flights {
			if f.waiters == 2 {
				return true
			}
		}
		return false
	})
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled pull: %v", err)
	}
	close(gate)
	if err := <-resB; err != nil {
		t.Fatalf("the other pull failed with the canceled one: %v", err)
	}
	if n := r.count("GET", "/blobs/"+slow); n != 1 {
		t.Errorf("layer fetched %d times, want once", n)
	}

	// Everyone gives up: the download is abandoned and cleaned up.
	push(t, r.host+"/team/slow:2", testImage(t, v1.Config{}, layer2), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Pull(ctx, r.host+"/team/slow:2", Credentials{}, nil)
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled pull: %v", err)
	}
	waitFor(t, func() bool {
		entries, _ := os.ReadDir(filepath.Join(s.cfg.Dir, tmpDir))
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(entries) == 0 && len(s.flights) == 0
	})
	close(gate2)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzUnpackLayer feeds arbitrary bytes (a layer is outside input) to the unpacker: it
// must not panic and must never write outside the layer directory.
func FuzzUnpackLayer(f *testing.F) {
	f.Add(tarBytes(&testing.T{}, reg("a", "b"), symlink("l", "/"), reg("l/x", "y"), reg(".wh.z", ""), reg("d/.wh..wh..opq", "")))
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		layer := filepath.Join(base, "layer")
		if err := os.Mkdir(layer, 0o755); err != nil {
			t.Fatal(err)
		}
		unpackLayer(context.Background(), bytes.NewReader(data), layer, UIDMap{Start: testShift, Size: DefaultUIDMapSize})
		entries, err := os.ReadDir(base)
		if err != nil || len(entries) != 1 {
			t.Fatalf("the unpacker wrote beside the layer: %v %v", entries, err)
		}
	})
}
