package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The layout of Config.StateDir.
const (
	lockFile      = "lock"       // flock'd around every change to records and cursor
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

type cursor struct {
	Next uint32 `json:"next"`
}

// store is the on-disk state of a Network.
type store struct {
	dir string
}

func (s store) path(elem ...string) string { return filepath.Join(append([]string{s.dir}, elem...)...) }

// init creates the directory tree.
func (s store) init() error {
	for _, d := range []string{s.dir, s.path(recordsDir), s.path(ipamDir), s.path(cniCacheDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("%w: create %s: %w", ErrState, d, err)
		}
	}
	return nil
}

// lock takes the state directory's exclusive lock, waiting for other holders (in this or
// another process) until ctx ends. The returned function releases it.
func (s store) lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(s.path(lockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: open lock: %w", ErrState, err)
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the descriptor drops the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("%w: lock %s: %w", ErrState, f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: waiting for lock %s: %w", ErrState, f.Name(), ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func (s store) recordPath(cid string) string { return s.path(recordsDir, cid+".json") }

// get returns the record of container id cid, or nil if there is none.
func (s store) get(cid string) (*record, error) {
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
	return &r, nil
}

// all returns every record.
func (s store) all() ([]*record, error) {
	entries, err := os.ReadDir(s.path(recordsDir))
	if err != nil {
		return nil, fmt.Errorf("%w: list records: %w", ErrState, err)
	}
	var out []*record
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(name, ".") {
			continue // a temporary file of an interrupted write, or something not ours
		}
		r, err := s.get(name)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s store) put(r *record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encode record of %q: %w", ErrState, r.ContainerID, err)
	}
	return writeFileAtomic(s.recordPath(r.ContainerID), b)
}

func (s store) remove(cid string) error {
	err := os.Remove(s.recordPath(cid))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: remove record of %q: %w", ErrState, cid, err)
	}
	return syncDir(s.path(recordsDir))
}

func (s store) cursor() (uint32, error) {
	b, err := os.ReadFile(s.path(cursorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: read port cursor: %w", ErrState, err)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		// The cursor only spreads allocations; a damaged one costs nothing but a restart
		// of the search at the bottom of the range.
		return 0, nil
	}
	return c.Next, nil
}

func (s store) setCursor(next uint32) error {
	b, _ := json.Marshal(cursor{Next: next})
	return writeFileAtomic(s.path(cursorFile), b)
}

// writeFileAtomic replaces path with data so that a crash leaves the old or the new content.
func writeFileAtomic(path string, data []byte) error {
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
	return syncDir(dir)
}

func syncDir(dir string) error {
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
