package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
)

// hub shares one etcd watch of the store's prefix among every Watch call of a Store: each
// change is decoded once and handed only to the subscribers whose filter it matches (cells are
// looked up by id, not tested one by one), where one etcd watch per caller would decode every
// change once per caller — a thousand cells, a thousand decodes of each change. It also keeps
// the ActualLRPs it has seen, indexed by cell, so that a cell's listing does not scan every
// instance in etcd.
//
// A subscriber has its own queue, drained on its own goroutine, so a slow consumer never
// holds up the others; one that falls more than Options.WatchQueue events behind is ended
// with models.ErrCompacted (read everything again, then watch from the read's revision).
// The last Options.WatchHistory events are kept, so a watch from a recent revision (the
// revision of a listing just read) starts from the hub; an older one gets an etcd watch of
// its own, which etcd answers or refuses as compacted.
//
// The hub starts with its first subscriber and stops with its last one, or when its etcd
// watch fails: its subscribers then end with the watch's error (they resynchronise), and the
// next subscriber starts it again. Cell listings use the records only while it runs.
type hub struct {
	s *Store

	mu      sync.Mutex
	cond    *sync.Cond // broadcast when rev advances or the hub stops
	running bool
	gen     int   // incremented at each start, so a stale run's stop does not end a newer run
	rev     int64 // every change up to rev has been dispatched
	// history holds the last events in order; every event after historyFrom is in it.
	history     []Event
	historyFrom int64

	byCell map[string]map[*subscriber]struct{}
	others map[*subscriber]struct{}

	// actual holds every ActualLRP by etcd key; actualByCell the same records by cell id.
	actual       map[string]*models.ActualLRP
	actualByCell map[string]map[string]*models.ActualLRP
	// wctx is the context of the running etcd watch (progress requests go to its stream);
	// cancel stops it.
	wctx   context.Context
	cancel context.CancelFunc
	subs   int
}

func newHub(s *Store) *hub {
	h := &hub{s: s}
	h.cond = sync.NewCond(&h.mu)
	return h
}

// subscriber is one Watch call served by the hub.
type subscriber struct {
	filter EventFilter
	after  int64 // deliver only events after this revision

	mu    sync.Mutex
	queue []Event
	err   error // set when the hub ends the subscription
	wake  chan struct{}
}

func (sub *subscriber) push(ev Event, limit int) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.err != nil {
		return true
	}
	if len(sub.queue) >= limit {
		sub.err = fmt.Errorf("watch: %w: the subscriber fell more than %d events behind", models.ErrCompacted, limit)
	} else {
		sub.queue = append(sub.queue, ev)
	}
	select {
	case sub.wake <- struct{}{}:
	default:
	}
	return sub.err == nil
}

func (sub *subscriber) end(err error) {
	sub.mu.Lock()
	if sub.err == nil {
		sub.err = err
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// take returns the queued events (and the terminal error once the queue is empty).
func (sub *subscriber) take(buf []Event) ([]Event, error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.queue) == 0 {
		return buf[:0], sub.err
	}
	buf = append(buf[:0], sub.queue...)
	clear(sub.queue)
	sub.queue = sub.queue[:0]
	return buf, nil
}

// start lists the ActualLRPs and starts the etcd watch from the listing's revision, unless
// the hub runs already. Callers hold h.mu.
func (h *hub) startLocked(ctx context.Context) error {
	if h.running {
		return nil
	}
	actual := map[string]*models.ActualLRP{}
	byCell := map[string]map[string]*models.ActualLRP{}
	rev, err := h.s.list(ctx, h.s.keys.actual, "actual lrps", func(kv *mvccpb.KeyValue) error {
		a, err := decodeActual(kv)
		if err != nil {
			return err
		}
		k := string(kv.Key)
		actual[k] = a
		if a.CellID != "" {
			addToCell(byCell, a.CellID, k, a)
		}
		return nil
	})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	wch := h.s.client.Watch(wctx, h.s.keys.prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(rev+1))
	h.running = true
	h.gen++
	h.rev, h.historyFrom, h.history = rev, rev, nil
	h.actual, h.actualByCell = actual, byCell
	h.byCell, h.others = map[string]map[*subscriber]struct{}{}, map[*subscriber]struct{}{}
	h.wctx, h.cancel, h.subs = wctx, cancel, 0
	go h.run(h.gen, wch, cancel, rev)
	return nil
}

func addToCell(byCell map[string]map[string]*models.ActualLRP, cell, key string, a *models.ActualLRP) {
	m := byCell[cell]
	if m == nil {
		m = map[string]*models.ActualLRP{}
		byCell[cell] = m
	}
	m[key] = a
}

// run dispatches the etcd watch until it fails, then ends every subscriber with the error.
func (h *hub) run(gen int, wch clientv3.WatchChan, cancel context.CancelFunc, from int64) {
	defer cancel()
	err := fmt.Errorf("watch: %w: the watch channel closed", models.ErrUnavailable)
	for resp := range wch {
		if resp.CompactRevision != 0 {
			err = fmt.Errorf("watch from revision %d: %w: history before revision %d is compacted",
				from, models.ErrCompacted, resp.CompactRevision)
			break
		}
		if werr := resp.Err(); werr != nil {
			if errors.Is(werr, rpctypes.ErrCompacted) {
				err = fmt.Errorf("watch: %w: %w", models.ErrCompacted, werr)
			} else {
				err = fmt.Errorf("watch: %w: %w", models.ErrUnavailable, werr)
			}
			break
		}
		h.dispatch(gen, resp)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != gen {
		return
	}
	h.running = false
	for sub := range h.others {
		sub.end(err)
	}
	for _, subs := range h.byCell {
		for sub := range subs {
			sub.end(err)
		}
	}
	h.byCell, h.others, h.actual, h.actualByCell, h.history = nil, nil, nil, nil, nil
	h.cond.Broadcast()
	h.s.log.Warn("shared event stream ended; it restarts on next use", "error", err)
}

// dispatch applies one etcd watch response: the actual cache, the history and every
// matching subscriber.
func (h *hub) dispatch(gen int, resp clientv3.WatchResponse) {
	events := make([]Event, 0, len(resp.Events))
	for _, ev := range resp.Events {
		e, ok, err := h.s.decodeEvent(ev)
		if err != nil {
			h.s.log.Warn("skipping undecodable record in event stream", "key", string(ev.Kv.Key), "error", err)
			continue
		}
		if ok {
			events = append(events, e)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != gen {
		return // stopped meanwhile
	}
	for i := range events {
		e := events[i]
		h.cacheLocked(&e)
		h.rememberLocked(e)
		h.deliverLocked(e)
	}
	// A progress notification says every change up to its revision has been sent.
	if resp.IsProgressNotify() && resp.Header.Revision > h.rev {
		h.rev = resp.Header.Revision
	}
	if n := len(events); n > 0 && events[n-1].Revision > h.rev {
		h.rev = events[n-1].Revision
	}
	h.cond.Broadcast()
}

func (h *hub) cacheLocked(e *Event) {
	if e.ActualLRP == nil {
		return
	}
	k := h.s.keys.actualKey(e.ActualLRP.ActualLRPKey, e.ActualLRP.Presence)
	if old := h.actual[k]; old != nil && old.CellID != "" {
		if m := h.actualByCell[old.CellID]; m != nil {
			delete(m, k)
			if len(m) == 0 {
				delete(h.actualByCell, old.CellID)
			}
		}
	}
	if e.Type == EventActualLRPRemoved {
		delete(h.actual, k)
		return
	}
	h.actual[k] = e.ActualLRP
	if c := e.ActualLRP.CellID; c != "" {
		addToCell(h.actualByCell, c, k, e.ActualLRP)
	}
}

func (h *hub) rememberLocked(e Event) {
	limit := h.s.opts.WatchHistory
	if len(h.history) >= limit {
		// Drop the oldest quarter at once, so that trimming costs O(1) per event. Events of
		// one revision are dropped together, so that a watch from a revision never starts
		// in the middle of it.
		drop := max(1, len(h.history)/4)
		h.historyFrom = h.history[drop-1].Revision
		for drop < len(h.history) && h.history[drop].Revision == h.historyFrom {
			drop++
		}
		n := copy(h.history, h.history[drop:])
		clear(h.history[n:])
		h.history = h.history[:n]
	}
	h.history = append(h.history, e)
}

// cellsOf returns the cells an event concerns (at most three: a record moving from one cell
// to another, or a cell's own presence).
func cellsOf(e *Event) []string {
	var out []string
	add := func(id string) {
		if id == "" {
			return
		}
		for _, c := range out {
			if c == id {
				return
			}
		}
		out = append(out, id)
	}
	switch {
	case e.ActualLRP != nil:
		add(e.ActualLRP.CellID)
		if e.PreviousActualLRP != nil {
			add(e.PreviousActualLRP.CellID)
		}
	case e.Task != nil:
		add(e.Task.CellID)
		if e.PreviousTask != nil {
			add(e.PreviousTask.CellID)
		}
	case e.Cell != nil:
		add(e.Cell.CellID)
	}
	return out
}

func (h *hub) deliverLocked(e Event) {
	limit := h.s.opts.WatchQueue
	for _, c := range cellsOf(&e) {
		for sub := range h.byCell[c] {
			if e.Revision > sub.after && sub.filter.matches(&e) && !sub.push(e, limit) {
				h.removeLocked(sub)
			}
		}
	}
	for sub := range h.others {
		if e.Revision > sub.after && sub.filter.matches(&e) && !sub.push(e, limit) {
			h.removeLocked(sub)
		}
	}
}

func (h *hub) removeLocked(sub *subscriber) {
	if sub.filter.CellID != "" {
		if m := h.byCell[sub.filter.CellID]; m != nil {
			delete(m, sub)
			if len(m) == 0 {
				delete(h.byCell, sub.filter.CellID)
			}
		}
		return
	}
	delete(h.others, sub)
}

// subscribe registers a subscriber for the events after from (0: from now). It reports false
// when from is older than the hub's history: the caller watches etcd itself.
func (h *hub) subscribe(ctx context.Context, from int64, filter EventFilter) (*subscriber, int, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.startLocked(ctx); err != nil {
		return nil, 0, false, err
	}
	sub := &subscriber{filter: filter, after: from, wake: make(chan struct{}, 1)}
	switch {
	case from == 0:
		sub.after = h.rev
	case from < h.historyFrom:
		if h.subs == 0 {
			// Started for nothing: leave the watch to the caller.
			h.running = false
			h.gen++
			h.cancel()
			h.byCell, h.others, h.actual, h.actualByCell, h.history = nil, nil, nil, nil, nil
		}
		return nil, 0, false, nil
	default:
		i := sort.Search(len(h.history), func(i int) bool { return h.history[i].Revision > from })
		for _, e := range h.history[i:] {
			if filter.matches(&e) {
				sub.queue = append(sub.queue, e)
			}
		}
	}
	h.subs++
	if filter.CellID != "" {
		m := h.byCell[filter.CellID]
		if m == nil {
			m = map[*subscriber]struct{}{}
			h.byCell[filter.CellID] = m
		}
		m[sub] = struct{}{}
	} else {
		h.others[sub] = struct{}{}
	}
	if len(sub.queue) > 0 {
		sub.wake <- struct{}{}
	}
	return sub, h.gen, true, nil
}

func (h *hub) unsubscribe(sub *subscriber, gen int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running || h.gen != gen {
		return
	}
	h.removeLocked(sub)
	if h.subs--; h.subs == 0 {
		// Nobody listens: stop the etcd watch rather than keep its records current.
		h.running = false
		h.gen++
		h.cancel()
		h.byCell, h.others, h.actual, h.actualByCell, h.history = nil, nil, nil, nil, nil
		h.cond.Broadcast()
	}
}

// watch serves one Watch call from the hub; ok is false when the caller must watch etcd
// itself (from is older than the history).
func (h *hub) watch(ctx context.Context, from int64, filter EventFilter, fn func(Event) error) (bool, error) {
	sub, gen, ok, err := h.subscribe(ctx, from, filter)
	if err != nil || !ok {
		return ok, err
	}
	defer h.unsubscribe(sub, gen)
	var buf []Event
	for {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("watch: %w", ctx.Err())
		case <-sub.wake:
		}
		for {
			var err error
			buf, err = sub.take(buf)
			if len(buf) == 0 {
				if err != nil {
					return true, err
				}
				break
			}
			for i := range buf {
				if err := fn(buf[i]); err != nil {
					return true, err
				}
				buf[i] = Event{}
			}
			if ctx.Err() != nil {
				return true, fmt.Errorf("watch: %w", ctx.Err())
			}
		}
	}
}

// cellListingCatchUp bounds how long a cell's listing waits for the shared watch to catch up
// with etcd before it scans etcd instead. The watch lags only when the BBS is short of CPU,
// and a scan of every instance then makes it shorter still (measured at 1,000 cells and
// 100,000 instances on a loaded machine: half the BBS's CPU in such scans with a 1 s bound).
const cellListingCatchUp = 5 * time.Second

// cellActuals lists the ActualLRPs on cellID from the cache once it has caught up with
// every change committed before the call. It reports false when it could not (the hub does
// not run, or did not catch up in time): the caller reads etcd.
func (h *hub) cellActuals(ctx context.Context, filter ActualLRPFilter) ([]*models.ActualLRP, int64, bool, error) {
	// The current revision: a read of one key that does not exist.
	resp, err := h.s.client.Get(ctx, h.s.keys.prefix+"revision-probe", clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, false, h.s.etcdErr(ctx, "read revision", err)
	}
	target := resp.Header.Revision
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running {
		return nil, 0, false, nil
	}
	if h.rev < target {
		// The last change may lie outside the prefix: ask etcd where the watch stands.
		wctx, gen := h.wctx, h.gen
		h.mu.Unlock()
		_ = h.s.client.RequestProgress(wctx)
		wake := func() {
			h.mu.Lock()
			h.cond.Broadcast()
			h.mu.Unlock()
		}
		deadline := time.AfterFunc(cellListingCatchUp, wake)
		stopCtx := context.AfterFunc(ctx, wake)
		start := time.Now()
		h.mu.Lock()
		for h.running && h.gen == gen && h.rev < target && time.Since(start) < cellListingCatchUp && ctx.Err() == nil {
			h.cond.Wait()
		}
		deadline.Stop()
		stopCtx()
		if !h.running || h.gen != gen || h.rev < target {
			return nil, 0, false, nil
		}
	}
	m := h.actualByCell[filter.CellID]
	keys := make([]string, 0, len(m))
	for k, a := range m {
		if (filter.Domain != "" && a.Domain != filter.Domain) || (filter.Index != nil && a.Index != *filter.Index) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*models.ActualLRP, len(keys))
	for i, k := range keys {
		c := *m[k]
		out[i] = &c
	}
	return out, h.rev, true, nil
}

// index returns copies of the cached presences of key's index; false when the hub does not
// run. The records may lag etcd: callers use them only for a compare-and-swap that fails
// on a stale revision.
func (h *hub) index(key models.ActualLRPKey) (indexRecords, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var r indexRecords
	if !h.running {
		return r, false
	}
	get := func(presence string) *models.ActualLRP {
		a := h.actual[h.s.keys.actualKey(key, presence)]
		if a == nil {
			return nil
		}
		c := *a
		return &c
	}
	r.ordinary = get(models.PresenceOrdinary)
	r.evacuating = get(models.PresenceEvacuating)
	r.suspect = get(models.PresenceSuspect)
	return r, true
}
