package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const indexVersion = 1

// index is what the store knows, persisted as Dir/index.json. A layer is in it only once
// its directory is complete; reference counts are not in it (they belong to the running
// process, and are taken again with Store.Acquire after a restart).
type index struct {
	Version int                  `json:"version"`
	Layers  map[string]*layerRec `json:"layers"`
	Images  map[string]*imageRec `json:"images"`
}

// layerRec is one unpacked layer: Dir/layers/<key>.
type layerRec struct {
	DiffID   string    `json:"diff_id"`   // digest of the uncompressed tar
	Digest   string    `json:"digest"`    // digest of the blob it was unpacked from
	Shift    uint32    `json:"shift"`     // uid shift applied (0: none)
	Size     int64     `json:"size"`      // disk usage of the directory
	LastUsed time.Time `json:"last_used"` // last acquire or release
}

// imageRec is one pulled image: its layers (keys, bottom first) and run configuration.
type imageRec struct {
	Ref    string      `json:"ref"`
	Digest string      `json:"digest"`
	Layers []string    `json:"layers"`
	Config ImageConfig `json:"config"`
}

func newIndex() *index {
	return &index{Version: indexVersion, Layers: map[string]*layerRec{}, Images: map[string]*imageRec{}}
}

// loadIndex reads path; a missing file is an empty index.
func loadIndex(path string) (*index, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newIndex(), nil
	}
	if err != nil {
		return nil, err
	}
	idx := newIndex()
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("%s has version %d, want %d", path, idx.Version, indexVersion)
	}
	if idx.Layers == nil {
		idx.Layers = map[string]*layerRec{}
	}
	if idx.Images == nil {
		idx.Images = map[string]*imageRec{}
	}
	return idx, nil
}

// save writes the index atomically and durably: a crash leaves the old or the new one.
func (idx *index) save(path string) error {
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
