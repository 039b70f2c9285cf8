package isolationtest

// rangeAllocator hands out unique values from [lo, hi]: the next free one after the last
// handed out (so a released value is not reused at once, as kernels do with ports), or a
// specific one on request. Allocation is O(1) amortised while the range is not nearly full.
// It is not goroutine-safe.
type rangeAllocator struct {
	lo, hi uint32
	next   uint32
	used   map[uint32]struct{}
	// inRange counts the used values inside [lo, hi].
	inRange uint64
}

func newRangeAllocator(lo, hi uint32) *rangeAllocator {
	return &rangeAllocator{lo: lo, hi: hi, next: lo, used: make(map[uint32]struct{})}
}

// size is how many values the range holds.
func (a *rangeAllocator) size() uint64 { return uint64(a.hi) - uint64(a.lo) + 1 }

// allocate returns a free value, or false when every value is in use.
func (a *rangeAllocator) allocate() (uint32, bool) {
	if a.inRange >= a.size() {
		return 0, false
	}
	for {
		v := a.next
		if a.next == a.hi {
			a.next = a.lo
		} else {
			a.next++
		}
		if _, taken := a.used[v]; !taken {
			a.used[v] = struct{}{}
			a.inRange++
			return v, true
		}
	}
}

// claim marks v as used; it reports false when v was already in use. v may lie outside the
// range (an explicitly requested host port), and is then only kept unique.
func (a *rangeAllocator) claim(v uint32) bool {
	if _, taken := a.used[v]; taken {
		return false
	}
	a.used[v] = struct{}{}
	if a.contains(v) {
		a.inRange++
	}
	return true
}

func (a *rangeAllocator) contains(v uint32) bool { return v >= a.lo && v <= a.hi }

// release frees v.
func (a *rangeAllocator) release(v uint32) {
	if _, taken := a.used[v]; !taken {
		return
	}
	delete(a.used, v)
	if a.contains(v) {
		a.inRange--
	}
}
