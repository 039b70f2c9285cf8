package image

import (
	"fmt"
	"strings"
	"sync"
)

// Progress reports how far one layer of a Pull is. Done and Total are bytes of the
// compressed layer; Total is what the manifest announces.
type Progress struct {
	// Ref is the reference being pulled, as given to Pull.
	Ref string
	// Layer is the 1-based position of the layer in the image (1 is the bottom); Layers
	// is how many the image has.
	Layer, Layers int
	// Digest is the compressed layer's digest.
	Digest string
	// Done and Total are the bytes downloaded so far and the layer's size.
	Done, Total int64
	// Cached is true when the layer was already in the store: nothing is downloaded.
	Cached bool
}

// String renders p the way an agent logs it: "pulling layer 2/5 (12.3 MB/40.1 MB)".
func (p Progress) String() string {
	if p.Cached {
		return fmt.Sprintf("layer %d/%d cached (%s)", p.Layer, p.Layers, megabytes(p.Total))
	}
	return fmt.Sprintf("pulling layer %d/%d (%s/%s)", p.Layer, p.Layers, megabytes(p.Done), megabytes(p.Total))
}

func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// ImageConfig is what the image says about running it.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []Port            `json:"exposed_ports,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
}

// Port is an exposed port of an image ("8080/tcp").
type Port struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"` // "tcp" or "udp"
}

// Image is a pulled image whose layers are held in the store until Release.
type Image struct {
	// ID names this image in this store (manifest digest and uid shift); Store.Acquire
	// takes it to hold the layers again after a restart.
	ID string
	// Ref is the reference as pulled, Digest the digest of the platform manifest.
	Ref, Digest string
	// Layers are the unpacked layer directories, bottom layer first.
	Layers []string
	// Config is the image's run configuration.
	Config ImageConfig

	release func()
	once    sync.Once
}

// LowerDir returns the overlayfs lowerdir option for the layers: the top layer first,
// separated by ':'.
func (i *Image) LowerDir() string {
	dirs := make([]string, len(i.Layers))
	for k, d := range i.Layers {
		dirs[len(i.Layers)-1-k] = d
	}
	return strings.Join(dirs, ":")
}

// Release drops the image's references to its layers, which the garbage collector may then
// remove. It is safe to call more than once; only the first call counts.
func (i *Image) Release() {
	i.once.Do(func() {
		if i.release != nil {
			i.release()
		}
	})
}

// PullOption changes how Pull unpacks an image.
type PullOption func(*pullOptions)

type pullOptions struct {
	unshifted bool
}

// Unshifted pulls layers with the image's own ownership, for privileged containers (no
// user namespace). They are cached apart from the shifted copies.
func Unshifted() PullOption { return func(o *pullOptions) { o.unshifted = true } }
