package isolationlinux

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Both kinds of copy hold the binary, run, and cannot be opened for writing.
func TestInitCopies(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	want, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		copy func(*os.File) (*os.File, error)
	}{
		{"detached tmpfs", func(src *os.File) (*os.File, error) { return detachedTmpfsCopy(src, int64(len(want))) }},
		{"sealed memfd", func(src *os.File) (*os.File, error) { return sealedMemfdCopy(src) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := os.Open("/bin/true")
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			c, err := tc.copy(src)
			if errors.Is(err, unix.ENOSYS) {
				t.Skipf("kernel lacks it: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			via := fmt.Sprintf("/proc/self/fd/%d", c.Fd())
			got, err := os.ReadFile(via)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the copy holds %d bytes (%v), want the %d of /bin/true", len(got), err, len(want))
			}
			// The tmpfs refuses to open it for writing; the memfd's seals refuse the write.
			if w, err := os.OpenFile(via, os.O_WRONLY, 0); err == nil {
				_, werr := w.Write([]byte("x"))
				w.Close()
				if werr == nil {
					t.Fatal("the copy could be written through a new descriptor")
				}
			}
			if _, err := c.Write([]byte("x")); err == nil {
				t.Fatal("the copy's own descriptor could write")
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(c.Fd()), &st); err != nil || st.Mode&0o777 != copyMode {
				t.Fatalf("the copy's mode is %#o (%v), want %#o: executable, readable by root only", st.Mode&0o777, err, copyMode)
			}
			cmd := exec.Command(via)
			cmd.ExtraFiles = []*os.File{c} // as fd 3: /proc/self/fd/N resolves in the child too
			cmd.Path = "/proc/self/fd/3"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("executing the copy: %v: %s", err, out)
			}
		})
	}
}

// Where the kernel has transparent huge pages for tmpfs, the init copy is mapped with 2 MiB
// page-table entries: the reason the copy lives on a tmpfs of its own.
func TestInitCopyHugePages(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); err != nil || strings.Contains(string(b), "[deny]") {
		t.Skipf("no transparent huge pages for tmpfs here (%q, %v)", b, err)
	}
	const size = 2 * hugePage
	f, err := os.CreateTemp("", "init-copy-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(bytes.Repeat([]byte{0x90}, size)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	c, err := detachedTmpfsCopy(f, size)
	if errors.Is(err, unix.ENOSYS) {
		t.Skipf("kernel lacks it: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Map the copy at a 2 MiB boundary, as the ELF loader maps the binary, and touch it.
	reserve, err := unix.Mmap(-1, 0, size+hugePage, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(reserve)
	base := uintptr(unsafe.Pointer(&reserve[0]))
	aligned := unsafe.Add(unsafe.Pointer(&reserve[0]), (base+hugePage-1)&^(hugePage-1)-base)
	ptr, err := unix.MmapPtr(int(c.Fd()), 0, aligned, size, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_FIXED)
	if err != nil {
		t.Fatal(err)
	}
	addr := uintptr(ptr)
	mapped := unsafe.Slice((*byte)(ptr), size)
	sum := 0
	for i := 0; i < size; i += 4096 {
		sum += int(mapped[i])
	}
	if sum == 0 {
		t.Fatal("the copy reads as zeros")
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	region := fmt.Sprintf("%x-%x ", addr, addr+size)
	i := strings.Index(string(smaps), region)
	if i < 0 {
		t.Fatalf("mapping %s not in /proc/self/smaps", region)
	}
	entry := string(smaps[i:])
	if j := strings.Index(entry, "VmFlags:"); j >= 0 {
		entry = entry[:j]
	}
	var pmdKB int
	for _, line := range strings.Split(entry, "\n") {
		if rest, ok := strings.CutPrefix(line, "ShmemPmdMapped:"); ok {
			fmt.Sscan(rest, &pmdKB)
		}
	}
	if pmdKB != size>>10 {
		t.Fatalf("%d of %d KiB of the copy are mapped in 2 MiB pages:\n%s", pmdKB, size>>10, entry)
	}
}
