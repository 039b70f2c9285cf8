package resources

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestQuotaABISizes(t *testing.T) {
	if got := unsafe.Sizeof(fsxattr{}); got != 28 {
		t.Errorf("sizeof(struct fsxattr) = %d, want 28", got)
	}
	if got := unsafe.Sizeof(fsDiskQuota{}); got != 112 {
		t.Errorf("sizeof(struct fs_disk_quota) = %d, want 112", got)
	}
}

// mountXFS loop-mounts a fresh sparse XFS filesystem (without quotas: this host's kernel has no
// XFS quota support) and unmounts it when the test ends.
func mountXFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mkfs, err := findTool("mkfs.xfs")
	if err != nil {
		t.Skip("no mkfs.xfs (xfsprogs)")
	}
	dir := t.TempDir()
	image, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(300 << 20) // XFS's minimum size
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	dev, err := attachLoop(image)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := unix.Mount(dev.Name(), mnt, "xfs", 0, ""); err != nil {
		t.Fatalf("mount xfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount xfs: %v", err)
		}
	})
	return mnt
}

func TestProjectIDInherited(t *testing.T) {
	mnt := mountXFS(t)
	dir := filepath.Join(mnt, "p")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if id, err := getProjectID(dir); err != nil || id != 0 {
		t.Fatalf("fresh directory: project %d, %v; want 0", id, err)
	}
	const id = projectIDBase + 7
	if err := setProjectID(dir, id); err != nil {
		t.Fatalf("setProjectID: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, sub, filepath.Join(sub, "f")} {
		if got, err := getProjectID(p); err != nil || got != id {
			t.Errorf("%s: project %d, %v; want %d (inherited)", p, got, err, id)
		}
	}

	// Allocation skips ids in use.
	vols := filepath.Join(mnt, "volumes")
	for _, h := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(vols, h, dataDir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := setProjectID(filepath.Join(vols, "a", dataDir), projectIDBase); err != nil {
		t.Fatal(err)
	}
	if got, err := allocateProjectID(vols); err != nil || got != projectIDBase+1 {
		t.Fatalf("allocateProjectID = %d, %v; want %d", got, err, projectIDBase+1)
	}
}

func TestXFSWithoutQuotaFallsBackToImages(t *testing.T) {
	mnt := mountXFS(t)
	if projectQuotaEnforced(mnt) {
		t.Fatal("project quota reported enforced on XFS mounted without prjquota")
	}
	q, err := NewDiskQuota(filepath.Join(mnt, "base"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Mode() != ModeLoopExt4 {
		t.Fatalf("Mode = %s, want %s", q.Mode(), ModeLoopExt4)
	}
}
