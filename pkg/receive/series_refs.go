package receive

import (
	"hash/maphash"
	"sync"

	"github.com/prometheus/prometheus/storage"
)

// seriesRefs maps the labels of a tenant's series as the ingester receives them — their bytes in a forwarded
// write (remotewrite.Options.KeepLabelRuns) — to the head's references of the series, so that a push appends
// the samples of a series it has seen before by reference: no label set is built, hashed and compared for it,
// which was most of what the head's lookup by labels cost per sample.
//
// A key is 128 bits of two hashes of the bytes with seeds of this process (hash/maphash): a client cannot make
// two label sets collide, and by chance they collide once in 2^64 series pairs. Equal bytes decode to equal labels,
// so a key maps to one series; different bytes of one series (another encoder's layout) are two keys of it.
//
// A reference outlives its series: the head removes series (head compaction, garbage collection) and numbers
// new ones from where it left, so a removed series' reference is never another's. The append by that reference
// then fails, and the series is appended by its labels (appendSeries); removed series' entries are dropped when the
// map outgrows the head (add).
type seriesRefs struct {
	seeds [2]maphash.Seed
	mtx   sync.RWMutex
	m     map[seriesKey]storage.SeriesRef
}

type seriesKey [2]uint64

func newSeriesRefs() *seriesRefs {
	return &seriesRefs{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, m: map[seriesKey]storage.SeriesRef{}}
}

func (c *seriesRefs) key(run []byte) seriesKey {
	return seriesKey{maphash.Bytes(c.seeds[0], run), maphash.Bytes(c.seeds[1], run)}
}

// lookup sets, for each series k of a push whose labels were received as runs[k] (nil: not known by them),
// keys[k] to its key and refs[k] to its reference, or 0. runs may be nil (no series known by its bytes).
func (c *seriesRefs) lookup(runs [][]byte, keys []seriesKey, refs []storage.SeriesRef) {
	clear(refs)
	if len(runs) == 0 {
		return
	}
	for k, run := range runs {
		if run != nil {
			keys[k] = c.key(run)
		}
	}
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	for k, run := range runs {
		if run != nil {
			refs[k] = c.m[keys[k]]
		}
	}
}

// add records refs[k], where it is not 0, as the reference of the series whose labels were received as runs[k]
// (keys[k], from lookup). When the map would hold more than limit entries — series the head no longer has,
// or as many again as it has — it starts again, empty.
func (c *seriesRefs) add(runs [][]byte, keys []seriesKey, refs []storage.SeriesRef, limit int) {
	n := 0
	for k, ref := range refs {
		if ref != 0 && k < len(runs) && runs[k] != nil {
			n++
		}
	}
	if n == 0 {
		return
	}
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if len(c.m)+n > limit {
		c.m = make(map[seriesKey]storage.SeriesRef, n)
	}
	for k, ref := range refs {
		if ref != 0 && k < len(runs) && runs[k] != nil {
			c.m[keys[k]] = ref
		}
	}
}

// len is how many series are known by their bytes.
func (c *seriesRefs) len() int {
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	return len(c.m)
}
