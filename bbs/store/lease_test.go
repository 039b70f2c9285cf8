package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// TestHeartbeatsRenewOverLongLivedStreams: lease renewals reuse keep-alive streams instead of
// opening one each, over every client of the store's pool, keep no more than 64 idle per
// client, and still tell a live lease from a gone one.
//
// The clients are gRPC clients, as of an external etcd: the embedded member's own client is
// in-process and renews without streams (every other heartbeat test runs on it).
func TestHeartbeatsRenewOverLongLivedStreams(t *testing.T) {
	var pool []*clientv3.Client
	for range 2 {
		c, err := shared.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pool = append(pool, c)
	}
	var err error
	s := store.New(pool[0], store.Options{Prefix: freshPrefix(t), Clients: pool[1:]})
	ctx := ctxT(t)

	for i := range 40 {
		wantErr(t, s.Heartbeat(ctx, cell(fmt.Sprintf("c%d", i%4)), time.Minute), nil, "heartbeat")
	}
	// 36 of the 40 renewed a lease, one after the other: one stream per client.
	if n := store.LeaseStreams(s); n < 1 || n > 2 {
		t.Errorf("%d keep-alive streams after sequential renewals, want 1 per client (2)", n)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Heartbeat(ctx, cell(fmt.Sprintf("c%d", i%4)), time.Minute)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		wantErr(t, err, nil, "concurrent heartbeat")
	}
	if n := store.LeaseStreams(s); n > 128 {
		t.Errorf("%d keep-alive streams after 200 concurrent renewals, want at most 64 per client kept", n)
	}

	// A renewal whose caller gives up closes its stream; the next ones still work.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Heartbeat(done, cell("c0"), time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("heartbeat with a cancelled context: %v, want context.Canceled", err)
	}
	wantErr(t, s.Heartbeat(ctx, cell("c0"), time.Minute), nil, "heartbeat after a cancelled one")

	// A revoked lease is told apart: the cell comes back under a new lease.
	wantErr(t, s.RemoveCell(ctx, "c1"), nil, "remove")
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "heartbeat after removal")
	if !present(t, s, "c1") {
		t.Fatal("the removed cell did not come back")
	}
	var cells []*models.CellPresence
	if cells, _, err = s.Cells(ctx); err != nil || len(cells) != 4 {
		t.Fatalf("Cells = %d, %v; want 4", len(cells), err)
	}
}
