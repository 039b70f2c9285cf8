package converge

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// Snapshot is what the converger reads from the BBS: every record, the present cells and the
// fresh domains (the store lists only fresh ones; Plan also checks ExpiresAt against now).
type Snapshot struct {
	DesiredLRPs []*models.DesiredLRP
	ActualLRPs  []*models.ActualLRP
	Tasks       []*models.Task
	Cells       []*models.CellPresence
	Domains     []*models.Domain
}

// Task failure reasons written by the converger.
const (
	TaskNotStartedReason      = "not started within time limit"
	TaskCellDisappearedReason = "cell disappeared before completion"
)

// LRPRef names one ActualLRP record as Plan saw it. Revision is the record's revision, for the
// compare-and-swap that applies the action: if the record changed since the snapshot, the
// store refuses with Conflict and the next Plan decides again.
type LRPRef struct {
	Key      models.ActualLRPKey
	Presence string
	Revision int64
}

// RetireReason says why a record is retired.
type RetireReason string

// Retire reasons.
const (
	// RetireExtraIndex: the index is at or beyond the desired instances (fresh domain only).
	RetireExtraIndex RetireReason = "extra-index"
	// RetireOrphan: no DesiredLRP has the process guid (fresh domain only).
	RetireOrphan RetireReason = "orphan"
	// RetireSuspectReplaced: a SUSPECT record whose index has a RUNNING ORDINARY one.
	RetireSuspectReplaced RetireReason = "suspect-replaced"
	// RetireSuspectSuperseded: a SUSPECT record whose cell is gone while the ORDINARY
	// replacement lost its cell too; once it is removed, the next plan marks the replacement
	// SUSPECT in its place.
	RetireSuspectSuperseded RetireReason = "suspect-superseded"
	// RetireLostReplacement: an ORDINARY record on a vanished cell while a SUSPECT record of the
	// index lives on a present cell; it is removed and then recreated as missing.
	RetireLostReplacement RetireReason = "lost-replacement"
	// RetireEvacuationReplaced: an EVACUATING record whose ORDINARY replacement is RUNNING.
	RetireEvacuationReplaced RetireReason = "evacuation-replaced"
	// RetireEvacuationTimedOut: an EVACUATING record older than the evacuation timeout.
	RetireEvacuationTimedOut RetireReason = "evacuation-timed-out"
	// RetireEvacuatingCellVanished: an EVACUATING record whose cell is gone.
	RetireEvacuatingCellVanished RetireReason = "evacuating-cell-vanished"
)

// Retirement removes one record (store.RetireActualLRP with the ref's presence and revision).
type Retirement struct {
	LRPRef
	Reason RetireReason
}

// Creation makes the missing index Key of Desired (store.CreateUnclaimedActualLRP), which then
// goes to the auctioneer.
type Creation struct {
	Key     models.ActualLRPKey
	Desired *models.DesiredLRP
}

// AuctionReason says why an existing UNCLAIMED record is auctioned again.
type AuctionReason string

// Auction reasons.
const (
	// AuctionStale: UNCLAIMED (or PENDING, for a task) for longer than StaleUnclaimedAfter.
	AuctionStale AuctionReason = "stale"
	// AuctionCellVanished: placed on a cell that is no longer present.
	AuctionCellVanished AuctionReason = "cell-vanished"
)

// LRPAuction sends an UNCLAIMED ORDINARY record to the auctioneer again.
type LRPAuction struct {
	LRPRef
	Desired *models.DesiredLRP
	Reason  AuctionReason
}

// Restart brings a CRASHED record back (store.RestartActualLRP, then the auctioneer) at At.
type Restart struct {
	LRPRef
	Desired *models.DesiredLRP
	At      time.Time
}

// TaskRef names one Task as Plan saw it.
type TaskRef struct {
	TaskGuid string
	Revision int64
}

// TaskFailure fails a task (store.FailTask) with Reason.
type TaskFailure struct {
	TaskRef
	Reason string
}

// TaskAuction sends a PENDING task to the auctioneer again.
type TaskAuction struct {
	Task   *models.Task
	Reason AuctionReason
}

// Actions is what one Plan asks for. The actions are independent of each other: they may be
// applied in any order or concurrently, and each carries the revision it was planned from.
// Every list is sorted by process guid and index, or by task guid.
type Actions struct {
	// Create: missing indices of DesiredLRPs (no ORDINARY record).
	Create []Creation
	// Retire: records to remove, with the reason.
	Retire []Retirement
	// MarkSuspect: ORDINARY CLAIMED or RUNNING records on a vanished cell
	// (store.MarkActualLRPSuspect, which also creates the UNCLAIMED replacement).
	MarkSuspect []LRPRef
	// Auction: UNCLAIMED records to auction again.
	Auction []LRPAuction
	// RestartNow: CRASHED records whose restart is due.
	RestartNow []Restart
	// RestartLater: CRASHED records to restart at their At (after now); Plan lists them again
	// until then, so a caller may schedule them or simply wait for NextDeadline.
	RestartLater []Restart

	// FailTasks: PENDING tasks past PendingTaskTimeout and RUNNING tasks on a vanished cell.
	FailTasks []TaskFailure
	// AuctionTasks: PENDING tasks to auction again.
	AuctionTasks []TaskAuction
	// UnresolveTasks: RESOLVING tasks past ResolvingTaskTimeout (store.UnresolveTask).
	UnresolveTasks []TaskRef
	// DeleteTasks: COMPLETED tasks past CompletedTaskTTL (store.DeleteTask with force).
	DeleteTasks []TaskRef
	// Callbacks: COMPLETED tasks with a completion_callback_url. Plan lists a task again on
	// every run while it stays COMPLETED, so the caller keeps at most one callback in flight
	// per task (resolve, POST, delete, as Diego does).
	Callbacks []*models.Task

	// NextDeadline is the earliest time after now at which a time limit of this snapshot
	// expires (a stale record, a timeout, a scheduled restart), or zero if none: planning
	// again then finds new work even if no event arrives.
	NextDeadline time.Time
}

// Empty reports whether a has nothing to do.
func (a *Actions) Empty() bool {
	return len(a.Create)+len(a.Retire)+len(a.MarkSuspect)+len(a.Auction)+len(a.RestartNow)+
		len(a.RestartLater)+len(a.FailTasks)+len(a.AuctionTasks)+len(a.UnresolveTasks)+
		len(a.DeleteTasks)+len(a.Callbacks) == 0
}

// indexKey names one index of a process, whatever its records' presence.
type indexKey struct {
	guid  string
	index int32
}

// records are the records of one index, at most one per presence.
type records struct {
	ordinary, evacuating, suspect *models.ActualLRP
}

type planner struct {
	now     time.Time
	opts    Options
	cells   map[string]bool
	fresh   map[string]bool
	desired map[string]*models.DesiredLRP
	out     Actions
}

// Plan decides what the converger must do about snapshot at now. It is pure: it reads only
// its arguments. The rules (DESIGN §4), per index of a process:
//
//   - A DesiredLRP index without an ORDINARY record is created.
//   - Records of an index beyond the desired instances, and records of a process guid with no
//     DesiredLRP, are retired — only when their domain is fresh. Outside fresh domains they
//     are left alone: no retire, no suspect marking, no auction, no restart.
//   - An ORDINARY CLAIMED or RUNNING record on a vanished cell is marked SUSPECT (the store
//     creates the replacement). If the index already has a SUSPECT record: when that one's
//     cell is present too, the ORDINARY record is retired (and recreated as missing next time);
//     when its cell is gone as well, the older SUSPECT is retired and the next plan marks the
//     ORDINARY one.
//   - A SUSPECT record is retired once the index has a RUNNING ORDINARY record.
//   - An EVACUATING record is retired when the ORDINARY record is RUNNING, when its cell is
//     gone, or EvacuationTimeout after it began evacuating.
//   - An UNCLAIMED record placed on a vanished cell, or unchanged for StaleUnclaimedAfter, is
//     auctioned again.
//   - A CRASHED record is restarted when NextRestart says, now or later; never after it gives
//     up.
//
// Tasks:
//
//   - PENDING for PendingTaskTimeout since creation fails with TaskNotStartedReason.
//   - PENDING and placed on a vanished cell, or unchanged for StaleUnclaimedAfter, is auctioned
//     again. (It never started, and placing it again is a compare-and-swap on the record, so
//     this keeps "at most once"; Diego likewise re-sends pending tasks to the auctioneer.)
//   - RUNNING on a vanished cell fails with TaskCellDisappearedReason.
//   - RESOLVING for ResolvingTaskTimeout goes back to COMPLETED.
//   - COMPLETED for CompletedTaskTTL is deleted; before that, one with a completion callback
//     URL is listed for the callback.
//
// A record "for" a duration means at least that long since the record's timestamp: Since for
// ActualLRPs, CreatedAt for the PENDING time limit, UpdatedAt (else CreatedAt) for the other task
// rules, FirstCompletedAt (else UpdatedAt) for COMPLETED. Zero fields of opts mean their
// defaults.
func Plan(snapshot Snapshot, now time.Time, opts Options) Actions {
	p := &planner{
		now:     now,
		opts:    opts.withDefaults(),
		cells:   make(map[string]bool, len(snapshot.Cells)),
		fresh:   make(map[string]bool, len(snapshot.Domains)),
		desired: make(map[string]*models.DesiredLRP, len(snapshot.DesiredLRPs)),
	}
	for _, c := range snapshot.Cells {
		if c != nil {
			p.cells[c.CellID] = true
		}
	}
	for _, d := range snapshot.Domains {
		if d != nil && (d.ExpiresAt == 0 || d.ExpiresAt > now.UnixNano()) {
			p.fresh[d.Name] = true
		}
	}
	for _, d := range snapshot.DesiredLRPs {
		if d != nil {
			p.desired[d.ProcessGuid] = d
		}
	}

	// Group the records by process, then walk the processes in guid order and each one's
	// indices in order (with its missing indices merged in), so the plan comes out sorted.
	byProcess := make(map[string][]*models.ActualLRP, len(p.desired))
	for _, a := range snapshot.ActualLRPs {
		if a != nil {
			byProcess[a.ProcessGuid] = append(byProcess[a.ProcessGuid], a)
		}
	}
	guids := make([]string, 0, len(byProcess)+len(p.desired))
	for guid := range byProcess {
		guids = append(guids, guid)
	}
	for guid := range p.desired {
		if _, ok := byProcess[guid]; !ok {
			guids = append(guids, guid)
		}
	}
	slices.Sort(guids)
	for _, guid := range guids {
		p.planProcess(guid, byProcess[guid])
	}

	tasks := slices.Clone(snapshot.Tasks)
	tasks = slices.DeleteFunc(tasks, func(t *models.Task) bool { return t == nil })
	slices.SortFunc(tasks, func(x, y *models.Task) int { return strings.Compare(x.TaskGuid, y.TaskGuid) })
	for _, t := range tasks {
		p.planTask(t)
	}
	return p.out
}

// planProcess plans the indices of one process guid from its records, in any order.
func (p *planner) planProcess(guid string, actuals []*models.ActualLRP) {
	slices.SortFunc(actuals, func(x, y *models.ActualLRP) int { return cmp.Compare(x.Index, y.Index) })
	d := p.desired[guid]
	var instances int32
	if d != nil {
		instances = d.Instances
	}
	next := int32(0) // the lowest desired index not yet looked at
	create := func(upTo int32) {
		for ; next < upTo; next++ {
			p.out.Create = append(p.out.Create, Creation{
				Key:     models.ActualLRPKey{ProcessGuid: guid, Index: next, Domain: d.Domain},
				Desired: d,
			})
		}
	}
	for i := 0; i < len(actuals); {
		index := actuals[i].Index
		var g records
		for ; i < len(actuals) && actuals[i].Index == index; i++ {
			switch a := actuals[i]; a.Presence {
			case models.PresenceEvacuating:
				g.evacuating = a
			case models.PresenceSuspect:
				g.suspect = a
			default:
				g.ordinary = a
			}
		}
		if index >= 0 {
			create(min(index, instances))
			if index < instances {
				if g.ordinary == nil {
					create(index + 1)
				}
				next = max(next, index+1)
			}
		}
		p.planIndex(indexKey{guid, index}, &g)
	}
	create(instances)
}

func ref(a *models.ActualLRP) LRPRef {
	presence := a.Presence
	if presence == "" {
		presence = models.PresenceOrdinary
	}
	return LRPRef{Key: a.ActualLRPKey, Presence: presence, Revision: a.Revision}
}

func (p *planner) retire(a *models.ActualLRP, why RetireReason) {
	if a != nil {
		p.out.Retire = append(p.out.Retire, Retirement{LRPRef: ref(a), Reason: why})
	}
}

// due reports whether the limit that started at since (unix nanoseconds) has passed, and
// otherwise records its end as a deadline.
func (p *planner) due(since int64, limit time.Duration) bool {
	end := time.Unix(0, since).Add(limit)
	if !p.now.Before(end) {
		return true
	}
	p.deadline(end)
	return false
}

func (p *planner) deadline(t time.Time) {
	if t.After(p.now) && (p.out.NextDeadline.IsZero() || t.Before(p.out.NextDeadline)) {
		p.out.NextDeadline = t
	}
}

func (p *planner) planIndex(k indexKey, g *records) {
	d := p.desired[k.guid]
	if d == nil || k.index < 0 || k.index >= d.Instances {
		domain := ""
		for _, a := range []*models.ActualLRP{g.ordinary, g.evacuating, g.suspect} {
			if a != nil {
				domain = a.Domain
				break
			}
		}
		if d != nil {
			domain = d.Domain
		}
		if !p.fresh[domain] {
			return
		}
		why := RetireOrphan
		if d != nil {
			why = RetireExtraIndex
		}
		p.retire(g.ordinary, why)
		p.retire(g.evacuating, why)
		p.retire(g.suspect, why)
		return
	}

	o, e, s := g.ordinary, g.evacuating, g.suspect
	ordinaryRunning := o != nil && o.State == models.ActualLRPStateRunning
	ordinaryLost := o != nil && (o.State == models.ActualLRPStateClaimed || o.State == models.ActualLRPStateRunning) &&
		!p.cells[o.CellID]

	if e != nil {
		switch {
		case ordinaryRunning && !ordinaryLost:
			p.retire(e, RetireEvacuationReplaced)
		case !p.cells[e.CellID]:
			p.retire(e, RetireEvacuatingCellVanished)
		case p.due(e.Since, p.opts.EvacuationTimeout):
			p.retire(e, RetireEvacuationTimedOut)
		}
	}

	if s != nil {
		switch {
		case ordinaryRunning && !ordinaryLost:
			p.retire(s, RetireSuspectReplaced)
		case ordinaryLost && !p.cells[s.CellID]:
			p.retire(s, RetireSuspectSuperseded)
		}
	}

	if o == nil {
		return
	}
	switch o.State {
	case models.ActualLRPStateUnclaimed:
		switch {
		case o.CellID != "" && !p.cells[o.CellID]:
			p.out.Auction = append(p.out.Auction, LRPAuction{LRPRef: ref(o), Desired: d, Reason: AuctionCellVanished})
		case p.due(o.Since, p.opts.StaleUnclaimedAfter):
			p.out.Auction = append(p.out.Auction, LRPAuction{LRPRef: ref(o), Desired: d, Reason: AuctionStale})
		}
	case models.ActualLRPStateClaimed, models.ActualLRPStateRunning:
		if !ordinaryLost {
			return
		}
		switch {
		case s == nil:
			p.out.MarkSuspect = append(p.out.MarkSuspect, ref(o))
		case p.cells[s.CellID]:
			p.retire(o, RetireLostReplacement)
		}
	case models.ActualLRPStateCrashed:
		// The store already counts a crash after a long RUNNING spell as crash 1
		// (CrashActualLRP), so the count is the whole story: the record's RunningSince is kept
		// across crashes and says nothing about an instance that crashed before it was RUNNING
		// again, which a reset computed from it here would restart at once.
		at, giveUp := NextRestart(d.RestartPolicy.WithDefaults(), o.CrashCount, 0, time.Unix(0, o.Since))
		switch {
		case giveUp:
		case at.After(p.now):
			p.out.RestartLater = append(p.out.RestartLater, Restart{LRPRef: ref(o), Desired: d, At: at})
			p.deadline(at)
		default:
			p.out.RestartNow = append(p.out.RestartNow, Restart{LRPRef: ref(o), Desired: d, At: at})
		}
	}
}

func (p *planner) planTask(t *models.Task) {
	tref := TaskRef{TaskGuid: t.TaskGuid, Revision: t.Revision}
	updated := t.UpdatedAt
	if updated == 0 {
		updated = t.CreatedAt
	}
	switch t.State {
	case models.TaskStatePending:
		switch {
		case p.due(t.CreatedAt, p.opts.PendingTaskTimeout):
			p.out.FailTasks = append(p.out.FailTasks, TaskFailure{TaskRef: tref, Reason: TaskNotStartedReason})
		case t.CellID != "" && !p.cells[t.CellID]:
			p.out.AuctionTasks = append(p.out.AuctionTasks, TaskAuction{Task: t, Reason: AuctionCellVanished})
		case p.due(updated, p.opts.StaleUnclaimedAfter):
			p.out.AuctionTasks = append(p.out.AuctionTasks, TaskAuction{Task: t, Reason: AuctionStale})
		}
	case models.TaskStateRunning:
		if !p.cells[t.CellID] {
			p.out.FailTasks = append(p.out.FailTasks, TaskFailure{TaskRef: tref, Reason: TaskCellDisappearedReason})
		}
	case models.TaskStateResolving:
		if p.due(updated, p.opts.ResolvingTaskTimeout) {
			p.out.UnresolveTasks = append(p.out.UnresolveTasks, tref)
		}
	case models.TaskStateCompleted:
		completed := t.FirstCompletedAt
		if completed == 0 {
			completed = updated
		}
		switch {
		case p.due(completed, p.opts.CompletedTaskTTL):
			p.out.DeleteTasks = append(p.out.DeleteTasks, tref)
		case t.CompletionCallbackURL != "":
			p.out.Callbacks = append(p.out.Callbacks, t)
		}
	}
}
