package isolationlinux

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fileWatcher multiplexes change notifications of many files over one inotify instance. The
// kernel bounds inotify instances per user (fs.inotify.max_user_instances, 128 by default) far
// below the watches one instance may hold, and a cell runs hundreds of processes whose output
// files are followed at once.
type fileWatcher struct {
	events *os.File

	mu   sync.Mutex
	subs map[int32]map[chan struct{}]struct{} // watch descriptor → subscribers
}

var sharedWatcher struct {
	once sync.Once
	w    *fileWatcher
	err  error
}

// watchFile returns a channel that receives (coalesced) after each write to path, and a function
// that ends the watch. When inotify is not available the channel is fed by a 100 ms ticker
// instead, so following still works, only later.
func watchFile(path string) (<-chan struct{}, func(), error) {
	sharedWatcher.once.Do(func() { sharedWatcher.w, sharedWatcher.err = newFileWatcher() })
	if sharedWatcher.err != nil {
		return pollFile()
	}
	return sharedWatcher.w.watch(path)
}

func newFileWatcher() (*fileWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &fileWatcher{events: os.NewFile(uintptr(fd), "inotify"), subs: map[int32]map[chan struct{}]struct{}{}}
	go w.read()
	return w, nil
}

func (w *fileWatcher) watch(path string) (<-chan struct{}, func(), error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, err := unix.InotifyAddWatch(int(w.events.Fd()), path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE)
	if err != nil {
		return nil, nil, fmt.Errorf("inotify watch %s: %w", path, err)
	}
	ch := make(chan struct{}, 1)
	if w.subs[int32(wd)] == nil {
		w.subs[int32(wd)] = map[chan struct{}]struct{}{}
	}
	w.subs[int32(wd)][ch] = struct{}{}
	cancel := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		subs := w.subs[int32(wd)]
		if _, ok := subs[ch]; !ok {
			return
		}
		delete(subs, ch)
		if len(subs) == 0 {
			delete(w.subs, int32(wd))
			// The watch may already be gone (the file was removed): nothing to undo then.
			unix.InotifyRmWatch(int(w.events.Fd()), uint32(wd))
		}
	}
	return ch, cancel, nil
}

// read wakes the subscribers of every event's watch descriptor, for as long as the process
// lives.
func (w *fileWatcher) read() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.events.Read(buf)
		if err != nil {
			return
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			for ch := range w.subs[wd] {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
		w.mu.Unlock()
	}
}

// pollFile is the fallback of watchFile: a wake-up every 100 ms.
func pollFile() (<-chan struct{}, func(), error) {
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				select {
				case ch <- struct{}{}:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { close(done) }) }, nil
}
