package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// CellDrainer is the optional capability of asking a cell to drain. *Store implements it, and
// so does the BBS client; the server answers POST /v1/cells/{id}/drain through it.
type CellDrainer interface {
	// DrainCell marks the present cell cellID as draining and returns its presence. The
	// auctioneer places nothing more on a draining cell; the cell's agent sees the change on
	// its event stream (cell_changed) and evacuates. The flag lasts as long as the cell's
	// lease: heartbeats do not clear it. Draining a draining cell changes nothing.
	// Errors: NotFound (the cell is not present).
	DrainCell(ctx context.Context, cellID string) (*models.CellPresence, error)
}

var _ CellDrainer = (*Store)(nil)

// DrainCell implements CellDrainer: one compare-and-swap on the presence, under its lease.
func (s *Store) DrainCell(ctx context.Context, cellID string) (*models.CellPresence, error) {
	what := "drain cell " + cellID
	key := s.keys.cellKey(cellID)
	var out *models.CellPresence
	err := s.retry(ctx, what, func() (bool, error) {
		kv, err := s.get(ctx, key, "cell "+cellID)
		if err != nil {
			return false, err
		}
		if kv == nil {
			return false, notFound("cell " + cellID)
		}
		c, err := decodeCell(kv)
		if err != nil {
			return false, err
		}
		out = c
		if c.Draining {
			return true, nil
		}
		c.Draining = true
		b, err := json.Marshal(c)
		if err != nil {
			return false, fmt.Errorf("encode cell presence: %w", err)
		}
		resp, err := s.txn(ctx, what,
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)},
			clientv3.OpPut(key, string(b), clientv3.WithLease(clientv3.LeaseID(kv.Lease))))
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// keepDraining returns presence with Draining set when the stored presence (kv) is draining:
// a drain asked for by DrainCell lasts for the lease, whatever later heartbeats say.
func keepDraining(presence *models.CellPresence, stored []byte) *models.CellPresence {
	if presence.Draining {
		return presence
	}
	var cur struct {
		Draining bool `json:"draining"`
	}
	if json.Unmarshal(stored, &cur) != nil || !cur.Draining {
		return presence
	}
	p := *presence
	p.Draining = true
	return &p
}
