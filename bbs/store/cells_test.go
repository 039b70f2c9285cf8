package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func present(t *testing.T, s *store.Store, id string) bool {
	t.Helper()
	_, err := s.Cell(context.Background(), id)
	if err != nil && !models.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestHeartbeatAndCells(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)

	wantErr(t, s.Heartbeat(ctx, &models.CellPresence{CellID: "c"}, time.Minute), models.ErrInvalidRecord, "invalid presence")
	wantErr(t, s.Heartbeat(ctx, cell("c1"), 0), models.ErrInvalidRecord, "zero ttl")

	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "first heartbeat")
	wantErr(t, s.Heartbeat(ctx, cell("c2"), time.Minute), nil, "second cell")
	rev1 := must[int64](t)(s.Revision(ctx))
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "unchanged heartbeat")
	if rev2 := must[int64](t)(s.Revision(ctx)); rev2 != rev1 {
		t.Fatalf("an unchanged heartbeat wrote (revision %d → %d)", rev1, rev2)
	}
	changed := cell("c1")
	changed.Draining = true
	wantErr(t, s.Heartbeat(ctx, changed, time.Minute), nil, "changed heartbeat")
	got := must[*models.CellPresence](t)(s.Cell(ctx, "c1"))
	if !got.Draining {
		t.Fatalf("Cell = %+v, want the changed presence", got)
	}

	cells, rev, err := s.Cells(ctx)
	if err != nil || len(cells) != 2 || cells[0].CellID != "c1" || cells[1].CellID != "c2" || rev <= rev1 {
		t.Fatalf("Cells = %v at %d, %v", cells, rev, err)
	}

	wantErr(t, s.RemoveCell(ctx, "c1"), nil, "remove")
	_, err = s.Cell(ctx, "c1")
	wantErr(t, err, models.ErrNotFound, "read removed cell")
	wantErr(t, s.RemoveCell(ctx, "c1"), models.ErrNotFound, "remove twice")
	// A removed cell that heartbeats again comes back under a new lease.
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "heartbeat after removal")
	if !present(t, s, "c1") {
		t.Fatal("cell did not come back")
	}
}

// TestCellLeaseExpiry: a cell heartbeating every 300 ms with a 1 s ttl stays for 2.5 s, and
// disappears within a few seconds once it stops.
func TestCellLeaseExpiry(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := ctxT(t)
	ttl := time.Second

	wantErr(t, s.Heartbeat(ctx, cell("alive"), ttl), nil, "heartbeat")
	stop := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(stop) {
		time.Sleep(300 * time.Millisecond)
		if !present(t, s, "alive") {
			t.Fatal("cell vanished while heartbeating")
		}
		wantErr(t, s.Heartbeat(ctx, cell("alive"), ttl), nil, "heartbeat")
	}
	stopped := time.Now()
	waitFor(t, 5*time.Second, "cell disappears after its lease", func() bool { return !present(t, s, "alive") })
	if took := time.Since(stopped); took < ttl-100*time.Millisecond {
		t.Fatalf("cell disappeared %s after its last heartbeat, before its ttl of %s", took, ttl)
	}
	// A late heartbeat after expiry brings it back under a new lease.
	wantErr(t, s.Heartbeat(ctx, cell("alive"), ttl), nil, "heartbeat after expiry")
	if !present(t, s, "alive") {
		t.Fatal("cell not back after a heartbeat")
	}
}

func TestDomains(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := ctxT(t)

	wantErr(t, s.UpsertDomain(ctx, "", 0), models.ErrInvalidRecord, "empty name")
	wantErr(t, s.UpsertDomain(ctx, "a/b", 0), models.ErrInvalidRecord, "name with slash")
	wantErr(t, s.UpsertDomain(ctx, "apps", -time.Second), models.ErrInvalidRecord, "negative ttl")
	wantErr(t, s.UpsertDomain(ctx, "forever", 0), nil, "upsert without ttl")
	wantErr(t, s.UpsertDomain(ctx, "brief", time.Second), nil, "upsert with ttl")
	wantErr(t, s.UpsertDomain(ctx, "brief", time.Second), nil, "refresh with ttl")

	names := func() string {
		ds, err := s.Domains(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.Name
		}
		return fmt.Sprint(out)
	}
	if got := names(); got != "[brief forever]" {
		t.Fatalf("Domains = %s", got)
	}
	waitFor(t, 5*time.Second, "domain with ttl expires", func() bool { return names() == "[forever]" })
}

func TestLocks(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := ctxT(t)
	ttl := time.Second

	owner := func() string { return must[string](t)(s.LockOwner(ctx, "brain")) }
	if o := owner(); o != "" {
		t.Fatalf("free lock has owner %q", o)
	}
	wantErr(t, s.AcquireLock(ctx, "brain", "", ttl), models.ErrInvalidRecord, "empty owner")
	wantErr(t, s.AcquireLock(ctx, "brain", "a", 0), models.ErrInvalidRecord, "zero ttl")
	wantErr(t, s.AcquireLock(ctx, "brain", "a", ttl), nil, "acquire")
	err := s.AcquireLock(ctx, "brain", "b", ttl)
	wantErr(t, err, models.ErrLockHeld, "acquire held lock")
	if err != nil && !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("LockHeld error %q does not name the holder", err)
	}

	// Renewing keeps it past its ttl.
	for range 6 {
		time.Sleep(300 * time.Millisecond)
		wantErr(t, s.AcquireLock(ctx, "brain", "a", ttl), nil, "renew")
	}
	if o := owner(); o != "a" {
		t.Fatalf("owner %q after renewals, want a", o)
	}

	// Releasing by someone else does nothing; by the holder frees it.
	wantErr(t, s.ReleaseLock(ctx, "brain", "b"), nil, "release by another")
	if o := owner(); o != "a" {
		t.Fatalf("owner %q after a stranger's release", o)
	}
	wantErr(t, s.ReleaseLock(ctx, "brain", "a"), nil, "release")
	if o := owner(); o != "" {
		t.Fatalf("owner %q after release", o)
	}

	// An unrenewed lock expires and another owner takes it.
	wantErr(t, s.AcquireLock(ctx, "brain", "b", ttl), nil, "acquire after release")
	waitFor(t, 5*time.Second, "lock expires", func() bool { return owner() == "" })
	wantErr(t, s.AcquireLock(ctx, "brain", "c", ttl), nil, "acquire after expiry")
	if o := owner(); o != "c" {
		t.Fatalf("owner %q, want c", o)
	}
}

// TestDrainCell: DrainCell marks a present cell draining under its lease, later heartbeats do
// not clear it, and an absent cell is NotFound.
func TestDrainCell(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := ctxT(t)

	_, err := s.DrainCell(ctx, "absent")
	wantErr(t, err, models.ErrNotFound, "drain an absent cell")
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "heartbeat")
	got, err := s.DrainCell(ctx, "c1")
	wantErr(t, err, nil, "drain")
	if !got.Draining {
		t.Fatalf("DrainCell = %+v, want draining", got)
	}
	// No change of c1 may follow the heartbeat. (The store's global revision is no witness:
	// other tests' leases expire on the shared etcd meanwhile.)
	rev := must[int64](t)(s.Revision(ctx))
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "heartbeat after the drain")
	if c := must[*models.CellPresence](t)(s.Cell(ctx, "c1")); !c.Draining {
		t.Fatalf("Cell after a heartbeat = %+v, want still draining", c)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	var changes []store.Event
	s.Watch(wctx, rev, store.EventFilter{CellID: "c1"}, func(e store.Event) error {
		changes = append(changes, e)
		return nil
	})
	if len(changes) > 0 {
		t.Fatalf("a heartbeat of a drained cell wrote: %+v", changes[0])
	}
	// The drain lasts for the lease only: a removed cell comes back ready.
	wantErr(t, s.RemoveCell(ctx, "c1"), nil, "remove")
	wantErr(t, s.Heartbeat(ctx, cell("c1"), time.Minute), nil, "heartbeat under a new lease")
	if c := must[*models.CellPresence](t)(s.Cell(ctx, "c1")); c.Draining {
		t.Fatalf("Cell under a new lease = %+v, want not draining", c)
	}
}
