package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// instanceBatch is how many instance creates go into one transaction. etcd refuses a
// transaction with more than 128 operations (its default MaxTxnOps); each create is one nested
// conditional transaction, leaving room for the record that travels with the first batch.
const instanceBatch = 100

func encodeDesired(lrp *models.DesiredLRP) (string, error) {
	c := *lrp
	c.Revision = 0
	return encode(&c)
}

func decodeDesired(kv *mvccpb.KeyValue) (*models.DesiredLRP, error) {
	var lrp models.DesiredLRP
	if err := json.Unmarshal(kv.Value, &lrp); err != nil {
		return nil, decodeErr(kv.Key, err)
	}
	lrp.Revision = kv.ModRevision
	return &lrp, nil
}

// DesireLRP stores lrp and creates an UNCLAIMED ORDINARY instance for every index. The record
// and the first 100 instances are written in one transaction; larger counts follow in batches
// of 100. Should the BBS stop between batches, the converger creates the missing indices.
// An instance that already exists (left behind by an earlier record of the same guid) is kept.
func (s *Store) DesireLRP(ctx context.Context, lrp *models.DesiredLRP) (*models.DesiredLRP, error) {
	if err := lrp.Validate(); err != nil {
		return nil, err
	}
	rec := *lrp
	rec.Revision = 0
	if rec.CreatedAt == 0 {
		rec.CreatedAt = s.now()
	}
	val, err := encodeDesired(&rec)
	if err != nil {
		return nil, err
	}
	what := "desire lrp " + rec.ProcessGuid
	key := s.keys.desiredKey(rec.ProcessGuid)
	first := min(rec.Instances, instanceBatch)
	creates, err := s.instanceCreates(&rec, 0, first)
	if err != nil {
		return nil, err
	}
	resp, err := s.txn(ctx, what,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		append([]clientv3.Op{clientv3.OpPut(key, val)}, creates...)...)
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", what, models.ErrAlreadyExists)
	}
	rec.Revision = resp.Header.Revision
	if err := s.createInstances(ctx, &rec, first, rec.Instances); err != nil {
		return nil, err
	}
	return &rec, nil
}

// instanceCreates returns one conditional create per index in [from, to): each is a nested
// transaction that puts an UNCLAIMED record only if no ORDINARY record exists.
func (s *Store) instanceCreates(lrp *models.DesiredLRP, from, to int32) ([]clientv3.Op, error) {
	if to <= from {
		return nil, nil
	}
	ops := make([]clientv3.Op, 0, to-from)
	now := s.now()
	for i := from; i < to; i++ {
		a := newUnclaimed(models.ActualLRPKey{ProcessGuid: lrp.ProcessGuid, Index: i, Domain: lrp.Domain}, now)
		val, err := encodeActual(a)
		if err != nil {
			return nil, err
		}
		k := s.keys.actualKey(a.ActualLRPKey, models.PresenceOrdinary)
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k, val)}, nil))
	}
	return ops, nil
}

// createInstances creates the missing UNCLAIMED instances of indices [from, to) in batches.
func (s *Store) createInstances(ctx context.Context, lrp *models.DesiredLRP, from, to int32) error {
	for lo := from; lo < to; lo += instanceBatch {
		hi := min(lo+instanceBatch, to)
		ops, err := s.instanceCreates(lrp, lo, hi)
		if err != nil {
			return err
		}
		if _, err := s.txn(ctx, fmt.Sprintf("create instances %d-%d of %s", lo, hi-1, lrp.ProcessGuid), nil, ops...); err != nil {
			return err
		}
	}
	return nil
}

func newUnclaimed(key models.ActualLRPKey, now int64) *models.ActualLRP {
	return &models.ActualLRP{
		ActualLRPKey: key,
		State:        models.ActualLRPStateUnclaimed,
		Presence:     models.PresenceOrdinary,
		Since:        now,
	}
}

// DesiredLRP returns the record of processGuid.
func (s *Store) DesiredLRP(ctx context.Context, processGuid string) (*models.DesiredLRP, error) {
	kv, err := s.get(ctx, s.keys.desiredKey(processGuid), "desired lrp "+processGuid)
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, notFound("desired lrp " + processGuid)
	}
	return decodeDesired(kv)
}

// DesiredLRPs lists the records matching filter, in process guid order. With ProcessGuids
// set it reads those records only; otherwise it reads every record and filters by domain.
func (s *Store) DesiredLRPs(ctx context.Context, filter DesiredLRPFilter) ([]*models.DesiredLRP, int64, error) {
	if len(filter.ProcessGuids) > 0 {
		return s.desiredByGuids(ctx, filter)
	}
	var domainFrag []byte
	if filter.Domain != "" {
		domainFrag = jsonField("domain", filter.Domain)
	}
	var out []*models.DesiredLRP
	rev, err := s.list(ctx, s.keys.desired, "desired lrps", func(kv *mvccpb.KeyValue) error {
		if domainFrag != nil && !bytes.Contains(kv.Value, domainFrag) {
			return nil
		}
		lrp, err := decodeDesired(kv)
		if err != nil {
			return err
		}
		if filter.Domain == "" || lrp.Domain == filter.Domain {
			out = append(out, lrp)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// desiredByGuids reads the named records in one transaction of gets (in batches, so a long
// list does not exceed the operation limit; each batch is read at the first one's revision).
func (s *Store) desiredByGuids(ctx context.Context, filter DesiredLRPFilter) ([]*models.DesiredLRP, int64, error) {
	guids := slices.Clone(filter.ProcessGuids)
	slices.Sort(guids)
	guids = slices.Compact(guids)
	var out []*models.DesiredLRP
	var rev int64
	for lo := 0; lo < len(guids); lo += instanceBatch {
		batch := guids[lo:min(lo+instanceBatch, len(guids))]
		ops := make([]clientv3.Op, len(batch))
		for i, g := range batch {
			var opts []clientv3.OpOption
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			ops[i] = clientv3.OpGet(s.keys.desiredKey(g), opts...)
		}
		resp, err := s.txn(ctx, "read desired lrps", nil, ops...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				lrp, err := decodeDesired(kv)
				if err != nil {
					return nil, 0, err
				}
				if filter.Domain == "" || lrp.Domain == filter.Domain {
					out = append(out, lrp)
				}
			}
		}
	}
	return out, rev, nil
}

// UpdateDesiredLRP applies update in one transaction compared on the record's revision. A
// scale-down deletes every record (all presences) of the indices at or above the new count
// in the same transaction; a scale-up creates the first 100 new instances in it and the rest
// in following batches.
func (s *Store) UpdateDesiredLRP(ctx context.Context, processGuid string, update models.DesiredLRPUpdate, expectRevision int64) (*models.DesiredLRP, error) {
	what := "update desired lrp " + processGuid
	key := s.keys.desiredKey(processGuid)
	var out *models.DesiredLRP
	var scaleFrom, scaleTo int32
	err := s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, "desired lrp "+processGuid)
		if err != nil {
			return false, err
		}
		if kv == nil {
			return false, notFound("desired lrp " + processGuid)
		}
		if expectRevision != 0 && kv.ModRevision != expectRevision {
			return false, conflict(what, expectRevision, kv.ModRevision)
		}
		cur, err := decodeDesired(kv)
		if err != nil {
			return false, err
		}
		next := *cur
		if update.Instances != nil {
			next.Instances = *update.Instances
		}
		if update.Routes != nil {
			next.Routes = update.Routes
		}
		if update.Annotation != nil {
			next.Annotation = *update.Annotation
		}
		if update.RestartPolicy != nil {
			next.RestartPolicy = update.RestartPolicy
		}
		if err := next.Validate(); err != nil {
			return false, err
		}
		val, err := encodeDesired(&next)
		if err != nil {
			return false, err
		}
		ops := []clientv3.Op{clientv3.OpPut(key, val)}
		scaleFrom, scaleTo = 0, 0
		switch {
		case next.Instances < cur.Instances:
			ops = append(ops, clientv3.OpDelete(
				s.keys.actualIndex(processGuid, next.Instances),
				clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.keys.actualProcess(processGuid)))))
		case next.Instances > cur.Instances:
			first := min(next.Instances, cur.Instances+instanceBatch)
			creates, err := s.instanceCreates(&next, cur.Instances, first)
			if err != nil {
				return false, err
			}
			ops = append(ops, creates...)
			scaleFrom, scaleTo = first, next.Instances
		}
		resp, err := s.txn(ctx, what,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}, ops...)
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
		out = &next
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.createInstances(ctx, out, scaleFrom, scaleTo); err != nil {
		return nil, err
	}
	return out, nil
}

// RemoveDesiredLRP deletes the record and every instance record of the process (all
// presences) in one transaction.
func (s *Store) RemoveDesiredLRP(ctx context.Context, processGuid string) error {
	what := "remove desired lrp " + processGuid
	key := s.keys.desiredKey(processGuid)
	return s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, "desired lrp "+processGuid)
		if err != nil {
			return false, err
		}
		if kv == nil {
			return false, notFound("desired lrp " + processGuid)
		}
		resp, err := s.txn(ctx, what,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)},
			clientv3.OpDelete(key),
			clientv3.OpDelete(s.keys.actualProcess(processGuid), clientv3.WithPrefix()))
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	})
}

// jsonField returns the bytes `"name":<value as JSON>` as encoding/json writes them, for a
// cheap pre-filter of stored records before decoding them.
func jsonField(name, value string) []byte {
	v, _ := json.Marshal(value) // a string always marshals
	return append([]byte(`"`+name+`":`), v...)
}
