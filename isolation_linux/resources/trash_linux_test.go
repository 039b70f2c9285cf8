package resources

import (
	"os"
	"path/filepath"
	"testing"
)

func writeTree(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTrashRemovesWhatIsPut(t *testing.T) {
	base := t.TempDir()
	// What a previous process left in the trash goes too.
	writeTree(t, filepath.Join(base, "trash", "left-by-a-crash"))
	tr, err := NewTrash(filepath.Join(base, "trash"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, name := range []string{"one", "two"} {
		writeTree(t, filepath.Join(base, name))
	}
	for _, name := range []string{"one", "two", "never-was"} {
		if err := tr.Put(filepath.Join(base, name)); err != nil {
			t.Fatalf("Put(%s): %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(base, name)); !os.IsNotExist(err) {
			t.Errorf("%s is still in its place after Put (%v)", name, err)
		}
	}
	tr.Flush()
	left, err := os.ReadDir(filepath.Join(base, "trash"))
	if err != nil || len(left) != 0 {
		t.Fatalf("the trash holds %v after Flush (%v)", left, err)
	}
}

func TestTrashCloseEmptiesIt(t *testing.T) {
	base := t.TempDir()
	tr, err := NewTrash(filepath.Join(base, "trash"), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, filepath.Join(base, "gone"))
	if err := tr.Put(filepath.Join(base, "gone")); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	tr.Close()
	tr.Flush() // returns at once once closed
	if left, err := os.ReadDir(filepath.Join(base, "trash")); err != nil || len(left) != 0 {
		t.Fatalf("the trash holds %v after Close (%v)", left, err)
	}
}
