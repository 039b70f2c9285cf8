package isolationlinux

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/image/imagetest"
)

// TestImageRootFS runs containers on an image pulled from a registry on loopback: its layers
// stacked (a whiteout hides a lower file, an opaque directory hides the lower entries, which
// needs userxattr in a user namespace), its files owned by the container's ids, its run
// configuration in Info, its layers held while a container uses them and shared by the next.
func TestImageRootFS(t *testing.T) {
	cfg := testConfig(t)
	cfg.Images.Dir = filepath.Join(filepath.Dir(cfg.StateDir), "images")
	reg := imagetest.NewRegistry(t)
	app := imagetest.Layer(t,
		imagetest.File{Path: "app", Dir: true},
		imagetest.File{Path: "app/hello", Body: "hello from the image\n"},
		imagetest.File{Path: "opq", Dir: true},
		imagetest.File{Path: "opq/a"}, imagetest.File{Path: "opq/b"},
		imagetest.File{Path: "gone", Body: "lower\n"},
	)
	top := imagetest.Layer(t,
		imagetest.File{Path: ".wh.gone"},
		imagetest.File{Path: "opq", Dir: true},
		imagetest.File{Path: "opq/.wh..wh..opq"},
		imagetest.File{Path: "opq/c"},
	)
	conf := imagetest.HTTPDConfig(8080, "/app")
	reg.Push(t, "apps/web:v1", imagetest.Image(t, conf, imagetest.BusyboxLayer(t), app, top), nil)
	b := newTestBackend(t, cfg)

	var progress bytes.Buffer
	rootfs := "docker://" + reg.Host + "/apps/web:v1"
	for _, privileged := range []bool{false, true} {
		name := "unprivileged"
		if privileged {
			name = "privileged"
		}
		t.Run(name, func(t *testing.T) {
			progress.Reset()
			c := createContainer(t, b, func(s *isolation.ContainerSpec) {
				s.RootFS, s.Privileged, s.Progress = rootfs, privileged, &progress
			})
			r := sh(t, c, "root", "cat /app/hello; ls /opq | tr '\\n' ' '; test -e /gone && echo gone-visible; stat -c %u /app/hello; touch /opq/new && echo writable")
			want := "hello from the image\nc 0\nwritable\n"
			if r.code != 0 || r.stdout != want {
				t.Fatalf("in the container: code %d stdout %q stderr %q, want %q", r.code, r.stdout, r.stderr, want)
			}
			info, err := c.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.Image == nil || !slices.Equal(info.Image.Entrypoint, conf.Entrypoint) || info.Image.WorkingDir != "/app" ||
				!slices.Equal(info.Image.ExposedPorts, []uint32{8080}) || !slices.Contains(info.Image.Env, "IMAGE_GREETING=hello from the image") {
				t.Fatalf("Info.Image = %+v", info.Image)
			}
			if !strings.Contains(progress.String(), "layer 3/3") || !strings.Contains(progress.String(), "ready (3 layers)") {
				t.Fatalf("progress lines:\n%s", progress.String())
			}
			if err := b.Destroy(context.Background(), c.Handle()); err != nil {
				t.Fatal(err)
			}
		})
	}
	u := b.images.store.Usage()
	if u.Layers != 6 || u.Referenced != 0 {
		t.Fatalf("after both containers are gone the store holds %+v; want 6 layers (3 shifted, 3 not), none referenced", u)
	}

	// A second container of the same image costs no layer download, and holds the layers.
	reg.Reset()
	c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.RootFS = rootfs })
	if n := reg.Count("GET", "/blobs/"); n != 0 {
		t.Fatalf("a cached image cost %d blob downloads", n)
	}
	if u := b.images.store.Usage(); u.Referenced != 3 {
		t.Fatalf("a running container holds %d layers, want 3", u.Referenced)
	}

	// A restarted backend (a new agent) holds the running container's layers again. The old
	// one goes away as a process would: its pool of inits too, whose forks (until they
	// exec) share the image store's lock descriptor.
	b.pool.close()
	b.images.close()
	b2 := newTestBackend(t, cfg)
	if u := b2.images.store.Usage(); u.Referenced != 3 {
		t.Fatalf("after a restart the running container holds %d layers, want 3", u.Referenced)
	}
	if err := b2.Destroy(context.Background(), c.Handle()); err != nil {
		t.Fatal(err)
	}
	if u := b2.images.store.Usage(); u.Referenced != 0 {
		t.Fatalf("after Destroy %d layers are still held", u.Referenced)
	}
}

// TestImageRootFSRefusals: what Create says when the image cannot be had.
func TestImageRootFSRefusals(t *testing.T) {
	cfg := testConfig(t)
	cfg.Images.Dir = filepath.Join(filepath.Dir(cfg.StateDir), "images")
	const password = "pa55-w0rd-xyz"
	reg := imagetest.NewRegistry(t)
	reg.RequireAuth("robot", password)
	img := imagetest.Image(t, v1.Config{Cmd: []string{"/bin/true"}}, imagetest.BusyboxLayer(t), imagetest.Marker(t, "private"))
	reg.Push(t, "apps/private:v1", img, imagetest.Auth("robot", password))
	corrupt := imagetest.NewRegistry(t)
	corrupt.Push(t, "apps/broken:v1", img, nil)
	corrupt.Corrupt(imagetest.LayerDigests(t, img)[1])
	b := newTestBackend(t, cfg)

	tests := []struct {
		name   string
		rootfs string
		auth   isolation.ImageAuth
		says   string
	}{
		{"private without credentials", "docker://" + reg.Host + "/apps/private:v1", isolation.ImageAuth{}, "the registry wants credentials and none were given"},
		{"private with a wrong password", "docker://" + reg.Host + "/apps/private:v1", isolation.ImageAuth{Username: "robot", Password: "nope"}, "check the registry credentials"},
		{"corrupted layer", "docker://" + corrupt.Host + "/apps/broken:v1", isolation.ImageAuth{}, "digest mismatch"},
		{"missing image", "docker://" + corrupt.Host + "/apps/nothing:v1", isolation.ImageAuth{}, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Create(context.Background(), isolation.ContainerSpec{Handle: handleFor(t), RootFS: tt.rootfs, ImageAuth: tt.auth, Network: isolation.NetworkNone})
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Create: %v, want an error saying %q", err, tt.says)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error carries the password: %v", err)
			}
		})
	}
	if u := b.images.store.Usage(); u.Layers != 1 || u.Referenced != 0 {
		// The busybox layer of the corrupted image is intact and cached; the bad one is not.
		t.Fatalf("after the refusals the store holds %+v, want only the intact busybox layer", u)
	}
	c := createContainer(t, b, func(s *isolation.ContainerSpec) {
		s.RootFS, s.ImageAuth = "docker://"+reg.Host+"/apps/private:v1", isolation.ImageAuth{Username: "robot", Password: password}
	})
	if r := sh(t, c, "root", "cat /marker | head -1"); r.stdout != "private\n" {
		t.Fatalf("private image: %+v", r)
	}
}
