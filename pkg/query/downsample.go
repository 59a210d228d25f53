package query

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// aggrsFromFunc is the aggregates of downsampled chunks a PromQL function reads (Thanos's choice): min/max for
// min/max functions, count for count functions (count_over_time reads it differently: see countSamplesLabel), sum for sum_over_time, the counter for rate, increase, irate and
// resets, and count and sum (read as their average) otherwise.
func aggrsFromFunc(f string) []storepb.Aggr {
	switch {
	case f == "min" || strings.HasPrefix(f, "min_"):
		return []storepb.Aggr{storepb.Aggr_MIN}
	case f == "max" || strings.HasPrefix(f, "max_"):
		return []storepb.Aggr{storepb.Aggr_MAX}
	case f == "count" || strings.HasPrefix(f, "count_"):
		return []storepb.Aggr{storepb.Aggr_COUNT}
	case strings.HasPrefix(f, "sum_"): // sum itself wants the samples: the average below
		return []storepb.Aggr{storepb.Aggr_SUM}
	case f == "increase" || f == "rate" || f == "irate" || f == "resets":
		return []storepb.Aggr{storepb.Aggr_COUNTER}
	}
	return []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}
}

// hasAggrChunks tells whether any copy holds a downsampled chunk.
func hasAggrChunks(copies []fetchedSeries) bool {
	for _, c := range copies {
		for _, m := range c.metas {
			if _, ok := m.Chunk.(*store.AggrChunk); ok {
				return true
			}
		}
	}
	return false
}

// aggrChunkIterator iterates the aggregate aggrs picks of a downsampled chunk (a raw chunk as it is): one
// aggregate's samples, or sum/count for the average. nil when the chunk lacks the aggregate.
func aggrChunkIterator(c chunkenc.Chunk, aggrs []storepb.Aggr) chunkenc.Iterator {
	a, ok := c.(*store.AggrChunk)
	if !ok {
		return c.Iterator(nil)
	}
	var chk chunkenc.Chunk
	if len(aggrs) == 1 {
		switch aggrs[0] {
		case storepb.Aggr_COUNT:
			chk = a.Count
		case storepb.Aggr_SUM:
			chk = a.Sum
		case storepb.Aggr_MIN:
			chk = a.Min
		case storepb.Aggr_MAX:
			chk = a.Max
		case storepb.Aggr_COUNTER:
			chk = a.Counter
		}
	} else if a.Count != nil && a.Sum != nil {
		return &averageIterator{count: a.Count.Iterator(nil), sum: a.Sum.Iterator(nil)}
	}
	if chk == nil {
		return nil
	}
	return chk.Iterator(nil)
}

// averageIterator reads a downsampled chunk's sum and count aggregates in step and yields sum/count (Thanos's
// AverageChunkIterator).
type averageIterator struct {
	count, sum chunkenc.Iterator
	started    bool
	t          int64
	v          float64
	err        error
}

func (it *averageIterator) Next() chunkenc.ValueType {
	ct, st := it.count.Next(), it.sum.Next()
	if ct != chunkenc.ValFloat || st != chunkenc.ValFloat {
		if err := it.count.Err(); err != nil {
			it.err = err
		} else if err := it.sum.Err(); err != nil {
			it.err = err
		}
		return chunkenc.ValNone
	}
	tc, c := it.count.At()
	ts, s := it.sum.At()
	if tc != ts {
		it.err = errAggrMisaligned
		return chunkenc.ValNone
	}
	it.started, it.t, it.v = true, tc, s/c
	return chunkenc.ValFloat
}

func (it *averageIterator) Seek(t int64) chunkenc.ValueType {
	if it.started && it.t >= t {
		return chunkenc.ValFloat
	}
	for !it.started || it.t < t {
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
	return chunkenc.ValFloat
}

func (it *averageIterator) At() (int64, float64) { return it.t, it.v }
func (it *averageIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return it.t, nil
}

func (it *averageIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.t, nil
}
func (it *averageIterator) AtT() int64  { return it.t }
func (it *averageIterator) AtST() int64 { return 0 }
func (it *averageIterator) Err() error  { return it.err }

type aggrError string

func (e aggrError) Error() string { return string(e) }

const errAggrMisaligned = aggrError("downsampled chunk: the count and sum aggregates' timestamps differ")

// counterIterator reads the counter aggregate of a run of chunks in time order (raw chunks as counters too) as
// one counter with its resets applied, as Thanos's ApplyCounterResetsSeriesIterator: a downsampled counter
// chunk ends with a repeat of its last timestamp holding the true last raw value, which tells whether the
// counter was reset before the next chunk. Samples outside [mint, maxt] are read (they carry the resets) but
// not yielded.
type counterIterator struct {
	its        []chunkenc.Iterator
	mint, maxt int64
	started    bool
	lastT      int64   // time of the last sample read
	lastV      float64 // raw value of the last sample read
	total      float64 // the counter with resets applied
	err        error
}

func newCounterIterator(metas []chunks.Meta, mint, maxt int64) chunkenc.Iterator {
	it := &counterIterator{mint: mint, maxt: maxt}
	for _, m := range metas {
		if m.MinTime > maxt {
			break
		}
		if c := aggrChunkIterator(m.Chunk, []storepb.Aggr{storepb.Aggr_COUNTER}); c != nil {
			it.its = append(it.its, c)
		}
	}
	return it
}

// read steps to the next counter sample (not trimmed).
func (it *counterIterator) read() bool {
	for len(it.its) > 0 {
		c := it.its[0]
		if c.Next() != chunkenc.ValFloat {
			if err := c.Err(); err != nil {
				it.err = err
				it.its = nil
				return false
			}
			it.its = it.its[1:]
			continue
		}
		t, v := c.At()
		if math.IsNaN(v) {
			continue
		}
		switch {
		case !it.started:
			it.started, it.lastT, it.lastV, it.total = true, t, v, v
			return true
		case t > it.lastT:
			if v >= it.lastV {
				it.total += v - it.lastV
			} else {
				it.total += v // reset
			}
			it.lastT, it.lastV = t, v
			return true
		default:
			// The chunk's true last value (or an overlapping older sample): only resets are judged on it.
			if t == it.lastT {
				it.lastV = v
			}
		}
	}
	return false
}

func (it *counterIterator) Next() chunkenc.ValueType {
	for it.read() {
		if it.lastT < it.mint {
			continue
		}
		if it.lastT > it.maxt {
			it.its = nil
			return chunkenc.ValNone
		}
		return chunkenc.ValFloat
	}
	return chunkenc.ValNone
}

func (it *counterIterator) Seek(t int64) chunkenc.ValueType {
	if it.started && it.lastT >= max(t, it.mint) && it.lastT <= it.maxt {
		return chunkenc.ValFloat
	}
	for {
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
		if it.lastT >= t {
			return chunkenc.ValFloat
		}
	}
}

func (it *counterIterator) At() (int64, float64) { return it.lastT, it.total }
func (it *counterIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return it.lastT, nil
}

func (it *counterIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.lastT, nil
}
func (it *counterIterator) AtT() int64  { return it.lastT }
func (it *counterIterator) AtST() int64 { return 0 }
func (it *counterIterator) Err() error  { return it.err }

// downsampledIterator iterates the samples of one label set whose chunks include downsampled ones, reading
// the aggregate the query's function needs (aggrs). For other aggregates than the counter, overlapping chunks
// are split into lanes and chain-merged, as raw ones are.
func downsampledIterator(copies []fetchedSeries, aggrs []storepb.Aggr, mint, maxt int64) chunkenc.Iterator {
	if len(aggrs) == 1 && aggrs[0] == storepb.Aggr_COUNTER {
		// One counter over every copy's chunks in time order, so that resets are applied once across them (a
		// store-gateway's downsampled range then the ingesters' raw one); a sample not after the last is skipped.
		var all []chunks.Meta
		for _, c := range copies {
			all = append(all, c.metas...)
		}
		slices.SortStableFunc(all, func(a, b chunks.Meta) int { return cmp.Compare(a.MinTime, b.MinTime) })
		return newCounterIterator(all, mint, maxt)
	}
	var its []chunkenc.Iterator
	for _, c := range copies {
		for _, lane := range nonOverlappingLanes(c.metas) {
			it := newChunksIterator(lane, mint, maxt)
			it.aggrs = aggrs
			its = append(its, it)
		}
	}
	if len(its) == 1 {
		return its[0]
	}
	return storage.ChainSampleIteratorFromIterators(nil, its)
}

// count_over_time over downsampled data. A downsampled chunk holds one point per window, so counting points (as
// Thanos does) answers far below the raw data's count; the COUNT aggregate holds how many raw samples each
// window had. The querier's engine therefore evaluates count_over_time(sel[r]) as sum_over_time over a selection
// that yields, per sample, how many raw samples it stands for: the COUNT aggregate's value for a downsampled
// chunk, 1 for a raw sample (stale markers, which count_over_time skips, yield nothing). Over raw data alone the
// answer is count_over_time's, exactly; over downsampled data it is exact for ranges that cover whole windows.
//
// The rewrite is done on the parsed expression (countOverTimeParser, the engine's parser); the selection is
// marked with a matcher on countSamplesLabel, which Select removes. A queryable that does not know the marker
// matches no series with it (no series has the label), so a misrouted query answers nothing rather than sums.

// countSamplesLabel names the marker matcher (countSamplesLabel="1") of a selection read as sample counts.
const countSamplesLabel = "__strata_count_samples__"

// countOverTimeParser is Prometheus's parser with count_over_time over a range selector rewritten as described
// above. Other count_over_time arguments (subqueries) count the points the engine computes and are left alone.
type countOverTimeParser struct{ parser.Parser }

func newCountOverTimeParser() parser.Parser {
	return countOverTimeParser{parser.NewParser(parser.Options{})}
}

func (p countOverTimeParser) ParseExpr(qs string) (parser.Expr, error) {
	expr, err := p.Parser.ParseExpr(qs)
	if err != nil {
		return nil, err
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		call, ok := n.(*parser.Call)
		if !ok || call.Func.Name != "count_over_time" || len(call.Args) != 1 {
			return nil
		}
		ms, ok := call.Args[0].(*parser.MatrixSelector)
		if !ok {
			return nil
		}
		vs, ok := ms.VectorSelector.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		vs.LabelMatchers = append(vs.LabelMatchers, labels.MustNewMatcher(labels.MatchEqual, countSamplesLabel, "1"))
		call.Func = parser.Functions["sum_over_time"]
		return nil
	})
	return expr, nil
}

// withoutCountMarker removes the count_over_time marker from a selection's matchers and says whether it was there.
func withoutCountMarker(ms []*labels.Matcher) ([]*labels.Matcher, bool) {
	i := slices.IndexFunc(ms, func(m *labels.Matcher) bool { return m.Name == countSamplesLabel })
	if i < 0 {
		return ms, false
	}
	return slices.Delete(slices.Clone(ms), i, i+1), true
}

// countEachSample makes the raw chunks of the series yield 1 per sample; downsampled chunks are read through
// their COUNT aggregate (the request asked for it alone).
func countEachSample(entries []fetchedSeries) {
	for i := range entries {
		for j, m := range entries[i].metas {
			if _, ok := m.Chunk.(*store.AggrChunk); !ok {
				entries[i].metas[j].Chunk = onesChunk{m.Chunk}
			}
		}
	}
}

// onesChunk is a raw chunk whose samples read as the float 1.
type onesChunk struct{ chunkenc.Chunk }

func (c onesChunk) Iterator(reuse chunkenc.Iterator) chunkenc.Iterator {
	if o, ok := reuse.(*onesIterator); ok {
		o.it = c.Chunk.Iterator(o.it)
		return o
	}
	return &onesIterator{it: c.Chunk.Iterator(nil)}
}

// onesIterator yields the float 1 at each sample of it (float or histogram), skipping stale markers.
type onesIterator struct {
	it chunkenc.Iterator
	fh *histogram.FloatHistogram
}

// stale tells whether the sample it is on is a stale marker.
func (o *onesIterator) stale(typ chunkenc.ValueType) bool {
	switch typ {
	case chunkenc.ValFloat:
		_, v := o.it.At()
		return value.IsStaleNaN(v)
	case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
		_, o.fh = o.it.AtFloatHistogram(o.fh)
		return value.IsStaleNaN(o.fh.Sum)
	}
	return false
}

func (o *onesIterator) Next() chunkenc.ValueType {
	for {
		typ := o.it.Next()
		if typ == chunkenc.ValNone {
			return chunkenc.ValNone
		}
		if !o.stale(typ) {
			return chunkenc.ValFloat
		}
	}
}

func (o *onesIterator) Seek(t int64) chunkenc.ValueType {
	typ := o.it.Seek(t)
	if typ == chunkenc.ValNone {
		return chunkenc.ValNone
	}
	if o.stale(typ) {
		return o.Next()
	}
	return chunkenc.ValFloat
}

func (o *onesIterator) At() (int64, float64) { return o.it.AtT(), 1 }
func (o *onesIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return o.it.AtT(), nil
}

func (o *onesIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return o.it.AtT(), nil
}
func (o *onesIterator) AtT() int64  { return o.it.AtT() }
func (o *onesIterator) AtST() int64 { return o.it.AtST() }
func (o *onesIterator) Err() error  { return o.it.Err() }
