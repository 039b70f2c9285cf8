package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Registry is a registry on loopback (plain HTTP, which the image package uses for loopback
// hosts) that counts requests and can refuse anonymous access or corrupt blobs.
type Registry struct {
	// Host is "127.0.0.1:<port>".
	Host string

	mu       sync.Mutex
	requests map[string]int // "GET /v2/..." → count
	user     string
	password string
	corrupt  map[string]bool // blob digests served with a flipped byte
}

// NewRegistry starts a registry that lives until the test ends.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{requests: map[string]int{}, corrupt: map[string]bool{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.Method+" "+req.URL.Path]++
		user, password := r.user, r.password
		corrupt := false
		for d := range r.corrupt {
			if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+d) {
				corrupt = true
			}
		}
		r.mu.Unlock()
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		if corrupt {
			inner.ServeHTTP(&flipWriter{ResponseWriter: w}, req)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// RequireAuth makes every request need HTTP basic auth with user and password (a private
// registry). Push with Auth(user, password) afterwards.
func (r *Registry) RequireAuth(user, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.password = user, password
}

// Corrupt makes the registry serve the blob with digest d with one byte changed, as a broken
// mirror or disk would: its content no longer matches its digest.
func (r *Registry) Corrupt(d string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[d] = true
}

// Count returns how many requests of method had a path containing fragment.
func (r *Registry) Count(method, fragment string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.requests {
		if strings.HasPrefix(k, method+" ") && strings.Contains(k, fragment) {
			n += c
		}
	}
	return n
}

// Reset forgets the counted requests.
func (r *Registry) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = map[string]int{}
}

// Push writes img to repo:tag on the registry (with auth, if not nil) and returns the
// image's manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image, auth authn.Authenticator) string {
	t.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if auth == nil {
		auth = authn.Anonymous
	}
	if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Auth returns a basic-auth authenticator for Push.
func Auth(user, password string) authn.Authenticator {
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
}

// flipWriter changes the first byte of the body it writes.
type flipWriter struct {
	http.ResponseWriter
	done bool
}

func (f *flipWriter) Write(b []byte) (int, error) {
	if !f.done && len(b) > 0 {
		f.done = true
		c := append([]byte(nil), b...)
		c[0] ^= 0xff
		return f.ResponseWriter.Write(c)
	}
	return f.ResponseWriter.Write(b)
}

// File is one entry of a layer built by Layer.
type File struct {
	Path string // absolute or relative; stored relative
	Body string
	Mode int64 // 0644 for files when zero
	Dir  bool
	Link string // symlink target
}

// Layer builds a gzip layer from files.
func Layer(t testing.TB, files ...File) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: strings.TrimPrefix(path.Clean("/"+f.Path), "/"), Mode: f.Mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(f.Body))}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
			if hdr.Mode == 0 {
				hdr.Mode = 0o755
			}
		case f.Link != "":
			hdr.Typeflag, hdr.Size, hdr.Linkname, hdr.Mode = tar.TypeSymlink, 0, f.Link, 0o777
		case hdr.Mode == 0:
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			io.WriteString(tw, f.Body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var (
	busyboxOnce  sync.Once
	busyboxFiles []File
	busyboxErr   error
)

// BusyboxLayer is a minimal root filesystem from the host's static busybox (Debian's
// busybox-static): /bin/busybox and a symlink per applet, /etc/passwd and /etc/group with
// root and vcap (2000), /tmp. The test is skipped when busybox is missing.
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	busyboxOnce.Do(func() {
		var bin string
		if bin, busyboxErr = filepath.EvalSymlinks("/bin/busybox"); busyboxErr != nil {
			return
		}
		var body []byte
		if body, busyboxErr = os.ReadFile(bin); busyboxErr != nil {
			return
		}
		var out []byte
		if out, busyboxErr = exec.Command(bin, "--list-full").Output(); busyboxErr != nil {
			return
		}
		files := []File{{Path: "bin", Dir: true}, {Path: "sbin", Dir: true}, {Path: "usr", Dir: true},
			{Path: "usr/bin", Dir: true}, {Path: "usr/sbin", Dir: true}, {Path: "etc", Dir: true},
			{Path: "dev", Dir: true}, {Path: "proc", Dir: true}, {Path: "sys", Dir: true},
			{Path: "root", Dir: true, Mode: 0o700}, {Path: "home", Dir: true}, {Path: "tmp", Dir: true, Mode: 0o1777},
			{Path: "bin/busybox", Body: string(body), Mode: 0o755},
			{Path: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
			{Path: "etc/group", Body: "root:x:0:\nvcap:x:2000:\nnogroup:x:65534:\n"},
		}
		for _, applet := range strings.Fields(string(out)) {
			if applet == "/bin/busybox" || applet == "bin/busybox" {
				continue
			}
			rel, err := filepath.Rel(filepath.Dir("/"+strings.TrimPrefix(applet, "/")), "/bin/busybox")
			if err != nil {
				busyboxErr = err
				return
			}
			files = append(files, File{Path: applet, Link: rel})
		}
		busyboxFiles = files
	})
	if busyboxErr != nil {
		t.Skipf("no static busybox for a test image: %v", busyboxErr)
	}
	return Layer(t, busyboxFiles...)
}

// Image stacks layers (bottom first) into a linux image for this machine's architecture
// with cfg as its run configuration.
func Image(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", runtime.GOARCH, cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// LayerDigests returns the compressed digests of img's layers, bottom first.
func LayerDigests(t testing.TB, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ls))
	for i, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = d.String()
	}
	return out
}

// ShortDigest returns the first 12 hex digits of a "sha256:…" digest, for messages.
func ShortDigest(d string) string {
	h := strings.TrimPrefix(d, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Marker is a distinct small layer (a file /marker holding s), for images that must differ.
func Marker(t testing.TB, s string) v1.Layer {
	sum := sha256.Sum256([]byte(s))
	return Layer(t, File{Path: "marker", Body: s + "\n" + hex.EncodeToString(sum[:4]) + "\n"})
}

// HTTPDConfig is the run configuration of an image whose command serves dir over HTTP on
// port with busybox httpd in the foreground, exposing that port.
func HTTPDConfig(port int, dir string) v1.Config {
	p := fmt.Sprintf("%d/tcp", port)
	return v1.Config{
		Entrypoint:   []string{"/usr/sbin/httpd", "-f", "-v"},
		Cmd:          []string{"-p", fmt.Sprint(port), "-h", dir},
		Env:          []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_GREETING=hello from the image"},
		WorkingDir:   dir,
		ExposedPorts: map[string]struct{}{p: {}},
	}
}
