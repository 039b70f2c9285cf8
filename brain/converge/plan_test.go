package converge

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) int64 { return now.Add(-d).UnixNano() }

func desired(guid, domain string, instances int32) *models.DesiredLRP {
	return &models.DesiredLRP{ProcessGuid: guid, Domain: domain, RootFS: "preloaded:cflinuxfs4", Instances: instances, MemoryMB: 128, DiskMB: 64}
}

// actual returns a record of process guid in domain "d" that entered its state one second ago.
func actual(guid string, index int32, state, presence, cell string) *models.ActualLRP {
	a := &models.ActualLRP{
		ActualLRPKey: models.ActualLRPKey{ProcessGuid: guid, Index: index, Domain: "d"},
		State:        state,
		Presence:     presence,
		Since:        ago(time.Second),
		Revision:     int64(100 + index),
	}
	a.CellID = cell
	if state != models.ActualLRPStateUnclaimed && state != models.ActualLRPStateCrashed {
		a.InstanceGuid = fmt.Sprintf("%s-%d-%s", guid, index, presence)
	}
	return a
}

func running(guid string, index int32, cell string) *models.ActualLRP {
	return actual(guid, index, models.ActualLRPStateRunning, models.PresenceOrdinary, cell)
}

func with(a *models.ActualLRP, f func(*models.ActualLRP)) *models.ActualLRP { f(a); return a }

func withTask(t *models.Task, f func(*models.Task)) *models.Task { f(t); return t }

func task(guid, state, cell string, updatedAgo time.Duration) *models.Task {
	return &models.Task{TaskGuid: guid, Domain: "d", State: state, CellID: cell,
		CreatedAt: ago(updatedAgo), UpdatedAt: ago(updatedAgo), Revision: 7}
}

// base is a snapshot with one present cell ("live") and the fresh domain "d"; "gone" is a cell
// that is not present.
func base() Snapshot {
	return Snapshot{
		Cells:   []*models.CellPresence{{CellID: "live", Zone: "z1"}},
		Domains: []*models.Domain{{Name: "d"}},
	}
}

// describe lists actions as short strings, so a test states exactly what it expects.
func describe(a Actions) []string {
	var out []string
	key := func(r LRPRef) string { return fmt.Sprintf("%s/%d", r.Key.ProcessGuid, r.Key.Index) }
	for _, c := range a.Create {
		out = append(out, fmt.Sprintf("create %s/%d", c.Key.ProcessGuid, c.Key.Index))
	}
	for _, r := range a.Retire {
		out = append(out, fmt.Sprintf("retire %s %s %s", key(r.LRPRef), r.Presence, r.Reason))
	}
	for _, r := range a.MarkSuspect {
		out = append(out, "suspect "+key(r))
	}
	for _, r := range a.Auction {
		out = append(out, fmt.Sprintf("auction %s %s", key(r.LRPRef), r.Reason))
	}
	for _, r := range a.RestartNow {
		out = append(out, "restart-now "+key(r.LRPRef))
	}
	for _, r := range a.RestartLater {
		out = append(out, fmt.Sprintf("restart-later %s in %v", key(r.LRPRef), r.At.Sub(now)))
	}
	for _, f := range a.FailTasks {
		out = append(out, fmt.Sprintf("fail-task %s: %s", f.TaskGuid, f.Reason))
	}
	for _, t := range a.AuctionTasks {
		out = append(out, fmt.Sprintf("auction-task %s %s", t.Task.TaskGuid, t.Reason))
	}
	for _, t := range a.UnresolveTasks {
		out = append(out, "unresolve-task "+t.TaskGuid)
	}
	for _, t := range a.DeleteTasks {
		out = append(out, "delete-task "+t.TaskGuid)
	}
	for _, t := range a.Callbacks {
		out = append(out, "callback "+t.TaskGuid)
	}
	return out
}

type planCase struct {
	name    string
	desired []*models.DesiredLRP
	actual  []*models.ActualLRP
	tasks   []*models.Task
	domains []*models.Domain // nil: base()'s fresh "d"
	want    []string
}

func runPlanCases(t *testing.T, cases []planCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			s.DesiredLRPs, s.ActualLRPs, s.Tasks = tt.desired, tt.actual, tt.tasks
			if tt.domains != nil {
				s.Domains = tt.domains
			}
			got := describe(Plan(s, now, DefaultOptions()))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("actions:\n  got  %q\n  want %q", got, tt.want)
			}
		})
	}
}

func TestPlanMissingAndExtra(t *testing.T) {
	notFresh := []*models.Domain{{Name: "other"}}
	runPlanCases(t, []planCase{
		{name: "nothing to do", desired: []*models.DesiredLRP{desired("p", "d", 2)},
			actual: []*models.ActualLRP{running("p", 0, "live"), running("p", 1, "live")}},
		{name: "missing indices are created", desired: []*models.DesiredLRP{desired("p", "d", 3)},
			actual: []*models.ActualLRP{running("p", 1, "live")},
			want:   []string{"create p/0", "create p/2"}},
		{name: "gaps, an index with only an EVACUATING record and the tail are all created, in order",
			desired: []*models.DesiredLRP{desired("p", "d", 6)},
			actual: []*models.ActualLRP{
				running("p", 4, "live"),
				actual("p", 3, models.ActualLRPStateRunning, models.PresenceEvacuating, "live"),
				running("p", 1, "live"),
			},
			want: []string{"create p/0", "create p/2", "create p/3", "create p/5"}},
		{name: "a negative index is never desired", desired: []*models.DesiredLRP{desired("p", "d", 1)},
			actual: []*models.ActualLRP{running("p", -1, "live"), running("p", 0, "live")},
			want:   []string{"retire p/-1 ORDINARY extra-index"}},
		{name: "missing indices are created outside fresh domains too", desired: []*models.DesiredLRP{desired("p", "d", 1)},
			domains: notFresh, want: []string{"create p/0"}},
		{name: "an index with only EVACUATING and SUSPECT records is missing its ORDINARY one",
			desired: []*models.DesiredLRP{desired("p", "d", 1)},
			actual: []*models.ActualLRP{
				actual("p", 0, models.ActualLRPStateRunning, models.PresenceEvacuating, "live"),
				actual("p", 0, models.ActualLRPStateRunning, models.PresenceSuspect, "live"),
			},
			want: []string{"create p/0"}},
		{name: "extra indices are retired in a fresh domain, every presence",
			desired: []*models.DesiredLRP{desired("p", "d", 1)},
			actual: []*models.ActualLRP{
				running("p", 0, "live"), running("p", 1, "live"),
				actual("p", 2, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""),
				actual("p", 2, models.ActualLRPStateRunning, models.PresenceEvacuating, "live"),
				actual("p", 3, models.ActualLRPStateRunning, models.PresenceSuspect, "gone"),
			},
			want: []string{
				"retire p/1 ORDINARY extra-index", "retire p/2 ORDINARY extra-index",
				"retire p/2 EVACUATING extra-index", "retire p/3 SUSPECT extra-index",
			}},
		{name: "extra indices are kept outside fresh domains, and not repaired",
			desired: []*models.DesiredLRP{desired("p", "d", 1)}, domains: notFresh,
			actual: []*models.ActualLRP{
				running("p", 0, "live"), running("p", 1, "gone"),
				actual("p", 2, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""),
				with(actual("p", 3, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, ""),
					func(a *models.ActualLRP) { a.Since = ago(time.Hour) }),
			}},
		{name: "an expired domain is not fresh", desired: []*models.DesiredLRP{desired("p", "d", 0)},
			domains: []*models.Domain{{Name: "d", ExpiresAt: ago(time.Second)}},
			actual:  []*models.ActualLRP{running("p", 0, "live")}},
		{name: "a domain expiring later is fresh", desired: []*models.DesiredLRP{desired("p", "d", 0)},
			domains: []*models.Domain{{Name: "d", ExpiresAt: now.Add(time.Minute).UnixNano()}},
			actual:  []*models.ActualLRP{running("p", 0, "live")},
			want:    []string{"retire p/0 ORDINARY extra-index"}},
		{name: "orphans are retired in a fresh domain",
			actual: []*models.ActualLRP{
				running("gone-process", 0, "live"),
				actual("gone-process", 0, models.ActualLRPStateRunning, models.PresenceEvacuating, "live"),
				actual("gone-process", 1, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, ""),
			},
			want: []string{
				"retire gone-process/0 ORDINARY orphan", "retire gone-process/0 EVACUATING orphan",
				"retire gone-process/1 ORDINARY orphan",
			}},
		{name: "orphans outside fresh domains are left alone, even on vanished cells", domains: notFresh,
			actual: []*models.ActualLRP{
				running("gone-process", 0, "gone"),
				with(actual("gone-process", 1, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""),
					func(a *models.ActualLRP) { a.CrashCount = 1 }),
			}},
	})
}

func TestPlanDestructiveOnlyInFreshDomains(t *testing.T) {
	s := base()
	s.Domains = []*models.Domain{{Name: "fresh"}, {Name: "expired", ExpiresAt: ago(time.Millisecond)}}
	for _, domain := range []string{"fresh", "stale", "expired"} {
		s.DesiredLRPs = append(s.DesiredLRPs, desired(domain+"-app", domain, 1))
		for _, a := range []*models.ActualLRP{
			running(domain+"-app", 0, "live"),
			running(domain+"-app", 1, "live"),    // extra
			running(domain+"-orphan", 0, "live"), // orphan
		} {
			a.Domain = domain
			s.ActualLRPs = append(s.ActualLRPs, a)
		}
	}
	got := describe(Plan(s, now, DefaultOptions()))
	want := []string{"retire fresh-app/1 ORDINARY extra-index", "retire fresh-orphan/0 ORDINARY orphan"}
	if !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

func TestPlanVanishedCells(t *testing.T) {
	d := []*models.DesiredLRP{desired("p", "d", 1)}
	suspect := func(cell string) *models.ActualLRP {
		return actual("p", 0, models.ActualLRPStateRunning, models.PresenceSuspect, cell)
	}
	runPlanCases(t, []planCase{
		{name: "RUNNING on a vanished cell becomes SUSPECT", desired: d,
			actual: []*models.ActualLRP{running("p", 0, "gone")}, want: []string{"suspect p/0"}},
		{name: "CLAIMED on a vanished cell becomes SUSPECT", desired: d,
			actual: []*models.ActualLRP{actual("p", 0, models.ActualLRPStateClaimed, models.PresenceOrdinary, "gone")},
			want:   []string{"suspect p/0"}},
		{name: "vanished cells are handled outside fresh domains too", desired: d, domains: []*models.Domain{},
			actual: []*models.ActualLRP{running("p", 0, "gone")}, want: []string{"suspect p/0"}},
		{name: "RUNNING on a present cell is left alone", desired: d,
			actual: []*models.ActualLRP{running("p", 0, "live")}},
		{name: "SUSPECT is removed once the replacement RUNS", desired: d,
			actual: []*models.ActualLRP{suspect("gone"), running("p", 0, "live")},
			want:   []string{"retire p/0 SUSPECT suspect-replaced"}},
		{name: "SUSPECT stays while the replacement is UNCLAIMED", desired: d,
			actual: []*models.ActualLRP{suspect("gone"), actual("p", 0, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, "")}},
		{name: "SUSPECT stays while the replacement is CLAIMED", desired: d,
			actual: []*models.ActualLRP{suspect("gone"), actual("p", 0, models.ActualLRPStateClaimed, models.PresenceOrdinary, "live")}},
		{name: "SUSPECT stays while the replacement is CRASHED and waits to restart", desired: d,
			actual: []*models.ActualLRP{suspect("gone"), with(actual("p", 0, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""),
				func(a *models.ActualLRP) { a.CrashCount = 3 })},
			want: []string{"restart-later p/0 in 29s"}},
		{name: "the replacement lost its cell too: the older SUSPECT goes first", desired: d,
			actual: []*models.ActualLRP{suspect("gone"), running("p", 0, "gone-too")},
			want:   []string{"retire p/0 SUSPECT suspect-superseded"}},
		{name: "the replacement lost its cell but the SUSPECT's cell is back: the replacement goes", desired: d,
			actual: []*models.ActualLRP{suspect("live"), actual("p", 0, models.ActualLRPStateClaimed, models.PresenceOrdinary, "gone")},
			want:   []string{"retire p/0 ORDINARY lost-replacement"}},
	})
}

func TestPlanEvacuation(t *testing.T) {
	d := []*models.DesiredLRP{desired("p", "d", 1)}
	evacuating := func(cell string, age time.Duration) *models.ActualLRP {
		return with(actual("p", 0, models.ActualLRPStateRunning, models.PresenceEvacuating, cell),
			func(a *models.ActualLRP) { a.Since = ago(age) })
	}
	claimed := actual("p", 0, models.ActualLRPStateClaimed, models.PresenceOrdinary, "live")
	runPlanCases(t, []planCase{
		{name: "removed once the replacement RUNS", desired: d,
			actual: []*models.ActualLRP{evacuating("live", time.Minute), running("p", 0, "live")},
			want:   []string{"retire p/0 EVACUATING evacuation-replaced"}},
		{name: "kept while the replacement starts", desired: d,
			actual: []*models.ActualLRP{evacuating("live", 9*time.Minute), claimed}},
		{name: "removed after the evacuation timeout", desired: d,
			actual: []*models.ActualLRP{evacuating("live", 10*time.Minute), claimed},
			want:   []string{"retire p/0 EVACUATING evacuation-timed-out"}},
		{name: "removed when its cell vanished", desired: d,
			actual: []*models.ActualLRP{evacuating("gone", time.Minute), claimed},
			want:   []string{"retire p/0 EVACUATING evacuating-cell-vanished"}},
	})
}

func TestPlanUnclaimedAndCrashed(t *testing.T) {
	d := []*models.DesiredLRP{desired("p", "d", 1)}
	unclaimed := func(cell string, age time.Duration) *models.ActualLRP {
		return with(actual("p", 0, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, cell),
			func(a *models.ActualLRP) { a.Since = ago(age) })
	}
	crashed := func(count int32, age, ran time.Duration) *models.ActualLRP {
		return with(actual("p", 0, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""), func(a *models.ActualLRP) {
			a.CrashCount = count
			a.Since = ago(age)
			if ran > 0 {
				a.RunningSince = ago(age + ran)
			}
		})
	}
	custom := desired("p", "d", 1)
	custom.RestartPolicy = &models.RestartPolicy{ImmediateRestarts: 5}
	runPlanCases(t, []planCase{
		{name: "fresh UNCLAIMED is the auctioneer's", desired: d, actual: []*models.ActualLRP{unclaimed("", 29*time.Second)}},
		{name: "stale UNCLAIMED is auctioned again", desired: d, actual: []*models.ActualLRP{unclaimed("", 30*time.Second)},
			want: []string{"auction p/0 stale"}},
		{name: "stale UNCLAIMED placed on a present cell is auctioned again", desired: d,
			actual: []*models.ActualLRP{unclaimed("live", time.Minute)}, want: []string{"auction p/0 stale"}},
		{name: "UNCLAIMED placed on a vanished cell is auctioned at once", desired: d,
			actual: []*models.ActualLRP{unclaimed("gone", time.Second)}, want: []string{"auction p/0 cell-vanished"}},
		{name: "UNCLAIMED placed on a present cell waits for the claim", desired: d,
			actual: []*models.ActualLRP{unclaimed("live", time.Second)}},
		{name: "first crash restarts now", desired: d, actual: []*models.ActualLRP{crashed(1, 0, 0)},
			want: []string{"restart-now p/0"}},
		{name: "third crash waits 30 s", desired: d, actual: []*models.ActualLRP{crashed(3, 10*time.Second, 0)},
			want: []string{"restart-later p/0 in 20s"}},
		{name: "third crash after its 30 s restarts now", desired: d, actual: []*models.ActualLRP{crashed(3, 30*time.Second, 0)},
			want: []string{"restart-now p/0"}},
		// The store writes crash count 1 for a crash after a long RUNNING spell; the plan goes
		// by the count.
		{name: "crash after a long run (counted as crash 1) restarts now", desired: d, actual: []*models.ActualLRP{crashed(1, 0, 6*time.Minute)},
			want: []string{"restart-now p/0"}},
		{name: "crash after a short run keeps backing off", desired: d, actual: []*models.ActualLRP{crashed(40, 0, time.Minute)},
			want: []string{"restart-later p/0 in 16m0s"}},
		// RunningSince is kept across crashes: an instance that crashed again before it was
		// RUNNING carries an old one, which must not pass for a long run.
		{name: "crash before RUNNING again keeps backing off whatever RunningSince says", desired: d, actual: []*models.ActualLRP{crashed(9, 0, 31*time.Minute)},
			want: []string{"restart-later p/0 in 16m0s"}},
		{name: "after 200 restarts it stays CRASHED", desired: d, actual: []*models.ActualLRP{crashed(201, time.Hour, 0)}},
		{name: "the DesiredLRP's own policy applies", desired: []*models.DesiredLRP{custom},
			actual: []*models.ActualLRP{crashed(5, 0, 0)}, want: []string{"restart-now p/0"}},
	})
}

func TestPlanTasks(t *testing.T) {
	callback := func(tk *models.Task) { tk.CompletionCallbackURL = "https://example.invalid/done" }
	runPlanCases(t, []planCase{
		{name: "PENDING past 30 min fails", tasks: []*models.Task{task("t", models.TaskStatePending, "", 30*time.Minute)},
			want: []string{"fail-task t: not started within time limit"}},
		{name: "PENDING placed on a live cell past 30 min fails too",
			tasks: []*models.Task{withTask(task("t", models.TaskStatePending, "live", 31*time.Minute),
				func(tk *models.Task) { tk.UpdatedAt = ago(time.Second) })},
			want: []string{"fail-task t: not started within time limit"}},
		{name: "fresh PENDING is the auctioneer's", tasks: []*models.Task{task("t", models.TaskStatePending, "", 29*time.Second)}},
		{name: "stale PENDING is auctioned again", tasks: []*models.Task{task("t", models.TaskStatePending, "", 30*time.Second)},
			want: []string{"auction-task t stale"}},
		{name: "PENDING placed on a vanished cell is auctioned again", tasks: []*models.Task{task("t", models.TaskStatePending, "gone", time.Second)},
			want: []string{"auction-task t cell-vanished"}},
		{name: "RUNNING on a vanished cell fails", tasks: []*models.Task{task("t", models.TaskStateRunning, "gone", time.Second)},
			want: []string{"fail-task t: cell disappeared before completion"}},
		{name: "RUNNING on a present cell is left alone", tasks: []*models.Task{task("t", models.TaskStateRunning, "live", time.Hour)}},
		{name: "RESOLVING past 30 s is unresolved", tasks: []*models.Task{task("t", models.TaskStateResolving, "live", 30*time.Second)},
			want: []string{"unresolve-task t"}},
		{name: "RESOLVING within 30 s is left alone", tasks: []*models.Task{task("t", models.TaskStateResolving, "live", 29*time.Second)}},
		{name: "COMPLETED past 120 s is deleted", tasks: []*models.Task{task("t", models.TaskStateCompleted, "", 120*time.Second)},
			want: []string{"delete-task t"}},
		{name: "COMPLETED age counts from first completion",
			tasks: []*models.Task{withTask(task("t", models.TaskStateCompleted, "", time.Second),
				func(tk *models.Task) { tk.FirstCompletedAt = ago(3 * time.Minute) })},
			want: []string{"delete-task t"}},
		{name: "COMPLETED with a callback URL is called back",
			tasks: []*models.Task{withTask(task("t", models.TaskStateCompleted, "", time.Second), callback)},
			want:  []string{"callback t"}},
		{name: "COMPLETED with a callback URL past 120 s is only deleted",
			tasks: []*models.Task{withTask(task("t", models.TaskStateCompleted, "", 2*time.Minute), callback)},
			want:  []string{"delete-task t"}},
		{name: "COMPLETED without a callback URL waits", tasks: []*models.Task{task("t", models.TaskStateCompleted, "", time.Second)}},
		{name: "tasks ignore domain freshness", domains: []*models.Domain{},
			tasks: []*models.Task{task("t", models.TaskStateRunning, "gone", time.Second)},
			want:  []string{"fail-task t: cell disappeared before completion"}},
	})
}

func TestPlanCarriesRevisionsAndRecords(t *testing.T) {
	s := base()
	d := desired("p", "d", 2)
	s.DesiredLRPs = []*models.DesiredLRP{d}
	r := running("p", 0, "gone")
	r.Revision = 42
	s.ActualLRPs = []*models.ActualLRP{r}
	tk := task("t", models.TaskStateRunning, "gone", time.Second)
	tk.Revision = 9
	s.Tasks = []*models.Task{tk}
	a := Plan(s, now, Options{})
	want := LRPRef{Key: r.ActualLRPKey, Presence: models.PresenceOrdinary, Revision: 42}
	if len(a.MarkSuspect) != 1 || a.MarkSuspect[0] != want {
		t.Fatalf("MarkSuspect %+v, want [%+v]", a.MarkSuspect, want)
	}
	if len(a.Create) != 1 || a.Create[0].Desired != d || a.Create[0].Key != (models.ActualLRPKey{ProcessGuid: "p", Index: 1, Domain: "d"}) {
		t.Fatalf("Create %+v, want p/1 of d", a.Create)
	}
	if len(a.FailTasks) != 1 || a.FailTasks[0].Revision != 9 {
		t.Fatalf("FailTasks %+v, want t at revision 9", a.FailTasks)
	}
	if a.Empty() {
		t.Fatal("Empty() = true for a plan with actions")
	}
	if empty := Plan(base(), now, Options{}); !empty.Empty() || !empty.NextDeadline.IsZero() {
		t.Fatalf("plan of an empty snapshot %+v, want nothing", empty)
	}
}

func TestPlanNextDeadline(t *testing.T) {
	s := base()
	s.DesiredLRPs = []*models.DesiredLRP{desired("p", "d", 3)}
	s.ActualLRPs = []*models.ActualLRP{
		with(actual("p", 0, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, ""),
			func(a *models.ActualLRP) { a.Since = ago(10 * time.Second) }), // stale in 20 s
		with(actual("p", 1, models.ActualLRPStateCrashed, models.PresenceOrdinary, ""),
			func(a *models.ActualLRP) { a.CrashCount = 3; a.Since = ago(15 * time.Second) }), // restart in 15 s
		running("p", 2, "live"),
	}
	s.Tasks = []*models.Task{task("t", models.TaskStateResolving, "live", 12*time.Second)} // unresolve in 18 s
	a := Plan(s, now, DefaultOptions())
	if want := now.Add(15 * time.Second); !a.NextDeadline.Equal(want) {
		t.Fatalf("NextDeadline in %v, want 15s", a.NextDeadline.Sub(now))
	}
	// Planning again at the deadline finds the restart due.
	if got := describe(Plan(s, a.NextDeadline, DefaultOptions())); !slices.Equal(got, []string{"restart-now p/1"}) {
		t.Fatalf("actions at the deadline %q, want the restart", got)
	}
}

func TestPlanOptions(t *testing.T) {
	s := base()
	s.DesiredLRPs = []*models.DesiredLRP{desired("p", "d", 1)}
	s.ActualLRPs = []*models.ActualLRP{with(actual("p", 0, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, ""),
		func(a *models.ActualLRP) { a.Since = ago(6 * time.Second) })}
	if got := describe(Plan(s, now, Options{})); len(got) != 0 {
		t.Fatalf("zero Options (defaults) gave %q, want nothing", got)
	}
	if got := describe(Plan(s, now, Options{StaleUnclaimedAfter: 5 * time.Second})); !slices.Equal(got, []string{"auction p/0 stale"}) {
		t.Fatalf("5 s stale limit gave %q, want the auction", got)
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("DefaultOptions().Validate() = %v", err)
	}
	if err := (Options{EvacuationTimeout: -time.Second}).Validate(); err == nil {
		t.Fatal("a negative timeout validated")
	}
}

func TestPlanIsPure(t *testing.T) {
	s := base()
	s.DesiredLRPs = []*models.DesiredLRP{desired("b", "d", 2), desired("a", "d", 2)}
	s.ActualLRPs = []*models.ActualLRP{running("b", 1, "gone"), running("a", 3, "live"), running("a", 0, "gone")}
	s.Tasks = []*models.Task{task("z", models.TaskStateRunning, "gone", time.Second), task("y", models.TaskStateRunning, "gone", time.Second)}
	first := describe(Plan(s, now, DefaultOptions()))
	slices.Reverse(s.ActualLRPs)
	slices.Reverse(s.DesiredLRPs)
	slices.Reverse(s.Tasks)
	second := describe(Plan(s, now, DefaultOptions()))
	want := []string{"create a/1", "create b/0", "retire a/3 ORDINARY extra-index", "suspect a/0", "suspect b/1",
		"fail-task y: cell disappeared before completion", "fail-task z: cell disappeared before completion"}
	if !slices.Equal(first, want) || !slices.Equal(second, want) {
		t.Fatalf("plans %q and %q, want both %q", first, second, want)
	}
}
