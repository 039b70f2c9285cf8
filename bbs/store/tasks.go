package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// MaxTaskResultBytes bounds the result a cell reports for a task: the first 10 KiB of its
// result_file.
const MaxTaskResultBytes = 10 << 10

// CancelledReason is the failure reason of a cancelled task.
const CancelledReason = "task was cancelled"

func encodeTask(t *models.Task) (string, error) {
	c := *t
	c.Revision = 0
	return encode(&c)
}

func decodeTask(kv *mvccpb.KeyValue) (*models.Task, error) {
	var t models.Task
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return nil, decodeErr(kv.Key, err)
	}
	t.Revision = kv.ModRevision
	return &t, nil
}

func taskName(guid string) string { return "task " + guid }

// DesireTask stores task as a new PENDING task. The system fields (state, cell, outcome,
// rejections, time stamps) are set by the store whatever the caller sent.
func (s *Store) DesireTask(ctx context.Context, task *models.Task) (*models.Task, error) {
	if task == nil {
		return nil, &models.FieldError{Field: "body", Reason: "a task is required"}
	}
	rec := *task
	now := s.now()
	rec.State = models.TaskStatePending
	rec.CellID = ""
	rec.Failed = false
	rec.FailureReason = ""
	rec.Result = ""
	rec.RejectionCount = 0
	rec.RejectionReason = ""
	rec.PlacementError = ""
	rec.CreatedAt = now
	rec.UpdatedAt = now
	rec.FirstCompletedAt = 0
	rec.Revision = 0
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	val, err := encodeTask(&rec)
	if err != nil {
		return nil, err
	}
	what := "desire " + taskName(rec.TaskGuid)
	key := s.keys.taskKey(rec.TaskGuid)
	resp, err := s.txn(ctx, what, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, clientv3.OpPut(key, val))
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", what, models.ErrAlreadyExists)
	}
	rec.Revision = resp.Header.Revision
	return &rec, nil
}

// Task returns one task.
func (s *Store) Task(ctx context.Context, taskGuid string) (*models.Task, error) {
	kv, err := s.get(ctx, s.keys.taskKey(taskGuid), taskName(taskGuid))
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, notFound(taskName(taskGuid))
	}
	return decodeTask(kv)
}

// Tasks lists the tasks matching filter, in task guid order.
func (s *Store) Tasks(ctx context.Context, filter TaskFilter) ([]*models.Task, int64, error) {
	var cellFrag, domainFrag []byte
	if filter.CellID != "" {
		cellFrag = jsonField("cell_id", filter.CellID)
	}
	if filter.Domain != "" {
		domainFrag = jsonField("domain", filter.Domain)
	}
	var out []*models.Task
	rev, err := s.list(ctx, s.keys.tasks, "tasks", func(kv *mvccpb.KeyValue) error {
		if cellFrag != nil && !bytes.Contains(kv.Value, cellFrag) {
			return nil
		}
		if domainFrag != nil && !bytes.Contains(kv.Value, domainFrag) {
			return nil
		}
		t, err := decodeTask(kv)
		if err != nil {
			return err
		}
		if (filter.CellID != "" && t.CellID != filter.CellID) || (filter.Domain != "" && t.Domain != filter.Domain) {
			return nil
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// transitionTask is the read-validate-compare-and-swap loop of a task. decide gets the
// current task and returns the next one (nil to return cur unchanged) or an error. The state
// change is checked with models.ValidateTaskTransition before the write.
func (s *Store) transitionTask(ctx context.Context, what, taskGuid string, expectRevision int64,
	decide func(cur *models.Task) (*models.Task, error),
) (*models.Task, error) {
	key := s.keys.taskKey(taskGuid)
	var out *models.Task
	err := s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, taskName(taskGuid))
		if err != nil {
			return false, err
		}
		if kv == nil {
			return false, notFound(taskName(taskGuid))
		}
		if expectRevision != 0 && kv.ModRevision != expectRevision {
			return false, conflict(what, expectRevision, kv.ModRevision)
		}
		cur, err := decodeTask(kv)
		if err != nil {
			return false, err
		}
		next, err := decide(cur)
		if err != nil {
			return false, err
		}
		if next == nil {
			out = cur
			return true, nil
		}
		if err := models.ValidateTaskTransition(cur.State, next.State); err != nil {
			return false, nameTask(err, taskGuid)
		}
		next.UpdatedAt = s.now()
		if next.State == models.TaskStateCompleted && next.FirstCompletedAt == 0 {
			next.FirstCompletedAt = next.UpdatedAt
		}
		val, err := encodeTask(next)
		if err != nil {
			return false, err
		}
		resp, err := s.txn(ctx, what, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}, clientv3.OpPut(key, val))
		if err != nil {
			return false, err
		}
		if !resp.Succeeded {
			if expectRevision != 0 {
				return false, conflict(what, expectRevision, 0)
			}
			return false, nil
		}
		next.Revision = resp.Header.Revision
		out = next
		return true, nil
	})
	return out, err
}

// nameTask puts the task's guid into a *models.TransitionError from the models functions.
func nameTask(err error, guid string) error {
	if te, ok := err.(*models.TransitionError); ok {
		c := *te
		c.Record = taskName(guid)
		return &c
	}
	return err
}

func refuseTask(guid, from, to, reason string) error {
	return refuse(taskName(guid), from, to, reason)
}

// PlaceTask records the auctioneer's placement of a PENDING task on cellID.
func (s *Store) PlaceTask(ctx context.Context, taskGuid, cellID string, expectRevision int64) (*models.Task, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return nil, err
	}
	return s.transitionTask(ctx, "place "+taskName(taskGuid), taskGuid, expectRevision, func(cur *models.Task) (*models.Task, error) {
		if cur.State != models.TaskStatePending {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStatePending, "only a PENDING task is placed")
		}
		n := *cur
		n.CellID = cellID
		n.PlacementError = ""
		return &n, nil
	})
}

// FailTaskPlacement records why the auctioneer could not place a PENDING task.
func (s *Store) FailTaskPlacement(ctx context.Context, taskGuid, reason string, expectRevision int64) (*models.Task, error) {
	if err := requireField("placement_error", reason); err != nil {
		return nil, err
	}
	return s.transitionTask(ctx, "fail placement of "+taskName(taskGuid), taskGuid, expectRevision, func(cur *models.Task) (*models.Task, error) {
		if cur.State != models.TaskStatePending {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStatePending, "only a PENDING task has a placement")
		}
		n := *cur
		n.CellID = ""
		n.PlacementError = reason
		return &n, nil
	})
}

// StartTask: the cell cellID starts the PENDING task placed on it. A task already RUNNING on
// cellID returns shouldStart false (the cell retried); one RUNNING elsewhere is Forbidden.
func (s *Store) StartTask(ctx context.Context, taskGuid, cellID string) (bool, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return false, err
	}
	what := "start " + taskName(taskGuid)
	shouldStart := false
	_, err := s.transitionTask(ctx, what, taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		shouldStart = false
		switch {
		case cur.State == models.TaskStateRunning && cur.CellID == cellID:
			return nil, nil
		case (cur.State == models.TaskStatePending || cur.State == models.TaskStateRunning) && cur.CellID != cellID:
			return nil, forbidden(what, fmt.Sprintf("%s on cell %q, not on %q", cur.State, cur.CellID, cellID))
		}
		n := *cur
		n.State = models.TaskStateRunning
		shouldStart = true
		return &n, nil
	})
	if err != nil {
		return false, err
	}
	return shouldStart, nil
}

// RejectTask: the cell cellID cannot start the PENDING task placed on it. The task goes back
// to PENDING unplaced with rejection_count+1; at models.MaxTaskRejections it completes as
// failed with reason.
func (s *Store) RejectTask(ctx context.Context, taskGuid, cellID, reason string) (*models.Task, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return nil, err
	}
	if err := requireField("rejection_reason", reason); err != nil {
		return nil, err
	}
	what := "reject " + taskName(taskGuid)
	return s.transitionTask(ctx, what, taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		if cur.State != models.TaskStatePending {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStatePending, "only a PENDING task can be rejected; a task that started runs at most once")
		}
		if cur.CellID != cellID {
			return nil, forbidden(what, fmt.Sprintf("placed on cell %q, not on %q", cur.CellID, cellID))
		}
		n := *cur
		n.CellID = ""
		n.RejectionCount++
		n.RejectionReason = reason
		n.State = models.TaskStatePending
		if n.RejectionCount >= models.MaxTaskRejections {
			n.State = models.TaskStateCompleted
			n.Failed = true
			n.FailureReason = reason
		}
		return &n, nil
	})
}

// CompleteTask: the task RUNNING on cellID finished with the given outcome.
func (s *Store) CompleteTask(ctx context.Context, taskGuid, cellID string, failed bool, failureReason, result string) (*models.Task, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return nil, err
	}
	if len(result) > MaxTaskResultBytes {
		return nil, &models.FieldError{Field: "result", Reason: fmt.Sprintf("is %d bytes long; the limit is 10 KiB", len(result))}
	}
	if failed && failureReason == "" {
		return nil, &models.FieldError{Field: "failure_reason", Reason: "is required when the task failed"}
	}
	what := "complete " + taskName(taskGuid)
	return s.transitionTask(ctx, what, taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		if cur.State == models.TaskStateRunning && cur.CellID != cellID {
			return nil, forbidden(what, fmt.Sprintf("running on cell %q, not on %q", cur.CellID, cellID))
		}
		if cur.State != models.TaskStateRunning {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStateCompleted, "only a RUNNING task is completed by its cell")
		}
		n := *cur
		n.State = models.TaskStateCompleted
		n.Failed = failed
		n.FailureReason = ""
		if failed {
			n.FailureReason = failureReason
		}
		n.Result = result
		return &n, nil
	})
}

// FailTask (brain): a PENDING or RUNNING task completes as failed with reason.
func (s *Store) FailTask(ctx context.Context, taskGuid, reason string) (*models.Task, error) {
	if err := requireField("failure_reason", reason); err != nil {
		return nil, err
	}
	return s.failTask(ctx, "fail "+taskName(taskGuid), taskGuid, reason)
}

// CancelTask (operator): a PENDING or RUNNING task completes as failed, "task was cancelled".
// The cell running it sees the change on its event stream and stops the container.
func (s *Store) CancelTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return s.failTask(ctx, "cancel "+taskName(taskGuid), taskGuid, CancelledReason)
}

func (s *Store) failTask(ctx context.Context, what, taskGuid, reason string) (*models.Task, error) {
	return s.transitionTask(ctx, what, taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		if cur.State != models.TaskStatePending && cur.State != models.TaskStateRunning {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStateCompleted, "only a PENDING or RUNNING task can fail")
		}
		n := *cur
		n.State = models.TaskStateCompleted
		n.Failed = true
		n.FailureReason = reason
		n.Result = ""
		return &n, nil
	})
}

// ResolvingTask: a client resolves a COMPLETED task (COMPLETED → RESOLVING).
func (s *Store) ResolvingTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return s.transitionTask(ctx, "resolve "+taskName(taskGuid), taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		n := *cur
		n.State = models.TaskStateResolving
		return &n, nil
	})
}

// UnresolveTask (brain): RESOLVING → COMPLETED, for a client that resolved and vanished.
func (s *Store) UnresolveTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return s.transitionTask(ctx, "unresolve "+taskName(taskGuid), taskGuid, 0, func(cur *models.Task) (*models.Task, error) {
		if cur.State != models.TaskStateResolving {
			return nil, refuseTask(taskGuid, cur.State, models.TaskStateCompleted, "only a RESOLVING task is unresolved")
		}
		n := *cur
		n.State = models.TaskStateCompleted
		return &n, nil
	})
}

// DeleteTask deletes a RESOLVING task, or with force a COMPLETED one (models.CanDeleteTask).
func (s *Store) DeleteTask(ctx context.Context, taskGuid string, force bool) error {
	what := "delete " + taskName(taskGuid)
	key := s.keys.taskKey(taskGuid)
	return s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, taskName(taskGuid))
		if err != nil {
			return false, err
		}
		if kv == nil {
			return false, notFound(taskName(taskGuid))
		}
		cur, err := decodeTask(kv)
		if err != nil {
			return false, err
		}
		if err := models.CanDeleteTask(cur.State, force); err != nil {
			return false, nameTask(err, taskGuid)
		}
		resp, err := s.txn(ctx, what, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}, clientv3.OpDelete(key))
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	})
}
