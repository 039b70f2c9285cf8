package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// newStoreWith returns a Store under a fresh prefix of the shared etcd with opts (its prefix
// set), and a second Store over the same records that watches and reads etcd directly, the
// reference the shared watch is compared with.
func newStoreWith(t *testing.T, opts store.Options) (shared, direct *store.Store) {
	t.Helper()
	opts.Prefix = freshPrefix(t)
	shared = store.New(sharedClient(), opts)
	opts.DirectWatch = true
	direct = store.New(sharedClient(), opts)
	return shared, direct
}

func freshPrefix(t *testing.T) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("/test/%s-%d/", name, prefixes.Add(1))
}

func sharedClient() *clientv3.Client { return shared.Client() }

// placeOn desires guid with n instances and places index i on cells[i%len(cells)].
func placeOn(t *testing.T, s *store.Store, guid string, n int32, cells ...string) int64 {
	t.Helper()
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP(guid, n)))
	var rev int64
	for i := int32(0); i < n; i++ {
		a := must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, lrpKey(guid, i), cells[int(i)%len(cells)], 0))
		rev = a.Revision
	}
	return rev
}

// watchAsync collects events of filter from rev until ctx ends.
type watcher struct {
	mu     sync.Mutex
	events []store.Event
	done   chan error
}

func watchAsync(ctx context.Context, s *store.Store, from int64, filter store.EventFilter) *watcher {
	w := &watcher{done: make(chan error, 1)}
	go func() {
		w.done <- s.Watch(ctx, from, filter, func(e store.Event) error {
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
			return nil
		})
	}()
	return w
}

// waitUntil returns the events once one at or after rev has arrived.
func (w *watcher) waitUntil(t *testing.T, rev int64) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := len(w.events)
		last := int64(0)
		if n > 0 {
			last = w.events[n-1].Revision
		}
		w.mu.Unlock()
		if last >= rev {
			w.mu.Lock()
			defer w.mu.Unlock()
			return describeAll(w.events)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no event at revision %d within 10s", rev)
	return nil
}

func TestSharedWatchDeliversWhatDirectWatchesDo(t *testing.T) {
	s, direct := newStoreWith(t, store.Options{})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	start := must[int64](t)(s.Revision(ctx))
	filters := []store.EventFilter{{}, {CellID: "c1"}, {CellID: "c2"}, {ProcessGuid: "web"}, {CellID: "c1", ProcessGuid: "api"}}
	var shared, ref []*watcher
	for _, f := range filters {
		shared = append(shared, watchAsync(ctx, s, start, f))
		ref = append(ref, watchAsync(ctx, direct, start, f))
	}
	must[struct{}](t)(struct{}{}, s.Heartbeat(ctx, cell("c1"), 10*time.Second))
	placeOn(t, s, "web", 3, "c1", "c2")
	placeOn(t, s, "api", 2, "c2", "c1")
	// A move between cells is seen by both.
	must[*models.ActualLRP](t)(s.ClaimActualLRP(ctx, lrpKey("web", 0), models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "c1"}))
	last := must[*models.ActualLRP](t)(s.EvacuateActualLRP(ctx, lrpKey("web", 0), models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "c1"}))
	must[*models.ActualLRP](t)(s.PlaceActualLRP(ctx, lrpKey("web", 0), "c2", last.Revision))
	must[struct{}](t)(struct{}{}, s.RemoveDesiredLRP(ctx, "api"))
	end := must[int64](t)(s.Revision(ctx))

	for i, f := range filters {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			// The last change may not match the filter: wait on the reference's own last event.
			want := ref[i].waitUntilQuiet(t, end)
			got := shared[i].waitUntilCount(t, len(want))
			if !slices.Equal(got, want) {
				t.Errorf("shared watch delivered\n  %v\nthe etcd watch\n  %v", got, want)
			}
		})
	}
}

// waitUntilQuiet returns the events once the store has reached rev and nothing new arrived
// for 200 ms.
func (w *watcher) waitUntilQuiet(t *testing.T, rev int64) []string {
	t.Helper()
	n, since := -1, time.Now()
	for time.Since(since) < 200*time.Millisecond {
		w.mu.Lock()
		if len(w.events) != n {
			n, since = len(w.events), time.Now()
		}
		w.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return describeAll(w.events)
}

// waitUntilCount returns the events once n have arrived (and 50 ms more, so that an extra
// one shows), or whatever arrived within 10 s.
func (w *watcher) waitUntilCount(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		enough := len(w.events) >= n
		w.mu.Unlock()
		if enough {
			time.Sleep(50 * time.Millisecond)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return describeAll(w.events)
}

func TestSharedWatchResumesFromHistoryAndBeyond(t *testing.T) {
	// A history of 4 events: a watch from an older revision gets its own etcd watch.
	s, _ := newStoreWith(t, store.Options{WatchHistory: 4})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	// Keep the shared watch running with a subscriber of its own.
	keep := watchAsync(ctx, s, 0, store.EventFilter{})
	first := must[int64](t)(s.Revision(ctx))
	var revs []int64
	for i := range 12 {
		d := must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP(fmt.Sprintf("app-%02d", i), 1)))
		revs = append(revs, d.Revision)
	}
	keep.waitUntil(t, revs[len(revs)-1])
	for _, from := range []int64{first, revs[2], revs[9], revs[11]} {
		t.Run(fmt.Sprint(from-first), func(t *testing.T) {
			w := watchAsync(ctx, s, from, store.EventFilter{})
			d := must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP(fmt.Sprintf("late-%d", from), 1)))
			got := w.waitUntil(t, d.Revision)
			var want []string
			for i, r := range revs {
				if r > from {
					want = append(want, fmt.Sprintf("desired_lrp_created app-%02d", i), fmt.Sprintf("actual_lrp_created app-%02d/0", i))
				}
			}
			// Events of the other subtests' late apps may be in between; keep ours.
			var kept []string
			for _, g := range got {
				if strings.Contains(g, " app-") || strings.Contains(g, fmt.Sprintf("late-%d", from)) {
					kept = append(kept, g)
				}
			}
			want = append(want, fmt.Sprintf("desired_lrp_created late-%d", from), fmt.Sprintf("actual_lrp_created late-%d/0", from))
			if !slices.Equal(kept, want) {
				t.Errorf("from revision %d:\n  got  %v\n  want %v", from, kept, want)
			}
		})
	}
}

func TestSharedWatchCellListingsMatchEtcd(t *testing.T) {
	s, direct := newStoreWith(t, store.Options{})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	watchAsync(ctx, s, 0, store.EventFilter{CellID: "c9"}) // keeps the shared watch running
	placeOn(t, s, "web", 7, "c1", "c2", "c3")
	placeOn(t, s, "api", 4, "c2")
	must[*models.ActualLRP](t)(s.ClaimActualLRP(ctx, lrpKey("api", 1), models.ActualLRPInstanceKey{InstanceGuid: "i-a1", CellID: "c2"}))
	must[*models.ActualLRP](t)(s.StartActualLRP(ctx, lrpKey("api", 1), models.ActualLRPInstanceKey{InstanceGuid: "i-a1", CellID: "c2"},
		models.ActualLRPNetInfo{Address: "10.0.0.2"}))
	must[*models.ActualLRP](t)(s.EvacuateActualLRP(ctx, lrpKey("api", 1), models.ActualLRPInstanceKey{InstanceGuid: "i-a1", CellID: "c2"}))
	must[struct{}](t)(struct{}{}, s.RetireActualLRP(ctx, lrpKey("web", 3), models.PresenceOrdinary, 0))
	idx := int32(1)
	for _, f := range []store.ActualLRPFilter{{CellID: "c1"}, {CellID: "c2"}, {CellID: "c3", Domain: "apps"},
		{CellID: "c2", Domain: "other"}, {CellID: "c2", Index: &idx}, {CellID: "nowhere"}} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			got, grev := must2(t)(s.ActualLRPs(ctx, f))
			want, wrev := must2(t)(direct.ActualLRPs(ctx, f))
			if grev < wrev {
				t.Errorf("listing at revision %d, etcd at %d: it must include every earlier change", grev, wrev)
			}
			if g, w := keysOf(got), keysOf(want); !slices.Equal(g, w) {
				t.Errorf("cached listing %v, etcd %v", g, w)
			}
			for i := range min(len(got), len(want)) {
				if got[i].Revision != want[i].Revision || got[i].State != want[i].State || got[i].CellID != want[i].CellID {
					t.Errorf("record %d: cached %+v, etcd %+v", i, got[i], want[i])
				}
			}
		})
	}
}

func must2(t *testing.T) func([]*models.ActualLRP, int64, error) ([]*models.ActualLRP, int64) {
	return func(v []*models.ActualLRP, rev int64, err error) ([]*models.ActualLRP, int64) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v, rev
	}
}

func keysOf(as []*models.ActualLRP) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = fmt.Sprintf("%s/%d/%s", a.ProcessGuid, a.Index, a.Presence)
	}
	return out
}

func TestSharedWatchEndsASubscriberThatFallsBehind(t *testing.T) {
	s, _ := newStoreWith(t, store.Options{WatchQueue: 3})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	fast := watchAsync(ctx, s, 0, store.EventFilter{})
	release := make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		slow <- s.Watch(ctx, 0, store.EventFilter{}, func(store.Event) error {
			<-release
			return nil
		})
	}()
	time.Sleep(100 * time.Millisecond) // both subscribed
	var last int64
	for i := range 10 {
		last = must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP(fmt.Sprintf("app-%d", i), 1))).Revision
	}
	fast.waitUntil(t, last)
	close(release)
	select {
	case err := <-slow:
		if !models.IsCompacted(err) {
			t.Fatalf("the slow subscriber ended with %v, want a Compacted error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slow subscriber was not ended")
	}
	// The others go on.
	d := must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("after", 1)))
	if got := fast.waitUntil(t, d.Revision); len(got) != 22 {
		t.Errorf("the fast subscriber got %d events, want 22", len(got))
	}
}

// laggingPair returns two Stores over one fresh prefix, b with its shared watch running, so
// that b decides on records that lag a's writes; ctx ends with the test.
func laggingPair(t *testing.T) (a, b *store.Store, ctx context.Context) {
	t.Helper()
	prefix := freshPrefix(t)
	a = store.New(sharedClient(), store.Options{Prefix: prefix})
	b = store.New(sharedClient(), store.Options{Prefix: prefix})
	ctx, cancel := context.WithCancel(ctxT(t))
	t.Cleanup(cancel)
	watchAsync(ctx, b, 0, store.EventFilter{})
	return a, b, ctx
}

func TestSharedWatchCASReadsNeverCommitOnAStaleRecord(t *testing.T) {
	// Two Stores over one prefix: b's shared watch lags a's writes by however long the
	// watch takes; every transition must still see a's last write.
	a, b, ctx := laggingPair(t)
	placeOn(t, a, "web", 1, "c1")
	ik := models.ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "c1"}
	for i := range 20 {
		if _, err := a.ClaimActualLRP(ctx, lrpKey("web", 0), ik); err != nil {
			t.Fatal(err)
		}
		// b's cache may still show UNCLAIMED: its start must still be applied to CLAIMED.
		got, err := b.StartActualLRP(ctx, lrpKey("web", 0), ik, models.ActualLRPNetInfo{Address: fmt.Sprintf("10.0.0.%d", i+1)})
		if err != nil {
			t.Fatalf("round %d: start: %v", i, err)
		}
		cur, _ := must2(t)(a.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: "web"}))
		if cur[0].Revision != got.Revision || cur[0].Address != got.Address {
			t.Fatalf("round %d: start returned %+v, etcd holds %+v", i, got, cur[0])
		}
		if _, err := a.CrashActualLRP(ctx, lrpKey("web", 0), ik, "test"); err != nil {
			t.Fatal(err)
		}
		r := must[*models.ActualLRP](t)(a.RestartActualLRP(ctx, lrpKey("web", 0), 0))
		must[*models.ActualLRP](t)(b.PlaceActualLRP(ctx, lrpKey("web", 0), "c1", r.Revision))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out")
	}
}
