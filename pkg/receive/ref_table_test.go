package receive

import (
	"math/rand/v2"
	"testing"

	"github.com/efficientgo/core/testutil"
)

// TestRefTable: against a Go map of the same entries, through growth, keys that share their first half or
// their home slot, overwrites and resets.
func TestRefTable(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		key  func(i int) seriesKey
	}{
		{"random", func(int) seriesKey { return seriesKey{r.Uint64(), r.Uint64()} }},
		{"same first half", func(i int) seriesKey { return seriesKey{42, uint64(i)} }},
		{"same home slot", func(i int) seriesKey { return seriesKey{uint64(i) << 32, r.Uint64()} }},
		{"zero first half", func(i int) seriesKey { return seriesKey{0, uint64(i) * 7} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tab refTable
			want := map[seriesKey]uint64{}
			var keys []seriesKey
			testutil.Equals(t, uint64(0), tab.get(seriesKey{1, 2})) // empty, no array
			for i := range 5000 {
				k := tc.key(i)
				if i%5 == 4 {
					k = keys[r.IntN(len(keys))] // an overwrite
				} else {
					keys = append(keys, k)
				}
				v := uint64(i + 1)
				tab.put(k, v)
				want[k] = v
				if i%997 == 0 {
					for k, v := range want {
						testutil.Equals(t, v, tab.get(k))
					}
					testutil.Equals(t, uint64(0), tab.get(seriesKey{k[0], k[1] + 1<<63}), "absent key")
				}
				testutil.Equals(t, len(want), tab.len())
				testutil.Assert(t, tab.len()*4 <= len(tab.slots)*3, "%d entries in %d slots", tab.len(), len(tab.slots))
			}
			for k, v := range want {
				testutil.Equals(t, v, tab.get(k))
			}
			tab.reset(10)
			testutil.Equals(t, 0, tab.len())
			testutil.Equals(t, minRefSlots, len(tab.slots))
			for k := range want {
				testutil.Equals(t, uint64(0), tab.get(k))
			}
			tab.reset(5000)
			testutil.Assert(t, len(tab.slots)*3 >= 5000*4, "%d slots", len(tab.slots))
		})
	}
}

// BenchmarkRefTable compares refTable's lookups (seriesRefs's) and keySet's (validSeries's) with a Go map's, of
// 100k random keys present in each, in batches of 2000 (a request).
func BenchmarkRefTable(b *testing.B) {
	const n, batch = 100_000, 2000
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]seriesKey, n)
	var tab refTable
	var set keySet
	m := make(map[uint64][2]uint64, n)
	for i := range keys {
		keys[i] = seriesKey{r.Uint64(), r.Uint64()}
		tab.put(keys[i], uint64(i+1))
		set.add(keys[i][0])
		m[keys[i][0]] = [2]uint64{keys[i][1], uint64(i + 1)}
	}
	reqs := make([][]seriesKey, 64)
	for i := range reqs {
		for range batch {
			reqs[i] = append(reqs[i], keys[r.IntN(n)])
		}
	}
	for _, bc := range []struct {
		name string
		get  func(seriesKey) uint64
	}{
		{"map", func(k seriesKey) uint64 {
			if e, ok := m[k[0]]; ok && e[0] == k[1] {
				return e[1]
			}
			return 0
		}},
		{"refTable", tab.get},
		{"keySet", func(k seriesKey) uint64 { // validSeries's: the first half alone, present or not
			if set.has(k[0]) {
				return 1
			}
			return 0
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				for _, k := range reqs[i%len(reqs)] {
					if bc.get(k) == 0 {
						b.Fatal("a key is missing")
					}
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/lookup")
		})
	}
}

// TestKeySet: against a Go map of the same keys, through growth, keys that share their home slot, key 0 (stored
// as 1), adding a key twice and resets.
func TestKeySet(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name string
		key  func(i int) uint64
	}{
		{"random", func(int) uint64 { return r.Uint64() }},
		{"same home slot", func(i int) uint64 { return uint64(i) << 32 }},
		{"small", func(i int) uint64 { return uint64(i) }}, // 0 and 1 among them: one entry
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s keySet
			want := map[uint64]bool{}
			testutil.Assert(t, !s.has(7), "an empty set, no array")
			for i := range 5000 {
				k := tc.key(i)
				s.add(k)
				s.add(k)
				want[max(k, 1)] = true
				if i%997 == 0 {
					for k := range want {
						testutil.Assert(t, s.has(k), "key %d", k)
					}
				}
				testutil.Equals(t, len(want), s.len())
				testutil.Assert(t, s.len()*4 <= len(s.slots)*3, "%d keys in %d slots", s.len(), len(s.slots))
			}
			absent := 0
			for range 1000 {
				if k := r.Uint64(); !want[max(k, 1)] {
					testutil.Assert(t, !s.has(k), "absent key %d", k)
					absent++
				}
			}
			testutil.Assert(t, absent > 900, "too few absent keys tried: %d", absent)
			testutil.Equals(t, want[1], s.has(0), "0 is 1")
			s.reset(10)
			testutil.Equals(t, 0, s.len())
			testutil.Equals(t, minRefSlots, len(s.slots))
			for k := range want {
				testutil.Assert(t, !s.has(k), "key %d after reset", k)
			}
			s.reset(5000)
			testutil.Assert(t, len(s.slots)*3 >= 5000*4, "%d slots", len(s.slots))
		})
	}
}
