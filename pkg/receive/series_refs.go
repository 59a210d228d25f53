package receive

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/prometheus/prometheus/storage"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// seriesRefs maps the labels of a tenant's series as the ingester receives them — their bytes in a forwarded
// write (remotewrite.Options.KeepLabelRuns) — to the head's references of the series, so that a push appends
// the samples of a series it has seen before by reference: no label set is built, hashed and compared for it,
// which was most of what the head's lookup by labels cost per sample; nor are its labels checked again
// (receivedSeries).
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
	t     refTable // key → reference
}

type seriesKey [2]uint64

func newSeriesRefs() *seriesRefs {
	return &seriesRefs{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

// receivedSeries are the series of a forwarded write as received: their label runs (runs[k] of series k, nil
// when not known by its bytes), and, from the seriesRefs of the tenant's TSDB (from), their keys and the
// references of those it knows (known[k], 0: none).
//
// A key is salted with the label limits the series were validated under: a series known by a key passed
// checkLabels unchanged under those limits, and its labels need not be checked again (validateForwarded); when
// the limits change, every key does, and the series are checked and recorded again.
type receivedSeries struct {
	runs  [][]byte
	keys  []seriesKey
	known []storage.SeriesRef
	// limits are the label limits (seriesValidator.labelLimits) the keys are salted with.
	limits [3]int
	from   *seriesRefs
	skip   []bool // skipKnownLabels's answer
}

// receivedPool pools receivedSeries; slices longer than maxPooledScratch series are not kept.
type receivedPool struct{ p sync.Pool }

// get returns a receivedSeries for runs, validated under limits, not looked up yet (from nil, known 0).
func (p *receivedPool) get(runs [][]byte, limits [3]int) *receivedSeries {
	rs, ok := p.p.Get().(*receivedSeries)
	if !ok {
		rs = &receivedSeries{}
	}
	n := len(runs)
	if cap(rs.keys) < n {
		rs.keys, rs.known = make([]seriesKey, n), make([]storage.SeriesRef, n)
	}
	rs.runs, rs.keys, rs.known, rs.limits, rs.from = runs, rs.keys[:n], rs.known[:n], limits, nil
	clear(rs.known)
	return rs
}

func (p *receivedPool) put(rs *receivedSeries) {
	if rs == nil || cap(rs.keys) > maxPooledScratch {
		return
	}
	rs.runs, rs.from = nil, nil // the request's bytes, a TSDB's map: not kept alive by the pool
	p.p.Put(rs)
}

// run is series k's label run, or nil.
func (rs *receivedSeries) run(k int) []byte {
	if rs == nil || k >= len(rs.runs) {
		return nil
	}
	return rs.runs[k]
}

// knownRef is the reference of series k, or 0.
func (rs *receivedSeries) knownRef(k int) storage.SeriesRef {
	if rs == nil {
		return 0
	}
	return rs.known[k]
}

// lookup sets rs's keys and known references from c.
func (c *seriesRefs) lookup(rs *receivedSeries) {
	rs.from = c
	salt := maphash.Comparable(c.seeds[1], rs.limits)
	for k, run := range rs.runs {
		if run != nil {
			rs.keys[k] = seriesKey{maphash.Bytes(c.seeds[0], run), maphash.Bytes(c.seeds[1], run) ^ salt}
		}
	}
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	for k, run := range rs.runs {
		rs.known[k] = 0
		if run != nil {
			rs.known[k] = storage.SeriesRef(c.t.get(rs.keys[k]))
		}
	}
}

// add records refs[k], where it is not 0, as the reference of series k of rs (looked up in c). When the map
// would hold more than limit entries — series the head no longer has, or as many again as it has — it starts
// again, empty.
func (c *seriesRefs) add(rs *receivedSeries, refs []storage.SeriesRef, limit int) {
	if rs == nil || rs.from != c {
		return
	}
	n := 0
	for k, ref := range refs {
		if ref != 0 && rs.runs[k] != nil {
			n++
		}
	}
	if n == 0 {
		return
	}
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if c.t.len()+n > limit {
		c.t.reset(n)
	}
	for k, ref := range refs {
		if ref != 0 && rs.runs[k] != nil {
			c.t.put(rs.keys[k], uint64(ref))
		}
	}
}

// len is how many series are known by their bytes.
func (c *seriesRefs) len() int {
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	return c.t.len()
}

// skipKnownLabels is a forwarded write's remotewrite.Options.SkipLabels: it looks the series up by their runs in
// the seriesRefs of the tenant's TSDB, if it is open, and has those it knows decoded without their labels: they
// are appended by reference, their labels not checked again (validateForwarded). w.received gets the lookup
// (whose runs are those of the decoder's first pass: remoteWrite replaces them with the decoded ones, equal for
// every series it knows).
//
// A series is known only by the bytes of labels that passed checkLabels unchanged, under the limits salting its
// key (see receivedSeries), so it is one a caller of SkipLabels may skip. Its labels are decoded from its run
// when they are needed after all: an error naming it, an append by labels (its series gone from the head, or a
// push redone alone: buildLabels), the tenant's limits or TSDB changed meanwhile (remoteWrite, push).
func (i *Ingester) skipKnownLabels(ctx context.Context, w *forwardedWrite, runs [][]byte) []bool {
	tenant, err := remoteWriteTenant(ctx, w.tenant, w.tenantData)
	if err != nil {
		return nil // refused by remoteWrite
	}
	u := i.get(tenant)
	if u == nil {
		return nil
	}
	rs := i.received.get(runs, newSeriesValidator(i.overrides.ForTenant(tenant), i.now()).labelLimits())
	u.refs.lookup(rs)
	w.received = rs
	skip := rs.skipScratch(len(runs))
	for k := range runs {
		skip[k] = rs.known[k] != 0
	}
	return skip
}

// skipScratch returns a reused slice of n bools.
func (rs *receivedSeries) skipScratch(n int) []bool {
	if cap(rs.skip) < n {
		rs.skip = make([]bool, n)
	}
	rs.skip = rs.skip[:n]
	return rs.skip
}

// fillKnownLabels decodes the labels of the series of tss decoded without them (known in rs, looked up while
// decoding) from their runs.
func fillKnownLabels(tss []*prompb.TimeSeries, rs *receivedSeries, runs [][]byte) error {
	for k, ts := range tss {
		if ts == nil || ts.Labels != nil || k >= len(rs.known) || rs.known[k] == 0 {
			continue
		}
		var run []byte
		if k < len(runs) {
			run = runs[k]
		}
		if err := fillLabels(ts, run); err != nil {
			return err
		}
	}
	return nil
}

// knownValid implements seriesKnower for an in-process distributor (`strata all`): known[k] is set for the
// series of runs the tenant's TSDB knows by its run under limits, which the distributor validated unchanged
// under those limits when it pushed it (pushRuns records no other). False, and known untouched, when the
// tenant's TSDB is not open.
//
// The lookup is returned (a *receivedSeries without runs: those given may not outlive the call), for pushRuns to
// append by (takeLookedUp) instead of looking the series up again.
func (i *Ingester) knownValid(tenant string, limits [3]int, runs [][]byte, known []bool) (lookedUp, bool) {
	u := i.get(tenant)
	if u == nil || len(known) != len(runs) {
		return nil, false
	}
	rs := i.received.get(runs, limits)
	u.refs.lookup(rs)
	rs.runs = nil
	for k := range runs {
		known[k] = rs.known[k] != 0
	}
	return rs, true
}

// keep and truncate implement lookedUp.
func (rs *receivedSeries) keep(from, to int) {
	rs.keys[to], rs.known[to] = rs.keys[from], rs.known[from]
}

func (rs *receivedSeries) truncate(n int) {
	rs.keys, rs.known = rs.keys[:n], rs.known[:n]
}
