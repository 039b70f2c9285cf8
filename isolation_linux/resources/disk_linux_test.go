package resources

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

func newTestQuota(t *testing.T) (*DiskQuota, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := t.TempDir()
	q, err := NewDiskQuota(base)
	if err != nil {
		t.Fatalf("NewDiskQuota: %v", err)
	}
	// Runs before TempDir's removal: never let RemoveAll walk into a mounted volume.
	t.Cleanup(func() {
		entries, _ := os.ReadDir(filepath.Join(base, volumesDir))
		for _, e := range entries {
			if err := q.Release(e.Name()); err != nil {
				t.Errorf("cleanup Release(%s): %v", e.Name(), err)
			}
		}
		q.Close()
	})
	return q, base
}

// fill writes to path in 64 KiB chunks until a write fails or max bytes are written, and
// returns how much was written and the error that stopped it.
func fill(t *testing.T, path string, max int) (int, error) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i) // incompressible enough, and never a hole
	}
	written := 0
	for written < max {
		n, err := f.Write(buf[:min(len(buf), max-written)])
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, f.Sync()
}

func TestDiskLimitEnforced(t *testing.T) {
	q, _ := newTestQuota(t)
	tests := []struct {
		name  string
		limit uint64
	}{
		{"8 MiB", 8 * mib},
		{"odd size rounds up to 4 KiB", 5*mib + 123},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			handle := fmt.Sprintf("limited-%d", i)
			dir, err := q.Dir(handle, tt.limit)
			if err != nil {
				t.Fatalf("Dir: %v", err)
			}
			base, err := q.Usage(handle)
			if err != nil {
				t.Fatal(err)
			}
			if base > 64<<10 {
				t.Fatalf("fresh volume already uses %d bytes", base)
			}

			if _, err := fill(t, filepath.Join(dir, "small"), 1*mib); err != nil {
				t.Fatalf("writing 1 MiB under a %d-byte limit: %v", tt.limit, err)
			}
			used, err := q.Usage(handle)
			if err != nil {
				t.Fatal(err)
			}
			if used < base+1*mib || used > base+1*mib+64<<10 {
				t.Fatalf("Usage after writing 1 MiB = %d, want about %d", used, base+1*mib)
			}

			written, err := fill(t, filepath.Join(dir, "big"), int(2*tt.limit))
			if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
				t.Fatalf("writing twice the limit: want ENOSPC or EDQUOT, got %v after %d bytes", err, written)
			}
			limit := roundUp(tt.limit)
			used, err = q.Usage(handle)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("limit %d: full at usage %d, %d bytes of file data written", limit, used, uint64(written)+1*mib)
			if used > limit || used < limit-128<<10 {
				t.Fatalf("Usage of a full volume = %d, want just under the %d-byte limit", used, limit)
			}
			if total := uint64(written) + 1*mib; total > limit || total < limit-256<<10 {
				t.Fatalf("wrote %d bytes in all before the limit stopped us; want nearly %d", total, limit)
			}
			// Freeing space lets writes proceed again.
			if err := os.Remove(filepath.Join(dir, "big")); err != nil {
				t.Fatal(err)
			}
			if _, err := fill(t, filepath.Join(dir, "again"), 2*mib); err != nil {
				t.Fatalf("write after freeing space: %v", err)
			}
		})
	}
}

func TestDiskRelease(t *testing.T) {
	q, base := newTestQuota(t)
	dir, err := q.Dir("rel", 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fill(t, filepath.Join(dir, "f"), mib); err != nil {
		t.Fatal(err)
	}
	image, mount, _ := q.paths("rel")
	dev := loopDeviceOf(t, image)
	if dev == "" {
		t.Fatal("no loop device backs the volume's image")
	}
	if err := q.Release("rel"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	for _, p := range []string{image, mount} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Release (%v)", p, err)
		}
	}
	waitNoLoopDevice(t, dev)
	// The image and the mount point went to the trash, which removes them in the background.
	q.Flush()
	if left, err := os.ReadDir(filepath.Join(base, trashDir)); err != nil || len(left) > 0 {
		t.Errorf("the trash holds %v after Flush (%v)", left, err)
	}
	if _, err := q.Usage("rel"); !isolation.IsNotFound(err) {
		t.Fatalf("Usage after Release: want ErrNotFound, got %v", err)
	}
	if err := q.Release("rel"); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if entries := listAll(t, base); len(entries) != 0 {
		t.Fatalf("left under the base directory: %v", entries)
	}
}

func TestDiskReleaseWhileInUse(t *testing.T) {
	q, _ := newTestQuota(t)
	dir, err := q.Dir("busy", 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "open"))
	if err != nil {
		t.Fatal(err)
	}
	image, mount, _ := q.paths("busy")
	dev := loopDeviceOf(t, image)
	if dev == "" {
		t.Fatal("no loop device backs the volume's image")
	}
	if err := q.Release("busy"); err != nil {
		f.Close()
		t.Fatalf("Release of a volume in use: %v", err)
	}
	if _, err := os.Stat(mount); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left after Release (%v)", err)
	}
	if !loopBound(dev) {
		t.Error("the loop device went away while a file on it was still open")
	}
	f.Close()
	waitNoLoopDevice(t, dev)
}

func TestDiskSurvivesRestart(t *testing.T) {
	q, base := newTestQuota(t)
	dir, err := q.Dir("keep", 6*mib)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := q.Usage("keep")
	if err != nil {
		t.Fatal(err)
	}

	// A restarted agent.
	q2, err := NewDiskQuota(base)
	if err != nil {
		t.Fatal(err)
	}
	dir2, err := q2.Dir("keep", 6*mib)
	if err != nil {
		t.Fatalf("Dir after restart: %v", err)
	}
	if dir2 != dir {
		t.Fatalf("Dir after restart = %s, want %s", dir2, dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir2, "state")); err != nil || string(b) != "hello" {
		t.Fatalf("contents after restart: %q, %v", b, err)
	}
	if after, err := q2.Usage("keep"); err != nil || after != before {
		t.Fatalf("Usage after restart = %d, %v; want %d", after, err, before)
	}
	if _, err := q2.Dir("keep", 7*mib); !isolation.IsAlreadyExists(err) {
		t.Fatalf("Dir with another limit: want ErrAlreadyExists, got %v", err)
	}
	if _, err := q2.Dir("keep", 0); !isolation.IsAlreadyExists(err) {
		t.Fatalf("Dir unlimited over a limited one: want ErrAlreadyExists, got %v", err)
	}

	// A host reboot unmounts everything. Usage only reads (it must not bring back a volume a
	// release is removing); the next Dir mounts the image again.
	_, mount, _ := q2.paths("keep")
	if err := unix.Unmount(mount, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := q2.Usage("keep"); !isolation.IsNotFound(err) {
		t.Fatalf("Usage of an unmounted volume: want ErrNotFound, got %v", err)
	}
	if m, err := isMountPoint(mount); err != nil || m {
		t.Fatalf("Usage mounted the volume again (mounted %v, %v)", m, err)
	}
	if _, err := q2.Dir("keep", 6*mib); err != nil {
		t.Fatalf("Dir after the volume was unmounted: %v", err)
	}
	if after, err := q2.Usage("keep"); err != nil || after != before {
		t.Fatalf("Usage after remount = %d, %v; want %d", after, err, before)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state")); err != nil || string(b) != "hello" {
		t.Fatalf("contents after remount: %q, %v", b, err)
	}
}

func TestDiskConcurrentDirs(t *testing.T) {
	q, _ := newTestQuota(t)
	const n = 6
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { dirs[i], errs[i] = q.Dir(fmt.Sprintf("c%d", i), uint64(2+i)*mib) })
	}
	wg.Wait()
	devs := map[uint64]string{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Dir c%d: %v", i, errs[i])
		}
		var st unix.Stat_t
		if err := unix.Stat(dirs[i], &st); err != nil {
			t.Fatal(err)
		}
		if other, dup := devs[st.Dev]; dup {
			t.Fatalf("%s and %s share a filesystem", dirs[i], other)
		}
		devs[st.Dev] = dirs[i]
		// Each volume enforces its own limit.
		written, err := fill(t, filepath.Join(dirs[i], "f"), int(20*mib))
		if !errors.Is(err, unix.ENOSPC) || uint64(written) > uint64(2+i)*mib {
			t.Fatalf("c%d: wrote %d bytes, stopped by %v; want ENOSPC within %d MiB", i, written, err, 2+i)
		}
	}
	for i := range n {
		wg.Go(func() { errs[i] = q.Release(fmt.Sprintf("c%d", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Release c%d: %v", i, err)
		}
	}
}

func TestDiskUnlimited(t *testing.T) {
	q, _ := newTestQuota(t)
	dir, err := q.Dir("free", 0)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := isMountPoint(filepath.Dir(dir)); err != nil || m {
		t.Fatalf("an unlimited directory got its own filesystem (%v)", err)
	}
	if _, err := fill(t, filepath.Join(dir, "f"), 3*mib); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "hardlink")); err != nil {
		t.Fatal(err)
	}
	used, err := q.Usage("free")
	if err != nil {
		t.Fatal(err)
	}
	if used < 3*mib || used > 3*mib+64<<10 {
		t.Fatalf("Usage = %d, want about 3 MiB (hard links counted once)", used)
	}
	if _, err := q.Dir("free", mib); !isolation.IsAlreadyExists(err) {
		t.Fatalf("Dir limited over an unlimited one: want ErrAlreadyExists, got %v", err)
	}
	if err := q.Release("free"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory left after Release: %v", err)
	}
}

func TestDiskRejects(t *testing.T) {
	if _, err := NewDiskQuota("relative/dir"); !isolation.IsInvalidSpec(err) {
		t.Fatalf("relative base: want ErrInvalidSpec, got %v", err)
	}
	q, _ := newTestQuota(t)
	for _, h := range []string{"", "..", "a/b", "a b"} {
		if _, err := q.Dir(h, mib); !isolation.IsInvalidSpec(err) {
			t.Errorf("Dir(%q): want ErrInvalidSpec, got %v", h, err)
		}
		if _, err := q.Usage(h); !isolation.IsInvalidSpec(err) {
			t.Errorf("Usage(%q): want ErrInvalidSpec, got %v", h, err)
		}
		if err := q.Release(h); !isolation.IsInvalidSpec(err) {
			t.Errorf("Release(%q): want ErrInvalidSpec, got %v", h, err)
		}
	}
	if _, err := q.Usage("never-made"); !isolation.IsNotFound(err) {
		t.Fatalf("Usage of an unknown handle: want ErrNotFound, got %v", err)
	}
}

// loopDeviceOf returns the loop device whose backing file is image, or "".
func loopDeviceOf(t *testing.T, image string) string {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), image) {
			return strings.Split(f, "/")[3]
		}
	}
	return ""
}

// loopBound reports whether loop device dev (e.g. "loop3") has a backing file.
func loopBound(dev string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", dev, "loop", "backing_file"))
	return err == nil
}

// waitNoLoopDevice waits for the autoclear of loop device dev, which the kernel may finish a
// moment after the last close.
func waitNoLoopDevice(t *testing.T, dev string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !loopBound(dev) {
			return
		}
	}
	t.Fatalf("loop device %s still bound", dev)
}

func listAll(t *testing.T, base string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{imagesDir, volumesDir} {
		entries, err := os.ReadDir(filepath.Join(base, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, filepath.Join(sub, e.Name()))
		}
	}
	return out
}

// TestDiskReleaseStackedMounts: a volume mounted twice on its mount point (a second owner of
// the base remounted it) is released whole, not reported busy.
func TestDiskReleaseStackedMounts(t *testing.T) {
	q, base := newTestQuota(t)
	if _, err := q.Dir("stacked", 4*mib); err != nil {
		t.Fatal(err)
	}
	_, mount, _ := q.paths("stacked")
	if err := unix.Mount(mount, mount, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("stack a second mount: %v", err)
	}
	if err := q.Release("stacked"); err != nil {
		t.Fatalf("Release with two mounts stacked: %v", err)
	}
	if _, err := os.Stat(mount); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after Release (%v)", mount, err)
	}
	if entries := listAll(t, base); len(entries) != 0 {
		t.Fatalf("left under the base directory: %v", entries)
	}
}

func TestDiskSpare(t *testing.T) {
	q, base := newTestQuota(t)
	name, dir, err := q.Spare()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "made-ahead"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := q.AdoptSpare(name, "taker")
	if err != nil {
		t.Fatalf("AdoptSpare: %v", err)
	}
	if want, _ := q.Dir("taker", 0); got != want {
		t.Fatalf("AdoptSpare gave %s, Dir gives %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(got, "made-ahead")); err != nil {
		t.Fatalf("what was made in the spare: %v", err)
	}
	if _, err := q.AdoptSpare(name, "other"); !isolation.IsNotFound(err) {
		t.Fatalf("adopting a spare twice: %v, want ErrNotFound", err)
	}
	second, _, err := q.Spare()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.AdoptSpare(second, "taker"); !isolation.IsAlreadyExists(err) {
		t.Fatalf("adopting onto a handle with a directory: %v, want ErrAlreadyExists", err)
	}
	if _, err := q.AdoptSpare("taker", "x"); !isolation.IsInvalidSpec(err) {
		t.Fatalf("adopting a handle's directory: %v, want ErrInvalidSpec", err)
	}
	// A spare left by an earlier process is removed by the next DiskQuota on the base.
	q.Close()
	q2, err := NewDiskQuota(base)
	if err != nil {
		t.Fatal(err)
	}
	q2.Flush()
	if left, _ := filepath.Glob(filepath.Join(base, volumesDir, sparePrefix+"*")); len(left) > 0 {
		t.Fatalf("spares left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(base, volumesDir, "taker")); err != nil {
		t.Fatalf("the adopted directory went with the spares: %v", err)
	}
	q2.Close()
}
