package containerinit

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Streams of files between the backend and the init. The backend reads and writes tar; the
// init creates and reads the files, inside the container, one Entry at a time. The init's
// binary thus links no archive/tar, whose dependencies (path/filepath, os/user) sort late
// enough that, imported here, the whole program's package initialisation would run ahead of
// the init's (init_linux.go).
//
// On the wire, an entry is a frame: its JSON encoding prefixed by its length (4 bytes, big
// endian), followed, for a regular file whose content travels in the stream, by exactly
// Size bytes of content. A frame of length 0 ends the stream; a stream that ends without it
// was cut short.

// Entry is one file of a stream.
type Entry struct {
	// Name is the path: for OpStreamIn, below the destination (cleaned, so "../x" is x); for
	// OpStreamOut, relative to the parent of the streamed path, with a trailing "/" for a
	// directory.
	Name string `json:"name"`
	// Type is a tar type flag (EntryRegular, EntryDir, ...).
	Type byte `json:"type"`
	// Mode holds the permission, set-id and sticky bits; for OpStreamOut also the file type
	// bits (S_IFMT), as stat(2) reports them.
	Mode     uint32 `json:"mode"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	Size     int64  `json:"size,omitempty"`
	Linkname string `json:"linkname,omitempty"`
	// Times in nanoseconds since the epoch; access and change times only for OpStreamOut.
	ModTime    int64 `json:"mtime"`
	AccessTime int64 `json:"atime,omitempty"`
	ChangeTime int64 `json:"ctime,omitempty"`
	// Rdev is a device's number (OpStreamOut).
	Rdev uint64 `json:"rdev,omitempty"`
	// Offset, for OpStreamIn with the archive's file attached, is where a regular file's
	// content starts in that file, which the init then copies from there; -1 (or without the
	// file) when the content follows the frame.
	Offset int64 `json:"offset"`
}

// Tar type flags of the entries the init creates or reports.
const (
	EntryRegular = '0'
	EntryLink    = '1' // a hard link to Linkname, an earlier entry of the same stream
	EntrySymlink = '2'
	EntryChar    = '3'
	EntryBlock   = '4'
	EntryDir     = '5'
	EntryFifo    = '6'
)

// maxEntryFrame bounds an entry's encoding (names and link targets are at most PATH_MAX).
const maxEntryFrame = 64 << 10

// WriteEntry writes e's frame (not its content) to w.
func WriteEntry(w io.Writer, e *Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if len(b) > maxEntryFrame {
		return fmt.Errorf("entry %q: %d bytes encoded, more than %d", e.Name, len(b), maxEntryFrame)
	}
	frame := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	_, err = w.Write(append(frame, b...))
	return err
}

// EndEntries writes the frame that ends a stream.
func EndEntries(w io.Writer) error {
	_, err := w.Write([]byte{0, 0, 0, 0})
	return err
}

// ErrEntriesCut is ReadEntry's error for a stream that ended without its end frame.
var ErrEntriesCut = errors.New("the stream of entries ended early")

// ReadEntry reads the next frame from r; io.EOF at the end frame.
func ReadEntry(r io.Reader) (*Entry, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, ErrEntriesCut
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 {
		return nil, io.EOF
	}
	if size > maxEntryFrame {
		return nil, fmt.Errorf("entry frame of %d bytes, more than %d", size, maxEntryFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, ErrEntriesCut
	}
	e := &Entry{Offset: -1}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("decoding an entry: %w", err)
	}
	return e, nil
}
