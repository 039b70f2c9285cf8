//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

const testShift = DefaultUIDMapStart

// busyboxEntries is a tiny root filesystem: the host's static busybox and a few files.
func busyboxEntries(t *testing.T) []entry {
	t.Helper()
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs Debian's busybox-static: %v", err)
	}
	return []entry{
		dir("bin"), {name: "bin/busybox", body: string(b), mode: 0o755},
		symlink("bin/sh", "busybox"), symlink("bin/ls", "/bin/busybox"), symlink("bin/cat", "busybox"),
		dir("etc"), reg("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n"),
		dir("home"), {name: "home/vcap", typ: tar.TypeDir, mode: 0o750, uid: 2000, gid: 2000},
		{name: "home/vcap/.profile", body: "export A=1\n", mode: 0o640, uid: 2000, gid: 2000},
		{name: "bin/su", body: "not really su", mode: 0o4755},
		dir("opq"), reg("opq/a", "a"), reg("opq/b", "b"),
		reg("gone", "remove me"), dir("keep"), reg("keep/x", "x"),
	}
}

// TestPullStacksWithOverlay pulls a two-layer image whose top layer deletes a file and
// makes a directory opaque, mounts the layers with overlayfs and checks that the merged
// view is the image: what the top layer deleted is gone, the opaque directory shows only
// the top layer's entries, owners are shifted, and busybox runs in it.
func TestPullStacksWithOverlay(t *testing.T) {
	reg1 := newTestRegistry(t, nil)
	bottom := testLayer(t, busyboxEntries(t)...)
	top := testLayer(t,
		reg(".wh.gone", ""),
		dir("opq"), reg("opq/.wh..wh..opq", ""), reg("opq/c", "c"),
		reg("new", "new file"),
		reg("keep/.wh.absent", ""), // a whiteout of nothing below is harmless
	)
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"}, Env: []string{"PATH=/bin"},
		WorkingDir: "/home/vcap", User: "vcap", ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
	}, bottom, top)
	digest := push(t, reg1.host+"/apps/busybox:v1", img, nil)

	s := newTestStore(t, nil)
	var mu sync.Mutex
	last := map[int]Progress{}
	im, err := s.Pull(context.Background(), "docker://"+reg1.host+"/apps/busybox:v1", Credentials{}, func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		last[p.Layer] = p
	})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Release()

	if im.Digest != digest || len(im.Layers) != 2 {
		t.Fatalf("image %s with %d layers, want %s with 2", im.Digest, len(im.Layers), digest)
	}
	for i, l := range []v1.Layer{bottom, top} {
		p := last[i+1]
		size, _ := l.Size()
		if p.Layers != 2 || p.Done != size || p.Total != size || p.Digest != layerDigest(t, l) {
			t.Errorf("last progress of layer %d = %+v, want %d/%d bytes of %s", i+1, p, size, size, layerDigest(t, l))
		}
	}
	want := ImageConfig{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"}, Env: []string{"PATH=/bin"},
		WorkingDir: "/home/vcap", User: "vcap", ExposedPorts: []Port{{53, "udp"}, {8080, "tcp"}},
	}
	if fmt.Sprint(im.Config) != fmt.Sprint(want) {
		t.Errorf("config %+v, want %+v", im.Config, want)
	}
	if got := im.LowerDir(); got != im.Layers[1]+":"+im.Layers[0] {
		t.Errorf("LowerDir %q is not top:bottom", got)
	}

	// The top layer holds overlay whiteouts, as the kernel expects them.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(im.Layers[1], "gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout of gone: %v mode %o rdev %d, want a 0/0 character device", err, st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(im.Layers[1], "opq"), xattrOpaqueTrusted, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opq %s = %q, %v; want y", xattrOpaqueTrusted, buf[:n], err)
	}

	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+im.LowerDir()); err != nil {
		t.Fatalf("mounting the layers: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })

	t.Run("merged view", func(t *testing.T) {
		checkMerged(t, merged, false)
	})
	t.Run("ownership shifted", func(t *testing.T) {
		for _, tc := range []struct {
			path     string
			uid, gid uint32
			mode     uint32
		}{
			{"home/vcap", testShift + 2000, testShift + 2000, 0o750},
			{"home/vcap/.profile", testShift + 2000, testShift + 2000, 0o640},
			{"bin/busybox", testShift, testShift, 0o755},
			{"bin/su", testShift, testShift, 0o4755}, // set-uid survives the chown
			{"new", testShift, testShift, 0o644},
			{"", testShift, testShift, 0o755},
		} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(merged, tc.path), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != tc.uid || st.Gid != tc.gid || st.Mode&0o7777 != tc.mode {
				t.Errorf("/%s: %d:%d %o, want %d:%d %o", tc.path, st.Uid, st.Gid, st.Mode&0o7777, tc.uid, tc.gid, tc.mode)
			}
		}
	})
	t.Run("busybox runs in it", func(t *testing.T) {
		cmd := exec.Command("/bin/ls", "/opq", "/")
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: merged}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ls in the merged root: %v: %s", err, out)
		}
		if !strings.HasSuffix(string(out), "/opq:\nc\n") || strings.Contains(string(out), "gone") {
			t.Errorf("ls /opq / in the image:\n%s", out)
		}
	})
	t.Run("user namespace with userxattr", func(t *testing.T) {
		// What the backend does for an unprivileged container: its mapped root mounts
		// the overlay inside a user namespace, where only user.overlay.* xattrs count.
		mnt := filepath.Join(filepath.Dir(s.cfg.Dir), "userns-merged")
		if err := os.Mkdir(mnt, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
		for _, d := range []string{filepath.Dir(s.cfg.Dir), filepath.Dir(filepath.Dir(s.cfg.Dir))} {
			os.Chmod(d, 0o711) // t.TempDir is 0700; the mapped root must search it
		}
		script := fmt.Sprintf("mount -t overlay overlay -o ro,userxattr,lowerdir=%s %s && ls -a %s/opq && if test -e %s/gone; then echo GONE-VISIBLE; fi", im.LowerDir(), mnt, mnt, mnt)
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: testShift, Size: DefaultUIDMapSize}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: testShift, Size: DefaultUIDMapSize}},
			Credential:  &syscall.Credential{Uid: 0, Gid: 0},
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mounting the layers in a user namespace: %v: %s", err, out)
		}
		if got := strings.Fields(string(out)); !slices.Equal(got, []string{".", "..", "c"}) {
			t.Errorf("in a user namespace the merged /opq lists %q, want . .. c", got)
		}
	})
}

// checkMerged checks the merged view of the test image of TestPullStacksWithOverlay.
func checkMerged(t *testing.T, merged string, _ bool) {
	t.Helper()
	for _, p := range []string{"gone", "opq/a", "opq/b", "keep/absent"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/%s: %v, want it absent", p, err)
		}
	}
	for p, body := range map[string]string{"opq/c": "c", "new": "new file", "keep/x": "x", "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n"} {
		b, err := os.ReadFile(filepath.Join(merged, p))
		if err != nil || string(b) != body {
			t.Errorf("/%s = %q, %v; want %q", p, b, err, body)
		}
	}
	entries, err := os.ReadDir(filepath.Join(merged, "opq"))
	if err != nil || len(entries) != 1 || entries[0].Name() != "c" {
		t.Errorf("/opq lists %v (%v), want only c", entries, err)
	}
	if l, err := os.Readlink(filepath.Join(merged, "bin/ls")); err != nil || l != "/bin/busybox" {
		t.Errorf("/bin/ls -> %q, %v", l, err)
	}
}

// TestResolvePinsDigest resolves a tag, moves the tag to other content, and checks that
// the digest still pulls the original while the tag pulls the new one.
func TestResolvePinsDigest(t *testing.T) {
	r := newTestRegistry(t, nil)
	ref := r.host + "/team/app:stable"
	d1 := push(t, ref, testImage(t, v1.Config{}, testLayer(t, reg("version", "1"))), nil)

	pinned, err := Resolve(context.Background(), "docker://"+ref, Credentials{}, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "docker://" + ref + "@" + d1; pinned != want {
		t.Fatalf("Resolve = %q, want %q", pinned, want)
	}
	d2 := push(t, ref, testImage(t, v1.Config{}, testLayer(t, reg("version", "2"))), nil)
	if d1 == d2 {
		t.Fatal("re-push did not change the digest")
	}
	again, err := Resolve(context.Background(), pinned, Credentials{}, ResolveOptions{})
	if err != nil || again != pinned {
		t.Fatalf("Resolve of a pinned reference = %q, %v; want it unchanged", again, err)
	}

	s := newTestStore(t, nil)
	for _, tc := range []struct{ ref, version string }{{pinned, "1"}, {ref, "2"}} {
		im, err := s.Pull(context.Background(), tc.ref, Credentials{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(im.Layers[0], "version"))
		if err != nil || string(b) != tc.version {
			t.Errorf("%s: version %q, %v; want %q", tc.ref, b, err, tc.version)
		}
		im.Release()
	}

	for _, tc := range []struct {
		ref   string
		check func(error) bool
	}{
		{r.host + "/team/app:missing", IsNotFound},
		{r.host + "/team/nothing", IsNotFound},
		{"docker://" + r.host + "/Bad_Name", IsInvalidReference},
		{"preloaded:cflinuxfs4", IsInvalidReference},
		{"127.0.0.1:1/team/app:stable", IsRegistry},
	} {
		if _, err := Resolve(context.Background(), tc.ref, Credentials{}, ResolveOptions{}); !tc.check(err) {
			t.Errorf("Resolve(%q) error %v is of the wrong class", tc.ref, err)
		}
	}
}

// TestPrivateRegistry pulls from a registry behind basic auth, with and without (or with
// wrong) credentials, and checks that the password shows up in no error and no log line.
func TestPrivateRegistry(t *testing.T) {
	const user, password = "deployer", "s3cr3t-Pa55word"
	r := newTestRegistry(t, basicAuth(user, password))
	ref := r.host + "/private/app:1"
	push(t, ref, testImage(t, v1.Config{}, testLayer(t, reg("secret", "data"))), &authn.Basic{Username: user, Password: password})

	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newTestStore(t, func(c *Config) { c.Logger = logger })
	good := Credentials{Username: user, Password: password}
	bad := Credentials{Username: user, Password: password + "-wrong"}

	var errs []string
	for _, creds := range []Credentials{{}, bad} {
		_, err := s.Pull(context.Background(), ref, creds, nil)
		if !IsUnauthorized(err) {
			t.Fatalf("pull with %v: %v, want ErrUnauthorized", creds, err)
		}
		if !strings.Contains(err.Error(), "credentials") {
			t.Errorf("pull with %v: %q does not say credentials are the problem", creds, err)
		}
		errs = append(errs, err.Error())
		_, err = Resolve(context.Background(), ref, creds, ResolveOptions{})
		if !IsUnauthorized(err) {
			t.Fatalf("resolve with %v: %v, want ErrUnauthorized", creds, err)
		}
		errs = append(errs, err.Error())
	}
	im, err := s.Pull(context.Background(), ref, good, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Release()
	if _, err := Resolve(context.Background(), ref, good, ResolveOptions{}); err != nil {
		t.Fatal(err)
	}
	logger.Info("credentials in use", "creds", good)
	errs = append(errs, fmt.Sprintf("%v %+v %#v %s", good, good, good, good))

	logMu.Lock()
	all := logs.String() + strings.Join(errs, "\n")
	logMu.Unlock()
	if strings.Contains(all, password) {
		t.Fatalf("the password leaked:\n%s", all)
	}
	if !strings.Contains(logs.String(), "pulled image") {
		t.Errorf("the log has no pull in it:\n%s", logs.String())
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestScrubRemovesEchoedPassword checks the last line of defence: a registry error that
// echoes the password is rewritten, keeping its class.
func TestScrubRemovesEchoedPassword(t *testing.T) {
	c := Credentials{Username: "u", Password: "hunter2"}
	err := c.scrub(fmt.Errorf("pull: %w: server said Authorization: hunter2", ErrUnauthorized))
	if strings.Contains(err.Error(), "hunter2") || !IsUnauthorized(err) {
		t.Fatalf("scrubbed error %q (unauthorized: %v)", err, IsUnauthorized(err))
	}
}

// TestConcurrentPullsShareDownloads runs 20 pulls of one image at once and checks each blob
// was fetched once, every pull got the same layers, and references are counted.
func TestConcurrentPullsShareDownloads(t *testing.T) {
	r := newTestRegistry(t, nil)
	big := make([]byte, 1<<20)
	rand.Read(big)
	l1, l2, l3 := testLayer(t, reg("one", string(big))), testLayer(t, reg("two", "2")), testLayer(t, reg("three", "3"))
	push(t, r.host+"/team/many:1", testImage(t, v1.Config{}, l1, l2, l3), nil)
	r.reset()

	s := newTestStore(t, nil)
	const pulls = 20
	images := make([]*Image, pulls)
	errs := make([]error, pulls)
	var wg sync.WaitGroup
	for i := range pulls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			images[i], errs[i] = s.Pull(context.Background(), r.host+"/team/many:1", Credentials{}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		if !slices.Equal(images[i].Layers, images[0].Layers) {
			t.Fatalf("pull %d got layers %v, pull 0 %v", i, images[i].Layers, images[0].Layers)
		}
	}
	for _, l := range []v1.Layer{l1, l2, l3} {
		if n := r.count("GET", "/blobs/"+layerDigest(t, l)); n != 1 {
			t.Errorf("layer %s fetched %d times, want once", layerDigest(t, l), n)
		}
	}
	if n := r.count("GET", "/blobs/"); n != 4 {
		t.Errorf("%d blob GETs, want 4 (3 layers and the config)", n)
	}
	if u := s.Usage(); u.Layers != 3 || u.Referenced != 3 || u.Images != 1 {
		t.Errorf("usage %+v, want 3 layers, all referenced, 1 image", u)
	}
	for _, im := range images {
		im.Release()
		im.Release() // a second release is a no-op
	}
	if u := s.Usage(); u.Referenced != 0 || u.Layers != 3 {
		t.Errorf("after release: usage %+v, want 3 unreferenced layers", u)
	}
}

// TestCorruptLayerRejected serves a layer with one byte changed: the pull fails with a
// digest mismatch naming both digests and leaves nothing in the store.
func TestCorruptLayerRejected(t *testing.T) {
	layer := testLayer(t, reg("file", strings.Repeat("payload ", 1000)))
	bad := layerDigest(t, layer)
	corrupt := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+bad) {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			body[len(body)/2] ^= 0xff
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
	r := newTestRegistry(t, corrupt)
	push(t, r.host+"/team/broken:1", testImage(t, v1.Config{}, layer), nil)

	s := newTestStore(t, nil)
	_, err := s.Pull(context.Background(), r.host+"/team/broken:1", Credentials{}, nil)
	if !IsDigestMismatch(err) {
		t.Fatalf("pull of a corrupted layer: %v, want ErrDigestMismatch", err)
	}
	if want := "layer " + bad + ": digest mismatch: got sha256:"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	for _, d := range []string{layersDir, tmpDir} {
		entries, err := os.ReadDir(filepath.Join(s.cfg.Dir, d))
		if err != nil || len(entries) != 0 {
			t.Errorf("%s holds %v (%v) after a rejected pull", d, entries, err)
		}
	}
	if u := s.Usage(); u.Layers != 0 || u.Images != 0 {
		t.Errorf("usage %+v after a rejected pull", u)
	}
}

// TestGCRemovesOnlyUnreferenced fills the store past MaxBytes and checks the collector
// removes the least recently used unreferenced layers and never a referenced one.
func TestGCRemovesOnlyUnreferenced(t *testing.T) {
	r := newTestRegistry(t, nil)
	var refs []string
	for i := range 4 {
		data := make([]byte, 256<<10)
		rand.Read(data)
		ref := fmt.Sprintf("%s/team/img%d:1", r.host, i)
		push(t, ref, testImage(t, v1.Config{}, testLayer(t, reg("data", string(data)))), nil)
		refs = append(refs, ref)
	}
	// Room for two layers and a bit.
	s := newTestStore(t, func(c *Config) { c.MaxBytes = 600 << 10 })
	pull := func(i int) *Image {
		t.Helper()
		im, err := s.Pull(context.Background(), refs[i], Credentials{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	exists := func(im *Image) bool {
		_, err := os.Stat(im.Layers[0])
		return err == nil
	}
	held0 := pull(0) // held throughout
	im1 := pull(1)
	im1.Release()
	im2 := pull(2) // three layers: over the limit, but 1 is the only idle one
	if exists(im1) {
		t.Error("idle layer of image 1 survived a collection past MaxBytes")
	}
	if !exists(held0) || !exists(im2) {
		t.Fatal("a referenced layer was collected")
	}
	im3 := pull(3) // nothing idle: the store stays over the limit
	if !exists(held0) || !exists(im2) || !exists(im3) {
		t.Fatal("a referenced layer was collected")
	}
	if u := s.Usage(); u.Bytes <= s.cfg.MaxBytes || u.Layers != 3 {
		t.Errorf("usage %+v: want 3 referenced layers over the limit", u)
	}
	im2.Release()
	im3.Release() // now two idle: 2 is older, so it goes, and the store fits again
	if exists(im2) || !exists(im3) || !exists(held0) {
		t.Errorf("after releases: layer 2 exists %v (want false), 3 %v, 0 %v", exists(im2), exists(im3), exists(held0))
	}
	if _, err := s.Acquire(im2.ID); !IsNotFound(err) {
		t.Errorf("Acquire of a collected image: %v, want ErrNotFound", err)
	}
	held0.Release()
}

// TestMirrorsFirst checks that a mirror with the image serves everything (the origin sees
// no request), and that a mirror without it falls back to the origin.
func TestMirrorsFirst(t *testing.T) {
	origin := newTestRegistry(t, nil)
	mirror := newTestRegistry(t, nil)
	empty := newTestRegistry(t, nil)
	img := testImage(t, v1.Config{}, testLayer(t, reg("from", "anywhere")))
	push(t, origin.host+"/library/app:1", img, nil)
	push(t, mirror.host+"/library/app:1", img, nil)
	origin.reset()
	mirror.reset()

	s := newTestStore(t, func(c *Config) { c.Mirrors = []string{"http://" + mirror.host, origin.host} })
	im, err := s.Pull(context.Background(), origin.host+"/library/app:1", Credentials{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Release()
	if n := origin.count("GET", "/v2/library/app/"); n != 0 {
		t.Errorf("origin served %d requests though the mirror has the image", n)
	}
	if n := mirror.count("GET", "/blobs/"); n != 2 {
		t.Errorf("mirror served %d blobs, want 2 (layer and config)", n)
	}

	s2 := newTestStore(t, func(c *Config) { c.Mirrors = []string{empty.host} })
	im, err = s2.Pull(context.Background(), origin.host+"/library/app:1", Credentials{}, nil)
	if err != nil {
		t.Fatalf("pull falling back to the origin: %v", err)
	}
	im.Release()
	if empty.count("GET", "/manifests/") == 0 {
		t.Error("the mirror was not asked first")
	}
	if origin.count("GET", "/blobs/") != 2 {
		t.Errorf("origin served %d blobs, want 2", origin.count("GET", "/blobs/"))
	}
}

// TestRestartKeepsCache closes and reopens a store: cached layers and images survive and
// can be acquired again without a registry, and leftovers of a crash are discarded.
func TestRestartKeepsCache(t *testing.T) {
	r := newTestRegistry(t, nil)
	push(t, r.host+"/team/app:1", testImage(t, v1.Config{Cmd: []string{"run"}}, testLayer(t, reg("a", "a")), testLayer(t, reg("b", "b"))), nil)
	dir := t.TempDir()
	open := func() *Store {
		cfg := DefaultConfig()
		cfg.Dir, cfg.Logger = dir, discardLogger()
		s, err := NewStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if _, err := NewStore(s.cfg); err == nil {
		t.Fatal("a second store opened the same directory")
	}
	im, err := s.Pull(context.Background(), r.host+"/team/app:1", Credentials{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// A crash mid-download and mid-publish.
	os.MkdirAll(filepath.Join(dir, tmpDir, "layer-123", "rootfs"), 0o755)
	os.MkdirAll(filepath.Join(dir, layersDir, "deadbeef-0"), 0o755)

	s = open()
	defer s.Close()
	again, err := s.Acquire(im.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Layers, im.Layers) || !slices.Equal(again.Config.Cmd, []string{"run"}) {
		t.Errorf("after restart: %+v, want %+v", again, im)
	}
	for _, p := range []string{filepath.Join(tmpDir, "layer-123"), filepath.Join(layersDir, "deadbeef-0")} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s survived the restart: %v", p, err)
		}
	}
	if u := s.Usage(); u.Layers != 2 || u.Referenced != 2 {
		t.Errorf("usage %+v, want 2 referenced layers", u)
	}
	again.Release()
	if _, err := s.Acquire("sha256:nope/0"); !IsNotFound(err) {
		t.Errorf("Acquire of an unknown id: %v", err)
	}
}

// TestUnpackConfinesEntries feeds hostile layers to the unpacker: nothing lands outside the
// layer directory, names climbing out are refused, owners outside the uid range are
// refused, and overlay metadata in a layer is ignored.
func TestUnpackConfinesEntries(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []entry
		wantErr func(error) bool
		mayFail bool     // refusing is as good as confining
		inside  []string // paths that must exist in the layer unless it failed
	}{
		{name: "dot-dot name", entries: []entry{reg("../../escaped", "x")}, wantErr: IsInvalidImage},
		{name: "dot-dot hard link", entries: []entry{{name: "l", typ: tar.TypeLink, link: "../../etc/passwd"}}, wantErr: IsInvalidImage},
		{name: "through absolute symlink", entries: []entry{symlink("evil", outside), reg("evil/planted", "x")}, mayFail: true, inside: []string{"evil", filepath.Join(outside, "planted")}},
		{name: "through relative symlink", entries: []entry{symlink("up", "../../../.."+outside), reg("up/planted2", "x")}, mayFail: true, inside: []string{filepath.Join(outside, "planted2")}},
		{name: "replace symlink with file", entries: []entry{symlink("f", filepath.Join(outside, "victim")), reg("f", "mine")}, inside: []string{"f"}},
		{name: "owner beyond the range", entries: []entry{{name: "big", body: "x", mode: 0o644, uid: 70000}}, wantErr: IsInvalidImage},
		{name: "forged overlay xattr", entries: []entry{{name: "d", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"trusted.overlay.opaque": "y", "user.overlay.opaque": "y", "user.note": "kept"}}}, inside: []string{"d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := t.TempDir()
			_, err := unpackLayer(context.Background(), bytes.NewReader(tarBytes(t, tc.entries...)), layer, UIDMap{Start: testShift, Size: DefaultUIDMapSize})
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("unpack: %v, want a refusal", err)
				}
			} else if err != nil && !tc.mayFail {
				t.Fatalf("unpack: %v", err)
			}
			for _, p := range tc.inside {
				if err != nil {
					break
				}
				if _, err := os.Lstat(filepath.Join(layer, p)); err != nil {
					t.Errorf("%s not inside the layer: %v", p, err)
				}
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("the layer wrote outside its directory: %v", entries)
			}
		})
	}
	t.Run("forged overlay xattr is not set", func(t *testing.T) {
		layer := t.TempDir()
		e := entry{name: "d", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"trusted.overlay.opaque": "y", "user.overlay.opaque": "y", "user.note": "kept"}}
		if _, err := unpackLayer(context.Background(), bytes.NewReader(tarBytes(t, e)), layer, UIDMap{}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
			if _, err := unix.Getxattr(filepath.Join(layer, "d"), x, buf); err == nil {
				t.Errorf("%s was set from the layer", x)
			}
		}
		if n, err := unix.Getxattr(filepath.Join(layer, "d"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
			t.Errorf("user.note = %q, %v", buf[:n], err)
		}
	})
}

// TestFileCapsFollowTheNamespace checks the conversion of file capabilities.
func TestFileCapsFollowTheNamespace(t *testing.T) {
	v2 := []byte{0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // cap_net_raw, effective
	got, ok := convertFileCaps(v2, testShift)
	if !ok || len(got) != 24 || got[3] != 0x03 || got[0] != 0x01 || !bytes.Equal(got[4:20], v2[4:20]) {
		t.Fatalf("shifted caps %x", got)
	}
	back, ok := convertFileCaps(got, 0)
	if !ok || !bytes.Equal(back, v2) {
		t.Fatalf("unshifted caps %x, want %x", back, v2)
	}
	if _, ok := convertFileCaps([]byte{1, 2}, 0); ok {
		t.Error("a truncated value was accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"relative dir", func(c *Config) { c.Dir = "images" }, false},
		{"colon in dir", func(c *Config) { c.Dir = "/a:b" }, false},
		{"no max", func(c *Config) { c.MaxBytes = 0 }, false},
		{"half uid map", func(c *Config) { c.UIDMap.Size = 0 }, false},
		{"no shift", func(c *Config) { c.UIDMap = UIDMap{} }, true},
		{"mirror with path", func(c *Config) { c.Mirrors = []string{"mirror.local/v2"} }, false},
		{"mirrors", func(c *Config) { c.Mirrors = []string{"http://10.0.0.1:5000", "mirror.example.com"} }, true},
		{"bad platform", func(c *Config) { c.Platform = "linux/amd64/v8/x" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			} else if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate = %v, not ErrInvalidConfig", err)
			}
		})
	}
}
