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

// emptySlots returns the array of an emptied table (refTable, keySet) of n entries: slots cleared when it has
// the size n needs (a power of two, at least minRefSlots, that keeps it at most 3/4 full), else a new one of it.
func emptySlots[T any](slots []T, n int) []T {
	size := minRefSlots
	for size*3 < n*4 {
		size *= 2
	}
	if size == len(slots) {
		clear(slots)
		return slots
	}
	return make([]T, size)
}

// reset empties the table, keeping an array sized for n entries.
func (t *refTable) reset(n int) { t.slots, t.n = emptySlots(t.slots, n), 0 }

// len is the number of entries.
func (t *refTable) len() int { return t.n }

// keySet is a set of 64-bit keys that are hashes (uniformly random), laid out as refTable (one array, open
// addressing, linear probing) in 8 bytes a slot: a third of refTable's, so that a distributor's table of 100k
// series (validSeries) is 2 MiB, not 6, and more of it stays in the CPU's caches. 0 marks an empty slot: key 0 is
// stored as 1 (one more key that shares its entry, among 2⁶⁴).
//
// Not safe for concurrent use; a lookup may run beside other lookups.
type keySet struct {
	slots []uint64 // a power of two of them, or none
	n     int
}

// has says whether k is in the set.
func (s *keySet) has(k uint64) bool {
	if len(s.slots) == 0 {
		return false
	}
	k = max(k, 1)
	mask := uint64(len(s.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case k:
			return true
		case 0:
			return false
		}
	}
}

// add puts k in the set, which grows so as to stay at most 3/4 full.
func (s *keySet) add(k uint64) {
	if (s.n+1)*4 > len(s.slots)*3 {
		old := s.slots
		s.slots, s.n = make([]uint64, max(minRefSlots, 2*len(old))), 0
		for _, o := range old {
			if o != 0 {
				s.add(o)
			}
		}
	}
	k = max(k, 1)
	mask := uint64(len(s.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case k:
			return
		case 0:
			s.slots[i] = k
			s.n++
			return
		}
	}
}

// reset empties the set, keeping an array sized for n keys.
func (s *keySet) reset(n int) { s.slots, s.n = emptySlots(s.slots, n), 0 }

// len is the number of keys.
func (s *keySet) len() int { return s.n }
