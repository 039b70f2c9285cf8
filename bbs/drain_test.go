package bbs_test

import (
	"context"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// TestDrainCell: the operator drains a present cell over the API; the cell sees cell_changed
// with draining on its event stream, its later heartbeats do not undo the drain, and only the
// operator may ask for it.
func TestDrainCell(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	op, brain, cellA := e.client("operator"), e.client("brain"), e.client("cell:cell-a")

	if _, err := op.DrainCell(ctx, "cell-a"); !models.IsNotFound(err) {
		t.Fatalf("DrainCell of an absent cell = %v, want NotFound", err)
	}
	if err := cellA.Heartbeat(ctx, testCell("cell-a"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	rev, err := op.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cellA.DrainCell(ctx, "cell-a"); !models.IsForbidden(err) {
		t.Fatalf("a cell draining itself over the API = %v, want Forbidden", err)
	}
	if _, err := brain.DrainCell(ctx, "cell-a"); !models.IsForbidden(err) {
		t.Fatalf("the brain draining a cell = %v, want Forbidden", err)
	}
	got, err := op.DrainCell(ctx, "cell-a")
	if err != nil || !got.Draining || got.CellID != "cell-a" {
		t.Fatalf("DrainCell = %+v, %v; want cell-a draining", got, err)
	}

	seen := make(chan *models.CellPresence, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cellA.Events(wctx, store.EventFilter{CellID: "cell-a"}, rev, func(ev store.Event) error {
		if ev.Type == store.EventCellChanged {
			seen <- ev.Cell
			cancel()
		}
		return nil
	})
	select {
	case c := <-seen:
		if !c.Draining {
			t.Fatalf("cell_changed carries %+v, want draining", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cell saw no cell_changed event after the drain")
	}

	// A heartbeat that says "not draining" keeps the drain.
	if err := cellA.Heartbeat(ctx, testCell("cell-a"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c, err := op.Cell(ctx, "cell-a"); err != nil || !c.Draining {
		t.Fatalf("Cell after a later heartbeat = %+v, %v; want still draining", c, err)
	}
	// Draining twice is harmless.
	if c, err := op.DrainCell(ctx, "cell-a"); err != nil || !c.Draining {
		t.Fatalf("second DrainCell = %+v, %v", c, err)
	}
}
