package store_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func TestTaskCRUDAndFilters(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)

	in := task("t1")
	in.State = models.TaskStateCompleted // system fields from the caller are ignored
	in.CellID = "cell-x"
	created, err := s.DesireTask(ctx, in)
	wantErr(t, err, nil, "desire")
	if created.State != models.TaskStatePending || created.CellID != "" || created.CreatedAt == 0 || created.Revision == 0 {
		t.Fatalf("created = %+v", created)
	}
	_, err = s.DesireTask(ctx, task("t1"))
	wantErr(t, err, models.ErrAlreadyExists, "desire twice")
	_, err = s.DesireTask(ctx, task(""))
	wantErr(t, err, models.ErrInvalidRecord, "desire invalid")

	got := must[*models.Task](t)(s.Task(ctx, "t1"))
	if got.Revision != created.Revision || got.Domain != "staging" {
		t.Fatalf("Task = %+v", got)
	}
	_, err = s.Task(ctx, "nope")
	wantErr(t, err, models.ErrNotFound, "read missing")

	t2 := task("t2")
	t2.Domain = "other"
	must[*models.Task](t)(s.DesireTask(ctx, t2))
	must[*models.Task](t)(s.PlaceTask(ctx, "t2", "cell-a", 0))
	for _, tc := range []struct {
		name   string
		filter store.TaskFilter
		want   string
	}{
		{"all", store.TaskFilter{}, "[t1 t2]"},
		{"domain", store.TaskFilter{Domain: "staging"}, "[t1]"},
		{"cell", store.TaskFilter{CellID: "cell-a"}, "[t2]"},
		{"cell and domain", store.TaskFilter{CellID: "cell-a", Domain: "staging"}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, rev, err := s.Tasks(ctx, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			guids := make([]string, len(list))
			for i, x := range list {
				guids[i] = x.TaskGuid
			}
			if fmt.Sprint(guids) != tc.want || rev == 0 {
				t.Fatalf("Tasks = %v at %d, want %s", guids, rev, tc.want)
			}
		})
	}
}

func TestTaskLifecycle(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	created := must[*models.Task](t)(s.DesireTask(ctx, task("t")))

	// Placement, compared on the revision.
	placed, err := s.PlaceTask(ctx, "t", "cell-a", created.Revision)
	wantErr(t, err, nil, "place")
	_, err = s.PlaceTask(ctx, "t", "cell-b", created.Revision)
	wantErr(t, err, models.ErrConflict, "place with stale revision")
	failedPlacement := must[*models.Task](t)(s.FailTaskPlacement(ctx, "t", "found no compatible cell for required rootfs", placed.Revision))
	if failedPlacement.CellID != "" || failedPlacement.PlacementError == "" || failedPlacement.State != models.TaskStatePending {
		t.Fatalf("failed placement = %+v", failedPlacement)
	}
	must[*models.Task](t)(s.PlaceTask(ctx, "t", "cell-a", 0))

	// Start: only by the cell it is placed on; a repeated start says not to start again.
	_, err = s.StartTask(ctx, "t", "cell-b")
	wantErr(t, err, models.ErrForbidden, "start on another cell")
	ok, err := s.StartTask(ctx, "t", "cell-a")
	if err != nil || !ok {
		t.Fatalf("StartTask = %v, %v; want true", ok, err)
	}
	ok, err = s.StartTask(ctx, "t", "cell-a")
	if err != nil || ok {
		t.Fatalf("repeated StartTask = %v, %v; want false, nil", ok, err)
	}
	_, err = s.StartTask(ctx, "t", "cell-b")
	wantErr(t, err, models.ErrForbidden, "start RUNNING elsewhere")
	_, err = s.PlaceTask(ctx, "t", "cell-b", 0)
	wantErr(t, err, models.ErrInvalidTransition, "place RUNNING")
	_, err = s.RejectTask(ctx, "t", "cell-a", "too late")
	wantErr(t, err, models.ErrInvalidTransition, "reject RUNNING")
	_, err = s.ResolvingTask(ctx, "t")
	wantErr(t, err, models.ErrInvalidTransition, "resolve RUNNING")
	wantErr(t, s.DeleteTask(ctx, "t", true), models.ErrInvalidTransition, "delete RUNNING")

	// Complete: only by its cell, with a bounded result.
	_, err = s.CompleteTask(ctx, "t", "cell-b", false, "", "")
	wantErr(t, err, models.ErrForbidden, "complete from another cell")
	_, err = s.CompleteTask(ctx, "t", "cell-a", false, "", strings.Repeat("x", store.MaxTaskResultBytes+1))
	wantErr(t, err, models.ErrInvalidRecord, "complete with oversized result")
	done, err := s.CompleteTask(ctx, "t", "cell-a", false, "", "droplet-guid")
	wantErr(t, err, nil, "complete")
	if done.State != models.TaskStateCompleted || done.Failed || done.Result != "droplet-guid" || done.FirstCompletedAt == 0 {
		t.Fatalf("completed = %+v", done)
	}
	_, err = s.CompleteTask(ctx, "t", "cell-a", false, "", "")
	wantErr(t, err, models.ErrInvalidTransition, "complete twice")
	_, err = s.CancelTask(ctx, "t")
	wantErr(t, err, models.ErrInvalidTransition, "cancel COMPLETED")
	wantErr(t, s.DeleteTask(ctx, "t", false), models.ErrInvalidTransition, "delete COMPLETED without force")

	// Resolve, unresolve, resolve, delete.
	_, err = s.UnresolveTask(ctx, "t")
	wantErr(t, err, models.ErrInvalidTransition, "unresolve COMPLETED")
	must[*models.Task](t)(s.ResolvingTask(ctx, "t"))
	_, err = s.ResolvingTask(ctx, "t")
	wantErr(t, err, models.ErrInvalidTransition, "resolve twice")
	back := must[*models.Task](t)(s.UnresolveTask(ctx, "t"))
	if back.State != models.TaskStateCompleted || back.FirstCompletedAt != done.FirstCompletedAt {
		t.Fatalf("unresolved = %+v, want COMPLETED with the first completion time kept", back)
	}
	must[*models.Task](t)(s.ResolvingTask(ctx, "t"))
	wantErr(t, s.DeleteTask(ctx, "t", false), nil, "delete RESOLVING")
	wantErr(t, s.DeleteTask(ctx, "t", false), models.ErrNotFound, "delete twice")
}

func TestTaskRejectionsFailAtLimit(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.Task](t)(s.DesireTask(ctx, task("t")))

	_, err := s.RejectTask(ctx, "t", "cell-a", "not placed here")
	wantErr(t, err, models.ErrForbidden, "reject unplaced")
	for i := int32(1); i <= models.MaxTaskRejections; i++ {
		must[*models.Task](t)(s.PlaceTask(ctx, "t", "cell-a", 0))
		got, err := s.RejectTask(ctx, "t", "cell-a", fmt.Sprintf("no room %d", i))
		wantErr(t, err, nil, "reject")
		if got.RejectionCount != i || got.CellID != "" {
			t.Fatalf("after rejection %d: %+v", i, got)
		}
		wantState, wantFailed := models.TaskStatePending, false
		if i == models.MaxTaskRejections {
			wantState, wantFailed = models.TaskStateCompleted, true
		}
		if got.State != wantState || got.Failed != wantFailed {
			t.Fatalf("after rejection %d: state %s failed %v, want %s %v", i, got.State, got.Failed, wantState, wantFailed)
		}
	}
	final := must[*models.Task](t)(s.Task(ctx, "t"))
	if final.FailureReason != "no room 3" {
		t.Fatalf("failure reason %q", final.FailureReason)
	}
	// A forced delete (the converger's purge) removes a COMPLETED task.
	wantErr(t, s.DeleteTask(ctx, "t", true), nil, "force delete COMPLETED")
}

func TestTaskFailAndCancel(t *testing.T) {
	tests := []struct {
		name    string
		running bool
		op      func(s *store.Store) (*models.Task, error)
		reason  string
	}{
		{"fail pending", false, func(s *store.Store) (*models.Task, error) {
			return s.FailTask(ctxT(t), "t", "not started within time limit")
		}, "not started within time limit"},
		{"fail running", true, func(s *store.Store) (*models.Task, error) {
			return s.FailTask(ctxT(t), "t", "cell disappeared before completion")
		}, "cell disappeared before completion"},
		{"cancel pending", false, func(s *store.Store) (*models.Task, error) { return s.CancelTask(ctxT(t), "t") }, store.CancelledReason},
		{"cancel running", true, func(s *store.Store) (*models.Task, error) { return s.CancelTask(ctxT(t), "t") }, store.CancelledReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := ctxT(t)
			must[*models.Task](t)(s.DesireTask(ctx, task("t")))
			if tt.running {
				must[*models.Task](t)(s.PlaceTask(ctx, "t", "cell-a", 0))
				must[bool](t)(s.StartTask(ctx, "t", "cell-a"))
			}
			got, err := tt.op(s)
			wantErr(t, err, nil, tt.name)
			if got.State != models.TaskStateCompleted || !got.Failed || got.FailureReason != tt.reason {
				t.Fatalf("%s = %+v", tt.name, got)
			}
			_, err = tt.op(s)
			wantErr(t, err, models.ErrInvalidTransition, tt.name+" twice")
		})
	}
}
