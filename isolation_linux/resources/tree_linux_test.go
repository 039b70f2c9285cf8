package resources

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// RemoveTree takes a parent with cgroups below it out of every hierarchy.
func TestRemoveTree(t *testing.T) {
	requireCgroups(t)
	parent := testParent(t)
	for _, sub := range []string{"a", "b"} {
		if _, err := New(parent+"/"+sub, "h", isolation.Limits{MemoryBytes: 64 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	dirs := func() []string {
		var out []string
		for _, pattern := range []string{filepath.Join(unifiedRoot, "*", parent), filepath.Join(unifiedRoot, parent)} {
			m, _ := filepath.Glob(pattern)
			for _, d := range m {
				if st, err := os.Stat(d); err == nil && st.IsDir() {
					out = append(out, d)
				}
			}
		}
		return out
	}
	if len(dirs()) == 0 {
		t.Fatalf("no cgroup directory named %s after New", parent)
	}
	if err := RemoveTree(parent); err != nil {
		t.Fatal(err)
	}
	if left := dirs(); len(left) > 0 {
		t.Fatalf("left after RemoveTree: %v", left)
	}
	if err := RemoveTree(parent); err != nil {
		t.Fatalf("RemoveTree of a parent that is gone: %v", err)
	}
	if err := RemoveTree("../etc"); !isolation.IsInvalidSpec(err) {
		t.Fatalf("RemoveTree(../etc) = %v, want ErrInvalidSpec", err)
	}
}
