package containerinit

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountOptions(t *testing.T) {
	flags, data := parseMountOptions([]string{"nosuid", "rbind", "ro", "rw", "mode=755", "size=1k"})
	if flags != unix.MS_NOSUID|unix.MS_BIND|unix.MS_REC || data != "mode=755,size=1k" {
		t.Fatalf("flags %#x data %q", flags, data)
	}
}
