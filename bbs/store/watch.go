package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// Watch streams every change after fromRevision (0: from now) under the store's prefix that
// matches filter, in revision order (changes of one transaction in the order they were
// written), calling fn for each. It returns when ctx ends (with ctx's error), when fn returns
// an error (that error), or when the watch fails: models.ErrCompacted when fromRevision is no
// longer kept, models.ErrUnavailable when etcd cancels the watch or loses its leader.
//
// A cell whose lease expires or is revoked yields cell_disappeared carrying its last presence.
// Domain and lock records produce no events.
func (s *Store) Watch(ctx context.Context, fromRevision int64, filter EventFilter, fn func(Event) error) error {
	if fromRevision < 0 {
		return &models.FieldError{Field: "from_revision", Reason: fmt.Sprintf("must not be negative, got %d", fromRevision)}
	}
	if !s.opts.DirectWatch {
		if served, err := s.hub.watch(ctx, fromRevision, filter, fn); served || err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRevision > 0 {
		opts = append(opts, clientv3.WithRev(fromRevision+1))
	}
	wch := s.client.Watch(ctx, s.keys.prefix, opts...)
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("watch from revision %d: %w: history before revision %d is compacted",
				fromRevision, models.ErrCompacted, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch from revision %d: %w: %w", fromRevision, models.ErrCompacted, err)
			}
			return s.etcdErr(ctx, "watch", err)
		}
		for _, ev := range resp.Events {
			e, ok, err := s.decodeEvent(ev)
			if err != nil {
				s.log.Warn("skipping undecodable record in event stream", "key", string(ev.Kv.Key), "error", err)
				continue
			}
			if !ok || !filter.matches(&e) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return fmt.Errorf("watch: %w: the watch channel closed", models.ErrUnavailable)
}

// matches reports whether e passes the filter (see EventFilter).
func (f EventFilter) matches(e *Event) bool {
	if f.CellID != "" {
		switch {
		case e.ActualLRP != nil:
			if e.ActualLRP.CellID != f.CellID && (e.PreviousActualLRP == nil || e.PreviousActualLRP.CellID != f.CellID) {
				return false
			}
		case e.Task != nil:
			if e.Task.CellID != f.CellID && (e.PreviousTask == nil || e.PreviousTask.CellID != f.CellID) {
				return false
			}
		case e.Cell != nil:
			if e.Cell.CellID != f.CellID {
				return false
			}
		default:
			return false
		}
	}
	if f.ProcessGuid != "" {
		switch {
		case e.DesiredLRP != nil:
			return e.DesiredLRP.ProcessGuid == f.ProcessGuid
		case e.ActualLRP != nil:
			return e.ActualLRP.ProcessGuid == f.ProcessGuid
		default:
			return false
		}
	}
	return true
}

// decodeEvent turns one etcd event into a store Event; ok is false for keys that produce no
// events (domains, locks, anything unknown under the prefix).
func (s *Store) decodeEvent(ev *clientv3.Event) (Event, bool, error) {
	key := string(ev.Kv.Key)
	created := ev.Type == clientv3.EventTypePut && ev.Kv.Version == 1
	deleted := ev.Type == clientv3.EventTypeDelete
	e := Event{Revision: ev.Kv.ModRevision}
	// The record after the change, or for a deletion its last value (whose Revision is the
	// revision it was written at; Event.Revision is that of the deletion); prev is the value
	// before a change.
	cur, prev := ev.Kv, ev.PrevKv
	if deleted {
		cur, prev = ev.PrevKv, nil
	}
	var err error
	switch {
	case strings.HasPrefix(key, s.keys.desired):
		e.Type = pick(created, deleted, EventDesiredLRPCreated, EventDesiredLRPChanged, EventDesiredLRPRemoved)
		if cur == nil {
			e.DesiredLRP = &models.DesiredLRP{ProcessGuid: key[len(s.keys.desired):]}
		} else if e.DesiredLRP, err = decodeDesired(cur); err != nil {
			return e, false, err
		}
		if prev != nil && !created {
			if e.PreviousDesiredLRP, err = decodeDesired(prev); err != nil {
				return e, false, err
			}
		}
	case strings.HasPrefix(key, s.keys.actual):
		e.Type = pick(created, deleted, EventActualLRPCreated, EventActualLRPChanged, EventActualLRPRemoved)
		if cur == nil {
			guid, index, presence, ok := parseActual(key[len(s.keys.actual):])
			if !ok {
				return e, false, nil
			}
			e.ActualLRP = &models.ActualLRP{ActualLRPKey: models.ActualLRPKey{ProcessGuid: guid, Index: index}, Presence: presence}
		} else if e.ActualLRP, err = decodeActual(cur); err != nil {
			return e, false, err
		}
		if prev != nil && !created {
			if e.PreviousActualLRP, err = decodeActual(prev); err != nil {
				return e, false, err
			}
		}
	case strings.HasPrefix(key, s.keys.tasks):
		e.Type = pick(created, deleted, EventTaskCreated, EventTaskChanged, EventTaskRemoved)
		if cur == nil {
			e.Task = &models.Task{TaskGuid: key[len(s.keys.tasks):]}
		} else if e.Task, err = decodeTask(cur); err != nil {
			return e, false, err
		}
		if prev != nil && !created {
			if e.PreviousTask, err = decodeTask(prev); err != nil {
				return e, false, err
			}
		}
	case strings.HasPrefix(key, s.keys.cells):
		e.Type = pick(created, deleted, EventCellAppeared, EventCellChanged, EventCellDisappeared)
		if cur == nil {
			e.Cell = &models.CellPresence{CellID: key[len(s.keys.cells):]}
		} else if e.Cell, err = decodeCell(cur); err != nil {
			return e, false, err
		}
	default:
		return e, false, nil
	}
	return e, true, nil
}

func pick(created, deleted bool, c, u, d EventType) EventType {
	switch {
	case created:
		return c
	case deleted:
		return d
	}
	return u
}
