package receive

// refTable maps 128-bit keys that are hashes (uniformly random: seriesKey) to non-zero values, in one array with
// open addressing and linear probing: a lookup reads one slot of 24 bytes and, rarely, its neighbours, one cache
// miss where a Go map of 100k entries took two or three (its group's control word, then the slot) — the map
// lookups of seriesRefs and validSeries were 10% of an ingester's CPU and 13% of a distributor's under
// `make bench-write`, mostly waiting on memory. Entries are never removed one by one: the owner starts again
// (reset) when the table holds what it no longer needs.
//
// Not safe for concurrent use; a lookup may run beside other lookups.
type refTable struct {
	slots []refSlot // a power of two of them, or none; empty: v == 0
	n     int
}

type refSlot struct {
	key seriesKey
	v   uint64
}

// minRefSlots is the size of a table's first array.
const minRefSlots = 1024

// get returns the value of k, 0 when k is not in the table.
func (t *refTable) get(k seriesKey) uint64 {
	if len(t.slots) == 0 {
		return 0
	}
	mask := uint64(len(t.slots) - 1)
	for i := k[0] & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.v == 0 {
			return 0
		}
		if s.key == k {
			return s.v
		}
	}
}

// put sets k's value to v, which must not be 0. The table grows so as to stay at most 3/4 full.
func (t *refTable) put(k seriesKey, v uint64) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := k[0] & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.v == 0 {
			*s = refSlot{key: k, v: v}
			t.n++
			return
		}
		if s.key == k {
			s.v = v
			return
		}
	}
}

func (t *refTable) grow() {
	old := t.slots
	t.slots, t.n = make([]refSlot, max(minRefSlots, 2*len(old))), 0
	for _, s := range old {
		if s.v != 0 {
			t.put(s.key, s.v)
		}
	}
}

// reset empties the table, keeping an array sized for n entries.
func (t *refTable) reset(n int) {
	size := minRefSlots
	for size*3 < n*4 {
		size *= 2
	}
	if size == len(t.slots) {
		clear(t.slots)
	} else {
		t.slots = make([]refSlot, size)
	}
	t.n = 0
}

// len is the number of entries.
func (t *refTable) len() int { return t.n }
