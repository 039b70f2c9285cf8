package isolationlinux

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchFileScalesPastInotifyInstances: more files are followed at once than the kernel's
// default limit of inotify instances per user (128), and each one's writes wake its follower.
func TestWatchFileScalesPastInotifyInstances(t *testing.T) {
	dir := t.TempDir()
	const files = 300
	chans := make([]<-chan struct{}, files)
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		ch, stop, err := watchFile(p)
		if err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
		t.Cleanup(stop)
		chans[i] = ch
	}
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-chans[i]:
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up for file %d", i)
		}
	}
	// A second follower of the same file is woken too, and ending one leaves the other.
	p := filepath.Join(dir, "f0")
	_, stopA, _ := watchFile(p)
	b, stopB, _ := watchFile(p)
	defer stopB()
	stopA()
	os.WriteFile(p, []byte("y"), 0o600)
	select {
	case <-b:
	case <-time.After(5 * time.Second):
		t.Fatal("the remaining follower was not woken")
	}
}
