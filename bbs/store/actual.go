package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

func encodeActual(a *models.ActualLRP) (string, error) {
	c := *a
	c.Revision = 0
	return encode(&c)
}

func decodeActual(kv *mvccpb.KeyValue) (*models.ActualLRP, error) {
	var a models.ActualLRP
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return nil, decodeErr(kv.Key, err)
	}
	a.Revision = kv.ModRevision
	return &a, nil
}

func actualName(key models.ActualLRPKey, presence string) string {
	if presence == models.PresenceOrdinary {
		return fmt.Sprintf("actual lrp %s/%d", key.ProcessGuid, key.Index)
	}
	return fmt.Sprintf("actual lrp %s/%d (%s)", key.ProcessGuid, key.Index, presence)
}

// ActualLRPs lists the instances matching filter, ordered by process guid, index and
// presence. A process guid (and index) narrows the etcd read to that key prefix; cell and
// domain are filtered on the stored bytes first, so records of other cells are not decoded.
func (s *Store) ActualLRPs(ctx context.Context, filter ActualLRPFilter) ([]*models.ActualLRP, int64, error) {
	if filter.CellID != "" && filter.ProcessGuid == "" && !s.opts.DirectWatch {
		// A cell's instances, from the shared watch's records once they include every change
		// committed before this call; a scan of every instance otherwise.
		out, rev, ok, err := s.hub.cellActuals(ctx, filter)
		if err != nil || ok {
			return out, rev, err
		}
	}
	prefix := s.keys.actual
	if filter.ProcessGuid != "" {
		prefix = s.keys.actualProcess(filter.ProcessGuid)
		if filter.Index != nil {
			prefix = s.keys.actualIndex(filter.ProcessGuid, *filter.Index)
		}
	}
	var cellFrag, domainFrag []byte
	if filter.CellID != "" {
		cellFrag = jsonField("cell_id", filter.CellID)
	}
	if filter.Domain != "" {
		domainFrag = jsonField("domain", filter.Domain)
	}
	var out []*models.ActualLRP
	rev, err := s.list(ctx, prefix, "actual lrps", func(kv *mvccpb.KeyValue) error {
		if cellFrag != nil && !bytes.Contains(kv.Value, cellFrag) {
			return nil
		}
		if domainFrag != nil && !bytes.Contains(kv.Value, domainFrag) {
			return nil
		}
		a, err := decodeActual(kv)
		if err != nil {
			return err
		}
		if (filter.CellID != "" && a.CellID != filter.CellID) ||
			(filter.Domain != "" && a.Domain != filter.Domain) ||
			(filter.Index != nil && a.Index != *filter.Index) {
			return nil
		}
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// indexRecords holds every presence of one index as read in one request.
type indexRecords struct {
	ordinary, evacuating, suspect *models.ActualLRP
}

func (r indexRecords) of(presence string) *models.ActualLRP {
	switch presence {
	case models.PresenceOrdinary:
		return r.ordinary
	case models.PresenceEvacuating:
		return r.evacuating
	case models.PresenceSuspect:
		return r.suspect
	}
	return nil
}

// readIndex reads all presences of key's index with one prefix read.
func (s *Store) readIndex(ctx context.Context, key models.ActualLRPKey) (indexRecords, error) {
	resp, err := s.kv().Get(ctx, s.keys.actualIndex(key.ProcessGuid, key.Index), clientv3.WithPrefix())
	if err != nil {
		return indexRecords{}, s.etcdErr(ctx, "read "+actualName(key, models.PresenceOrdinary), err)
	}
	return indexFrom(resp.Kvs)
}

// indexFrom decodes the records of one index read with a prefix read.
func indexFrom(kvs []*mvccpb.KeyValue) (indexRecords, error) {
	var r indexRecords
	for _, kv := range kvs {
		a, err := decodeActual(kv)
		if err != nil {
			return r, err
		}
		switch a.Presence {
		case models.PresenceOrdinary:
			r.ordinary = a
		case models.PresenceEvacuating:
			r.evacuating = a
		case models.PresenceSuspect:
			r.suspect = a
		}
	}
	return r, nil
}

// change is one planned write of a multi-record transition.
type change struct {
	before *models.ActualLRP // nil: the record is created
	after  *models.ActualLRP // nil: the record is deleted
	// replace says after is a different instance's record taking before's key (an older
	// EVACUATING or SUSPECT record superseded), not a transition of before.
	replace bool
	// actor, when set, is the instance asking for the transition, for a change whose after
	// no longer carries that instance's key (a crash clears it).
	actor *models.ActualLRPInstanceKey
}

// commitActual validates and writes changes, all of key's index, in one transaction compared
// on the revision of every record it touches (and on the absence of every record it creates).
// When a comparison fails it reports false and returns every presence of the index as that
// transaction read them, so the caller can decide again without another request.
func (s *Store) commitActual(ctx context.Context, what string, key models.ActualLRPKey, changes ...change) (int64, bool, indexRecords, error) {
	cmps, ops, err := s.changeOps(changes)
	if err != nil {
		return 0, false, indexRecords{}, err
	}
	resp, err := s.kv().Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(s.keys.actualIndex(key.ProcessGuid, key.Index), clientv3.WithPrefix())).Commit()
	if err != nil {
		return 0, false, indexRecords{}, s.etcdErr(ctx, what, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, true, indexRecords{}, nil
	}
	fresh, err := indexFrom(resp.Responses[0].GetResponseRange().GetKvs())
	return 0, false, fresh, err
}

// changeOps validates changes and returns the comparisons and writes of their transaction.
func (s *Store) changeOps(changes []change) ([]clientv3.Cmp, []clientv3.Op, error) {
	cmps := make([]clientv3.Cmp, 0, len(changes))
	ops := make([]clientv3.Op, 0, len(changes))
	for _, c := range changes {
		rec := c.after
		if rec == nil {
			rec = c.before
		}
		k := s.keys.actualKey(rec.ActualLRPKey, rec.Presence)
		if c.before == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", c.before.Revision))
		}
		if c.after == nil {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		var err error
		switch {
		case c.before == nil || c.replace:
			err = c.after.ValidateState()
		case c.actor != nil:
			err = models.ValidateActualLRPTransitionBy(c.before, c.after, *c.actor)
		default:
			err = models.ValidateActualLRPTransition(c.before, c.after)
		}
		if err != nil {
			return nil, nil, err
		}
		val, err := encodeActual(c.after)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, clientv3.OpPut(k, val))
	}
	return cmps, ops, nil
}

// transitionActual is the read-validate-compare-and-swap loop shared by the transitions of
// one record. decide gets every presence of the index and the current record of presence
// (with presence "", cur is nil and decide picks), and returns the planned
// changes and the record to return, or an error refusing the transition. With no changes the
// record is returned as is (an idempotent retry). With expectRevision set, a stale or lost
// revision is a Conflict; with 0 the loop re-reads and decides again.
func (s *Store) transitionActual(ctx context.Context, what string, key models.ActualLRPKey, presence string,
	expectRevision int64, decide func(r indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error),
) (*models.ActualLRP, error) {
	if err := validateActualKey(key); err != nil {
		return nil, err
	}
	out, ok, fresh := s.transitionCached(ctx, what, key, presence, expectRevision, decide)
	if ok {
		return out, nil
	}
	err := s.retry(ctx, what, func() (bool, error) {
		// The records a failed compare-and-swap read back, or a read of its own.
		var r indexRecords
		if fresh != nil {
			r, fresh = *fresh, nil
		} else {
			var err error
			if r, err = s.readIndex(ctx, key); err != nil {
				return false, err
			}
		}
		var cur *models.ActualLRP
		if presence != "" {
			if cur = r.of(presence); cur == nil {
				return false, notFound(actualName(key, presence))
			}
			if expectRevision != 0 && cur.Revision != expectRevision {
				return false, conflict(what, expectRevision, cur.Revision)
			}
		}
		changes, result, err := decide(r, cur)
		if err != nil {
			return false, err
		}
		if len(changes) == 0 {
			out = result
			return true, nil
		}
		rev, ok, now, err := s.commitActual(ctx, what, key, changes...)
		if err != nil {
			return false, err
		}
		if !ok {
			if expectRevision != 0 {
				return false, conflict(what, expectRevision, 0)
			}
			fresh = &now
			return false, nil
		}
		if result != nil {
			result.Revision = rev
		}
		out = result
		return true, nil
	})
	return out, err
}

// transitionCached tries a transition once on the records of the shared watch instead of a
// read from etcd: the transaction compares the revision of every record it touches, so a
// stale cached record makes it fail rather than commit. It reports false — and the caller
// takes the authoritative path — whenever the cache lacks the record, disagrees with
// expectRevision, refuses the transition, has nothing to change, or loses the
// compare-and-swap, so that every refusal and every answer without a write come from a read
// of etcd, as before. A lost compare-and-swap returns the records its transaction read
// instead (fresh), which are such a read.
func (s *Store) transitionCached(ctx context.Context, what string, key models.ActualLRPKey, presence string,
	expectRevision int64, decide func(r indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error),
) (out *models.ActualLRP, ok bool, fresh *indexRecords) {
	if s.opts.DirectWatch {
		return nil, false, nil
	}
	r, ok := s.hub.index(key)
	if !ok {
		return nil, false, nil
	}
	var cur *models.ActualLRP
	if presence != "" {
		if cur = r.of(presence); cur == nil || (expectRevision != 0 && cur.Revision != expectRevision) {
			return nil, false, nil
		}
	}
	changes, result, err := decide(r, cur)
	if err != nil || len(changes) == 0 {
		return nil, false, nil
	}
	rev, committed, now, err := s.commitActual(ctx, what, key, changes...)
	if err != nil {
		return nil, false, nil
	}
	if !committed {
		return nil, false, &now
	}
	if result != nil {
		result.Revision = rev
	}
	return result, true, nil
}

// update returns a single-change plan: before becomes after, and after is returned.
func update(before, after *models.ActualLRP) ([]change, *models.ActualLRP, error) {
	return []change{{before: before, after: after}}, after, nil
}

// withState returns a copy of a in state, stamped now when the state changes.
func (s *Store) withState(a *models.ActualLRP, state string) *models.ActualLRP {
	n := *a
	if n.State != state {
		n.State = state
		n.Since = s.now()
	}
	return &n
}

// CreateUnclaimedActualLRP creates an UNCLAIMED ORDINARY instance for an index the
// DesiredLRP wants but that has no ORDINARY record.
func (s *Store) CreateUnclaimedActualLRP(ctx context.Context, key models.ActualLRPKey) (*models.ActualLRP, error) {
	if err := validateActualKey(key); err != nil {
		return nil, err
	}
	what := "create " + actualName(key, models.PresenceOrdinary)
	dkv, err := s.get(ctx, s.keys.desiredKey(key.ProcessGuid), "desired lrp "+key.ProcessGuid)
	if err != nil {
		return nil, err
	}
	if dkv == nil {
		return nil, notFound("desired lrp " + key.ProcessGuid)
	}
	desired, err := decodeDesired(dkv)
	if err != nil {
		return nil, err
	}
	if key.Index >= desired.Instances {
		return nil, &models.FieldError{Field: "index",
			Reason: fmt.Sprintf("%d is out of range: desired lrp %s has %d instances", key.Index, key.ProcessGuid, desired.Instances)}
	}
	key.Domain = desired.Domain
	a := newUnclaimed(key, s.now())
	if err := a.ValidateState(); err != nil {
		return nil, err
	}
	val, err := encodeActual(a)
	if err != nil {
		return nil, err
	}
	k := s.keys.actualKey(key, models.PresenceOrdinary)
	// The DesiredLRP must still be the one read: creating an instance of a record removed or
	// scaled down in between would leave an orphan.
	resp, err := s.txn(ctx, what, []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.keys.desiredKey(key.ProcessGuid)), "=", dkv.ModRevision),
		clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
	}, clientv3.OpPut(k, val))
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		cur, err := s.get(ctx, k, actualName(key, models.PresenceOrdinary))
		if err != nil {
			return nil, err
		}
		if cur != nil {
			return nil, fmt.Errorf("%s: %w", what, models.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("%s: %w: desired lrp changed while creating the instance", what, models.ErrConflict)
	}
	a.Revision = resp.Header.Revision
	return a, nil
}

// actualPlan is one brain-side transition of one index, shared by its single call and by
// ApplyActualLRPOps.
type actualPlan struct {
	what     string
	key      models.ActualLRPKey
	presence string
	expect   int64
	decide   func(r indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error)
}

// run applies p on its own: the read-validate-compare-and-swap loop of transitionActual.
func (s *Store) run(ctx context.Context, p actualPlan) (*models.ActualLRP, error) {
	return s.transitionActual(ctx, p.what, p.key, p.presence, p.expect, p.decide)
}

// PlaceActualLRP records the auctioneer's placement of an UNCLAIMED ORDINARY instance.
func (s *Store) PlaceActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, expectRevision int64) (*models.ActualLRP, error) {
	p, err := s.placePlan(key, cellID, expectRevision)
	if err != nil {
		return nil, err
	}
	return s.run(ctx, p)
}

func (s *Store) placePlan(key models.ActualLRPKey, cellID string, expectRevision int64) (actualPlan, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return actualPlan{}, err
	}
	return actualPlan{what: "place " + actualName(key, models.PresenceOrdinary), key: key,
		presence: models.PresenceOrdinary, expect: expectRevision,
		decide: func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.State != models.ActualLRPStateUnclaimed {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateUnclaimed, "only an UNCLAIMED instance can be placed")
			}
			n := *cur
			n.ActualLRPInstanceKey = models.ActualLRPInstanceKey{CellID: cellID}
			n.PlacementError = ""
			return update(cur, &n)
		}}, nil
}

// FailActualLRPPlacement records why the auctioneer could not place an UNCLAIMED instance.
func (s *Store) FailActualLRPPlacement(ctx context.Context, key models.ActualLRPKey, reason string, expectRevision int64) (*models.ActualLRP, error) {
	p, err := s.failPlacementPlan(key, reason, expectRevision)
	if err != nil {
		return nil, err
	}
	return s.run(ctx, p)
}

func (s *Store) failPlacementPlan(key models.ActualLRPKey, reason string, expectRevision int64) (actualPlan, error) {
	if err := requireField("placement_error", reason); err != nil {
		return actualPlan{}, err
	}
	return actualPlan{what: "fail placement of " + actualName(key, models.PresenceOrdinary), key: key,
		presence: models.PresenceOrdinary, expect: expectRevision,
		decide: func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.State != models.ActualLRPStateUnclaimed {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateUnclaimed, "only an UNCLAIMED instance has a placement")
			}
			n := *cur
			n.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			n.PlacementError = reason
			return update(cur, &n)
		}}, nil
}

// RestartActualLRP moves a CRASHED ORDINARY instance back to UNCLAIMED, keeping its crash
// count and reason, so that it is auctioned again.
func (s *Store) RestartActualLRP(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error) {
	return s.run(ctx, s.restartPlan(key, expectRevision))
}

func (s *Store) restartPlan(key models.ActualLRPKey, expectRevision int64) actualPlan {
	return actualPlan{what: "restart " + actualName(key, models.PresenceOrdinary), key: key,
		presence: models.PresenceOrdinary, expect: expectRevision,
		decide: func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.State != models.ActualLRPStateCrashed {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateUnclaimed, "only a CRASHED instance is restarted")
			}
			n := s.withState(cur, models.ActualLRPStateUnclaimed)
			n.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			n.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			n.PlacementError = ""
			return update(cur, n)
		}}
}

// RetireActualLRP deletes the instance record of presence, whatever its state.
func (s *Store) RetireActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, expectRevision int64) error {
	p, err := s.retirePlan(key, presence, expectRevision)
	if err != nil {
		return err
	}
	_, err = s.run(ctx, p)
	return err
}

func (s *Store) retirePlan(key models.ActualLRPKey, presence string, expectRevision int64) (actualPlan, error) {
	if err := validatePresence(presence); err != nil {
		return actualPlan{}, err
	}
	return actualPlan{what: "retire " + actualName(key, presence), key: key,
		presence: presence, expect: expectRevision,
		decide: func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			return []change{{before: cur}}, nil, nil
		}}, nil
}

// MarkActualLRPSuspect turns the ORDINARY CLAIMED or RUNNING record of an instance whose cell
// vanished into a SUSPECT record (still routable) and creates an UNCLAIMED ORDINARY
// replacement, in one transaction. A SUSPECT record left from an earlier suspicion of the same
// index is replaced. It returns the new ORDINARY record.
func (s *Store) MarkActualLRPSuspect(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error) {
	return s.run(ctx, s.suspectPlan(key, expectRevision))
}

func (s *Store) suspectPlan(key models.ActualLRPKey, expectRevision int64) actualPlan {
	return actualPlan{what: "mark suspect " + actualName(key, models.PresenceOrdinary), key: key,
		presence: models.PresenceOrdinary, expect: expectRevision,
		decide: func(r indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.State != models.ActualLRPStateRunning && cur.State != models.ActualLRPStateClaimed {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.PresenceSuspect, "only a CLAIMED or RUNNING instance can become suspect")
			}
			suspect := *cur
			suspect.Presence = models.PresenceSuspect
			replacement := s.withState(cur, models.ActualLRPStateUnclaimed)
			replacement.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			replacement.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			replacement.PlacementError = ""
			return []change{
				{before: r.suspect, after: &suspect, replace: true},
				{before: cur, after: replacement},
			}, replacement, nil
		}}
}

// ClaimActualLRP: the cell instanceKey.CellID claims an instance placed on it.
func (s *Store) ClaimActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	if err := validateInstanceKey(instanceKey); err != nil {
		return nil, err
	}
	what := "claim " + actualName(key, models.PresenceOrdinary)
	return s.transitionActual(ctx, what, key, models.PresenceOrdinary, 0,
		func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			switch {
			case cur.State == models.ActualLRPStateClaimed && cur.ActualLRPInstanceKey == instanceKey:
				return nil, cur, nil // already claimed by this instance
			case cur.State == models.ActualLRPStateUnclaimed && cur.CellID != instanceKey.CellID:
				return nil, nil, forbidden(what, fmt.Sprintf("placed on cell %q, not on %q", cur.CellID, instanceKey.CellID))
			case cur.State == models.ActualLRPStateCrashed:
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateClaimed, "a CRASHED instance must be restarted and placed first")
			case cur.State != models.ActualLRPStateUnclaimed && cur.ActualLRPInstanceKey != instanceKey:
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateClaimed,
					fmt.Sprintf("held by instance %q on cell %q", cur.InstanceGuid, cur.CellID))
			}
			n := s.withState(cur, models.ActualLRPStateClaimed)
			n.ActualLRPInstanceKey = instanceKey
			n.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			n.PlacementError = ""
			return update(cur, n)
		})
}

// ClaimActualLRPWithDesired claims the instance, then reads its DesiredLRP.
func (s *Store) ClaimActualLRPWithDesired(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, *models.DesiredLRP, error) {
	rec, err := s.ClaimActualLRP(ctx, key, instanceKey)
	if err != nil {
		return nil, nil, err
	}
	d, err := s.DesiredLRP(ctx, key.ProcessGuid)
	if err != nil {
		return nil, nil, err
	}
	return rec, d, nil
}

// StartActualLRP: the instance runs and is healthy. From UNCLAIMED the instance must not be
// placed on another cell.
func (s *Store) StartActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, netInfo models.ActualLRPNetInfo) (*models.ActualLRP, error) {
	if err := validateInstanceKey(instanceKey); err != nil {
		return nil, err
	}
	what := "start " + actualName(key, models.PresenceOrdinary)
	return s.transitionActual(ctx, what, key, models.PresenceOrdinary, 0,
		func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			switch {
			case cur.State == models.ActualLRPStateUnclaimed && cur.CellID != "" && cur.CellID != instanceKey.CellID:
				return nil, nil, forbidden(what, fmt.Sprintf("placed on cell %q, not on %q", cur.CellID, instanceKey.CellID))
			case cur.State == models.ActualLRPStateCrashed:
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateRunning, "a CRASHED instance must be restarted first")
			case cur.State != models.ActualLRPStateUnclaimed && cur.ActualLRPInstanceKey != instanceKey:
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateRunning,
					fmt.Sprintf("held by instance %q on cell %q", cur.InstanceGuid, cur.CellID))
			case cur.State == models.ActualLRPStateRunning && cur.ActualLRPInstanceKey == instanceKey &&
				netInfoEqual(cur.ActualLRPNetInfo, netInfo):
				return nil, cur, nil // already running as reported
			}
			n := s.withState(cur, models.ActualLRPStateRunning)
			if cur.State != models.ActualLRPStateRunning {
				n.RunningSince = n.Since
			}
			n.ActualLRPInstanceKey = instanceKey
			n.ActualLRPNetInfo = netInfo
			n.PlacementError = ""
			return update(cur, n)
		})
}

// CrashActualLRP: the instance's process exited. An EVACUATING or SUSPECT record held by
// instanceKey is deleted instead (the ORDINARY record belongs to its replacement); the deleted
// record is returned. Otherwise the ORDINARY CLAIMED or RUNNING record held by instanceKey
// becomes CRASHED with crash_count+1.
func (s *Store) CrashActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, reason string) (*models.ActualLRP, error) {
	if err := validateInstanceKey(instanceKey); err != nil {
		return nil, err
	}
	what := "crash " + actualName(key, models.PresenceOrdinary)
	resetAfter := s.crashResetAfter(ctx, key.ProcessGuid)
	return s.transitionActual(ctx, what, key, "", 0,
		func(r indexRecords, _ *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			cur := r.ordinary
			for _, other := range []*models.ActualLRP{r.evacuating, r.suspect} {
				if other != nil && other.ActualLRPInstanceKey == instanceKey && (cur == nil || cur.ActualLRPInstanceKey != instanceKey) {
					return []change{{before: other}}, other, nil
				}
			}
			if cur == nil {
				return nil, nil, notFound(actualName(key, models.PresenceOrdinary))
			}
			if cur.ActualLRPInstanceKey != instanceKey {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateCrashed,
					fmt.Sprintf("held by instance %q on cell %q, not %q on %q", cur.InstanceGuid, cur.CellID, instanceKey.InstanceGuid, instanceKey.CellID))
			}
			n := s.withState(cur, models.ActualLRPStateCrashed)
			// A crash after a long healthy run starts the restart policy afresh (Diego's rule),
			// so the next quick crash does not back off from an old, high count.
			if cur.State == models.ActualLRPStateRunning && cur.RunningSince > 0 && n.Since-cur.RunningSince > resetAfter.Nanoseconds() {
				n.CrashCount = 1
			} else {
				n.CrashCount++
			}
			n.CrashReason = reason
			n.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			n.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			return []change{{before: cur, after: n, actor: &instanceKey}}, n, nil
		})
}

// crashResetAfter is how long an instance of processGuid must have been RUNNING for a crash to
// reset its crash count: the DesiredLRP's restart policy, or the default when it cannot be read.
func (s *Store) crashResetAfter(ctx context.Context, processGuid string) time.Duration {
	var policy *models.RestartPolicy
	if d, err := s.DesiredLRP(ctx, processGuid); err == nil {
		policy = d.RestartPolicy
	}
	return time.Duration(policy.WithDefaults().ResetAfterMs) * time.Millisecond
}

// RejectActualLRP: the cell cellID cannot run the UNCLAIMED instance placed on it.
func (s *Store) RejectActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, reason string) (*models.ActualLRP, error) {
	if err := requireField("cell_id", cellID); err != nil {
		return nil, err
	}
	if err := requireField("placement_error", reason); err != nil {
		return nil, err
	}
	what := "reject " + actualName(key, models.PresenceOrdinary)
	return s.transitionActual(ctx, what, key, models.PresenceOrdinary, 0,
		func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.State != models.ActualLRPStateUnclaimed && cur.State != models.ActualLRPStateClaimed {
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.ActualLRPStateUnclaimed, "only an UNCLAIMED or CLAIMED instance can be rejected")
			}
			if cur.CellID != cellID {
				return nil, nil, forbidden(what, fmt.Sprintf("placed on cell %q, not on %q", cur.CellID, cellID))
			}
			n := s.withState(cur, models.ActualLRPStateUnclaimed)
			n.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			n.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			n.PlacementError = reason
			return update(cur, n)
		})
}

// RemoveActualLRP deletes the record of presence held by instanceKey.
func (s *Store) RemoveActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, instanceKey models.ActualLRPInstanceKey) error {
	if err := validatePresence(presence); err != nil {
		return err
	}
	if err := validateInstanceKey(instanceKey); err != nil {
		return err
	}
	what := "remove " + actualName(key, presence)
	_, err := s.transitionActual(ctx, what, key, presence, 0,
		func(_ indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.ActualLRPInstanceKey != instanceKey {
				return nil, nil, forbidden(what, fmt.Sprintf("held by instance %q on cell %q", cur.InstanceGuid, cur.CellID))
			}
			return []change{{before: cur}}, nil, nil
		})
	return err
}

// EvacuateActualLRP moves an instance off a draining cell. The ORDINARY RUNNING record held
// by instanceKey becomes an EVACUATING record (replacing an older one) and a new UNCLAIMED
// ORDINARY record is created, in one transaction; a CLAIMED record goes back to UNCLAIMED.
// Evacuating again once the EVACUATING record exists returns the ORDINARY record unchanged.
func (s *Store) EvacuateActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	if err := validateInstanceKey(instanceKey); err != nil {
		return nil, err
	}
	what := "evacuate " + actualName(key, models.PresenceOrdinary)
	return s.transitionActual(ctx, what, key, models.PresenceOrdinary, 0,
		func(r indexRecords, cur *models.ActualLRP) ([]change, *models.ActualLRP, error) {
			if cur.ActualLRPInstanceKey != instanceKey {
				if r.evacuating != nil && r.evacuating.ActualLRPInstanceKey == instanceKey {
					return nil, cur, nil // already evacuated
				}
				if cur.InstanceGuid != "" {
					return nil, nil, forbidden(what, fmt.Sprintf("held by instance %q on cell %q", cur.InstanceGuid, cur.CellID))
				}
				return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.PresenceEvacuating, "not running on the evacuating cell")
			}
			replacement := s.withState(cur, models.ActualLRPStateUnclaimed)
			replacement.ActualLRPInstanceKey = models.ActualLRPInstanceKey{}
			replacement.ActualLRPNetInfo = models.ActualLRPNetInfo{}
			replacement.PlacementError = ""
			switch cur.State {
			case models.ActualLRPStateClaimed:
				return update(cur, replacement)
			case models.ActualLRPStateRunning:
				evac := *cur
				evac.Presence = models.PresenceEvacuating
				return []change{
					{before: r.evacuating, after: &evac, replace: true},
					{before: cur, after: replacement},
				}, replacement, nil
			}
			return nil, nil, refuse(actualName(key, cur.Presence), cur.State, models.PresenceEvacuating, "only a CLAIMED or RUNNING instance is evacuated")
		})
}

func validateInstanceKey(k models.ActualLRPInstanceKey) error {
	if err := requireField("instance_guid", k.InstanceGuid); err != nil {
		return err
	}
	return requireField("cell_id", k.CellID)
}

func netInfoEqual(a, b models.ActualLRPNetInfo) bool {
	if a.Address != b.Address || a.InstanceAddress != b.InstanceAddress || len(a.Ports) != len(b.Ports) {
		return false
	}
	for i := range a.Ports {
		if a.Ports[i] != b.Ports[i] {
			return false
		}
	}
	return true
}
