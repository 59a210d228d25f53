package receive

import (
	"hash/maphash"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// validSeries remembers which series a distributor found with valid labels: series it has seen before, as most
// of every remote write is, skip the label rules (checkLabels: names, lengths, sorting, duplicates), which were
// the largest part of the distributor's CPU per sample after decoding. Samples, histograms and exemplars are
// checked every time (checkSamples): their rules depend on the clock.
//
// A series is known by its labels as received (label runs, remotewrite.Options.KeepLabelRuns), the tenant and
// the tenant's label limits: the key is a 64-bit hash of them with a seed of this process (hash/maphash). Equal
// bytes decode to equal labels, and checkLabels is a function of the labels and the limits, so a series known by
// its key passes checkLabels unchanged; when a tenant's limits change, so do its keys, and its series are checked
// and recorded again. A client cannot choose label sets whose keys collide (the seed is secret); two label sets
// collide by chance once in 2⁶⁴ lookups per series held (~10⁻¹³ at a million), and a series taken for valid so
// would still be checked by each ingester that does not know it (validateForwarded). (An ingester's seriesRefs
// keys are 128 bits: there a collision would append to another series.)
//
// At most limit series are remembered over all tenants; recording beyond that starts again from empty, so the
// table (keySet) costs 11–21 bytes per series it can hold (at most 16 MiB at the default 1Mi series), and a
// distributor that sees more distinct series than limit checks them all, as it would without the cache.
type validSeries struct {
	seed  maphash.Seed
	limit int

	mtx sync.RWMutex
	t   keySet

	scratch sync.Pool // *validLookup
	metrics validSeriesMetrics
}

type validSeriesMetrics struct {
	hits, misses prometheus.Counter
	entries      prometheus.GaugeFunc
}

// validSalt is what a key is salted with besides a series' bytes.
type validSalt struct {
	tenant string
	limits [3]int
}

// validLookup is what one request found in a validSeries: known[k] says that series k (runs[k]) passed checkLabels
// unchanged before; keys[k] is its key (when runs[k] is not nil). fresh are the keys of the series the request
// found valid and not known (record). One that Distributor.lookupKnown had from its Pusher has no keys: nothing
// to record.
type validLookup struct {
	keys  []uint64
	known []bool
	fresh []uint64
	// looked is the Pusher's own lookup (lookupKnown), if any.
	looked lookedUp
}

// newValidSeries returns a validSeries of at most limit series; nil (no series known, nothing recorded) when
// limit ≤ 0.
func newValidSeries(limit int, reg prometheus.Registerer) *validSeries {
	if limit <= 0 {
		return nil
	}
	c := &validSeries{seed: maphash.MakeSeed(), limit: limit}
	f := promauto.With(reg)
	c.metrics = validSeriesMetrics{
		hits: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_distributor_validated_series_cache_hits_total",
			Help: "Series whose labels were known valid (validated before, as received, under the same limits) and were not checked again.",
		}),
		misses: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_distributor_validated_series_cache_misses_total",
			Help: "Series of remote writes 1.0 whose labels were checked (not known valid).",
		}),
		entries: f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_distributor_validated_series_cache_entries",
			Help: "Series known valid, over all tenants (at most -distributor.validated-series-cache-size).",
		}, func() float64 {
			c.mtx.RLock()
			defer c.mtx.RUnlock()
			return float64(c.t.len())
		}),
	}
	return c
}

// lookup returns which series of runs (a tenant's request, validated under limits) are known valid. The caller
// records those it finds valid (found) and then calls done. A nil validSeries knows none.
func (c *validSeries) lookup(tenant string, limits [3]int, runs [][]byte) *validLookup {
	if c == nil || len(runs) == 0 {
		return nil
	}
	l, ok := c.scratch.Get().(*validLookup)
	if !ok {
		l = &validLookup{}
	}
	n := len(runs)
	if cap(l.keys) < n {
		l.keys, l.known = make([]uint64, n), make([]bool, n)
	}
	l.keys, l.known, l.fresh = l.keys[:n], l.known[:n], l.fresh[:0]
	// Salted: the tenants share the set, and one tenant's series must not stand for another's.
	salt := maphash.Comparable(c.seed, validSalt{tenant: tenant, limits: limits})
	for k, run := range runs {
		if run != nil {
			l.keys[k] = maphash.Bytes(c.seed, run) ^ salt
		}
	}
	hits := 0
	c.mtx.RLock()
	for k, run := range runs {
		l.known[k] = false
		if run != nil {
			if c.t.has(l.keys[k]) {
				l.known[k] = true
				hits++
			}
		}
	}
	c.mtx.RUnlock()
	c.metrics.hits.Add(float64(hits))
	c.metrics.misses.Add(float64(n - hits))
	return l
}

// isKnown says whether series k passed checkLabels unchanged before.
func (l *validLookup) isKnown(k int) bool { return l != nil && l.known[k] }

// found notes that series k, not known, passed checkLabels unchanged: it is recorded at done.
func (l *validLookup) found(k int, run []byte) {
	if l != nil && run != nil && !l.known[k] && k < len(l.keys) { // no keys: a Pusher's answer (lookupKnown)
		l.fresh = append(l.fresh, l.keys[k])
	}
}

// done records the series found valid and returns l to the pool.
func (c *validSeries) done(l *validLookup) {
	if c == nil || l == nil {
		return
	}
	if n := len(l.fresh); n > 0 {
		c.mtx.Lock()
		if c.t.len()+n > c.limit {
			c.t.reset(min(n, c.limit))
		}
		for _, k := range l.fresh[:min(n, c.limit)] {
			c.t.add(k)
		}
		c.mtx.Unlock()
	}
	if cap(l.keys) > maxPooledScratch {
		return
	}
	c.scratch.Put(l)
}
