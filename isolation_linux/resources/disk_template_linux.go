package resources

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Formatted templates. Formatting an image is an exec of mkfs.ext4 (about 2 ms of CPU each on
// a cell's small cores, most of it starting the program); every image of one size formats to
// the same blocks but for its UUID and directory hash seed. So each size is formatted once, into
// baseDir/templates/ext4-<size>-<key>.img (key: a digest of the mkfs version, its arguments and
// its configuration file), and each volume's image is a copy of it: a reflink (FICLONE) where
// the host filesystem shares blocks, else a copy of its few data extents (about 100 KiB of a
// 70 MiB image) that keeps the rest a hole. The copy then gets a fresh UUID and hash seed
// written into every superblock. The template is formatted with metadata_csum_seed, so the
// metadata checksums do not derive from the UUID and the superblocks are all that change; no
// tune2fs exec is needed. A fresh UUID keeps what the kernel derives from it apart per volume:
// statfs's f_fsid (which fanotify and some tools key filesystems on) and the superblock UUID
// overlayfs and blkid/udev see.

const (
	templatesDir   = "templates"
	templatePrefix = "ext4-"
	templateSuffix = ".img"
	templateTemp   = ".tmp-" // a template being formatted; published by link(2) when whole
	// maxTemplates bounds the formatted sizes kept; the least recently used go first.
	maxTemplates = 16
	// staleTemplateTemp: a temporary template older than this was left by a crashed creator.
	staleTemplateTemp = 2 * mkfsTimeout
)

// mkfsArgs format a volume. No journal: the volume is scratch space that does not outlive the
// host's uptime in use. No resize inode: volumes never grow. -m 0: nothing reserved for root.
// metadata_csum_seed: checksums use a seed stored in the superblock, so a copy can take a new
// UUID by rewriting its superblocks only.
var mkfsArgs = []string{"-q", "-F", "-T", "default", "-b", "4096", "-m", "0",
	"-O", "^has_journal,^resize_inode,metadata_csum,metadata_csum_seed", "-E", "nodiscard", "-L", "trellis"}

// ext4 on-disk superblock (1024 bytes at byte 1024 of the filesystem, and at the start of the
// first block of each group that keeps a backup). Offsets from the kernel's struct
// ext4_super_block.
const (
	sbOffset          = 1024
	sbSize            = 1024
	sbBlocksCountLo   = 0x04
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbBlocksPerGroup  = 0x20
	sbMagic           = 0x38
	sbBlockGroupNr    = 0x5A
	sbFeatureCompat   = 0x5C
	sbFeatureIncompat = 0x60
	sbFeatureROCompat = 0x64
	sbUUID            = 0x68
	sbHashSeed        = 0xEC
	sbBlocksCountHi   = 0x150
	sbChecksumType    = 0x175
	sbBackupBGs       = 0x24C
	sbChecksum        = 0x3FC

	ext4Magic           = 0xEF53
	compatSparseSuper2  = 0x0200
	incompat64Bit       = 0x0080
	incompatCsumSeed    = 0x2000
	roCompatSparseSuper = 0x0001
	roCompatGdtCsum     = 0x0010
	roCompatMetadataCsm = 0x0400
	checksumCRC32C      = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// superblockChecksum is ext4's s_checksum: crc32c seeded with ~0 over the bytes before it, with
// no final inversion (Go's crc32 inverts on the way in and out, hence the ^).
func superblockChecksum(sb []byte) uint32 {
	return ^crc32.Checksum(sb[:sbChecksum], castagnoli)
}

// diskTemplate is a published template file as loaded and checked once.
type diskTemplate struct {
	path    string
	dev     uint64 // identity of the file the rest describes
	ino     uint64
	size    int64
	extents []extent // its data; the rest is holes
	supers  []sbCopy // every superblock copy, to stamp a new identity into
}

type extent struct{ off, len int64 }

type sbCopy struct {
	off int64
	b   [sbSize]byte
}

// templateSlot holds one size's template for this process; mu is held while it is loaded or
// formatted, so concurrent first users of a size wait for one mkfs instead of each running one.
type templateSlot struct {
	mu      sync.Mutex
	t       *diskTemplate
	lastUse time.Time // guarded by DiskQuota.tmu
}

// templateFor returns the template for images of size bytes, formatting it on first use.
func (q *DiskQuota) templateFor(size int64) (*diskTemplate, error) {
	q.tmu.Lock()
	s := q.templates[size]
	if s == nil {
		s = &templateSlot{}
		q.templates[size] = s
	}
	s.lastUse = time.Now()
	q.tmu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		return s.t, nil
	}
	key, err := q.mkfsKey()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(q.base, templatesDir, templatePrefix+strconv.FormatInt(size, 10)+"-"+key+templateSuffix)
	t, err := loadTemplate(path, size)
	switch {
	case err == nil:
		s.t = t
		return t, nil
	case !errors.Is(err, os.ErrNotExist):
		slog.Warn("discard an unusable disk template and format it again", "template", path, "error", err)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove unusable disk template: %w", err)
		}
	}
	if t, err = q.formatTemplate(path, size); err != nil {
		return nil, err
	}
	s.t = t
	q.pruneTemplates(key, path)
	return t, nil
}

// forgetTemplate drops t from this process's cache, and its file too if discard is set (a
// volume copied from it failed to mount), so that the next use loads or formats it again.
func (q *DiskQuota) forgetTemplate(t *diskTemplate, discard bool) {
	q.tmu.Lock()
	s := q.templates[t.size]
	q.tmu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != t {
		return
	}
	s.t = nil
	if discard {
		if err := removeIfSame(t); err != nil {
			slog.Warn("remove a disk template", "template", t.path, "error", err)
		}
	}
}

// removeIfSame removes t's file unless another creator has replaced it meanwhile.
func removeIfSame(t *diskTemplate) error {
	var st unix.Stat_t
	if err := unix.Stat(t.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Dev != t.dev || st.Ino != t.ino {
		return nil
	}
	return os.Remove(t.path)
}

// mkfsKey identifies what mkfs.ext4 would make: its version, the arguments trellis passes and
// the defaults file it reads. It runs mkfs.ext4 -V once per DiskQuota.
func (q *DiskQuota) mkfsKey() (string, error) {
	q.keyMu.Lock()
	defer q.keyMu.Unlock()
	if q.key != "" {
		return q.key, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), mkfsTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, q.mkfs, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mkfs.ext4 -V: %w: %s", err, strings.TrimSpace(string(out)))
	}
	conf := os.Getenv("MKE2FS_CONFIG")
	if conf == "" {
		conf = "/etc/mke2fs.conf"
	}
	confText, err := os.ReadFile(conf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read mkfs.ext4 defaults: %w", err)
	}
	h := sha256.New()
	for _, part := range [][]byte{out, []byte(strings.Join(mkfsArgs, " ")), confText} {
		h.Write(part)
		h.Write([]byte{0})
	}
	q.key = hex.EncodeToString(h.Sum(nil)[:6])
	return q.key, nil
}

// formatTemplate formats a template of size bytes in a temporary file and publishes it at path
// with link(2), which never replaces: a creator in another process that published first wins
// and its template is used. A crash leaves at most a temporary file, removed later by
// pruneTemplates.
func (q *DiskQuota) formatTemplate(path string, size int64) (*diskTemplate, error) {
	start := time.Now()
	f, err := os.CreateTemp(filepath.Dir(path), templateTemp+filepath.Base(path)+"-*")
	if err != nil {
		return nil, fmt.Errorf("disk template: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("size disk template: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mkfsTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, q.mkfs, append(mkfsArgs[:len(mkfsArgs):len(mkfsArgs)], tmp)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// Durable before it is visible: a crash must not publish a template whose blocks never
	// reached the disk.
	if err := syncPath(tmp); err != nil {
		return nil, fmt.Errorf("sync disk template: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("publish disk template: %w", err)
	}
	if err := syncPath(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("sync disk template directory: %w", err)
	}
	t, err := loadTemplate(path, size)
	if err != nil {
		return nil, fmt.Errorf("disk template just formatted: %w", err)
	}
	slog.Debug("formatted disk template", "template", path, "bytes", size, "took", time.Since(start))
	return t, nil
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadTemplate reads and checks a published template: an ext4 filesystem of exactly size bytes
// in 4 KiB blocks whose superblocks are intact and whose checksums do not depend on its UUID.
// Errors wrap os.ErrNotExist when there is no template at path.
func loadTemplate(path string, size int64) (*diskTemplate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Size != size {
		return nil, fmt.Errorf("template %s is %d bytes, want %d", path, st.Size, size)
	}
	t := &diskTemplate{path: path, dev: st.Dev, ino: st.Ino, size: size}
	primary, err := readSuper(f, sbOffset)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	le := binary.LittleEndian
	blocks := uint64(le.Uint32(primary.b[sbBlocksCountLo:]))
	if le.Uint32(primary.b[sbFeatureIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(primary.b[sbBlocksCountHi:])) << 32
	}
	perGroup := uint64(le.Uint32(primary.b[sbBlocksPerGroup:]))
	switch {
	case le.Uint32(primary.b[sbLogBlockSize:]) != 2 || le.Uint32(primary.b[sbFirstDataBlock:]) != 0:
		return nil, fmt.Errorf("template %s does not have 4 KiB blocks", path)
	case blocks*blockSize != uint64(size) || perGroup == 0:
		return nil, fmt.Errorf("template %s holds %d blocks of %d per group, want %d bytes", path, blocks, perGroup, size)
	case le.Uint32(primary.b[sbFeatureROCompat:])&roCompatMetadataCsm == 0,
		le.Uint32(primary.b[sbFeatureIncompat:])&incompatCsumSeed == 0,
		le.Uint32(primary.b[sbFeatureROCompat:])&roCompatGdtCsum != 0:
		return nil, fmt.Errorf("template %s lacks metadata_csum_seed: its UUID cannot be changed in place", path)
	}
	t.supers = append(t.supers, primary)
	groups := (blocks + perGroup - 1) / perGroup
	for _, g := range backupGroups(&primary.b, groups) {
		c, err := readSuper(f, int64(g*perGroup*blockSize))
		if err != nil {
			return nil, fmt.Errorf("template %s, backup superblock of group %d: %w", path, g, err)
		}
		if nr := uint64(le.Uint16(c.b[sbBlockGroupNr:])); nr != g {
			return nil, fmt.Errorf("template %s: backup superblock of group %d says group %d", path, g, nr)
		}
		t.supers = append(t.supers, c)
	}
	if t.extents, err = dataExtents(f, size); err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	return t, nil
}

// readSuper reads and checks the superblock copy at off.
func readSuper(f *os.File, off int64) (sbCopy, error) {
	c := sbCopy{off: off}
	if _, err := f.ReadAt(c.b[:], off); err != nil {
		return c, fmt.Errorf("read superblock at %d: %w", off, err)
	}
	le := binary.LittleEndian
	if le.Uint16(c.b[sbMagic:]) != ext4Magic {
		return c, fmt.Errorf("no ext4 superblock at %d", off)
	}
	if c.b[sbChecksumType] != checksumCRC32C || le.Uint32(c.b[sbChecksum:]) != superblockChecksum(c.b[:]) {
		return c, fmt.Errorf("superblock at %d fails its checksum", off)
	}
	return c, nil
}

// backupGroups lists the groups (besides 0) that keep a copy of the superblock: with
// sparse_super2 the one or two named in the superblock, with sparse_super 1 and the powers of
// 3, 5 and 7, else all.
func backupGroups(sb *[sbSize]byte, groups uint64) []uint64 {
	le := binary.LittleEndian
	var out []uint64
	switch {
	case le.Uint32(sb[sbFeatureCompat:])&compatSparseSuper2 != 0:
		for i := range 2 {
			if g := uint64(le.Uint32(sb[sbBackupBGs+4*i:])); g != 0 && g < groups {
				out = append(out, g)
			}
		}
	case le.Uint32(sb[sbFeatureROCompat:])&roCompatSparseSuper != 0:
		seen := map[uint64]bool{}
		if groups > 1 {
			out = append(out, 1)
			seen[1] = true
		}
		for _, base := range []uint64{3, 5, 7} {
			for g := base; g < groups; g *= base {
				if !seen[g] {
					seen[g] = true
					out = append(out, g)
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	default:
		for g := uint64(1); g < groups; g++ {
			out = append(out, g)
		}
	}
	return out
}

// dataExtents lists the parts of f that hold data (SEEK_DATA/SEEK_HOLE).
func dataExtents(f *os.File, size int64) ([]extent, error) {
	var out []extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return nil, fmt.Errorf("find data: %w", err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find hole: %w", err)
		}
		out = append(out, extent{start, end - start})
		off = end
	}
	return out, nil
}

// copyTemplate makes image, a new file, as a copy of t with a fresh UUID and hash seed.
// Errors wrap os.ErrNotExist when t's file is gone or was replaced since it was loaded.
func (q *DiskQuota) copyTemplate(t *diskTemplate, image string) error {
	src, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("open disk template: %w", err)
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	if st.Dev != t.dev || st.Ino != t.ino {
		return fmt.Errorf("disk template %s was replaced: %w", t.path, os.ErrNotExist)
	}
	dst, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = q.cloneOrCopy(dst, src, t)
	if err == nil {
		err = stampIdentity(dst, t)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// cloneOrCopy fills dst with src's contents: a reflink where the filesystem supports it (tried
// once per DiskQuota), else a copy of the data extents into a file of the same size.
func (q *DiskQuota) cloneOrCopy(dst, src *os.File, t *diskTemplate) error {
	if !q.noReflink.Load() {
		err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) &&
			!errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("reflink disk template: %w", err)
		}
		q.noReflink.Store(true)
	}
	if err := dst.Truncate(t.size); err != nil {
		return fmt.Errorf("size image: %w", err)
	}
	for _, e := range t.extents {
		if err := copyRange(dst, src, e.off, e.len); err != nil {
			return fmt.Errorf("copy disk template: %w", err)
		}
	}
	return nil
}

// copyRange copies n bytes at off from src to the same offset in dst, in the kernel
// (copy_file_range) when it can.
func copyRange(dst, src *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				_, err = io.Copy(io.NewOffsetWriter(dst, woff), io.NewSectionReader(src, roff, n))
			}
			return err
		}
		if c == 0 {
			return fmt.Errorf("copy at %d: %w", roff, io.ErrUnexpectedEOF)
		}
		n -= int64(c)
	}
	return nil
}

// stampIdentity writes every superblock copy of t into f with a new random UUID and directory
// hash seed and the checksum that goes with them. The template's directories are too small to
// be hash-indexed, so no directory depends on the old seed.
func stampIdentity(f *os.File, t *diskTemplate) error {
	var id, seed [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	if _, err := rand.Read(seed[:]); err != nil {
		return err
	}
	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	for _, c := range t.supers {
		b := c.b
		copy(b[sbUUID:sbUUID+16], id[:])
		copy(b[sbHashSeed:sbHashSeed+16], seed[:])
		binary.LittleEndian.PutUint32(b[sbChecksum:], superblockChecksum(b[:]))
		if _, err := f.WriteAt(b[:], c.off); err != nil {
			return fmt.Errorf("write superblock at %d: %w", c.off, err)
		}
	}
	return nil
}

// pruneTemplates removes what is left of crashed formats, templates another mkfs version or
// configuration made, and the least recently used templates beyond maxTemplates; keep is the
// template just made.
func (q *DiskQuota) pruneTemplates(key, keep string) {
	dir := filepath.Join(q.base, templatesDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		slog.Warn("list disk templates", "error", err)
		return
	}
	type candidate struct {
		path string
		size int64
		used time.Time
	}
	var current []candidate
	remove := func(path string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			slog.Warn("remove a disk template", "template", path, "error", err)
		}
	}
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(dir, e.Name())
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		switch {
		case strings.HasPrefix(name, templateTemp):
			if time.Since(info.ModTime()) > staleTemplateTemp {
				remove(path)
			}
		case !strings.HasPrefix(name, templatePrefix) || !strings.HasSuffix(name, templateSuffix) || path == keep:
		case !strings.HasSuffix(name, "-"+key+templateSuffix):
			remove(path)
		default:
			size, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(name, templatePrefix), "-"+key+templateSuffix), 10, 64)
			if err != nil {
				remove(path)
				continue
			}
			current = append(current, candidate{path, size, info.ModTime()})
		}
	}
	if len(current) < maxTemplates {
		return
	}
	q.tmu.Lock()
	defer q.tmu.Unlock()
	for i, c := range current {
		if s := q.templates[c.size]; s != nil && s.lastUse.After(c.used) {
			current[i].used = s.lastUse
		}
	}
	sort.Slice(current, func(i, j int) bool { return current[i].used.Before(current[j].used) })
	for _, c := range current[:len(current)-(maxTemplates-1)] {
		remove(c.path)
		// Users holding the slot's template find its file gone and load the size again.
		delete(q.templates, c.size)
	}
}
