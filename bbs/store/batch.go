package store

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// MaxActualLRPOps bounds the operations of one ApplyActualLRPOps call.
const MaxActualLRPOps = 1000

// batchTxnOps is how many operations of a batch go into one etcd transaction, reads and
// writes alike. etcd refuses a transaction of more than 128 operations (its default
// MaxTxnOps); each write is one nested transaction with its own comparisons, so it counts once.
const batchTxnOps = 100

// ActualLRPAction names one brain-side instance write of a batch; each is the single call of
// the same name.
type ActualLRPAction string

// The actions of ApplyActualLRPOps.
const (
	ActionCreateUnclaimed ActualLRPAction = "create_unclaimed" // CreateUnclaimedActualLRP
	ActionPlace           ActualLRPAction = "place"            // PlaceActualLRP (CellID)
	ActionFailPlacement   ActualLRPAction = "fail_placement"   // FailActualLRPPlacement (Reason)
	ActionRestart         ActualLRPAction = "restart"          // RestartActualLRP
	ActionRetire          ActualLRPAction = "retire"           // RetireActualLRP (Presence)
	ActionMarkSuspect     ActualLRPAction = "suspect"          // MarkActualLRPSuspect
)

// ActualLRPOp is one operation of ApplyActualLRPOps: an action on the index ProcessGuid/Index
// with the arguments of its single call. Revision is the expected revision (0 = any, retried
// on a concurrent change); create_unclaimed takes none.
type ActualLRPOp struct {
	Action      ActualLRPAction `json:"action"`
	ProcessGuid string          `json:"process_guid"`
	Index       int32           `json:"index"`
	CellID      string          `json:"cell_id,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	Presence    string          `json:"presence,omitempty"`
	Revision    int64           `json:"revision,omitempty"`
}

// Key returns the instance key the operation acts on.
func (op ActualLRPOp) Key() models.ActualLRPKey {
	return models.ActualLRPKey{ProcessGuid: op.ProcessGuid, Index: op.Index}
}

// ActualLRPOpResult is the outcome of one operation: the record its single call returns (nil
// for retire) or the error that call would return.
type ActualLRPOpResult struct {
	ActualLRP *models.ActualLRP
	Err       error
}

// batchItem is one operation on its way through ApplyActualLRPOps.
type batchItem struct {
	i        int // position in the caller's list
	create   bool
	plan     actualPlan
	attempts int // compare-and-swaps lost to concurrent writers
}

// indexID names one index of one process within a batch.
type indexID struct {
	guid  string
	index int32
}

func (it *batchItem) id() indexID { return indexID{it.plan.key.ProcessGuid, it.plan.key.Index} }

// batchRead is what one round read from etcd: every presence of each index, and the
// DesiredLRP of each create.
type batchRead struct {
	index   map[indexID]indexRecords
	bad     map[indexID]error // an index holding a record that cannot be decoded
	desired map[string]*mvccpb.KeyValue
}

// batchWrite is one planned write: a nested transaction of its own comparisons and writes.
type batchWrite struct {
	it     *batchItem
	cmps   []clientv3.Cmp
	ops    []clientv3.Op
	result *models.ActualLRP
}

// ApplyActualLRPOps applies many brain-side instance writes at once. Each operation keeps the
// semantics of its single call — validation, the compare-and-swap on the revision of every
// record it touches, one event per record changed — and gets a result of its own, so one
// refused operation does not fail the others. The writes of up to 100 operations share one
// etcd transaction in which each is a nested transaction with its own comparisons.
//
// Decisions are first made on the records of the shared watch; an operation the cache cannot
// decide, or whose compare-and-swap fails, is decided again on records read from etcd (many
// indices per read), so that every refusal and every answer without a write comes from etcd,
// as with the single calls. Operations on the same index are applied in the order given.
// The error return is for the call as a whole (too many operations).
func (s *Store) ApplyActualLRPOps(ctx context.Context, ops []ActualLRPOp) ([]ActualLRPOpResult, error) {
	if len(ops) > MaxActualLRPOps {
		return nil, &models.FieldError{Field: "ops",
			Reason: fmt.Sprintf("%d operations are over the limit of %d", len(ops), MaxActualLRPOps)}
	}
	results := make([]ActualLRPOpResult, len(ops))
	todo := make([]*batchItem, 0, len(ops))
	for i, op := range ops {
		it, err := s.newBatchItem(i, op)
		if err != nil {
			results[i].Err = err
			continue
		}
		todo = append(todo, it)
	}
	for round := 0; len(todo) > 0; round++ {
		if err := ctx.Err(); err != nil {
			for _, it := range todo {
				results[it.i].Err = fmt.Errorf("%s: %w", it.plan.what, err)
			}
			break
		}
		todo = s.batchRound(ctx, todo, round == 0 && !s.opts.DirectWatch, results)
	}
	return results, nil
}

// newBatchItem validates op and returns its plan.
func (s *Store) newBatchItem(i int, op ActualLRPOp) (*batchItem, error) {
	key := op.Key()
	if err := validateActualKey(key); err != nil {
		return nil, err
	}
	it := &batchItem{i: i}
	var err error
	switch op.Action {
	case ActionCreateUnclaimed:
		it.create = true
		it.plan = actualPlan{what: "create " + actualName(key, models.PresenceOrdinary), key: key}
	case ActionPlace:
		it.plan, err = s.placePlan(key, op.CellID, op.Revision)
	case ActionFailPlacement:
		it.plan, err = s.failPlacementPlan(key, op.Reason, op.Revision)
	case ActionRestart:
		it.plan = s.restartPlan(key, op.Revision)
	case ActionRetire:
		it.plan, err = s.retirePlan(key, op.Presence, op.Revision)
	case ActionMarkSuspect:
		it.plan = s.suspectPlan(key, op.Revision)
	default:
		err = &models.FieldError{Field: "action", Reason: fmt.Sprintf("unknown action %q (want create_unclaimed, place, "+
			"fail_placement, restart, retire or suspect)", op.Action)}
	}
	if err != nil {
		return nil, err
	}
	return it, nil
}

// batchRound decides and writes todo once — on the shared watch's records when cached,
// otherwise on records read from etcd now — records each answer in results, and returns the
// operations for another round: those the cache could not decide, those that lost a
// compare-and-swap, and those behind an earlier operation on the same index.
func (s *Store) batchRound(ctx context.Context, todo []*batchItem, cached bool, results []ActualLRPOpResult) []*batchItem {
	// Everything is read from etcd but in the cached round, where only creates are: they check
	// the DesiredLRP, which the shared watch does not keep.
	toRead := todo
	if cached {
		toRead = nil
		for _, it := range todo {
			if it.create {
				toRead = append(toRead, it)
			}
		}
	}
	var read batchRead
	if len(toRead) > 0 {
		var err error
		if read, err = s.readBatch(ctx, toRead); err != nil {
			for _, it := range toRead {
				results[it.i].Err = err
			}
			if !cached {
				return nil
			}
			toRead = nil
		}
	}
	readOK := make(map[*batchItem]bool, len(toRead))
	for _, it := range toRead {
		readOK[it] = true
	}
	var next []*batchItem
	var writes []batchWrite
	seen := make(map[indexID]bool, len(todo))
	for _, it := range todo {
		id := it.id()
		if seen[id] {
			next = append(next, it) // after the earlier operation on this index
			continue
		}
		seen[id] = true
		var w batchWrite
		var answer ActualLRPOpResult
		var decided bool
		if it.create {
			if !readOK[it] {
				continue // the read failed: answered above
			}
			w, answer, decided = s.planCreate(it, read)
		} else {
			r, ok := indexRecords{}, true
			switch {
			case cached:
				r, ok = s.hub.index(it.plan.key)
			case read.bad[id] != nil:
				results[it.i].Err = read.bad[id]
				continue
			default:
				r = read.index[id]
			}
			if ok {
				w, answer, decided = s.planTransition(it, r)
			}
			if cached && (!ok || decided) {
				// Only a write is taken from the cache; every other answer comes from etcd.
				next = append(next, it)
				continue
			}
		}
		if decided {
			results[it.i] = answer
			continue
		}
		writes = append(writes, w)
	}
	for lo := 0; lo < len(writes); lo += batchTxnOps {
		next = append(next, s.commitBatch(ctx, writes[lo:min(lo+batchTxnOps, len(writes))], cached, results)...)
	}
	return next
}

// planTransition decides one transition on r. It returns the write to make, or decided with
// the answer (a refusal, or the record when there is nothing to change).
func (s *Store) planTransition(it *batchItem, r indexRecords) (batchWrite, ActualLRPOpResult, bool) {
	p := it.plan
	var cur *models.ActualLRP
	if p.presence != "" {
		if cur = r.of(p.presence); cur == nil {
			return batchWrite{}, ActualLRPOpResult{Err: notFound(actualName(p.key, p.presence))}, true
		}
		if p.expect != 0 && cur.Revision != p.expect {
			return batchWrite{}, ActualLRPOpResult{Err: conflict(p.what, p.expect, cur.Revision)}, true
		}
	}
	changes, result, err := p.decide(r, cur)
	if err != nil {
		return batchWrite{}, ActualLRPOpResult{Err: err}, true
	}
	if len(changes) == 0 {
		return batchWrite{}, ActualLRPOpResult{ActualLRP: result}, true
	}
	cmps, ops, err := s.changeOps(changes)
	if err != nil {
		return batchWrite{}, ActualLRPOpResult{Err: err}, true
	}
	return batchWrite{it: it, cmps: cmps, ops: ops, result: result}, ActualLRPOpResult{}, false
}

// planCreate decides one create_unclaimed on records read from etcd, with the checks of
// CreateUnclaimedActualLRP: the DesiredLRP exists, wants the index, and is still the record
// read when the instance is written.
func (s *Store) planCreate(it *batchItem, read batchRead) (batchWrite, ActualLRPOpResult, bool) {
	key := it.plan.key
	refuse := func(err error) (batchWrite, ActualLRPOpResult, bool) {
		return batchWrite{}, ActualLRPOpResult{Err: err}, true
	}
	dkv := read.desired[key.ProcessGuid]
	if dkv == nil {
		return refuse(notFound("desired lrp " + key.ProcessGuid))
	}
	desired, err := decodeDesired(dkv)
	if err != nil {
		return refuse(err)
	}
	if key.Index >= desired.Instances {
		return refuse(&models.FieldError{Field: "index",
			Reason: fmt.Sprintf("%d is out of range: desired lrp %s has %d instances", key.Index, key.ProcessGuid, desired.Instances)})
	}
	if err := read.bad[it.id()]; err != nil {
		return refuse(err)
	}
	if read.index[it.id()].ordinary != nil {
		return refuse(fmt.Errorf("%s: %w", it.plan.what, models.ErrAlreadyExists))
	}
	key.Domain = desired.Domain
	a := newUnclaimed(key, s.now())
	if err := a.ValidateState(); err != nil {
		return refuse(err)
	}
	val, err := encodeActual(a)
	if err != nil {
		return refuse(err)
	}
	k := s.keys.actualKey(key, models.PresenceOrdinary)
	return batchWrite{it: it, result: a,
		cmps: []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.keys.desiredKey(key.ProcessGuid)), "=", dkv.ModRevision),
			clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
		},
		ops: []clientv3.Op{clientv3.OpPut(k, val)},
	}, ActualLRPOpResult{}, false
}

// commitBatch writes ws in one etcd transaction, each as a nested transaction, records the
// answers of those that committed or are refused for good, and returns those to decide again.
func (s *Store) commitBatch(ctx context.Context, ws []batchWrite, cached bool, results []ActualLRPOpResult) []*batchItem {
	ops := make([]clientv3.Op, len(ws))
	for j, w := range ws {
		ops[j] = clientv3.OpTxn(w.cmps, w.ops, nil)
	}
	resp, err := s.txn(ctx, fmt.Sprintf("write %d instance operations", len(ws)), nil, ops...)
	if err != nil {
		for _, w := range ws {
			results[w.it.i].Err = fmt.Errorf("%s: %w", w.it.plan.what, err)
		}
		return nil
	}
	var again []*batchItem
	for j, w := range ws {
		if resp.Responses[j].GetResponseTxn().GetSucceeded() {
			if w.result != nil {
				w.result.Revision = resp.Header.Revision
			}
			results[w.it.i] = ActualLRPOpResult{ActualLRP: w.result}
			continue
		}
		switch {
		case cached:
			// A stale cached record: decided again on a read of etcd.
		case w.it.plan.expect != 0:
			results[w.it.i].Err = conflict(w.it.plan.what, w.it.plan.expect, 0)
			continue
		case w.it.attempts+1 >= s.opts.MaxRetries:
			results[w.it.i].Err = fmt.Errorf("%s: %w: gave up after %d concurrent changes", w.it.plan.what, models.ErrConflict, s.opts.MaxRetries)
			continue
		default:
			w.it.attempts++
			s.log.Debug("store transition lost a race; retrying", "op", w.it.plan.what, "attempt", w.it.attempts)
		}
		again = append(again, w.it)
	}
	return again
}

// readBatch reads every presence of each index of todo, and the DesiredLRP of each create,
// batchTxnOps reads per etcd transaction.
func (s *Store) readBatch(ctx context.Context, todo []*batchItem) (batchRead, error) {
	read := batchRead{index: make(map[indexID]indexRecords, len(todo)), bad: map[indexID]error{},
		desired: map[string]*mvccpb.KeyValue{}}
	type target struct {
		id      indexID
		desired string // the guid, for a DesiredLRP read
	}
	var targets []target
	var gets []clientv3.Op
	wantDesired := map[string]bool{}
	for _, it := range todo {
		id := it.id()
		if _, ok := read.index[id]; !ok {
			read.index[id] = indexRecords{}
			targets = append(targets, target{id: id})
			gets = append(gets, clientv3.OpGet(s.keys.actualIndex(id.guid, id.index), clientv3.WithPrefix()))
		}
		if it.create && !wantDesired[id.guid] {
			wantDesired[id.guid] = true
			targets = append(targets, target{desired: id.guid})
			gets = append(gets, clientv3.OpGet(s.keys.desiredKey(id.guid)))
		}
	}
	for lo := 0; lo < len(gets); lo += batchTxnOps {
		hi := min(lo+batchTxnOps, len(gets))
		resp, err := s.txn(ctx, fmt.Sprintf("read %d instance records", hi-lo), nil, gets[lo:hi]...)
		if err != nil {
			return read, err
		}
		for j, r := range resp.Responses {
			t := targets[lo+j]
			kvs := r.GetResponseRange().GetKvs()
			if t.desired != "" {
				if len(kvs) > 0 {
					read.desired[t.desired] = kvs[0]
				}
				continue
			}
			rec, err := indexFrom(kvs)
			if err != nil {
				read.bad[t.id] = err
			}
			read.index[t.id] = rec
		}
	}
	return read, nil
}
