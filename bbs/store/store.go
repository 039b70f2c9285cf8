package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// DefaultPrefix is the key prefix of every BBS record in etcd.
const DefaultPrefix = "/trellis/v1/"

// Options tune a Store. Zero fields take the values of DefaultOptions.
type Options struct {
	// Prefix is the etcd key prefix of every record; it must start and end with "/".
	// Several BBS deployments (or tests) can share one etcd cluster under different prefixes.
	Prefix string
	// MaxRetries bounds how often a transition with expectRevision 0 re-reads and retries
	// after losing a race to a concurrent writer before giving up with models.ErrConflict.
	MaxRetries int
	// PageSize is how many keys a bulk read fetches per etcd request. All pages are read at
	// the revision of the first, so a listing is one consistent snapshot.
	PageSize int64
	// Logger receives debug lines about retries; nil discards them.
	Logger *slog.Logger
	// Now returns the time stamped on records (since, created_at, ...); nil means time.Now.
	Now func() time.Time
	// DirectWatch gives every Watch call an etcd watch of its own and reads a cell's
	// ActualLRPs from etcd. By default (false) the Store shares one etcd watch among its
	// Watch calls and serves a cell's ActualLRPs from the records that watch keeps (see
	// hub.go): with a thousand cells streaming, one watch per cell decodes every change a
	// thousand times.
	DirectWatch bool
	// WatchHistory is how many recent events the shared watch keeps, so that a watch from
	// the revision of a listing just read starts from it; older revisions get an etcd watch
	// of their own.
	WatchHistory int
	// WatchQueue is how many events a subscriber of the shared watch may fall behind before
	// its Watch ends with models.ErrCompacted (it reads everything again).
	WatchQueue int
	// Clients are more clients of the same etcd cluster, each with a gRPC connection of its
	// own. Reads, transactions and lease calls go round-robin over the client given to New
	// and these, so that a busy BBS does not queue them all on one connection; watches stay
	// on the client given to New. The caller owns them and closes them after the Store's last
	// use.
	Clients []*clientv3.Client
}

// DefaultOptions returns the options New uses for zero fields.
func DefaultOptions() Options {
	return Options{
		Prefix:       DefaultPrefix,
		MaxRetries:   20,
		PageSize:     5000,
		Logger:       slog.New(slog.DiscardHandler),
		Now:          time.Now,
		WatchHistory: 50_000,
		WatchQueue:   1 << 20,
	}
}

// Validate reports whether opts (after defaults) can be used.
func (o Options) Validate() error {
	if !strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/") {
		return fmt.Errorf("store options: prefix %q must start and end with /", o.Prefix)
	}
	if o.MaxRetries < 1 {
		return fmt.Errorf("store options: max retries %d must be at least 1", o.MaxRetries)
	}
	if o.PageSize < 1 {
		return fmt.Errorf("store options: page size %d must be at least 1", o.PageSize)
	}
	if o.WatchHistory < 1 || o.WatchQueue < 1 {
		return fmt.Errorf("store options: watch history %d and watch queue %d must be at least 1", o.WatchHistory, o.WatchQueue)
	}
	for i, c := range o.Clients {
		if c == nil {
			return fmt.Errorf("store options: client %d is nil", i)
		}
	}
	return nil
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Prefix == "" {
		o.Prefix = d.Prefix
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = d.MaxRetries
	}
	if o.PageSize == 0 {
		o.PageSize = d.PageSize
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	if o.WatchHistory == 0 {
		o.WatchHistory = d.WatchHistory
	}
	if o.WatchQueue == 0 {
		o.WatchQueue = d.WatchQueue
	}
	return o
}

// Store keeps the BBS records in etcd. It holds no state of its own besides the client, so any
// number of BBS replicas may serve the same cluster. It is safe for concurrent use.
type Store struct {
	client *clientv3.Client   // watches
	pool   []*clientv3.Client // requests: client and Options.Clients
	renew  []*renewer         // lease renewals, one per client of pool
	next   atomic.Uint32
	keys   keys
	opts   Options
	log    *slog.Logger
	hub    *hub
}

var _ Interface = (*Store)(nil)

// New returns a Store over client. Zero fields of opts take DefaultOptions; New panics if the
// result is invalid (a programming error, such as a prefix without slashes). The caller owns
// client and closes it after the last use of the Store. The Store keeps lease keep-alive
// streams open on its clients (at most 64 idle per client) until they are closed.
func New(client *clientv3.Client, opts Options) *Store {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	s := &Store{client: client, keys: newKeys(opts.Prefix), opts: opts, log: opts.Logger}
	s.pool = append([]*clientv3.Client{client}, opts.Clients...)
	for _, c := range s.pool {
		s.renew = append(s.renew, newRenewer(c))
	}
	s.hub = newHub(s)
	return s
}

// pick returns the index in the pool of the client for the next request: each of the pool's
// connections in turn.
func (s *Store) pick() int {
	if len(s.pool) == 1 {
		return 0
	}
	return int(s.next.Add(1) % uint32(len(s.pool)))
}

// kv returns the client for the next request.
func (s *Store) kv() *clientv3.Client { return s.pool[s.pick()] }

// Revision returns the store's current etcd revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.kv().Get(ctx, s.keys.prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.etcdErr(ctx, "read revision", err)
	}
	return resp.Header.Revision, nil
}

func (s *Store) now() int64 { return s.opts.Now().UnixNano() }

// etcdErr wraps an error of the etcd client: the caller's own cancellation stays what it is,
// an oversized request is models.ErrTooLarge, compaction is models.ErrCompacted, and anything
// else means the store could not be reached or could not serve (models.ErrUnavailable).
func (s *Store) etcdErr(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%s: %w: %w", what, models.ErrTooLarge, err)
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%s: %w: %w", what, models.ErrCompacted, err)
	default:
		return fmt.Errorf("%s: %w: %w", what, models.ErrUnavailable, err)
	}
}

// get reads one key; kv is nil when it does not exist.
func (s *Store) get(ctx context.Context, key, what string) (*mvccpb.KeyValue, error) {
	resp, err := s.kv().Get(ctx, key)
	if err != nil {
		return nil, s.etcdErr(ctx, "read "+what, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}

// list calls fn for every key under prefix in key order, reading page by page at one
// revision, and returns that revision. fn must not keep kv after it returns.
func (s *Store) list(ctx context.Context, prefix, what string, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(s.opts.PageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv().Get(ctx, key, opts...)
		if err != nil {
			return 0, s.etcdErr(ctx, "list "+what, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		// The next page starts just after the last key read.
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// txn commits one transaction and reports whether its comparisons held.
func (s *Store) txn(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := s.kv().Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, what, err)
	}
	return resp, nil
}

// retry runs attempt until it reports done, at most MaxRetries times. attempt returns
// done=false when it lost a race (a comparison failed) and should re-read and try again.
func (s *Store) retry(ctx context.Context, what string, attempt func() (done bool, err error)) error {
	for i := 0; i < s.opts.MaxRetries; i++ {
		done, err := attempt()
		if err != nil || done {
			return err
		}
		s.log.Debug("store transition lost a race; retrying", "op", what, "attempt", i+1)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return fmt.Errorf("%s: %w: gave up after %d concurrent changes", what, models.ErrConflict, s.opts.MaxRetries)
}

// conflict is the error of a transition whose expected revision is stale; actual is the
// record's revision when known, 0 when it changed between the read and the write.
func conflict(what string, expect, actual int64) error {
	if actual == 0 {
		return fmt.Errorf("%s: %w: record changed after revision %d", what, models.ErrConflict, expect)
	}
	return fmt.Errorf("%s: %w: expected revision %d, record is at %d", what, models.ErrConflict, expect, actual)
}

func notFound(what string) error {
	return fmt.Errorf("%s: %w", what, models.ErrNotFound)
}

func forbidden(what, why string) error {
	return fmt.Errorf("%s: %w: %s", what, models.ErrForbidden, why)
}

func refuse(record, from, to, reason string) error {
	return &models.TransitionError{Record: record, From: from, To: to, Reason: reason}
}

func requireField(field, v string) error {
	if v == "" {
		return &models.FieldError{Field: field, Reason: "must not be empty"}
	}
	return nil
}

// encode marshals a record for storage; the Revision field is left out (it is the etcd mod
// revision, set on every read).
func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode record: %w", err)
	}
	return string(b), nil
}

// decodeErr reports a stored value that is not a valid record: someone wrote under our prefix
// by hand or a newer version wrote a shape we do not know.
func decodeErr(key []byte, err error) error {
	return fmt.Errorf("decode record at %s: %w", key, err)
}
