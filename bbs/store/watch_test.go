package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

var errStop = errors.New("stop watching")

// describe names an event by its type and record, e.g. "actual_lrp_changed web/0".
func describe(e store.Event) string {
	switch {
	case e.DesiredLRP != nil:
		return fmt.Sprintf("%s %s", e.Type, e.DesiredLRP.ProcessGuid)
	case e.ActualLRP != nil:
		return fmt.Sprintf("%s %s/%d", e.Type, e.ActualLRP.ProcessGuid, e.ActualLRP.Index)
	case e.Task != nil:
		return fmt.Sprintf("%s %s", e.Type, e.Task.TaskGuid)
	case e.Cell != nil:
		return fmt.Sprintf("%s %s", e.Type, e.Cell.CellID)
	}
	return string(e.Type)
}

// collect watches from rev with filter until an event at or after until arrives.
func collect(t *testing.T, s *store.Store, from int64, filter store.EventFilter, until int64) []store.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []store.Event
	err := s.Watch(ctx, from, filter, func(e store.Event) error {
		got = append(got, e)
		if e.Revision >= until {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Watch(from %d, %+v) = %v after %d events", from, filter, err, len(got))
	}
	return got
}

func describeAll(events []store.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = describe(e)
	}
	return out
}

func TestWatchDeliversEveryChangeInOrder(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	start := must[int64](t)(s.Revision(ctx))

	ik := models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "cell-a"}
	web0 := lrpKey("web", 0)
	one := int32(1)
	steps := []struct {
		do   func() error
		want []string
	}{
		{func() error { _, err := s.DesireLRP(ctx, desiredLRP("web", 2)); return err },
			[]string{"desired_lrp_created web", "actual_lrp_created web/0", "actual_lrp_created web/1"}},
		{func() error { _, err := s.DesireLRP(ctx, desiredLRP("other", 1)); return err },
			[]string{"desired_lrp_created other", "actual_lrp_created other/0"}},
		{func() error { _, err := s.PlaceActualLRP(ctx, web0, "cell-a", 0); return err }, []string{"actual_lrp_changed web/0"}},
		{func() error { _, err := s.PlaceActualLRP(ctx, lrpKey("other", 0), "cell-b", 0); return err }, []string{"actual_lrp_changed other/0"}},
		{func() error { return s.Heartbeat(ctx, cell("cell-a"), time.Minute) }, []string{"cell_appeared cell-a"}},
		{func() error { return s.Heartbeat(ctx, cell("cell-b"), time.Minute) }, []string{"cell_appeared cell-b"}},
		{func() error { _, err := s.DesireTask(ctx, task("t1")); return err }, []string{"task_created t1"}},
		{func() error { _, err := s.PlaceTask(ctx, "t1", "cell-a", 0); return err }, []string{"task_changed t1"}},
		{func() error { _, err := s.ClaimActualLRP(ctx, web0, ik); return err }, []string{"actual_lrp_changed web/0"}},
		{func() error { _, err := s.StartActualLRP(ctx, web0, ik, netInfo); return err }, []string{"actual_lrp_changed web/0"}},
		{func() error { c := cell("cell-a"); c.Draining = true; return s.Heartbeat(ctx, c, time.Minute) }, []string{"cell_changed cell-a"}},
		{func() error {
			_, err := s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &one}, 0)
			return err
		}, []string{"desired_lrp_changed web", "actual_lrp_removed web/1"}},
		{func() error { return s.RemoveCell(ctx, "cell-b") }, []string{"cell_disappeared cell-b"}},
		{func() error { return s.RemoveDesiredLRP(ctx, "other") }, []string{"desired_lrp_removed other", "actual_lrp_removed other/0"}},
		{func() error { _, err := s.CrashActualLRP(ctx, web0, ik, "exit 1"); return err }, []string{"actual_lrp_changed web/0"}},
	}
	var want []string
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want = append(want, st.want...)
	}
	end := must[int64](t)(s.Revision(ctx))

	all := collect(t, s, start, store.EventFilter{}, end)
	if got := describeAll(all); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, e := range all {
		if i > 0 && e.Revision < all[i-1].Revision {
			t.Fatalf("event %d (%s) at revision %d after revision %d", i, describe(e), e.Revision, all[i-1].Revision)
		}
		switch e.Type {
		case store.EventActualLRPChanged, store.EventActualLRPCreated:
			if e.ActualLRP.Revision != e.Revision {
				t.Fatalf("event %s: record revision %d, event revision %d", describe(e), e.ActualLRP.Revision, e.Revision)
			}
		}
		if e.Type == store.EventActualLRPChanged && e.PreviousActualLRP == nil {
			t.Fatalf("event %s has no previous record", describe(e))
		}
		if e.Type == store.EventCellDisappeared && e.Cell.Zone != "z1" {
			t.Fatalf("cell_disappeared carries %+v, want the last presence", e.Cell)
		}
		if e.Type == store.EventActualLRPRemoved && e.ActualLRP.Domain != "apps" {
			t.Fatalf("removal %s carries %+v, want the last record", describe(e), e.ActualLRP)
		}
	}
	crash := all[len(all)-1]
	if crash.ActualLRP.State != models.ActualLRPStateCrashed || crash.PreviousActualLRP.State != models.ActualLRPStateRunning {
		t.Fatalf("last event %+v, want RUNNING → CRASHED", crash)
	}

	t.Run("resume delivers exactly the missed events", func(t *testing.T) {
		for _, cut := range []int{0, 5, 9, len(all) - 2} {
			from := all[cut].Revision
			var wantTail []string
			for _, e := range all {
				if e.Revision > from {
					wantTail = append(wantTail, describe(e))
				}
			}
			got := describeAll(collect(t, s, from, store.EventFilter{}, end))
			if strings.Join(got, "\n") != strings.Join(wantTail, "\n") {
				t.Fatalf("from %d:\n%s\nwant:\n%s", from, strings.Join(got, "\n"), strings.Join(wantTail, "\n"))
			}
		}
	})

	for _, tc := range []struct {
		name   string
		filter store.EventFilter
		want   []string
	}{
		{"cell", store.EventFilter{CellID: "cell-a"}, []string{
			"actual_lrp_changed web/0", "cell_appeared cell-a", "task_changed t1", "actual_lrp_changed web/0",
			"actual_lrp_changed web/0", "cell_changed cell-a", "actual_lrp_changed web/0"}},
		{"process", store.EventFilter{ProcessGuid: "web"}, []string{
			"desired_lrp_created web", "actual_lrp_created web/0", "actual_lrp_created web/1", "actual_lrp_changed web/0",
			"actual_lrp_changed web/0", "actual_lrp_changed web/0", "desired_lrp_changed web", "actual_lrp_removed web/1",
			"actual_lrp_changed web/0"}},
		{"cell and process", store.EventFilter{CellID: "cell-a", ProcessGuid: "web"}, []string{
			"actual_lrp_changed web/0", "actual_lrp_changed web/0", "actual_lrp_changed web/0", "actual_lrp_changed web/0"}},
	} {
		t.Run("filter "+tc.name, func(t *testing.T) {
			got := describeAll(collect(t, s, start, tc.filter, end))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestWatchFromNowAndStopping(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(ctxT(t))

	// From now (0): writes made while watching arrive.
	done := make(chan error, 1)
	seen := make(chan store.Event, 1)
	go func() {
		done <- s.Watch(ctx, 0, store.EventFilter{}, func(e store.Event) error {
			select {
			case seen <- e:
			default:
			}
			return nil
		})
	}()
	for i := 0; ; i++ {
		c := cell("c")
		c.Capacity.Containers = int32(i)
		wantErr(t, s.Heartbeat(ctx, c, time.Minute), nil, "heartbeat")
		select {
		case e := <-seen:
			if e.Cell == nil || e.Cell.CellID != "c" {
				t.Fatalf("first live event %+v", e)
			}
		case <-time.After(100 * time.Millisecond):
			if i < 50 {
				continue
			}
			t.Fatal("no live event after 50 writes")
		}
		break
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}

	wantErr(t, s.Watch(ctxT(t), -1, store.EventFilter{}, func(store.Event) error { return nil }), models.ErrInvalidRecord, "negative revision")
}

// TestWatchCellLeaseExpiry: a cell whose lease runs out yields cell_disappeared with its last
// presence.
func TestWatchCellLeaseExpiry(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := ctxT(t)
	from := must[int64](t)(s.Revision(ctx))
	c := cell("short")
	c.Zone = "z9"
	wantErr(t, s.Heartbeat(ctx, c, time.Second), nil, "heartbeat")

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got []string
	var last *models.CellPresence
	err := s.Watch(wctx, from, store.EventFilter{CellID: "short"}, func(e store.Event) error {
		got = append(got, describe(e))
		if e.Type == store.EventCellDisappeared {
			last = e.Cell
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Watch = %v, events %v", err, got)
	}
	if fmt.Sprint(got) != "[cell_appeared short cell_disappeared short]" || last.Zone != "z9" {
		t.Fatalf("events %v, last presence %+v", got, last)
	}
}

func TestWatchCompacted(t *testing.T) {
	e := startEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	s := newStoreOn(t, e.Client())
	ctx := ctxT(t)
	before := must[int64](t)(s.Revision(ctx))
	for i := range 5 {
		must[*models.Task](t)(s.DesireTask(ctx, task(fmt.Sprintf("t%d", i))))
	}
	now := must[int64](t)(s.Revision(ctx))
	if _, err := e.Client().Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	err := s.Watch(ctx, before, store.EventFilter{}, func(store.Event) error { return nil })
	wantErr(t, err, models.ErrCompacted, "watch from a compacted revision")

	// From the compaction revision on, watching works.
	must[*models.Task](t)(s.DesireTask(ctx, task("after")))
	got := collect(t, s, now, store.EventFilter{}, now+1)
	if fmt.Sprint(describeAll(got)) != "[task_created after]" {
		t.Fatalf("after compaction: %v", describeAll(got))
	}
}

// TestDataSurvivesRestart stops the embedded etcd and starts it again on the same data dir.
func TestDataSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	opts := store.Options{Prefix: "/restart/"}
	e := startEtcd(t, dir)
	s := store.New(e.Client(), opts)
	ctx := ctxT(t)
	lrp := must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 2)))
	placed := must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, lrpKey("web", 1), "cell-a", 0))
	tk := must[*models.Task](t)(s.DesireTask(ctx, task("t")))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2 := startEtcd(t, dir)
	s2 := store.New(e2.Client(), opts)
	got := must[*models.DesiredLRP](t)(s2.DesiredLRP(ctx, "web"))
	if got.Revision != lrp.Revision || got.Instances != 2 {
		t.Fatalf("after restart: %+v, want revision %d", got, lrp.Revision)
	}
	inst := instances(t, s2, "web")
	if len(inst) != 2 || inst[1].CellID != "cell-a" || inst[1].Revision != placed.Revision {
		t.Fatalf("after restart: instances %v", inst)
	}
	if gt := must[*models.Task](t)(s2.Task(ctx, "t")); gt.Revision != tk.Revision {
		t.Fatalf("after restart: task %+v", gt)
	}
	// And it keeps working: the next transition compares against the kept revision.
	must[*models.ActualLRP](t)(s2.PlaceActualLRP(ctx, lrpKey("web", 0), "cell-b", inst[0].Revision))
}
