package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

func decodeCell(kv *mvccpb.KeyValue) (*models.CellPresence, error) {
	var c models.CellPresence
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, decodeErr(kv.Key, err)
	}
	return &c, nil
}

// leaseSeconds converts a ttl to whole etcd lease seconds, rounding up.
func leaseSeconds(field string, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, &models.FieldError{Field: field, Reason: fmt.Sprintf("must be positive, got %s", ttl)}
	}
	return int64(math.Ceil(ttl.Seconds())), nil
}

// grant creates a lease of ttl seconds.
func (s *Store) grant(ctx context.Context, what string, ttl int64) (clientv3.LeaseID, error) {
	resp, err := s.kv().Grant(ctx, ttl)
	if err != nil {
		return 0, s.etcdErr(ctx, what+": grant lease", err)
	}
	return resp.ID, nil
}

// revokeQuietly revokes a lease that was granted but not used (a lost race); failure only
// delays its expiry, so it is logged, not returned.
func (s *Store) revokeQuietly(ctx context.Context, id clientv3.LeaseID) {
	if _, err := s.kv().Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.log.Debug("revoke unused lease", "lease", int64(id), "error", err)
	}
}

// keepAlive renews lease once, over one of the renewers' long-lived streams (or, should
// that stream fail, a stream of its own). It reports false when the lease no longer exists
// (expired or revoked).
func (s *Store) keepAlive(ctx context.Context, what string, lease int64) (bool, error) {
	if lease == 0 {
		return false, nil
	}
	i := s.pick()
	_, err := s.renew[i].renew(ctx, clientv3.LeaseID(lease))
	if se := (*errStream)(nil); errors.As(err, &se) {
		s.log.Debug("lease keep-alive stream failed; renewing on a stream of its own", "lease", lease, "error", err)
		_, err = s.pool[i].KeepAliveOnce(ctx, clientv3.LeaseID(lease))
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return false, nil
	default:
		return false, s.etcdErr(ctx, what+": keep lease alive", err)
	}
}

// putUnderNewLease grants a lease of ttl seconds and puts val at key under it, provided key is
// still as read (kv, nil when absent). It reports false, with the lease revoked, when key
// changed in between.
func (s *Store) putUnderNewLease(ctx context.Context, what, key, val string, kv *mvccpb.KeyValue, ttl int64) (bool, error) {
	id, err := s.grant(ctx, what, ttl)
	if err != nil {
		return false, err
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if kv != nil {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
	}
	resp, err := s.txn(ctx, what, []clientv3.Cmp{cmp}, clientv3.OpPut(key, val, clientv3.WithLease(id)))
	if err != nil || !resp.Succeeded {
		s.revokeQuietly(context.WithoutCancel(ctx), id)
		return false, err
	}
	return true, nil
}

// Heartbeat stores presence under the cell's lease. The lease id lives in the key itself
// (etcd's per-key lease), so any BBS replica can serve any heartbeat: an existing lease is
// renewed with KeepAliveOnce, a missing or expired one replaced by a new lease of ttl
// (rounded up to whole seconds). An unchanged presence is not rewritten, so steady heartbeats
// cost one lease renewal and produce no events; a changed one produces cell_changed. A cell
// drained with DrainCell stays draining for its lease whatever the heartbeat says.
func (s *Store) Heartbeat(ctx context.Context, presence *models.CellPresence, ttl time.Duration) error {
	if err := presence.Validate(); err != nil {
		return err
	}
	secs, err := leaseSeconds("ttl", ttl)
	if err != nil {
		return err
	}
	b, err := json.Marshal(presence)
	if err != nil {
		return fmt.Errorf("encode cell presence: %w", err)
	}
	val := string(b)
	what := "heartbeat of cell " + presence.CellID
	key := s.keys.cellKey(presence.CellID)
	return s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, "cell "+presence.CellID)
		if err != nil {
			return false, err
		}
		if kv != nil {
			alive, err := s.keepAlive(ctx, what, kv.Lease)
			if err != nil {
				return false, err
			}
			if alive {
				b, val := b, val
				if p := keepDraining(presence, kv.Value); p != presence {
					if b, err = json.Marshal(p); err != nil {
						return false, fmt.Errorf("encode cell presence: %w", err)
					}
					val = string(b)
				}
				if bytes.Equal(kv.Value, b) {
					return true, nil
				}
				resp, err := s.txn(ctx, what,
					[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)},
					clientv3.OpPut(key, val, clientv3.WithLease(clientv3.LeaseID(kv.Lease))))
				if err != nil {
					return false, err
				}
				return resp.Succeeded, nil
			}
		}
		return s.putUnderNewLease(ctx, what, key, val, kv, secs)
	})
}

// Cell returns one present cell.
func (s *Store) Cell(ctx context.Context, cellID string) (*models.CellPresence, error) {
	kv, err := s.get(ctx, s.keys.cellKey(cellID), "cell "+cellID)
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, notFound("cell " + cellID)
	}
	return decodeCell(kv)
}

// Cells lists the present cells in cell id order.
func (s *Store) Cells(ctx context.Context) ([]*models.CellPresence, int64, error) {
	var out []*models.CellPresence
	rev, err := s.list(ctx, s.keys.cells, "cells", func(kv *mvccpb.KeyValue) error {
		c, err := decodeCell(kv)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// RemoveCell revokes the cell's lease, deleting its presence at once (cell_disappeared).
func (s *Store) RemoveCell(ctx context.Context, cellID string) error {
	what := "remove cell " + cellID
	key := s.keys.cellKey(cellID)
	kv, err := s.get(ctx, key, "cell "+cellID)
	if err != nil {
		return err
	}
	if kv == nil {
		return notFound("cell " + cellID)
	}
	if kv.Lease == 0 {
		if _, err := s.kv().Delete(ctx, key); err != nil {
			return s.etcdErr(ctx, what, err)
		}
		return nil
	}
	if _, err := s.kv().Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return s.etcdErr(ctx, what, err)
	}
	return nil
}

// UpsertDomain marks name fresh for ttl (0 = until changed). A ttl puts the record under a
// new lease; the lease of the previous record, if any, is revoked after the write.
func (s *Store) UpsertDomain(ctx context.Context, name string, ttl time.Duration) error {
	if err := (&models.Domain{Name: name}).Validate(); err != nil {
		return err
	}
	if ttl < 0 {
		return &models.FieldError{Field: "ttl", Reason: fmt.Sprintf("must not be negative, got %s", ttl)}
	}
	what := "upsert domain " + name
	key := s.keys.domainKey(name)
	d := models.Domain{Name: name}
	var opts []clientv3.OpOption
	if ttl > 0 {
		secs, _ := leaseSeconds("ttl", ttl)
		d.ExpiresAt = s.opts.Now().Add(ttl).UnixNano()
		id, err := s.grant(ctx, what, secs)
		if err != nil {
			return err
		}
		opts = append(opts, clientv3.WithLease(id))
	}
	val, err := encode(&d)
	if err != nil {
		return err
	}
	resp, err := s.kv().Put(ctx, key, val, append(opts, clientv3.WithPrevKV())...)
	if err != nil {
		return s.etcdErr(ctx, what, err)
	}
	if prev := resp.PrevKv; prev != nil && prev.Lease != 0 {
		s.revokeQuietly(ctx, clientv3.LeaseID(prev.Lease))
	}
	return nil
}

// Domains lists the fresh domains in name order.
func (s *Store) Domains(ctx context.Context) ([]*models.Domain, error) {
	now := s.now()
	var out []*models.Domain
	_, err := s.list(ctx, s.keys.domains, "domains", func(kv *mvccpb.KeyValue) error {
		var d models.Domain
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			return decodeErr(kv.Key, err)
		}
		// A lease is deleted up to a second late; do not report what is already stale.
		if d.ExpiresAt == 0 || d.ExpiresAt > now {
			out = append(out, &d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AcquireLock takes the free lock name for owner under a new lease of ttl, or renews the
// lease when owner already holds it (a renewal keeps the ttl the lock was taken with).
func (s *Store) AcquireLock(ctx context.Context, name, owner string, ttl time.Duration) error {
	if err := validateName("lock", name); err != nil {
		return err
	}
	if err := requireField("owner", owner); err != nil {
		return err
	}
	secs, err := leaseSeconds("ttl", ttl)
	if err != nil {
		return err
	}
	what := "acquire lock " + name
	key := s.keys.lockKey(name)
	return s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, "lock "+name)
		if err != nil {
			return false, err
		}
		if kv != nil {
			if holder := string(kv.Value); holder != owner {
				return false, fmt.Errorf("%s: %w: held by %q", what, models.ErrLockHeld, holder)
			}
			alive, err := s.keepAlive(ctx, what, kv.Lease)
			if err != nil || alive {
				return alive, err
			}
		}
		return s.putUnderNewLease(ctx, what, key, owner, kv, secs)
	})
}

// ReleaseLock revokes the lease of lock name if owner holds it; otherwise it does nothing.
func (s *Store) ReleaseLock(ctx context.Context, name, owner string) error {
	kv, err := s.get(ctx, s.keys.lockKey(name), "lock "+name)
	if err != nil || kv == nil || string(kv.Value) != owner {
		return err
	}
	// Revoking the lease read is safe even if the lock changed hands since: a new holder
	// has a lease of its own.
	if kv.Lease == 0 {
		_, err := s.kv().Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
		if err != nil {
			return s.etcdErr(ctx, "release lock "+name, err)
		}
		return nil
	}
	if _, err := s.kv().Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return s.etcdErr(ctx, "release lock "+name, err)
	}
	return nil
}

// LockOwner returns the holder of lock name, or "" when it is free.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	kv, err := s.get(ctx, s.keys.lockKey(name), "lock "+name)
	if err != nil || kv == nil {
		return "", err
	}
	return string(kv.Value), nil
}
