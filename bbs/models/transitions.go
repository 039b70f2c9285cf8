package models

import "fmt"

func isActualLRPState(s string) bool {
	switch s {
	case ActualLRPStateUnclaimed, ActualLRPStateClaimed, ActualLRPStateRunning, ActualLRPStateCrashed:
		return true
	}
	return false
}

func isTaskState(s string) bool {
	switch s {
	case TaskStatePending, TaskStateRunning, TaskStateCompleted, TaskStateResolving:
		return true
	}
	return false
}

// rule says whether the ActualLRP machine allows a (from, to) pair.
type rule int

const (
	refused      rule = iota
	allowed           // by any instance
	sameInstance      // only by the instance that holds the record
)

type statePair struct{ from, to string }

// actualLRPRules is the ActualLRP machine of DESIGN §1; a pair missing here is refused.
var actualLRPRules = map[statePair]rule{
	{ActualLRPStateUnclaimed, ActualLRPStateUnclaimed}: allowed,
	{ActualLRPStateUnclaimed, ActualLRPStateClaimed}:   allowed,
	{ActualLRPStateUnclaimed, ActualLRPStateRunning}:   allowed,

	{ActualLRPStateClaimed, ActualLRPStateUnclaimed}: allowed,
	{ActualLRPStateClaimed, ActualLRPStateClaimed}:   sameInstance,
	{ActualLRPStateClaimed, ActualLRPStateRunning}:   allowed,
	{ActualLRPStateClaimed, ActualLRPStateCrashed}:   sameInstance,

	{ActualLRPStateRunning, ActualLRPStateUnclaimed}: allowed,
	{ActualLRPStateRunning, ActualLRPStateClaimed}:   sameInstance,
	{ActualLRPStateRunning, ActualLRPStateRunning}:   sameInstance,
	{ActualLRPStateRunning, ActualLRPStateCrashed}:   allowed,

	{ActualLRPStateCrashed, ActualLRPStateUnclaimed}: allowed,
	{ActualLRPStateCrashed, ActualLRPStateClaimed}:   allowed,
	{ActualLRPStateCrashed, ActualLRPStateRunning}:   allowed,
}

// refusedActualLRPReasons explains the pairs the machine never allows.
var refusedActualLRPReasons = map[statePair]string{
	{ActualLRPStateUnclaimed, ActualLRPStateCrashed}: "no instance has claimed it, so none can crash",
	{ActualLRPStateCrashed, ActualLRPStateCrashed}:   "it has already crashed",
}

// ValidateActualLRPTransition checks the move of one ActualLRP record from before to after,
// with after's instance key as the instance that asks for it. See
// ValidateActualLRPTransitionBy.
func ValidateActualLRPTransition(before, after *ActualLRP) error {
	if after == nil {
		return &TransitionError{Record: "actual_lrp", Reason: "no record to move to"}
	}
	return ValidateActualLRPTransitionBy(before, after, after.ActualLRPInstanceKey)
}

// ValidateActualLRPTransitionBy checks the move of one ActualLRP record from before to after
// made by actor, the instance (instance_guid and cell_id) that asks for it. Use it when after
// no longer carries that instance's key, as when a crash clears it.
//
// Allowed (DESIGN §1): UNCLAIMED→{UNCLAIMED, CLAIMED, RUNNING}; CLAIMED→{UNCLAIMED,
// CLAIMED (same instance), RUNNING, CRASHED (same instance)}; RUNNING→{UNCLAIMED,
// CLAIMED/RUNNING (same instance), CRASHED}; CRASHED→{UNCLAIMED, CLAIMED, RUNNING}. "Same
// instance" means actor equals before's instance key. The key (process_guid, index) must not
// change. Presence is not part of the machine; its invariants are checked on after.
//
// Errors: a *TransitionError (wrapping ErrInvalidTransition) when the machine refuses the
// move or before holds an unknown state; a *FieldError (wrapping ErrInvalidRecord) when after
// breaks an invariant of its state (see (*ActualLRP).ValidateState).
func ValidateActualLRPTransitionBy(before, after *ActualLRP, actor ActualLRPInstanceKey) error {
	if before == nil || after == nil {
		return &TransitionError{Record: "actual_lrp", Reason: "both the current and the new record are required"}
	}
	record := fmt.Sprintf("actual_lrp %s/%d", before.ProcessGuid, before.Index)
	if after.ProcessGuid != before.ProcessGuid || after.Index != before.Index {
		return &TransitionError{Record: record, From: before.State, To: after.State,
			Reason: fmt.Sprintf("the key cannot change (to %s/%d)", after.ProcessGuid, after.Index)}
	}
	if !isActualLRPState(before.State) {
		return &TransitionError{Record: record, From: before.State, To: after.State,
			Reason: fmt.Sprintf("unknown current state %q", before.State)}
	}
	if isActualLRPState(after.State) {
		pair := statePair{before.State, after.State}
		switch actualLRPRules[pair] {
		case refused:
			return &TransitionError{Record: record, From: before.State, To: after.State, Reason: refusedActualLRPReasons[pair]}
		case sameInstance:
			if actor.InstanceGuid == "" || actor != before.ActualLRPInstanceKey {
				return &TransitionError{Record: record, From: before.State, To: after.State,
					Reason: fmt.Sprintf("only the instance that holds it (instance %q on cell %q) may, not instance %q on cell %q",
						before.InstanceGuid, before.CellID, actor.InstanceGuid, actor.CellID)}
			}
		}
	}
	return after.ValidateState()
}

// ValidateState checks the invariants of a record's state and presence: state is one of the
// four and presence one of the three; placement_error only while UNCLAIMED; an UNCLAIMED
// record has no instance_guid (it may carry the cell_id it was placed on); CLAIMED and RUNNING
// need instance_guid and cell_id; RUNNING needs an address; an EVACUATING record is RUNNING; a
// SUSPECT record is RUNNING or CLAIMED; crash_count is not negative. Errors: a *FieldError.
func (a *ActualLRP) ValidateState() error {
	if a == nil {
		return fieldErr("body", "an actual LRP is required")
	}
	if !isActualLRPState(a.State) {
		return fieldErr("state", "unknown state %q (want UNCLAIMED, CLAIMED, RUNNING or CRASHED)", a.State)
	}
	switch a.Presence {
	case PresenceOrdinary:
	case PresenceEvacuating:
		if a.State != ActualLRPStateRunning {
			return fieldErr("state", "is %s, but an EVACUATING record is always RUNNING", a.State)
		}
	case PresenceSuspect:
		if a.State != ActualLRPStateRunning && a.State != ActualLRPStateClaimed {
			return fieldErr("state", "is %s, but a SUSPECT record is RUNNING or CLAIMED", a.State)
		}
	default:
		return fieldErr("presence", "unknown presence %q (want ORDINARY, EVACUATING or SUSPECT)", a.Presence)
	}
	if a.PlacementError != "" && a.State != ActualLRPStateUnclaimed {
		return fieldErr("placement_error", "is set on a %s record; only an UNCLAIMED one has a placement error", a.State)
	}
	switch a.State {
	case ActualLRPStateUnclaimed:
		if a.InstanceGuid != "" {
			return fieldErr("instance_guid", "is set on an UNCLAIMED record; no instance has claimed it")
		}
	case ActualLRPStateClaimed, ActualLRPStateRunning:
		if a.InstanceGuid == "" {
			return fieldErr("instance_guid", "is required on a %s record", a.State)
		}
		if a.CellID == "" {
			return fieldErr("cell_id", "is required on a %s record", a.State)
		}
		if a.State == ActualLRPStateRunning && a.Address == "" {
			return fieldErr("address", "is required on a RUNNING record")
		}
	}
	return checkNonNegative("crash_count", int64(a.CrashCount))
}

// taskTransitions is the task machine of DESIGN §1; a pair missing here is refused.
var taskTransitions = map[statePair]string{
	{TaskStatePending, TaskStatePending}:     "rejected by a cell or its placement changed",
	{TaskStatePending, TaskStateRunning}:     "started by its cell",
	{TaskStatePending, TaskStateCompleted}:   "failed, cancelled or rejected too often before it started",
	{TaskStateRunning, TaskStateCompleted}:   "finished, failed or cancelled",
	{TaskStateCompleted, TaskStateResolving}: "a client is resolving it",
	{TaskStateResolving, TaskStateCompleted}: "unresolved: the resolving client went away",
}

// ValidateTaskTransition checks a task's move between states. Allowed: PENDING→PENDING
// (rejection, placement), PENDING→RUNNING, PENDING→COMPLETED (fail, cancel, too many
// rejections), RUNNING→COMPLETED, COMPLETED→RESOLVING, RESOLVING→COMPLETED (unresolve).
// Everything else is refused, including RUNNING→RUNNING (an idempotent start is a no-op, not
// a transition) and any way back to PENDING once started (a task runs at most once). Deletion
// is not a transition: see CanDeleteTask. Errors: a *TransitionError with Record "task"; the
// store may set Record to name the task.
func ValidateTaskTransition(from, to string) error {
	if !isTaskState(from) {
		return &TransitionError{Record: "task", From: from, To: to, Reason: fmt.Sprintf("unknown current state %q", from)}
	}
	if !isTaskState(to) {
		return &TransitionError{Record: "task", From: from, To: to, Reason: fmt.Sprintf("unknown state %q", to)}
	}
	if _, ok := taskTransitions[statePair{from, to}]; ok {
		return nil
	}
	var reason string
	switch {
	case to == TaskStatePending:
		reason = "a task that started runs at most once; it never goes back to PENDING"
	case from == to:
		reason = "it is already " + from
	case to == TaskStateRunning:
		reason = "only a PENDING task starts"
	case to == TaskStateResolving:
		reason = "only a COMPLETED task is resolved"
	}
	return &TransitionError{Record: "task", From: from, To: to, Reason: reason}
}

// TaskStateDeleted is the To of a *TransitionError refusing a deletion.
const TaskStateDeleted = "deleted"

// CanDeleteTask reports whether a task in state may be deleted: a RESOLVING task may; with
// force (the converger's purge of completed tasks nobody resolved) a COMPLETED one may too.
// PENDING and RUNNING tasks never may: cancel them first. Errors: a *TransitionError.
func CanDeleteTask(state string, force bool) error {
	switch state {
	case TaskStateResolving:
		return nil
	case TaskStateCompleted:
		if force {
			return nil
		}
		return &TransitionError{Record: "task", From: state, To: TaskStateDeleted, Reason: "resolve it first (COMPLETED→RESOLVING)"}
	case TaskStatePending, TaskStateRunning:
		return &TransitionError{Record: "task", From: state, To: TaskStateDeleted, Reason: "it has not completed; cancel it first"}
	default:
		return &TransitionError{Record: "task", From: state, To: TaskStateDeleted, Reason: fmt.Sprintf("unknown current state %q", state)}
	}
}
