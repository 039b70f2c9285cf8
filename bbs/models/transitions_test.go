package models

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The states, enumerated here rather than taken from the code under test.
var (
	actualLRPStates = []string{ActualLRPStateUnclaimed, ActualLRPStateClaimed, ActualLRPStateRunning, ActualLRPStateCrashed}
	taskStates      = []string{TaskStatePending, TaskStateRunning, TaskStateCompleted, TaskStateResolving}
)

// actualLRPMachine is DESIGN §1 written out independently of transitions.go: "any" = allowed
// for any instance, "same" = only for the instance holding the record, "never" = refused.
var actualLRPMachine = map[string]map[string]string{
	ActualLRPStateUnclaimed: {ActualLRPStateUnclaimed: "any", ActualLRPStateClaimed: "any", ActualLRPStateRunning: "any", ActualLRPStateCrashed: "never"},
	ActualLRPStateClaimed:   {ActualLRPStateUnclaimed: "any", ActualLRPStateClaimed: "same", ActualLRPStateRunning: "any", ActualLRPStateCrashed: "same"},
	ActualLRPStateRunning:   {ActualLRPStateUnclaimed: "any", ActualLRPStateClaimed: "same", ActualLRPStateRunning: "same", ActualLRPStateCrashed: "any"},
	ActualLRPStateCrashed:   {ActualLRPStateUnclaimed: "any", ActualLRPStateClaimed: "any", ActualLRPStateRunning: "any", ActualLRPStateCrashed: "never"},
}

var holder = ActualLRPInstanceKey{InstanceGuid: "instance-1", CellID: "cell-1"}

// lrpIn returns a record of process-1/3 in state that satisfies every invariant, held by key
// when the state has an instance.
func lrpIn(state string, key ActualLRPInstanceKey) *ActualLRP {
	a := &ActualLRP{
		ActualLRPKey: ActualLRPKey{ProcessGuid: "process-1", Index: 3, Domain: "cf-apps"},
		State:        state,
		Presence:     PresenceOrdinary,
	}
	switch state {
	case ActualLRPStateClaimed:
		a.ActualLRPInstanceKey = key
	case ActualLRPStateRunning:
		a.ActualLRPInstanceKey = key
		a.Address = "10.0.0.7"
		a.Ports = []PortMapping{{ContainerPort: 8080, HostPort: 61000}}
	case ActualLRPStateCrashed:
		a.CrashCount = 1
		a.CrashReason = "exit status 1"
	}
	return a
}

func TestActualLRPTransitionsEveryPair(t *testing.T) {
	actors := []struct {
		name string
		key  ActualLRPInstanceKey
		same bool
	}{
		{"same instance", holder, true},
		{"other instance same cell", ActualLRPInstanceKey{InstanceGuid: "instance-2", CellID: "cell-1"}, false},
		{"same guid other cell", ActualLRPInstanceKey{InstanceGuid: "instance-1", CellID: "cell-2"}, false},
		{"other instance other cell", ActualLRPInstanceKey{InstanceGuid: "instance-2", CellID: "cell-2"}, false},
	}
	count := 0
	for _, from := range actualLRPStates {
		for _, to := range actualLRPStates {
			for _, actor := range actors {
				rule := actualLRPMachine[from][to]
				want := rule == "any" || rule == "same" && actor.same
				t.Run(fmt.Sprintf("%s to %s by %s", from, to, actor.name), func(t *testing.T) {
					before := lrpIn(from, holder)
					after := lrpIn(to, actor.key)
					err := ValidateActualLRPTransitionBy(before, after, actor.key)
					if want {
						if err != nil {
							t.Fatalf("refused an allowed transition: %v", err)
						}
						return
					}
					var te *TransitionError
					if !errors.As(err, &te) || !IsInvalidTransition(err) {
						t.Fatalf("want a *TransitionError, got %T %v", err, err)
					}
					if te.From != from || te.To != to || te.Record != "actual_lrp process-1/3" {
						t.Fatalf("error names %q %s→%s, want actual_lrp process-1/3 %s→%s", te.Record, te.From, te.To, from, to)
					}
				})
				count++
			}
		}
	}
	if count != 4*4*len(actors) {
		t.Fatalf("covered %d cases", count)
	}
}

// The two-argument form takes the actor from after's instance key.
func TestActualLRPTransitionActorFromAfter(t *testing.T) {
	before := lrpIn(ActualLRPStateRunning, holder)
	if err := ValidateActualLRPTransition(before, lrpIn(ActualLRPStateRunning, holder)); err != nil {
		t.Fatalf("same instance refused: %v", err)
	}
	other := ActualLRPInstanceKey{InstanceGuid: "instance-9", CellID: "cell-1"}
	if err := ValidateActualLRPTransition(before, lrpIn(ActualLRPStateRunning, other)); !IsInvalidTransition(err) {
		t.Fatalf("other instance: want InvalidTransition, got %v", err)
	}
	// A crash clears the key, so after carries none: only the By form can name the actor.
	claimed := lrpIn(ActualLRPStateClaimed, holder)
	crashed := lrpIn(ActualLRPStateCrashed, ActualLRPInstanceKey{})
	if err := ValidateActualLRPTransition(claimed, crashed); !IsInvalidTransition(err) {
		t.Fatalf("CLAIMED→CRASHED with no actor: want InvalidTransition, got %v", err)
	}
	if err := ValidateActualLRPTransitionBy(claimed, crashed, holder); err != nil {
		t.Fatalf("CLAIMED→CRASHED by holder: %v", err)
	}
}

func TestActualLRPTransitionRefusals(t *testing.T) {
	tests := []struct {
		name   string
		before *ActualLRP
		after  *ActualLRP
		reason string
	}{
		{"nil before", nil, lrpIn(ActualLRPStateUnclaimed, holder), "required"},
		{"process guid changes", lrpIn(ActualLRPStateUnclaimed, holder), func() *ActualLRP {
			a := lrpIn(ActualLRPStateClaimed, holder)
			a.ProcessGuid = "process-2"
			return a
		}(), "key cannot change"},
		{"index changes", lrpIn(ActualLRPStateUnclaimed, holder), func() *ActualLRP {
			a := lrpIn(ActualLRPStateClaimed, holder)
			a.Index = 4
			return a
		}(), "key cannot change"},
		{"unknown current state", func() *ActualLRP {
			a := lrpIn(ActualLRPStateUnclaimed, holder)
			a.State = "STARTING"
			return a
		}(), lrpIn(ActualLRPStateClaimed, holder), `unknown current state "STARTING"`},
		{"unclaimed cannot crash", lrpIn(ActualLRPStateUnclaimed, holder), lrpIn(ActualLRPStateCrashed, holder), "none can crash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateActualLRPTransition(tt.before, tt.after)
			var te *TransitionError
			if !errors.As(err, &te) {
				t.Fatalf("want *TransitionError, got %T %v", err, err)
			}
			if !strings.Contains(te.Reason, tt.reason) {
				t.Fatalf("reason %q does not say %q", te.Reason, tt.reason)
			}
		})
	}
	if err := ValidateActualLRPTransition(lrpIn(ActualLRPStateRunning, holder), nil); !IsInvalidTransition(err) {
		t.Fatalf("nil after: got %v", err)
	}
}

// An allowed pair still fails when the new record breaks an invariant, and then the error is
// a *FieldError (InvalidRecord), not a refused transition.
func TestActualLRPTransitionChecksAfterInvariants(t *testing.T) {
	after := lrpIn(ActualLRPStateRunning, holder)
	after.Address = ""
	err := ValidateActualLRPTransition(lrpIn(ActualLRPStateClaimed, holder), after)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "address" || !IsInvalidRecord(err) || IsInvalidTransition(err) {
		t.Fatalf("want FieldError address, got %T %v", err, err)
	}
	after = lrpIn(ActualLRPStateClaimed, holder)
	after.State = "BOGUS"
	err = ValidateActualLRPTransition(lrpIn(ActualLRPStateUnclaimed, holder), after)
	if !errors.As(err, &fe) || fe.Field != "state" {
		t.Fatalf("unknown new state: want FieldError state, got %T %v", err, err)
	}
}

func TestActualLRPValidateState(t *testing.T) {
	tests := []struct {
		name   string
		state  string
		mutate func(a *ActualLRP)
		field  string // "" = valid
	}{
		{"unclaimed", ActualLRPStateUnclaimed, nil, ""},
		{"unclaimed placed on a cell", ActualLRPStateUnclaimed, func(a *ActualLRP) { a.CellID = "cell-1" }, ""},
		{"unclaimed with placement error", ActualLRPStateUnclaimed, func(a *ActualLRP) { a.PlacementError = "found no compatible cell for required rootfs" }, ""},
		{"unclaimed with instance guid", ActualLRPStateUnclaimed, func(a *ActualLRP) { a.InstanceGuid = "instance-1" }, "instance_guid"},
		{"claimed", ActualLRPStateClaimed, nil, ""},
		{"claimed with placement error", ActualLRPStateClaimed, func(a *ActualLRP) { a.PlacementError = "x" }, "placement_error"},
		{"claimed without instance guid", ActualLRPStateClaimed, func(a *ActualLRP) { a.InstanceGuid = "" }, "instance_guid"},
		{"claimed without cell", ActualLRPStateClaimed, func(a *ActualLRP) { a.CellID = "" }, "cell_id"},
		{"running", ActualLRPStateRunning, nil, ""},
		{"running with placement error", ActualLRPStateRunning, func(a *ActualLRP) { a.PlacementError = "x" }, "placement_error"},
		{"running without instance guid", ActualLRPStateRunning, func(a *ActualLRP) { a.InstanceGuid = "" }, "instance_guid"},
		{"running without cell", ActualLRPStateRunning, func(a *ActualLRP) { a.CellID = "" }, "cell_id"},
		{"running without address", ActualLRPStateRunning, func(a *ActualLRP) { a.Address = "" }, "address"},
		{"crashed", ActualLRPStateCrashed, nil, ""},
		{"crashed with placement error", ActualLRPStateCrashed, func(a *ActualLRP) { a.PlacementError = "x" }, "placement_error"},
		{"negative crash count", ActualLRPStateCrashed, func(a *ActualLRP) { a.CrashCount = -1 }, "crash_count"},
		{"evacuating running", ActualLRPStateRunning, func(a *ActualLRP) { a.Presence = PresenceEvacuating }, ""},
		{"evacuating unclaimed", ActualLRPStateUnclaimed, func(a *ActualLRP) { a.Presence = PresenceEvacuating }, "state"},
		{"evacuating claimed", ActualLRPStateClaimed, func(a *ActualLRP) { a.Presence = PresenceEvacuating }, "state"},
		{"evacuating crashed", ActualLRPStateCrashed, func(a *ActualLRP) { a.Presence = PresenceEvacuating }, "state"},
		{"suspect running", ActualLRPStateRunning, func(a *ActualLRP) { a.Presence = PresenceSuspect }, ""},
		{"suspect claimed", ActualLRPStateClaimed, func(a *ActualLRP) { a.Presence = PresenceSuspect }, ""},
		{"suspect unclaimed", ActualLRPStateUnclaimed, func(a *ActualLRP) { a.Presence = PresenceSuspect }, "state"},
		{"suspect crashed", ActualLRPStateCrashed, func(a *ActualLRP) { a.Presence = PresenceSuspect }, "state"},
		{"empty presence", ActualLRPStateRunning, func(a *ActualLRP) { a.Presence = "" }, "presence"},
		{"unknown presence", ActualLRPStateRunning, func(a *ActualLRP) { a.Presence = "ordinary" }, "presence"},
		{"empty state", ActualLRPStateRunning, func(a *ActualLRP) { a.State = "" }, "state"},
		{"unknown state", ActualLRPStateRunning, func(a *ActualLRP) { a.State = "running" }, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := lrpIn(tt.state, holder)
			if tt.mutate != nil {
				tt.mutate(a)
			}
			assertField(t, a.ValidateState(), tt.field)
			// The whole-record check agrees with the state check.
			assertField(t, a.Validate(), tt.field)
		})
	}
}

// taskMachine lists the allowed task pairs of DESIGN §1, independently of transitions.go.
var taskMachine = map[[2]string]bool{
	{TaskStatePending, TaskStatePending}:     true,
	{TaskStatePending, TaskStateRunning}:     true,
	{TaskStatePending, TaskStateCompleted}:   true,
	{TaskStateRunning, TaskStateCompleted}:   true,
	{TaskStateCompleted, TaskStateResolving}: true,
	{TaskStateResolving, TaskStateCompleted}: true,
}

func TestTaskTransitionsEveryPair(t *testing.T) {
	count := 0
	for _, from := range taskStates {
		for _, to := range taskStates {
			want := taskMachine[[2]string{from, to}]
			t.Run(from+" to "+to, func(t *testing.T) {
				err := ValidateTaskTransition(from, to)
				if want {
					if err != nil {
						t.Fatalf("refused an allowed transition: %v", err)
					}
					return
				}
				var te *TransitionError
				if !errors.As(err, &te) || !IsInvalidTransition(err) {
					t.Fatalf("want *TransitionError, got %T %v", err, err)
				}
				if te.From != from || te.To != to || te.Reason == "" {
					t.Fatalf("error %+v does not name %s→%s with a reason", te, from, to)
				}
			})
			count++
		}
	}
	if count != 16 {
		t.Fatalf("covered %d pairs", count)
	}
	for _, pair := range [][2]string{{"", TaskStatePending}, {TaskStatePending, ""}, {"pending", TaskStateRunning}, {TaskStateRunning, "DONE"}} {
		if err := ValidateTaskTransition(pair[0], pair[1]); !IsInvalidTransition(err) || !strings.Contains(err.Error(), "unknown") {
			t.Errorf("%q→%q: want an unknown-state refusal, got %v", pair[0], pair[1], err)
		}
	}
}

func TestCanDeleteTask(t *testing.T) {
	allowed := map[string][2]bool{ // state → {without force, with force}
		TaskStatePending:   {false, false},
		TaskStateRunning:   {false, false},
		TaskStateCompleted: {false, true},
		TaskStateResolving: {true, true},
		"":                 {false, false},
		"DELETED":          {false, false},
	}
	for state, want := range allowed {
		for i, force := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q force=%v", state, force), func(t *testing.T) {
				err := CanDeleteTask(state, force)
				if want[i] {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				var te *TransitionError
				if !errors.As(err, &te) || te.To != TaskStateDeleted || te.From != state || te.Reason == "" {
					t.Fatalf("want a *TransitionError to deleted, got %T %v", err, err)
				}
			})
		}
	}
}

// assertField fails unless err is nil (field "") or a *FieldError for field that wraps
// ErrInvalidRecord and gives a reason.
func assertField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("want valid, got %v", err)
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want *FieldError for %q, got %T %v", field, err, err)
	}
	if fe.Field != field {
		t.Fatalf("error names field %q (%v), want %q", fe.Field, err, field)
	}
	if fe.Reason == "" || !IsInvalidRecord(err) {
		t.Fatalf("error %v has no reason or does not wrap ErrInvalidRecord", err)
	}
}
