package image

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	indexFile = "index.json"
	layersDir = "layers"
	tmpDir    = "tmp"

	// maxConfigBytes bounds an image config blob, which is held in memory.
	maxConfigBytes = 16 << 20
	// layerConcurrency is how many layers one Pull fetches at a time.
	layerConcurrency = 3
)

// Store is the cell-local image layer cache. It is safe for concurrent use.
type Store struct {
	cfg      Config
	log      *slog.Logger
	platform v1.Platform
	lock     io.Closer // flock of Dir: one store per directory

	ctx    context.Context // canceled by Close; parent of every download
	cancel context.CancelFunc
	wg     sync.WaitGroup // downloads in flight

	mu      sync.Mutex
	closed  bool
	idx     *index
	refs    map[string]int            // layer key → Images holding it
	flights map[string]*flight        // downloads in progress, by layer key or "config <digest>"
	configs map[string]*v1.ConfigFile // fetched configs by digest
}

// Usage is how much the store holds.
type Usage struct {
	Bytes      int64 // disk usage of all unpacked layers
	Layers     int   // layers cached
	Referenced int   // layers held by at least one Image
	Images     int   // images whose layers are all cached
}

// GCStats is what one garbage collection removed.
type GCStats struct {
	Layers int   // layers removed
	Bytes  int64 // their disk usage
}

// NewStore opens (or creates) the cache in cfg.Dir: it takes an exclusive lock on the
// directory, discards downloads and unpacks a crash left behind, drops index entries whose
// directories are gone and directories the index does not know. It does not collect
// garbage: call Acquire for the images of surviving containers first. Errors: ErrInvalidConfig, errors.ErrUnsupported off Linux, or why
// the directory cannot be used (for example another store holds its lock).
func NewStore(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("image store: %w: layers are unpacked for overlayfs, which needs Linux", errors.ErrUnsupported)
	}
	platform := cfg.Platform
	if platform == "" {
		platform = "linux/" + runtime.GOARCH
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, fmt.Errorf("%w: Platform %q: %v", ErrInvalidConfig, platform, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "image-store")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{cfg.Dir, 0o711}, {filepath.Join(cfg.Dir, layersDir), 0o711}, {filepath.Join(cfg.Dir, tmpDir), 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("image store %s: %w", cfg.Dir, err)
		}
		// Containers mount the layers by path as a mapped root: it must be able to search.
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("image store %s: %w", cfg.Dir, err)
		}
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", cfg.Dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg: cfg, log: log, platform: *p, lock: lock, ctx: ctx, cancel: cancel,
		refs: map[string]int{}, flights: map[string]*flight{}, configs: map[string]*v1.ConfigFile{},
	}
	if err := s.recover(); err != nil {
		cancel()
		lock.Close()
		return nil, fmt.Errorf("image store %s: %w", cfg.Dir, err)
	}
	// No collection here: containers that survived an agent restart have not re-acquired
	// their images yet (Acquire), so every layer may still be in use.
	return s, nil
}

// recover loads the index and makes it agree with the directories.
func (s *Store) recover() error {
	tmp := filepath.Join(s.cfg.Dir, tmpDir)
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("discarding an interrupted download: %w", err)
		}
	}
	idx, err := loadIndex(filepath.Join(s.cfg.Dir, indexFile))
	if err != nil {
		// The layers can be fetched again; a cell that cannot start is worse.
		s.log.Warn("image index unreadable, starting with an empty cache", "error", err)
		idx = newIndex()
	}
	layers := filepath.Join(s.cfg.Dir, layersDir)
	for key := range idx.Layers {
		if _, err := os.Lstat(filepath.Join(layers, key)); err != nil {
			s.log.Warn("cached layer missing, forgetting it", "layer", key, "error", err)
			delete(idx.Layers, key)
		}
	}
	entries, err = os.ReadDir(layers)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := idx.Layers[e.Name()]; ok {
			continue
		}
		s.log.Info("removing a layer the index does not know (interrupted unpack or removal)", "layer", e.Name())
		if err := os.RemoveAll(filepath.Join(layers, e.Name())); err != nil {
			return err
		}
	}
	for id, img := range idx.Images {
		for _, key := range img.Layers {
			if idx.Layers[key] == nil {
				delete(idx.Images, id)
				break
			}
		}
	}
	s.idx = idx
	return s.idx.save(filepath.Join(s.cfg.Dir, indexFile))
}

// Close stops every download in progress, waits for them and releases the directory lock.
// Images already returned keep their directories; the store must not be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return s.lock.Close()
}

// Pull makes the image ref available and holds its layers until the returned Image is
// released. ref is "[registry/]repository[:tag][@digest]" or a docker:// / oci:// rootfs
// URI. The manifest is always fetched (from the first mirror that has it, else the origin
// registry with creds), so that access to private images is checked on every pull; layers
// already cached are not downloaded again, and a layer other pulls are downloading is
// waited for rather than fetched twice. progress, if not nil, is called (never
// concurrently) as layers download.
//
// Errors: ErrInvalidReference, ErrUnauthorized, ErrNotFound, ErrRegistry,
// ErrDigestMismatch (nothing of the bad content is kept), ErrInvalidImage, ErrClosed, the
// context's error, or a local I/O error. The password in creds never appears in them.
func (s *Store) Pull(ctx context.Context, ref string, creds Credentials, progress func(Progress), opts ...PullOption) (*Image, error) {
	var o pullOptions
	for _, opt := range opts {
		opt(&o)
	}
	_, imageRef, err := splitRootFSURI(ref)
	if err != nil {
		return nil, err
	}
	r, err := parseReference(imageRef, s.cfg.InsecureRegistries)
	if err != nil {
		return nil, err
	}
	var shift uint32
	if !o.unshifted && s.cfg.UIDMap.shifted() {
		shift = s.cfg.UIDMap.Start
	}
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	srcs, err := s.sources(r, creds)
	if err != nil {
		return nil, err
	}
	report := func(Progress) {}
	if progress != nil {
		var pmu sync.Mutex
		report = func(p Progress) {
			p.Ref = ref
			pmu.Lock()
			defer pmu.Unlock()
			progress(p)
		}
	}

	start := time.Now()
	m, digest, srcs, err := s.fetchManifest(ctx, r, srcs)
	if err != nil {
		return nil, err
	}
	id := digest + "/" + strconv.FormatUint(uint64(shift), 10)
	if img := s.acquireCached(id, ref); img != nil {
		for i, l := range m.Layers {
			report(Progress{Layer: i + 1, Layers: len(m.Layers), Digest: l.Digest.String(), Done: l.Size, Total: l.Size, Cached: true})
		}
		s.log.Debug("image already cached", "ref", ref, "digest", digest)
		return img, nil
	}

	cf, err := s.config(ctx, srcs, m.Config)
	if err != nil {
		return nil, err
	}
	if cf.OS != "" && cf.OS != s.platform.OS {
		return nil, fmt.Errorf("image %s: %w: it is built for %s, this cell runs %s", imageRef, ErrInvalidImage, cf.OS, s.platform.OS)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image %s: %w: the manifest has %d layers but the config %d diff ids", imageRef, ErrInvalidImage, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for _, l := range m.Layers {
		if !l.MediaType.IsLayer() || !l.MediaType.IsDistributable() {
			return nil, fmt.Errorf("image %s: layer %s: %w: media type %q is not a distributable layer", imageRef, l.Digest, ErrInvalidImage, l.MediaType)
		}
	}

	keys := make([]string, len(m.Layers))
	errs := make([]error, len(m.Layers))
	var wg sync.WaitGroup
	sem := make(chan struct{}, layerConcurrency)
	for i, l := range m.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			lp := func(p Progress) {
				p.Layer, p.Layers, p.Digest, p.Total = i+1, len(m.Layers), l.Digest.String(), l.Size
				report(p)
			}
			keys[i], errs[i] = s.acquireLayer(ctx, srcs, l, cf.RootFS.DiffIDs[i], shift, lp)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		var held []string
		for i, k := range keys {
			if errs[i] == nil {
				held = append(held, k)
			}
		}
		s.release(held)
		// Report the first failure; the others are usually the same cause.
		for _, e := range errs {
			if e != nil {
				if errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
					return nil, fmt.Errorf("pulling image %s: %w", imageRef, e)
				}
				return nil, e
			}
		}
	}

	rec := &imageRec{Ref: ref, Digest: digest, Layers: keys, Config: imageConfig(cf)}
	s.mu.Lock()
	s.idx.Images[id] = rec
	s.saveLocked()
	s.mu.Unlock()
	img := s.newImage(id, rec)
	s.log.Info("pulled image", "ref", ref, "digest", digest, "layers", len(keys), "duration", time.Since(start).Round(time.Millisecond))
	s.collect()
	return img, nil
}

// Acquire holds the layers of an image pulled before (by Image.ID) again, without asking a
// registry: the agent calls it for each container it re-attaches to after a restart.
// Errors: ErrNotFound when the store no longer has the image, ErrClosed.
func (s *Store) Acquire(id string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	rec := s.idx.Images[id]
	if rec == nil {
		return nil, fmt.Errorf("image %s: %w in the store %s", id, ErrNotFound, s.cfg.Dir)
	}
	s.holdLocked(rec.Layers)
	return s.newImage(id, rec), nil
}

// Usage reports what the store holds.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := Usage{Layers: len(s.idx.Layers), Referenced: len(s.refs), Images: len(s.idx.Images)}
	for _, l := range s.idx.Layers {
		u.Bytes += l.Size
	}
	return u
}

// GC removes unreferenced layers, least recently used first, until the store is no larger
// than Config.MaxBytes (or nothing unreferenced is left). It also runs by itself after
// each pull and release. Errors: ErrClosed, or the context's error.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	if err := ctx.Err(); err != nil {
		return GCStats{}, err
	}
	if err := s.checkOpen(); err != nil {
		return GCStats{}, err
	}
	return s.collect(), nil
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

func (s *Store) layerDir(key string) string { return filepath.Join(s.cfg.Dir, layersDir, key) }

func (s *Store) newImage(id string, rec *imageRec) *Image {
	img := &Image{ID: id, Ref: rec.Ref, Digest: rec.Digest, Config: rec.Config}
	for _, k := range rec.Layers {
		img.Layers = append(img.Layers, s.layerDir(k))
	}
	keys := slices.Clone(rec.Layers)
	img.release = func() { s.release(keys) }
	return img
}

// acquireCached holds the image id if all its layers are cached, and returns it.
func (s *Store) acquireCached(id, ref string) *Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.idx.Images[id]
	if rec == nil {
		return nil
	}
	for _, k := range rec.Layers {
		if s.idx.Layers[k] == nil {
			return nil
		}
	}
	rec.Ref = ref
	s.holdLocked(rec.Layers)
	return s.newImage(id, rec)
}

func (s *Store) holdLocked(keys []string) {
	now := time.Now()
	for _, k := range keys {
		s.refs[k]++
		if l := s.idx.Layers[k]; l != nil {
			l.LastUsed = now
		}
	}
}

func (s *Store) release(keys []string) {
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	now := time.Now()
	for _, k := range keys {
		if s.refs[k]--; s.refs[k] <= 0 {
			delete(s.refs, k)
		}
		if l := s.idx.Layers[k]; l != nil {
			l.LastUsed = now
		}
	}
	s.saveLocked()
	s.mu.Unlock()
	s.collect()
}

// saveLocked persists the index; a failure is logged, since the next save or a restart's
// reconciliation repairs it.
func (s *Store) saveLocked() {
	if err := s.idx.save(filepath.Join(s.cfg.Dir, indexFile)); err != nil {
		s.log.Error("saving the image index", "error", err)
	}
}

// collect removes unreferenced layers, least recently used first, while the store is
// larger than MaxBytes. Directories are renamed away under the lock and deleted after it.
func (s *Store) collect() GCStats {
	var stats GCStats
	var trash []string
	s.mu.Lock()
	var total int64
	for _, l := range s.idx.Layers {
		total += l.Size
	}
	if total > s.cfg.MaxBytes {
		var idle []string
		for k := range s.idx.Layers {
			if s.refs[k] == 0 && s.flights[k] == nil {
				idle = append(idle, k)
			}
		}
		slices.SortFunc(idle, func(a, b string) int {
			return cmp.Or(s.idx.Layers[a].LastUsed.Compare(s.idx.Layers[b].LastUsed), strings.Compare(a, b))
		})
		for _, k := range idle {
			if total <= s.cfg.MaxBytes {
				break
			}
			dst, err := os.MkdirTemp(filepath.Join(s.cfg.Dir, tmpDir), "gc-")
			if err == nil {
				err = os.Rename(s.layerDir(k), filepath.Join(dst, "layer"))
			}
			if err != nil {
				s.log.Error("removing a cached layer", "layer", k, "error", err)
				continue
			}
			trash = append(trash, dst)
			size := s.idx.Layers[k].Size
			total -= size
			stats.Layers++
			stats.Bytes += size
			delete(s.idx.Layers, k)
			for id, img := range s.idx.Images {
				if slices.Contains(img.Layers, k) {
					delete(s.idx.Images, id)
				}
			}
		}
		if stats.Layers > 0 {
			s.saveLocked()
		}
	}
	s.mu.Unlock()
	for _, d := range trash {
		if err := os.RemoveAll(d); err != nil {
			s.log.Error("deleting a removed layer", "dir", d, "error", err)
		}
	}
	if stats.Layers > 0 {
		s.log.Info("collected image layers", "layers", stats.Layers, "bytes", stats.Bytes, "remaining_bytes", total)
	}
	return stats
}

// fetchManifest gets the platform manifest of r from the first source that has it. It
// returns the manifest, its digest, and the sources to fetch blobs from: the one that
// served the manifest and those after it.
func (s *Store) fetchManifest(ctx context.Context, r name.Reference, srcs []*source) (*v1.Manifest, string, []*source, error) {
	var tried attempts
	for i, src := range srcs {
		m, digest, err := s.manifestFrom(ctx, src, r)
		if err == nil {
			return m, digest, srcs[i:], nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrInvalidImage) {
			return nil, "", nil, err
		}
		s.log.Debug("manifest not fetched", "source", src.label, "error", err)
		tried.errs = append(tried.errs, err)
	}
	return nil, "", nil, tried.err()
}

func (s *Store) manifestFrom(ctx context.Context, src *source, r name.Reference) (*v1.Manifest, string, error) {
	var rr name.Reference = src.repo.Tag(r.Identifier())
	if d, ok := r.(name.Digest); ok {
		rr = src.repo.Digest(d.DigestStr())
	}
	what := fmt.Sprintf("manifest of %s from %s", r, src.label)
	desc, err := src.puller.Get(ctx, rr)
	if err != nil {
		return nil, "", remoteError(what, err, src.creds)
	}
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w: %v", what, ErrInvalidImage, err)
		}
		child, ok := s.pickPlatform(idx)
		if !ok {
			return nil, "", fmt.Errorf("%s: %w: no manifest for platform %s", what, ErrInvalidImage, s.platform.String())
		}
		desc, err = src.puller.Get(ctx, src.repo.Digest(child.Digest.String()))
		if err != nil {
			return nil, "", remoteError(what, err, src.creds)
		}
	}
	switch desc.MediaType {
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return nil, "", fmt.Errorf("%s: %w: Docker schema 1 manifests are not supported; push the image again with a current tool", what, ErrInvalidImage)
	}
	if !desc.MediaType.IsImage() {
		return nil, "", fmt.Errorf("%s: %w: media type %q is not an image manifest", what, ErrInvalidImage, desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w: %v", what, ErrInvalidImage, err)
	}
	return m, desc.Digest.String(), nil
}

// pickPlatform chooses the manifest for this cell's platform from an index.
func (s *Store) pickPlatform(idx *v1.IndexManifest) (v1.Descriptor, bool) {
	for _, m := range idx.Manifests {
		p := m.Platform
		if p == nil || !m.MediaType.IsImage() {
			continue
		}
		if p.OS == s.platform.OS && p.Architecture == s.platform.Architecture &&
			(s.platform.Variant == "" || p.Variant == s.platform.Variant) {
			return m, true
		}
	}
	return v1.Descriptor{}, false
}

// config returns the image config desc, fetching it once however many pulls ask.
func (s *Store) config(ctx context.Context, srcs []*source, desc v1.Descriptor) (*v1.ConfigFile, error) {
	key := desc.Digest.String()
	fkey := "config " + key
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if cf := s.configs[key]; cf != nil {
			s.mu.Unlock()
			return cf, nil
		}
		f := s.flights[fkey]
		if f == nil {
			var cf *v1.ConfigFile
			f = s.startFlight(fkey, func(ctx context.Context, _ func(int64)) error {
				sink := &memSink{limit: maxConfigBytes}
				if err := fetchBlob(ctx, "config", srcs, desc, sink, nil); err != nil {
					return err
				}
				var err error
				if cf, err = v1.ParseConfigFile(bytes.NewReader(sink.buf)); err != nil {
					return fmt.Errorf("config %s: %w: %v", desc.Digest, ErrInvalidImage, err)
				}
				return nil
			}, func(f *flight) {
				if f.err == nil {
					s.configs[key] = cf
				}
			})
		}
		f.waiters++
		s.mu.Unlock()
		if err := s.wait(ctx, f, nil, nil); err != nil {
			return nil, err
		}
	}
}

// acquireLayer holds the layer desc (unpacked with shift), downloading and unpacking it
// unless it is cached or another pull is already doing so. It returns the layer's key.
func (s *Store) acquireLayer(ctx context.Context, srcs []*source, desc v1.Descriptor, diffID v1.Hash, shift uint32, progress func(Progress)) (string, error) {
	key := layerKey(diffID, shift)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", ErrClosed
	}
	if l := s.idx.Layers[key]; l != nil {
		s.holdLocked([]string{key})
		s.mu.Unlock()
		progress(Progress{Done: desc.Size, Cached: true})
		return key, nil
	}
	f := s.flights[key]
	if f == nil {
		f = s.startLayerFlight(key, srcs, desc, diffID, shift)
	}
	f.waiters++
	s.mu.Unlock()
	// On success the flight's completion gave each waiter a reference (so that a
	// collection between completion and our return cannot take the layer away); a waiter
	// that gives up at that very moment hands its reference back.
	err := s.wait(ctx, f, func(n int64) { progress(Progress{Done: n}) }, func() { s.releaseLocked(key) })
	if err != nil {
		return "", err
	}
	return key, nil
}

func (s *Store) releaseLocked(key string) {
	if s.refs[key]--; s.refs[key] <= 0 {
		delete(s.refs, key)
	}
}

// layerKey names a layer's directory: its diff id (shortened; 96 bits keep collisions
// out of reach while the overlay option string stays short) and the uid shift.
func layerKey(diffID v1.Hash, shift uint32) string {
	h := diffID.Hex
	if len(h) > 24 {
		h = h[:24]
	}
	return h + "-" + strconv.FormatUint(uint64(shift), 10)
}

func (s *Store) startLayerFlight(key string, srcs []*source, desc v1.Descriptor, diffID v1.Hash, shift uint32) *flight {
	var unpacked string // work/rootfs, on success
	var size int64
	return s.startFlight(key, func(ctx context.Context, report func(int64)) error {
		var err error
		start := time.Now()
		unpacked, size, err = s.fetchLayer(ctx, srcs, desc, diffID, shift, report)
		if err == nil {
			s.log.Debug("layer unpacked", "digest", desc.Digest.String(), "diff_id", diffID.String(),
				"bytes", desc.Size, "disk_bytes", size, "duration", time.Since(start).Round(time.Millisecond))
		}
		return err
	}, func(f *flight) {
		if f.err != nil {
			return
		}
		// Publish under the lock: a removal or a second download of this key cannot
		// interleave with the rename.
		work := filepath.Dir(unpacked)
		defer os.RemoveAll(work)
		if s.idx.Layers[key] != nil {
			// A download this one replaced after its pullers gave up finished after all.
			s.refs[key] += f.waiters
			return
		}
		final := s.layerDir(key)
		err := os.RemoveAll(final) // a leftover the index does not know; normally absent
		if err == nil {
			err = os.Rename(unpacked, final)
		}
		if err != nil {
			f.err = fmt.Errorf("layer %s: publishing %s: %w", desc.Digest, final, err)
			return
		}
		s.idx.Layers[key] = &layerRec{DiffID: diffID.String(), Digest: desc.Digest.String(), Shift: shift, Size: size, LastUsed: time.Now()}
		s.saveLocked()
		s.refs[key] += f.waiters
	})
}

// fetchLayer downloads desc into a private work directory, verifies it, and unpacks it
// into work/rootfs, returning that directory and its disk usage. On error nothing is left.
func (s *Store) fetchLayer(ctx context.Context, srcs []*source, desc v1.Descriptor, diffID v1.Hash, shift uint32, report func(int64)) (dir string, size int64, err error) {
	work, err := os.MkdirTemp(filepath.Join(s.cfg.Dir, tmpDir), "layer-")
	if err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	blob, err := os.OpenFile(filepath.Join(work, "blob"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	defer blob.Close()
	if err := fetchBlob(ctx, "layer", srcs, desc, &fileSink{blob}, report); err != nil {
		return "", 0, err
	}
	if _, err := blob.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	dir = filepath.Join(work, "rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	uids := UIDMap{}
	if shift != 0 {
		uids = UIDMap{Start: shift, Size: s.cfg.UIDMap.Size}
	}
	got, err := unpackLayer(ctx, blob, dir, uids)
	if err != nil {
		return "", 0, fmt.Errorf("layer %s: unpacking: %w", desc.Digest, err)
	}
	if got != diffID.String() {
		return "", 0, fmt.Errorf("layer %s: %w: its uncompressed content is %s, the image config says %s", desc.Digest, ErrDigestMismatch, got, diffID)
	}
	blob.Close()
	os.Remove(blob.Name())
	if size, err = diskUsage(dir); err != nil {
		return "", 0, fmt.Errorf("layer %s: measuring: %w", desc.Digest, err)
	}
	if err := syncFS(dir); err != nil {
		return "", 0, fmt.Errorf("layer %s: syncing: %w", desc.Digest, err)
	}
	return dir, size, nil
}

// fileSink is a download written to a file.
type fileSink struct{ f *os.File }

func (w *fileSink) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		return n, &sinkError{err}
	}
	return n, nil
}

func (w *fileSink) reset() error {
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	_, err := w.f.Seek(0, io.SeekStart)
	return err
}

// imageConfig extracts what running the image needs from its config.
func imageConfig(cf *v1.ConfigFile) ImageConfig {
	c := cf.Config
	ic := ImageConfig{
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir,
		User: c.User, Labels: c.Labels, StopSignal: c.StopSignal,
	}
	for spec := range c.ExposedPorts {
		port, proto, _ := strings.Cut(spec, "/")
		if proto == "" {
			proto = "tcp"
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			continue // a port range or garbage: nothing the agent could map
		}
		ic.ExposedPorts = append(ic.ExposedPorts, Port{Port: uint16(n), Protocol: strings.ToLower(proto)})
	}
	slices.SortFunc(ic.ExposedPorts, func(a, b Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Protocol, b.Protocol))
	})
	return ic
}
