package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func newTestStore(t *testing.T, dir string) *store {
	t.Helper()
	s := newStore(dir)
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	return s
}

// locked runs f with s's lock held.
func locked(t *testing.T, s *store, f func() error) {
	t.Helper()
	unlock, err := s.lockState(context.Background())
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	defer unlock()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

func testRecord(cid string, ports ...uint32) *record {
	r := &record{Handle: "h-" + cid, ContainerID: cid, OwnRules: true, CreatedAt: time.Now().UTC()}
	for _, p := range ports {
		r.Ports = append(r.Ports, portRecord{HostPort: p, ContainerPort: 80})
	}
	return r
}

// view returns the handles of s's records, the holder of each used port and the cursor, as s
// sees them under its lock.
func view(t *testing.T, s *store) (handles []string, used map[uint32]string, next uint32) {
	t.Helper()
	locked(t, s, func() error {
		recs, err := s.all()
		if err != nil {
			return err
		}
		for _, r := range recs {
			handles = append(handles, r.Handle)
		}
		u, err := s.usedPorts()
		used = make(map[uint32]string, len(u))
		for p, h := range u {
			used[p] = h
		}
		next = s.cursor()
		return err
	})
	return handles, used, next
}

// TestStoreSharedDir: two stores over one directory (an agent and `trellis agent
// destroy-containers`, or an agent and its restarted self) each keep a copy of the records,
// and each sees the other's changes at its next lock.
func TestStoreSharedDir(t *testing.T) {
	dir := t.TempDir()
	a, b := newTestStore(t, dir), newTestStore(t, dir)

	locked(t, a, func() error { return a.put(testRecord("x", 30000), durableNew) })
	if h, used, _ := view(t, b); !slices.Equal(h, []string{"h-x"}) || used[30000] != "h-x" {
		t.Fatalf("b after a's put: handles %v, used %v", h, used)
	}
	locked(t, b, func() error {
		if err := b.put(testRecord("y", 30001), durableNew); err != nil {
			return err
		}
		return b.setCursor(30002)
	})
	if h, used, next := view(t, a); !slices.Equal(h, []string{"h-x", "h-y"}) || used[30001] != "h-y" || next != 30002 {
		t.Fatalf("a after b's put: handles %v, used %v, cursor %d", h, used, next)
	}
	locked(t, b, func() error { return b.remove("x") })
	if h, used, _ := view(t, a); !slices.Equal(h, []string{"h-y"}) || used[30000] != "" {
		t.Fatalf("a after b's remove: handles %v, used %v", h, used)
	}
	// An update moves the record's ports in the copy too.
	locked(t, a, func() error { return a.put(testRecord("y", 30005), atomicUpdate) })
	if _, used, _ := view(t, b); len(used) != 1 || used[30005] != "h-y" {
		t.Fatalf("b after a's update: used %v", used)
	}
	// A third store, fresh (a restart), reads the same.
	if h, used, next := view(t, newTestStore(t, dir)); !slices.Equal(h, []string{"h-y"}) || len(used) != 1 || next != 30002 {
		t.Fatalf("new store: handles %v, used %v, cursor %d", h, used, next)
	}
}

// TestStoreChangeDetection checks each of the two signals on its own: the generation catches
// a change even when the directory's timestamps look unchanged (two changes in one clock
// tick), and the timestamps catch a writer that does not bump the generation (an older
// version, an operator).
func TestStoreChangeDetection(t *testing.T) {
	t.Run("generation alone", func(t *testing.T) {
		dir := t.TempDir()
		a, b := newTestStore(t, dir), newTestStore(t, dir)
		view(t, a)
		locked(t, b, func() error { return b.put(testRecord("x"), durableNew) })
		// Make a's copy agree with the directory's timestamps as they are now, as if b's
		// change had come within the tick of a's last look.
		st, err := a.dirStamp()
		if err != nil {
			t.Fatal(err)
		}
		a.stamp = st
		if h, _, _ := view(t, a); !slices.Equal(h, []string{"h-x"}) {
			t.Fatalf("a missed b's put with equal timestamps: %v", h)
		}
	})
	t.Run("timestamps alone", func(t *testing.T) {
		dir := t.TempDir()
		a := newTestStore(t, dir)
		locked(t, a, func() error { return a.put(testRecord("x"), durableNew) })
		time.Sleep(20 * time.Millisecond) // past the clock tick of a's last write
		if err := os.Remove(a.recordPath("x")); err != nil {
			t.Fatal(err)
		}
		if h, _, _ := view(t, a); len(h) != 0 {
			t.Fatalf("a missed a record removed by hand: %v", h)
		}
	})
	t.Run("no change, no reload", func(t *testing.T) {
		dir := t.TempDir()
		a := newTestStore(t, dir)
		locked(t, a, func() error { return a.put(testRecord("x"), durableNew) })
		// Damage the file behind the store's back without touching the directory: a store
		// that re-read it would now fail.
		if err := os.WriteFile(a.recordPath("x"), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		if h, _, _ := view(t, a); !slices.Equal(h, []string{"h-x"}) {
			t.Fatalf("a re-read unchanged state: %v", h)
		}
	})
}

// TestStoreCrashLeftovers: what an interrupted write leaves (a temporary file, or a failed
// rename) neither corrupts the state nor shows as a record; an unreadable record fails only
// what must consider it.
func TestStoreCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	a := newTestStore(t, dir)
	locked(t, a, func() error { return a.put(testRecord("x", 30000), durableNew) })
	if err := os.WriteFile(filepath.Join(dir, recordsDir, ".y.json.tmp-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A write that cannot complete: the rename target is a non-empty directory.
	if err := os.MkdirAll(filepath.Join(a.recordPath("z"), "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	unlock, err := a.lockState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.put(testRecord("z", 30001), durableNew); !errors.Is(err, ErrState) {
		t.Errorf("put over a directory: %v, want ErrState", err)
	}
	unlock()
	for _, s := range []*store{a, newTestStore(t, dir)} {
		if h, used, _ := view(t, s); !slices.Equal(h, []string{"h-x"}) || len(used) != 1 {
			t.Errorf("after the failed write: handles %v, used %v; want x alone", h, used)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, recordsDir)); len(entries) != 3 {
			t.Errorf("records directory holds %d entries, want x, the old temporary file and z's directory", len(entries))
		}
	}

	time.Sleep(20 * time.Millisecond) // past the clock tick of a's last write
	if err := os.WriteFile(a.recordPath("bad"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	locked(t, a, func() error {
		if _, err := a.all(); !errors.Is(err, ErrState) {
			t.Errorf("all with a corrupt record: %v, want ErrState", err)
		}
		if _, err := a.usedPorts(); !errors.Is(err, ErrState) {
			t.Errorf("usedPorts with a corrupt record: %v, want ErrState", err)
		}
		if _, err := a.get("bad"); !errors.Is(err, ErrState) {
			t.Errorf("get of the corrupt record: %v, want ErrState", err)
		}
		if r, err := a.get("x"); err != nil || r == nil {
			t.Errorf("get of a good record beside a corrupt one: %v, %v", r, err)
		}
		return a.remove("bad")
	})
	if h, _, _ := view(t, a); !slices.Equal(h, []string{"h-x"}) {
		t.Errorf("after removing the corrupt record: %v", h)
	}
}

// TestStoreGetIsACopy: callers change the records they get; the copy must not change with
// them.
func TestStoreGetIsACopy(t *testing.T) {
	a := newTestStore(t, t.TempDir())
	locked(t, a, func() error {
		if err := a.put(testRecord("x", 30000), durableNew); err != nil {
			return err
		}
		r, err := a.get("x")
		if err != nil {
			return err
		}
		r.Attached, r.Ports[0].HostPort = true, 1
		again, err := a.get("x")
		if err != nil {
			return err
		}
		if again.Attached || again.Ports[0].HostPort != 30000 {
			t.Errorf("the copy changed with a caller's record: %+v", again)
		}
		return nil
	})
}
