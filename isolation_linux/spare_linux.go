package isolationlinux

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// Spare directories. Before its init starts, a container needs a state dir (with processes/) and a disk directory (with the overlay's upper/ and work/), owned in part by its
// root. Making them took about 0.3 ms of every Create on the development machine, most of it
// ext4 choosing a block group for each of the two directories it spreads (FS_TOPDIR). A
// goroutine makes them ahead, a few per owner (the host uid of the containers' root), and
// Create takes a pair with two renames: the state dir <StateDir>/@spare-<pid>-<n> (never a
// handle, so never a container to List) and the unlimited disk directory of a DiskQuota spare.
// A disk-limited container takes only the state dir. Close removes what is left; a backend's
// New removes what an earlier one left.

const spareStatePrefix = "@spare-"

// spareSize is how many spares of each kind the refill keeps per owner.
const spareSize = 2

type spareDirs struct {
	b   *Backend
	log *slog.Logger

	mu     sync.Mutex
	seq    uint64
	states map[int][]string // owner uid -> spare state dirs
	disks  map[int][]string // owner uid -> DiskQuota spare names
	wanted map[int]bool
	closed bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newSpareDirs(b *Backend) *spareDirs {
	s := &spareDirs{
		b: b, log: b.log,
		states: map[int][]string{}, disks: map[int][]string{},
		wanted: map[int]bool{b.rootUID(false): true},
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if left, err := filepath.Glob(filepath.Join(b.cfg.StateDir, spareStatePrefix+"*")); err == nil {
		for _, d := range left {
			if err := b.trash.Put(d); err != nil {
				s.log.Warn("removing a spare state directory left by an earlier backend", "dir", d, "err", err)
			}
		}
	}
	go s.refill()
	return s
}

// takeState claims dir for a container whose root is host uid owner: a spare state dir renamed
// there, else a new directory. Errors: isolation.ErrAlreadyExists when dir exists.
func (s *spareDirs) takeState(owner int, dir string) (fromSpare bool, err error) {
	if spare := s.take(s.states, owner); spare != "" {
		err := unix.Renameat2(unix.AT_FDCWD, spare, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
		if err == nil {
			return true, nil
		}
		s.discardState(spare)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return false, fmt.Errorf("%w: container %q", isolation.ErrAlreadyExists, filepath.Base(dir))
		}
		s.log.Warn("taking a spare state directory failed; making one", "err", err)
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("%w: container %q", isolation.ErrAlreadyExists, filepath.Base(dir))
		}
		return false, err
	}
	return false, nil
}

// takeDisk gives handle a spare unlimited disk directory of owner and returns it, or "" when
// none waits (or it could not be taken: the caller makes one).
func (s *spareDirs) takeDisk(owner int, handle string) string {
	spare := s.take(s.disks, owner)
	if spare == "" || s.b.disk.quota == nil {
		return ""
	}
	dir, err := s.b.disk.quota.AdoptSpare(spare, handle)
	if err != nil {
		if !isolation.IsAlreadyExists(err) {
			s.log.Warn("taking a spare disk directory failed; making one", "err", err)
		}
		if err := s.b.disk.quota.Release(spare); err != nil {
			s.log.Warn("removing a spare disk directory", "name", spare, "err", err)
		}
		return ""
	}
	return dir
}

func (s *spareDirs) take(from map[int][]string, owner int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.kick()
	s.wanted[owner] = true
	q := from[owner]
	if len(q) == 0 {
		return ""
	}
	from[owner] = q[1:]
	return q[0]
}

func (s *spareDirs) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// refill keeps spareSize spares of each kind for every owner Create asked for, until close.
func (s *spareDirs) refill() {
	defer close(s.done)
	for {
		s.mu.Lock()
		owner, state, disk, closed := 0, false, false, s.closed
		for o := range s.wanted {
			state, disk = len(s.states[o]) < spareSize, len(s.disks[o]) < spareSize && s.b.disk.quota != nil
			if state || disk {
				owner = o
				break
			}
		}
		s.seq++
		seq := s.seq
		s.mu.Unlock()
		if closed {
			return
		}
		if !state && !disk {
			select {
			case <-s.wake:
			case <-s.stop:
				return
			}
			continue
		}
		if err := s.make(owner, seq, state, disk); err != nil {
			s.log.Warn("making spare container directories", "err", err)
			select {
			case <-s.stop:
				return
			case <-s.wake:
			}
		}
	}
}

// make adds a spare state dir and/or disk directory owned by owner.
func (s *spareDirs) make(owner int, seq uint64, state, disk bool) error {
	if state {
		dir := filepath.Join(s.b.cfg.StateDir, spareStatePrefix+strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(seq, 10))
		err := os.Mkdir(dir, 0o711)
		if err == nil {
			err = mkdirOwned(filepath.Join(dir, dirProcesses), 0o700, owner)
		}
		if err != nil {
			s.discardState(dir)
			return err
		}
		if !s.add(s.states, owner, dir) {
			s.discardState(dir)
		}
	}
	if disk {
		name, data, err := s.b.disk.spare()
		if err == nil {
			err = mkdirOwned(filepath.Join(data, "upper"), 0o755, owner)
		}
		if err == nil {
			err = mkdirOwned(filepath.Join(data, "work"), 0o755, owner)
		}
		if err == nil && !s.add(s.disks, owner, name) {
			err = errSparesClosed
		}
		if err != nil {
			if name != "" {
				_ = s.b.disk.quota.Release(name)
			}
			if errors.Is(err, errSparesClosed) {
				return nil
			}
			return err
		}
	}
	return nil
}

var errSparesClosed = errors.New("spares closed")

// add files a spare under owner, unless closed.
func (s *spareDirs) add(to map[int][]string, owner int, spare string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	to[owner] = append(to[owner], spare)
	return true
}

func (s *spareDirs) discardState(dir string) {
	if err := s.b.trash.Put(dir); err != nil {
		s.log.Warn("removing a spare state directory", "dir", dir, "err", err)
	}
}

// close stops the refill and removes the spares. Idempotent.
func (s *spareDirs) close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, dirs := range s.states {
			for _, d := range dirs {
				s.discardState(d)
			}
		}
		for _, names := range s.disks {
			for _, n := range names {
				if err := s.b.disk.quota.Release(n); err != nil {
					s.log.Warn("removing a spare disk directory", "name", n, "err", err)
				}
			}
		}
		s.states, s.disks = nil, nil
	})
}
