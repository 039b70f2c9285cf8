package isolationtest

import "testing"

func TestMemoryConformance(t *testing.T) {
	RunConformance(t, MemoryHarness())
}
