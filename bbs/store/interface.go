package store

import (
	"context"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// Interface is everything the BBS server asks of the store. *Store implements it over etcd.
//
// Every state transition is one etcd transaction that compares the record's mod revision: two
// writers never both win. Methods that take expectRevision refuse with models.ErrConflict when
// it is non-zero and the record's revision differs; with 0 they retry internally on a concurrent
// change, re-validating the transition each time against the fresh record.
//
// Errors carry the classes of package models (IsNotFound, IsAlreadyExists, IsInvalidRecord,
// IsInvalidTransition, IsConflict, IsLockHeld, IsCompacted).
//
// Retiring an instance deletes its record; the cell that runs it sees the removal on its event
// stream and stops the container (a container with no record is stopped).
type Interface interface {
	// ---- Desired LRPs (operator) ----

	// DesireLRP validates and stores lrp and creates an UNCLAIMED ORDINARY ActualLRP for each
	// index. Errors: InvalidRecord, AlreadyExists.
	DesireLRP(ctx context.Context, lrp *models.DesiredLRP) (*models.DesiredLRP, error)
	// DesiredLRP returns one record. Errors: NotFound.
	DesiredLRP(ctx context.Context, processGuid string) (*models.DesiredLRP, error)
	// DesiredLRPs lists records matching filter and the etcd revision they were read at.
	DesiredLRPs(ctx context.Context, filter DesiredLRPFilter) ([]*models.DesiredLRP, int64, error)
	// UpdateDesiredLRP applies update. Scaling up creates UNCLAIMED instances for the new
	// indices; scaling down retires indices >= the new count. Errors: NotFound,
	// InvalidRecord, Conflict (expectRevision stale).
	UpdateDesiredLRP(ctx context.Context, processGuid string, update models.DesiredLRPUpdate, expectRevision int64) (*models.DesiredLRP, error)
	// RemoveDesiredLRP deletes the record and retires all its instances. Errors: NotFound.
	RemoveDesiredLRP(ctx context.Context, processGuid string) error

	// ---- Actual LRPs: reads ----

	// ActualLRPs lists instances matching filter (every presence) and the read revision.
	ActualLRPs(ctx context.Context, filter ActualLRPFilter) ([]*models.ActualLRP, int64, error)

	// ---- Actual LRPs: brain ----

	// CreateUnclaimedActualLRP creates an UNCLAIMED ORDINARY instance for a missing index.
	// Errors: NotFound (no such DesiredLRP), AlreadyExists, InvalidRecord (index out of range).
	CreateUnclaimedActualLRP(ctx context.Context, key models.ActualLRPKey) (*models.ActualLRP, error)
	// PlaceActualLRP records the auctioneer's decision on an UNCLAIMED ORDINARY instance:
	// cell_id is set and placement_error cleared. Errors: NotFound, InvalidTransition (not
	// UNCLAIMED), Conflict.
	PlaceActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, expectRevision int64) (*models.ActualLRP, error)
	// FailActualLRPPlacement sets placement_error on an UNCLAIMED ORDINARY instance and clears
	// its cell_id. Errors: NotFound, InvalidTransition, Conflict.
	FailActualLRPPlacement(ctx context.Context, key models.ActualLRPKey, reason string, expectRevision int64) (*models.ActualLRP, error)
	// RestartActualLRP moves a CRASHED ORDINARY instance back to UNCLAIMED (crash count kept)
	// so it is auctioned again. Errors: NotFound, InvalidTransition, Conflict.
	RestartActualLRP(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error)
	// RetireActualLRP deletes the instance record of the given presence (any state).
	// Errors: NotFound, Conflict.
	RetireActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, expectRevision int64) error
	// MarkActualLRPSuspect, for an instance whose cell vanished: in one transaction the ORDINARY
	// RUNNING (or CLAIMED) record becomes a SUSPECT record (kept routable) and a new ORDINARY
	// UNCLAIMED record replaces it. Returns the new ORDINARY record.
	// Errors: NotFound, InvalidTransition, Conflict.
	MarkActualLRPSuspect(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error)

	// ApplyActualLRPOps applies many of the brain's instance writes above in one call (at most
	// MaxActualLRPOps): each operation as its single call would, with a result of its own, so
	// that a refused operation does not fail the others. Operations on the same index are
	// applied in order. Errors (of the call as a whole): InvalidRecord (too many operations).
	ApplyActualLRPOps(ctx context.Context, ops []ActualLRPOp) ([]ActualLRPOpResult, error)

	// ---- Actual LRPs: cell (the server checks instanceKey.CellID is the caller's cell) ----

	// ClaimActualLRP: UNCLAIMED placed on instanceKey.CellID (or CLAIMED by the same
	// instance) → CLAIMED. Errors: NotFound, InvalidTransition, Forbidden (placed elsewhere).
	ClaimActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error)
	// ClaimActualLRPWithDesired is ClaimActualLRP answered with the instance's DesiredLRP as
	// it is after the claim, which spares a cell that does not hold the definition a read of
	// it. Errors: ClaimActualLRP's; NotFound when the DesiredLRP is gone (with it, the record).
	ClaimActualLRPWithDesired(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, *models.DesiredLRP, error)
	// StartActualLRP → RUNNING with netInfo (from CLAIMED/RUNNING by the same instance, or
	// UNCLAIMED). Errors: NotFound, InvalidTransition, Forbidden (UNCLAIMED placed on another
	// cell), InvalidRecord (no address).
	StartActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, netInfo models.ActualLRPNetInfo) (*models.ActualLRP, error)
	// CrashActualLRP → CRASHED with reason, crash_count+1, instance key and net info cleared
	// (from CLAIMED/RUNNING by the same instance). An EVACUATING or SUSPECT record of the same
	// instance is removed instead, and that removed record is returned.
	// Errors: NotFound, InvalidTransition.
	CrashActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, reason string) (*models.ActualLRP, error)
	// RejectActualLRP: the cell cannot run an instance placed on it (UNCLAIMED) or that it
	// claimed (CLAIMED by the cell) → UNCLAIMED with cell_id cleared and placement_error =
	// reason. Errors: NotFound, InvalidTransition, Forbidden.
	RejectActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, reason string) (*models.ActualLRP, error)
	// RemoveActualLRP deletes the record of presence held by instanceKey (a cell removing
	// what it stopped). Errors: NotFound, Forbidden (another instance).
	RemoveActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, instanceKey models.ActualLRPInstanceKey) error
	// EvacuateActualLRP, for a draining cell: an ORDINARY RUNNING record held by instanceKey
	// becomes an EVACUATING record and a new ORDINARY UNCLAIMED record is created, in one
	// transaction; an ORDINARY CLAIMED record goes back to UNCLAIMED. Returns the ORDINARY
	// record. Errors: NotFound, InvalidTransition, Forbidden.
	EvacuateActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error)

	// ---- Tasks ----

	// DesireTask validates and stores a PENDING task. Errors: InvalidRecord, AlreadyExists.
	DesireTask(ctx context.Context, task *models.Task) (*models.Task, error)
	// Task returns one task. Errors: NotFound.
	Task(ctx context.Context, taskGuid string) (*models.Task, error)
	// Tasks lists tasks matching filter and the read revision.
	Tasks(ctx context.Context, filter TaskFilter) ([]*models.Task, int64, error)
	// PlaceTask (brain) sets cell_id on a PENDING task and clears placement_error.
	// Errors: NotFound, InvalidTransition, Conflict.
	PlaceTask(ctx context.Context, taskGuid, cellID string, expectRevision int64) (*models.Task, error)
	// FailTaskPlacement (brain) sets placement_error on a PENDING task, cell_id cleared.
	FailTaskPlacement(ctx context.Context, taskGuid, reason string, expectRevision int64) (*models.Task, error)
	// StartTask (cell): PENDING placed on cellID → RUNNING. shouldStart is false when the task
	// is already RUNNING on cellID (idempotent retry). Errors: NotFound, InvalidTransition,
	// Forbidden (placed elsewhere).
	StartTask(ctx context.Context, taskGuid, cellID string) (shouldStart bool, err error)
	// RejectTask (cell): PENDING placed on cellID → PENDING unplaced, rejection_count+1;
	// at models.MaxTaskRejections it completes as failed with the reason.
	RejectTask(ctx context.Context, taskGuid, cellID, reason string) (*models.Task, error)
	// CompleteTask (cell): RUNNING on cellID → COMPLETED with the outcome.
	CompleteTask(ctx context.Context, taskGuid, cellID string, failed bool, failureReason, result string) (*models.Task, error)
	// FailTask (brain): PENDING or RUNNING → COMPLETED, failed, with reason.
	FailTask(ctx context.Context, taskGuid, reason string) (*models.Task, error)
	// CancelTask (operator): PENDING or RUNNING → COMPLETED failed "task was cancelled".
	CancelTask(ctx context.Context, taskGuid string) (*models.Task, error)
	// ResolvingTask: COMPLETED → RESOLVING.
	ResolvingTask(ctx context.Context, taskGuid string) (*models.Task, error)
	// DeleteTask: deletes a RESOLVING task (or, with force from the brain's purge, a COMPLETED one).
	DeleteTask(ctx context.Context, taskGuid string, force bool) error
	// UnresolveTask (brain): RESOLVING → COMPLETED, for a client that resolved and vanished.
	UnresolveTask(ctx context.Context, taskGuid string) (*models.Task, error)

	// ---- Cells ----

	// Heartbeat stores presence under the cell's etcd lease (granted with ttl on the first
	// heartbeat or after expiry, kept alive by each later one). Errors: InvalidRecord.
	Heartbeat(ctx context.Context, presence *models.CellPresence, ttl time.Duration) error
	// Cell returns one present cell. Errors: NotFound.
	Cell(ctx context.Context, cellID string) (*models.CellPresence, error)
	// Cells lists present cells and the read revision.
	Cells(ctx context.Context) ([]*models.CellPresence, int64, error)
	// RemoveCell revokes the cell's lease: it disappears at once. Errors: NotFound.
	RemoveCell(ctx context.Context, cellID string) error

	// ---- Domains ----

	// UpsertDomain marks name fresh for ttl (0 = forever).
	UpsertDomain(ctx context.Context, name string, ttl time.Duration) error
	// Domains lists fresh domains.
	Domains(ctx context.Context) ([]*models.Domain, error)

	// ---- Locks (the brain's leader election through the BBS) ----

	// AcquireLock takes or renews the lock name for owner, held for ttl unless renewed.
	// Errors: LockHeld (with the holder in the message).
	AcquireLock(ctx context.Context, name, owner string, ttl time.Duration) error
	// ReleaseLock releases name if owner holds it (no error otherwise).
	ReleaseLock(ctx context.Context, name, owner string) error
	// LockOwner returns the current holder of name ("" if free).
	LockOwner(ctx context.Context, name string) (string, error)

	// ---- Events ----

	// Watch calls fn for every change after fromRevision (0 = from now) that matches filter,
	// in revision order, until ctx ends or fn returns an error (returned). Errors: Compacted
	// (fromRevision no longer kept: resynchronise with a full read).
	Watch(ctx context.Context, fromRevision int64, filter EventFilter, fn func(Event) error) error
	// Revision returns the store's current revision.
	Revision(ctx context.Context) (int64, error)
}

// DesiredLRPFilter selects DesiredLRPs; zero fields match everything.
type DesiredLRPFilter struct {
	Domain       string
	ProcessGuids []string
}

// ActualLRPFilter selects ActualLRPs; zero fields match everything.
type ActualLRPFilter struct {
	ProcessGuid string
	CellID      string
	Domain      string
	Index       *int32
}

// TaskFilter selects tasks; zero fields match everything.
type TaskFilter struct {
	Domain string
	CellID string
}

// EventFilter selects events; zero fields match everything. CellID matches ActualLRP and task
// events whose record (before or after the change) is on that cell, and that cell's presence
// events. ProcessGuid matches DesiredLRP and ActualLRP events of that process.
type EventFilter struct {
	CellID      string
	ProcessGuid string
}

// EventType names what changed.
type EventType string

// Event types, as carried in the SSE "event:" field.
const (
	EventDesiredLRPCreated EventType = "desired_lrp_created"
	EventDesiredLRPChanged EventType = "desired_lrp_changed"
	EventDesiredLRPRemoved EventType = "desired_lrp_removed"
	EventActualLRPCreated  EventType = "actual_lrp_created"
	EventActualLRPChanged  EventType = "actual_lrp_changed"
	EventActualLRPRemoved  EventType = "actual_lrp_removed"
	EventTaskCreated       EventType = "task_created"
	EventTaskChanged       EventType = "task_changed"
	EventTaskRemoved       EventType = "task_removed"
	EventCellAppeared      EventType = "cell_appeared"
	EventCellChanged       EventType = "cell_changed"
	EventCellDisappeared   EventType = "cell_disappeared"
)

// Event is one change. The record field of its kind holds the value after the change (the last
// value for a removal); Previous* hold the value before a change.
type Event struct {
	Type     EventType `json:"type"`
	Revision int64     `json:"revision"`

	DesiredLRP *models.DesiredLRP   `json:"desired_lrp,omitempty"`
	ActualLRP  *models.ActualLRP    `json:"actual_lrp,omitempty"`
	Task       *models.Task         `json:"task,omitempty"`
	Cell       *models.CellPresence `json:"cell,omitempty"`

	PreviousDesiredLRP *models.DesiredLRP `json:"previous_desired_lrp,omitempty"`
	PreviousActualLRP  *models.ActualLRP  `json:"previous_actual_lrp,omitempty"`
	PreviousTask       *models.Task       `json:"previous_task,omitempty"`
}
