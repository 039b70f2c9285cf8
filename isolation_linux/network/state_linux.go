package network

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The layout of Config.StateDir.
const (
	lockFile      = "lock"       // flock'd around every change to records and cursor; holds the generation
	recordsDir    = "containers" // one <container id>.json per attached container
	cursorFile    = "ports.json" // where the next host-port search starts
	ipamDir       = "ipam"       // host-local's dataDir: <network name>/<ip> lease files
	cniCacheDir   = "cache"      // libcni's cached results and configs
	recordVersion = 1
)

// record is what we keep per container. It is written before the CNI ADD runs, so host ports
// are held (and a crashed Setup can be torn down) from the moment they are handed out.
type record struct {
	Version     int          `json:"version"`
	Handle      string       `json:"handle"`
	ContainerID string       `json:"container_id"`
	NetNS       string       `json:"netns"`
	Ports       []portRecord `json:"ports"`
	// OwnRules: the container's NAT, port mappings, forwarding and lo are this package's
	// shared rules and DNAT rules (rules.go), and only the bridge plugin ran. Records without
	// it were attached by an older version through the bridge (ipMasq), portmap, firewall and
	// loopback plugins; they are torn down with the plugin list libcni cached at ADD.
	OwnRules bool `json:"own_rules,omitempty"`
	// Attached is set once the CNI ADD succeeded; the fields below are known from then on.
	Attached    bool      `json:"attached"`
	ContainerIP string    `json:"container_ip,omitempty"`
	HostVeth    string    `json:"host_veth,omitempty"`
	HostVethMAC string    `json:"host_veth_mac,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

func (r *record) clone() *record {
	c := *r
	c.Ports = slices.Clone(r.Ports)
	return &c
}

type cursor struct {
	Next uint32 `json:"next"`
}

// durability says what a record write must have on disk when put returns.
type durability int

const (
	// durableNew: the record and its directory entry survive a crash. For a record that
	// holds something nothing else on disk remembers: host ports handed out, and (once the
	// CNI ADD runs) an address lease that only a Teardown of this record gives back.
	durableNew durability = iota
	// atomicUpdate: a crash leaves this content or the one it replaces, never a torn or
	// empty file; the replacement itself may be lost. For updates of a record whose
	// previous content tears the container down just as well (Attached and the address
	// matter only while the host runs: after a reboot the namespace, veth and rules are
	// gone, and DEL finds the lease by container id).
	atomicUpdate
)

// store is the on-disk state of a Network and an in-memory copy of its records.
//
// Every change happens between lock and unlock, which hold the state directory's flock (other
// processes, such as a restarted agent or `trellis agent destroy-containers`) and sem (other
// goroutines of this Network: flock is per open file, and the lock file stays open). The
// copy is what reads and allocations use, so a Setup no longer reads and decodes every record
// (O(n) per container, O(n²) for a scale-up). It is checked under the lock and re-read when
// another writer may have changed the directory:
//
//   - The generation, 8 bytes at the start of the lock file, is bumped by every writer of
//     this version before it drops the lock. It is exact: a count never repeats while a
//     process holds a copy, whatever the clock and however close the writes. It needs no
//     fsync: after a crash no process holds a copy.
//   - The records directory's mtime and ctime (and inode) catch writers that do not bump it:
//     an older version sharing the directory, an operator removing a record by hand. They
//     are not enough alone: the kernel stamps inodes from a clock that ticks once per
//     jiffy (1–10 ms), so two changes in one tick can leave equal stamps; they back the
//     generation up, they do not replace it.
type store struct {
	dir string

	sem  chan struct{} // capacity 1: held with the flock
	lock *os.File      // open for the Network's life; guarded by sem

	// The copy, guarded by sem. loaded is false until the first lock, and after a failed
	// load or write (the next lock re-reads).
	loaded bool
	gen    uint64
	stamp  dirStamp
	recs   map[string]*record // by container id
	bad    map[string]error   // records that exist but cannot be read
	used   map[uint32]string  // host port -> handle holding it
	next   uint32             // the port cursor
	dirty  bool               // changed under this lock: bump the generation at unlock
}

// dirStamp identifies a version of the records directory.
type dirStamp struct {
	ino          uint64
	mtime, ctime unix.Timespec
}

func newStore(dir string) *store {
	return &store{dir: dir, sem: make(chan struct{}, 1)}
}

func (s *store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// init creates the directory tree.
func (s *store) init() error {
	for _, d := range []string{s.dir, s.path(recordsDir), s.path(ipamDir), s.path(cniCacheDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("%w: create %s: %w", ErrState, d, err)
		}
	}
	return nil
}

// lockState takes the state directory's exclusive lock, waiting for other holders (in this or
// another process) until ctx ends, and brings the in-memory copy up to date. The returned
// function releases it. Errors: ErrState (the lock, or a record directory that cannot be
// listed; a single unreadable record is reported by get and all instead).
func (s *store) lockState(ctx context.Context) (unlock func(), err error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for the state lock: %w", ErrState, ctx.Err())
	}
	if err := s.flock(ctx); err != nil {
		<-s.sem
		return nil, err
	}
	if err := s.refresh(); err != nil {
		s.release()
		return nil, err
	}
	return s.release, nil
}

// flock opens the lock file if needed and flocks it. Called with sem held.
func (s *store) flock(ctx context.Context) error {
	if s.lock != nil && !s.lockFileCurrent() {
		s.lock.Close() // removed or replaced under us: the lock must be the file others open
		s.lock, s.loaded = nil, false
	}
	if s.lock == nil {
		f, err := os.OpenFile(s.path(lockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("%w: open lock: %w", ErrState, err)
		}
		s.lock, s.loaded = f, false
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(s.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("%w: lock %s: %w", ErrState, s.lock.Name(), err)
		}
		// Only another process holds it (sem excludes our own goroutines): rare, so polling.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for lock %s: %w", ErrState, s.lock.Name(), ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// lockFileCurrent reports whether the open lock file still is the one at its path.
func (s *store) lockFileCurrent() bool {
	var open, named unix.Stat_t
	if unix.Fstat(int(s.lock.Fd()), &open) != nil || unix.Stat(s.path(lockFile), &named) != nil {
		return false
	}
	return open.Dev == named.Dev && open.Ino == named.Ino
}

// release bumps the generation if this holder changed anything, then drops the lock.
func (s *store) release() {
	if s.dirty {
		s.dirty = false
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], s.gen+1)
		st, err := s.dirStamp()
		if _, werr := s.lock.WriteAt(b[:], 0); werr != nil || err != nil {
			s.loaded = false // others may not see our change: re-read ourselves too
		} else {
			s.gen, s.stamp = s.gen+1, st
		}
	}
	unix.Flock(int(s.lock.Fd()), unix.LOCK_UN)
	<-s.sem
}

func (s *store) readGen() (uint64, error) {
	var b [8]byte
	n, err := s.lock.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("%w: read generation: %w", ErrState, err)
	}
	if n < len(b) {
		return 0, nil // a new lock file, or one of an older version
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (s *store) dirStamp() (dirStamp, error) {
	var st unix.Stat_t
	if err := unix.Stat(s.path(recordsDir), &st); err != nil {
		return dirStamp{}, fmt.Errorf("%w: stat records: %w", ErrState, err)
	}
	return dirStamp{ino: st.Ino, mtime: st.Mtim, ctime: st.Ctim}, nil
}

// refresh re-reads the records and the cursor unless the copy is known current. Called with
// the lock held.
func (s *store) refresh() error {
	gen, err := s.readGen()
	if err != nil {
		return err
	}
	st, err := s.dirStamp()
	if err != nil {
		return err
	}
	if s.loaded && gen == s.gen && st == s.stamp {
		return nil
	}
	s.loaded = false
	entries, err := os.ReadDir(s.path(recordsDir))
	if err != nil {
		return fmt.Errorf("%w: list records: %w", ErrState, err)
	}
	s.recs = make(map[string]*record, len(entries))
	s.bad = map[string]error{}
	s.used = map[uint32]string{}
	for _, e := range entries {
		cid, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(cid, ".") {
			continue // a temporary file of an interrupted write, or something not ours
		}
		r, err := s.read(cid)
		switch {
		case err != nil:
			s.bad[cid] = err
		case r != nil:
			s.index(r)
		}
	}
	if s.next, err = s.readCursor(); err != nil {
		return err
	}
	s.gen, s.stamp, s.loaded = gen, st, true
	return nil
}

func (s *store) recordPath(cid string) string { return s.path(recordsDir, cid+".json") }

// read decodes the record file of container cid, or returns nil if there is none.
func (s *store) read(cid string) (*record, error) {
	b, err := os.ReadFile(s.recordPath(cid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read record of %q: %w", ErrState, cid, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: corrupt record %s: %w", ErrState, s.recordPath(cid), err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("%w: record %s has version %d, this build reads %d", ErrState, s.recordPath(cid), r.Version, recordVersion)
	}
	if r.ContainerID != cid {
		return nil, fmt.Errorf("%w: record %s names container id %q", ErrState, s.recordPath(cid), r.ContainerID)
	}
	return &r, nil
}

// index puts r into the copy, replacing an earlier version.
func (s *store) index(r *record) {
	s.unindex(r.ContainerID)
	s.recs[r.ContainerID] = r
	for _, p := range r.Ports {
		s.used[p.HostPort] = r.Handle
	}
}

func (s *store) unindex(cid string) {
	old, ok := s.recs[cid]
	if !ok {
		return
	}
	for _, p := range old.Ports {
		if s.used[p.HostPort] == old.Handle {
			delete(s.used, p.HostPort)
		}
	}
	delete(s.recs, cid)
}

// get returns a copy of the record of container cid, or nil if there is none. The lock must
// be held.
func (s *store) get(cid string) (*record, error) {
	if err := s.bad[cid]; err != nil {
		return nil, err
	}
	if r := s.recs[cid]; r != nil {
		return r.clone(), nil
	}
	return nil, nil
}

// all returns copies of every record, ordered by container id. The lock must be held.
// Errors: ErrState, if any record cannot be read (it may hold host ports).
func (s *store) all() ([]*record, error) {
	if err := s.firstBad(); err != nil {
		return nil, err
	}
	out := make([]*record, 0, len(s.recs))
	for _, cid := range slices.Sorted(maps.Keys(s.recs)) {
		out = append(out, s.recs[cid].clone())
	}
	return out, nil
}

// usedPorts returns the host ports held by records, mapped to the handle holding each; the
// caller must not change the map. The lock must be held. Errors: as all.
func (s *store) usedPorts() (map[uint32]string, error) {
	if err := s.firstBad(); err != nil {
		return nil, err
	}
	return s.used, nil
}

// firstBad returns the error of the first unreadable record (by container id), or nil.
func (s *store) firstBad() error {
	if len(s.bad) == 0 {
		return nil
	}
	return s.bad[slices.Min(slices.Collect(maps.Keys(s.bad)))]
}

// put writes r (stamped with the record version) with durability d. The lock must be held.
func (s *store) put(r *record, d durability) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encode record of %q: %w", ErrState, r.ContainerID, err)
	}
	s.dirty = true
	if err := writeFileAtomic(s.recordPath(r.ContainerID), b, d == durableNew); err != nil {
		s.loaded = false // the file may or may not have been replaced
		return err
	}
	s.index(r.clone())
	delete(s.bad, r.ContainerID)
	return nil
}

// remove deletes the record of container cid. The lock must be held.
//
// The directory is not synced: if a crash loses the removal, the record comes back and is torn
// down again, which finds nothing to do (DEL of a released lease succeeds; the rules went with
// the reboot).
func (s *store) remove(cid string) error {
	s.dirty = true
	err := os.Remove(s.recordPath(cid))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.loaded = false
		return fmt.Errorf("%w: remove record of %q: %w", ErrState, cid, err)
	}
	s.unindex(cid)
	delete(s.bad, cid)
	return nil
}

// cursor returns where the next host-port search starts. The lock must be held.
func (s *store) cursor() uint32 { return s.next }

func (s *store) readCursor() (uint32, error) {
	b, err := os.ReadFile(s.path(cursorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: read port cursor: %w", ErrState, err)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return 0, nil // see setCursor
	}
	return c.Next, nil
}

// setCursor stores where the next host-port search starts. The lock must be held.
//
// It is written in place, without fsync: the cursor only spreads allocations, so a cursor
// lost or torn by a crash costs nothing but a search from the bottom of the range (readCursor
// reads a damaged one as 0). Readers hold the lock, so they never see a partial write.
func (s *store) setCursor(next uint32) error {
	b, _ := json.Marshal(cursor{Next: next})
	s.dirty = true
	if err := os.WriteFile(s.path(cursorFile), b, 0o600); err != nil {
		s.loaded = false
		return fmt.Errorf("%w: write port cursor: %w", ErrState, err)
	}
	s.next = next
	return nil
}

// writeFileAtomic replaces path with data so that a crash leaves the old or the new content:
// the data is synced before the rename, or else a crash could leave the new name on an empty
// file (ext4 guards against that by itself; xfs and others do not). With syncDir the
// directory is synced after the rename too, so the new content (or, for a new file, the file)
// survives a crash once writeFileAtomic returns.
func writeFileAtomic(path string, data []byte, syncDir bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrState, path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: write %s: %w", ErrState, path, err)
	}
	if !syncDir {
		return nil
	}
	return syncPath(dir)
}

func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrState, dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrState, dir, err)
	}
	return nil
}
