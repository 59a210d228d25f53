// Package compact holds the compactor's block transformations. Today: downsampling in Thanos's format.
package compact

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/stratametrics/strata/pkg/block"
)

// Resolutions of Thanos's downsampled blocks, in milliseconds ("thanos.downsample.resolution").
const (
	ResolutionRaw int64 = 0
	Resolution5m  int64 = 5 * 60 * 1000
	Resolution1h  int64 = 60 * 60 * 1000
)

// Block spans from which Thanos's compactor downsamples (raw → 5m from 40h, 5m → 1h from 10 days).
const (
	Downsample5mMinSpan int64 = 40 * 60 * 60 * 1000
	Downsample1hMinSpan int64 = 10 * 24 * 60 * 60 * 1000
)

// DownsampleStats counts what Downsample wrote and left out.
type DownsampleStats struct {
	Series, Chunks, Windows int
	// SkippedHistogramChunks are native histogram chunks left out: Strata downsamples floats only (Thanos since
	// v0.38 writes histogram aggregates, which Strata's readers do not understand yet; older Thanos crashed).
	SkippedHistogramChunks int
	// SkippedSeries had nothing left to write (only histograms, or only NaN).
	SkippedSeries int
}

// DownsampleDir downsamples the block in dir (raw or 5m) to resolution (Resolution5m or Resolution1h) into
// outDir/<new ULID> and returns the new block's ULID. It is Downsample with a ULID of the current time, for
// tools and tests: e.g. to make a Thanos-layout bucket, DownsampleDir(logger, rawDir, tmp, Resolution5m) then
// block.Upload the result (its meta.json already says resolution 300000 and keeps the external labels).
func DownsampleDir(logger log.Logger, dir, outDir string, resolution int64) (ulid.ULID, error) {
	m, _, err := Downsample(context.Background(), logger, dir, outDir, resolution, ulid.Make())
	if err != nil {
		return ulid.ULID{}, err
	}
	return m.ULID, nil
}

// Downsample reads the block in srcDir and writes it downsampled to resolution as block id in dstDir/<id>, in
// Thanos's format and with Thanos's semantics (pkg/compact/downsample of Thanos):
//   - a raw block's float samples are aggregated per window [k·res, (k+1)·res) into count, sum, min, max and
//     counter, each window's sample stamped with the window's last millisecond (or the chunk's last sample's
//     time when earlier); a 5m block's aggregates are aggregated again (count and sum summed, min of mins,
//     max of maxes, counter re-based). Stale markers and NaNs are dropped.
//   - the counter aggregate holds the counter with resets applied since the chunk's first sample; as its first
//     sample the chunk's raw first value, and after its last window a repeat of that timestamp holding the raw
//     last value, so readers find the resets between chunks.
//   - one aggregate chunk (encoding 0xff) per ~140 windows, cut on window boundaries; 5m → 1h cuts only between
//     5m chunks, so each output chunk's raw first and last counter values are true values.
//   - meta.json is the source's with the new ULID, thanos.downsample.resolution set, source "compactor" and the
//     new stats; external labels, time range and compaction (level, sources, parents) are kept.
//   - native histogram chunks are skipped (counted in the stats), see DownsampleStats.
//
// Series are streamed: one series' samples in memory at a time. The block is written under a temporary name
// and renamed into place when complete, so dstDir never holds a partial block.
func Downsample(ctx context.Context, logger log.Logger, srcDir, dstDir string, resolution int64, id ulid.ULID) (_ *block.Meta, stats DownsampleStats, err error) {
	src, err := block.ReadMetaFromDir(srcDir)
	if err != nil {
		return nil, stats, errors.Wrap(err, "read source meta")
	}
	srcRes := src.Thanos.Downsample.Resolution
	if resolution <= srcRes || resolution <= 0 {
		return nil, stats, errors.Newf("block %s at resolution %d cannot be downsampled to %d", src.ULID, srcRes, resolution)
	}

	ir, err := index.NewFileReader(filepath.Join(srcDir, block.IndexFilename), index.DecodePostingsRaw)
	if err != nil {
		return nil, stats, errors.Wrapf(err, "open index of block %s", src.ULID)
	}
	defer errcapture.Do(&err, ir.Close, "close index reader")
	cr, err := chunks.NewDirReader(filepath.Join(srcDir, block.ChunksDirname), aggrPool{chunkenc.NewPool()})
	if err != nil {
		return nil, stats, errors.Wrapf(err, "open chunks of block %s", src.ULID)
	}
	defer errcapture.Do(&err, cr.Close, "close chunk reader")

	final := filepath.Join(dstDir, id.String())
	tmp := final + ".tmp-downsample"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, stats, errors.Wrap(err, "remove leftover temporary block")
	}
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, stats, errors.Wrap(err, "create temporary block dir")
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				level.Warn(logger).Log("msg", "remove temporary block", "dir", tmp, "err", rerr)
			}
		}
	}()

	w, err := newSeriesWriter(ctx, tmp, ir)
	if err != nil {
		return nil, stats, err
	}
	defer func() {
		if cerr := w.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	d := downsampler{srcRes: srcRes, res: resolution, stats: &stats}
	key, val := index.AllPostingsKey()
	p, err := ir.Postings(ctx, key, val)
	if err != nil {
		return nil, stats, errors.Wrap(err, "read postings")
	}
	var (
		builder labels.ScratchBuilder
		metas   []chunks.Meta
	)
	for n := 0; p.Next(); n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, stats, err
			}
		}
		ref := p.At()
		metas = metas[:0]
		if err := ir.Series(ref, &builder, &metas); err != nil {
			return nil, stats, errors.Wrapf(err, "read series %d", ref)
		}
		for i := range metas {
			chk, _, err := cr.ChunkOrIterable(metas[i])
			if err != nil {
				return nil, stats, errors.Wrapf(err, "read chunk %d of series %s", metas[i].Ref, builder.Labels())
			}
			metas[i].Chunk = chk
		}
		out, err := d.series(metas)
		if err != nil {
			return nil, stats, errors.Wrapf(err, "downsample series %s", builder.Labels())
		}
		if len(out) == 0 {
			stats.SkippedSeries++
			continue
		}
		if err := w.write(builder.Labels(), out); err != nil {
			return nil, stats, err
		}
		stats.Series++
		stats.Chunks += len(out)
	}
	if err := p.Err(); err != nil {
		return nil, stats, errors.Wrap(err, "iterate postings")
	}
	if err := w.close(); err != nil {
		return nil, stats, err
	}

	m := *src
	m.ULID = id
	m.Version = block.TSDBVersion1
	m.Thanos.Downsample.Resolution = resolution
	m.Thanos.Source = block.CompactorSource
	// The source's file list, index statistics and upload time describe the source's files.
	m.Thanos.Files, m.Thanos.IndexStats, m.Thanos.UploadTime = nil, block.IndexStats{}, time.Time{}
	m.Thanos.SegmentFiles, err = segmentFiles(tmp)
	if err != nil {
		return nil, stats, err
	}
	m.Stats = tsdb.BlockStats{
		NumSeries: uint64(stats.Series), NumChunks: uint64(stats.Chunks),
		NumSamples: uint64(stats.Windows), NumFloatSamples: uint64(stats.Windows),
	}
	if err := m.WriteToDir(logger, tmp); err != nil {
		return nil, stats, err
	}
	if err := fileutil.Replace(tmp, final); err != nil {
		return nil, stats, errors.Wrapf(err, "rename block %s into place", id)
	}
	if stats.SkippedHistogramChunks > 0 {
		level.Warn(logger).Log("msg", "native histogram chunks not downsampled", "block", src.ULID, "chunks", stats.SkippedHistogramChunks)
	}
	level.Info(logger).Log("msg", "downsampled block", "from", src.ULID, "to", id, "resolution", resolution,
		"series", stats.Series, "chunks", stats.Chunks, "windows", stats.Windows)
	return &m, stats, nil
}

func segmentFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return nil, errors.Wrap(err, "list chunk segments")
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// seriesWriter writes a block's chunks and index as series come, in label order: the TSDB's chunk writer and
// index writer, the index's symbols taken from the source block (a superset of those written).
type seriesWriter struct {
	cw     *chunks.Writer
	iw     *index.Writer
	ref    storage.SeriesRef
	closed bool
}

func newSeriesWriter(ctx context.Context, dir string, src *index.Reader) (_ *seriesWriter, err error) {
	cw, err := chunks.NewWriter(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return nil, errors.Wrap(err, "create chunk writer")
	}
	iw, err := index.NewWriter(ctx, filepath.Join(dir, block.IndexFilename))
	if err != nil {
		_ = cw.Close()
		return nil, errors.Wrap(err, "create index writer")
	}
	w := &seriesWriter{cw: cw, iw: iw}
	syms := src.Symbols()
	for syms.Next() {
		if err := iw.AddSymbol(syms.At()); err != nil {
			_ = w.close()
			return nil, errors.Wrap(err, "add symbol")
		}
	}
	if err := syms.Err(); err != nil {
		_ = w.close()
		return nil, errors.Wrap(err, "read symbols")
	}
	return w, nil
}

func (w *seriesWriter) write(lset labels.Labels, chks []chunks.Meta) error {
	if err := w.cw.WriteChunks(chks...); err != nil {
		return errors.Wrapf(err, "write chunks of %s", lset)
	}
	w.ref++
	if err := w.iw.AddSeries(w.ref, lset, chks...); err != nil {
		return errors.Wrapf(err, "add series %s to index", lset)
	}
	return nil
}

// close closes both writers once (the index is complete after it).
func (w *seriesWriter) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	cerr := w.cw.Close()
	if err := w.iw.Close(); err != nil {
		return errors.Wrap(err, "close index writer")
	}
	return errors.Wrap(cerr, "close chunk writer")
}

type sample struct {
	t int64
	v float64
}

// downsampler turns one series' chunks into aggregate chunks; its buffers are reused from series to series.
type downsampler struct {
	srcRes, res int64
	stats       *DownsampleStats

	buf   []sample
	batch []sample // raw: one chunk's samples without NaNs
	aggrs []aggrChunk
	it    chunkenc.Iterator
}

func (d *downsampler) series(metas []chunks.Meta) ([]chunks.Meta, error) {
	if d.srcRes == ResolutionRaw {
		d.buf = d.buf[:0]
		for _, m := range metas {
			if isHistogram(m.Chunk.Encoding()) {
				d.stats.SkippedHistogramChunks++
				continue
			}
			var err error
			d.it = m.Chunk.Iterator(d.it)
			if d.buf, err = expandFloats(d.it, d.buf); err != nil {
				return nil, errors.Wrapf(err, "read chunk %d", m.Ref)
			}
		}
		return d.raw(d.buf, d.res), nil
	}

	// A downsampled block: aggregate chunks, in time order and without overlaps as Thanos requires. Thanos's
	// compactor tolerates raw chunks in such blocks (empty ones skipped, others aggregated at the source
	// resolution first); so does this.
	d.aggrs = d.aggrs[:0]
	for i, m := range metas {
		if i > 0 && metas[i-1].MaxTime >= m.MinTime {
			return nil, errors.Newf("overlapping chunks [%d, %d] and [%d, %d]", metas[i-1].MinTime, metas[i-1].MaxTime, m.MinTime, m.MaxTime)
		}
		switch c := m.Chunk.(type) {
		case aggrChunk:
			if isHistogramAggr(c) {
				d.stats.SkippedHistogramChunks++
				continue
			}
			d.aggrs = append(d.aggrs, c)
		default:
			if isHistogram(c.Encoding()) {
				d.stats.SkippedHistogramChunks++
				continue
			}
			var err error
			d.it = c.Iterator(d.it)
			if d.buf, err = expandFloats(d.it, d.buf[:0]); err != nil {
				return nil, errors.Wrapf(err, "read chunk %d", m.Ref)
			}
			for _, a := range d.raw(d.buf, d.srcRes) {
				d.aggrs = append(d.aggrs, a.Chunk.(aggrChunk))
			}
		}
	}
	if len(d.aggrs) == 0 {
		return nil, nil
	}
	return d.aggregates(d.aggrs)
}

func isHistogram(e chunkenc.Encoding) bool {
	switch e {
	case chunkenc.EncHistogram, chunkenc.EncFloatHistogram, chunkenc.EncHistogramST, chunkenc.EncFloatHistogramST:
		return true
	}
	return false
}

// isHistogramAggr says whether an aggregate chunk holds histogram aggregates (Thanos ≥ v0.38's downsampled
// native histograms: count and sum as histogram chunks).
func isHistogramAggr(c aggrChunk) bool {
	for t := aggrCount; t < numAggrs; t++ {
		if a, err := c.get(t); err == nil && isHistogram(a.Encoding()) {
			return true
		}
	}
	return false
}

// currentWindow is the last millisecond of the window of resolution r that t falls into.
func currentWindow(t, r int64) int64 {
	w := t - t%r
	if t%r < 0 { // negative timestamps: windows stay aligned on multiples of r
		w -= r
	}
	return w + r - 1
}

// targetChunkCount is Thanos's number of output chunks: the windows expected in [mint, maxt] (scaled by how
// densely samples at inRes fill it), at most 140 per chunk on average.
func targetChunkCount(mint, maxt, inRes, outRes int64, count int) int {
	maxWindows := float64((maxt - mint) / outRes)
	fullness := float64(count) / (float64(maxt-mint) / float64(inRes))
	if fullness > 1 || math.IsNaN(fullness) {
		fullness = 1
	}
	exp := int(maxWindows*fullness) + 1
	x := 1
	for exp/x > 140 {
		x++
	}
	return x
}

// aggregator accumulates one window's count, sum, min and max, and the counter (resets applied) since its
// first sample.
type aggregator struct {
	total         int
	count         int
	sum, min, max float64
	counter, last float64
}

func (a *aggregator) reset() {
	a.count, a.sum, a.min, a.max = 0, 0, math.MaxFloat64, -math.MaxFloat64
}

func (a *aggregator) add(v float64) {
	switch {
	case a.total == 0:
		a.counter = v
	case v < a.last:
		a.counter += v // a reset: the counter restarted from 0
	default:
		a.counter += v - a.last
	}
	a.last = v
	a.total++
	a.count++
	a.sum += v
	a.min = math.Min(a.min, v)
	a.max = math.Max(a.max, v)
}

// downsampleBatch aggregates data (in time order) per window of resolution r and calls add at the end of each
// window with the window's timestamp: its last millisecond, or the batch's last sample's time when earlier
// (a later batch may start inside the window). It returns the last window's timestamp.
func downsampleBatch(data []sample, r int64, add func(t int64, a *aggregator)) int64 {
	var (
		a     aggregator
		nextT int64
		open  bool
		lastT = data[len(data)-1].t
	)
	for _, s := range data {
		if value.IsStaleNaN(s.v) {
			continue
		}
		if !open || s.t > nextT {
			if open {
				add(nextT, &a)
			}
			a.reset()
			open = true
			nextT = min(currentWindow(s.t, r), lastT)
		}
		a.add(s.v)
	}
	if open {
		add(nextT, &a)
	}
	return nextT
}

func newXOR() (*chunkenc.XORChunk, chunkenc.Appender) {
	c := chunkenc.NewXORChunk()
	app, _ := c.Appender() // a new XOR chunk's appender cannot fail
	return c, app
}

// raw aggregates raw samples (in time order, stale markers dropped) into aggregate chunks at resolution r.
func (d *downsampler) raw(data []sample, r int64) []chunks.Meta {
	if len(data) == 0 {
		return nil
	}
	// Thanos assumes a raw resolution of 1m to size the chunks.
	n := targetChunkCount(data[0].t, data[len(data)-1].t, 60*1000, r, len(data))
	batchSize := len(data)/n + 1
	var out []chunks.Meta
	for len(data) > 0 {
		j := min(batchSize, len(data))
		// Finish the window the batch ends in, so that a window is never split between chunks.
		for end := currentWindow(data[j-1].t, r); j < len(data) && data[j].t <= end; j++ {
		}
		batch := d.batch[:0]
		for _, s := range data[:j] {
			if !math.IsNaN(s.v) {
				batch = append(batch, s)
			}
		}
		d.batch = batch
		data = data[j:]
		if len(batch) == 0 {
			continue
		}
		var (
			parts [numAggrs]chunkenc.Chunk
			apps  [numAggrs]chunkenc.Appender
		)
		for i := range parts {
			parts[i], apps[i] = newXOR()
		}
		// The counter starts with the raw first value and ends with the raw last value at the last window's time.
		apps[aggrCounter].Append(0, batch[0].t, batch[0].v)
		mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
		lastT := downsampleBatch(batch, r, func(t int64, a *aggregator) {
			mint, maxt = min(mint, t), max(maxt, t)
			apps[aggrCount].Append(0, t, float64(a.count))
			apps[aggrSum].Append(0, t, a.sum)
			apps[aggrMin].Append(0, t, a.min)
			apps[aggrMax].Append(0, t, a.max)
			apps[aggrCounter].Append(0, t, a.counter)
			d.stats.Windows++
		})
		apps[aggrCounter].Append(0, lastT, batch[len(batch)-1].v)
		out = append(out, chunks.Meta{MinTime: mint, MaxTime: maxt, Chunk: encodeAggrChunk(parts)})
	}
	return out
}

// aggregates aggregates the aggregate chunks of a series (in time order) into chunks at d.res, cutting only
// between input chunks.
func (d *downsampler) aggregates(in []aggrChunk) ([]chunks.Meta, error) {
	windows := 0
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	for _, c := range in {
		cnt, err := c.get(aggrCount)
		if errors.Is(err, errAggrAbsent) {
			continue
		}
		if err != nil {
			return nil, err
		}
		windows += cnt.NumSamples()
		d.it = cnt.Iterator(d.it)
		for d.it.Next() != chunkenc.ValNone {
			mint, maxt = min(mint, d.it.AtT()), max(maxt, d.it.AtT())
		}
	}
	n := 1
	if windows > 0 {
		n = targetChunkCount(mint, maxt, d.srcRes, d.res, windows)
	}
	batchSize := max(len(in)/n, 1)
	var out []chunks.Meta
	for len(in) > 0 {
		j := min(batchSize, len(in))
		chk, ok, err := d.aggregateBatch(in[:j])
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, chk)
		}
		in = in[j:]
	}
	return out, nil
}

func (d *downsampler) aggregateBatch(in []aggrChunk) (chunks.Meta, bool, error) {
	var parts [numAggrs]chunkenc.Chunk
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	windows := 0
	for _, at := range []aggrType{aggrCount, aggrSum, aggrMin, aggrMax} {
		d.buf = d.buf[:0]
		for _, c := range in {
			a, err := c.get(at)
			if errors.Is(err, errAggrAbsent) {
				continue
			}
			if err != nil {
				return chunks.Meta{}, false, err
			}
			d.it = a.Iterator(d.it)
			if d.buf, err = expandFloats(d.it, d.buf); err != nil {
				return chunks.Meta{}, false, errors.Wrapf(err, "read %s aggregate", aggrNames[at])
			}
		}
		if len(d.buf) == 0 {
			continue
		}
		c, app := newXOR()
		parts[at] = c
		downsampleBatch(d.buf, d.res, func(t int64, a *aggregator) {
			mint, maxt = min(mint, t), max(maxt, t)
			var v float64
			switch at {
			case aggrCount, aggrSum:
				v = a.sum // a window's count is the sum of its sub-windows' counts
			case aggrMin:
				v = a.min
			case aggrMax:
				v = a.max
			}
			app.Append(0, t, v)
			if at == aggrCount {
				windows++
			}
		})
	}

	var its []chunkenc.Iterator
	for _, c := range in {
		a, err := c.get(aggrCounter)
		if errors.Is(err, errAggrAbsent) {
			continue
		}
		if err != nil {
			return chunks.Meta{}, false, err
		}
		its = append(its, a.Iterator(nil))
	}
	if len(its) > 0 {
		it := newCounterResetsIterator(its...)
		var err error
		if d.buf, err = expandFloats(it, d.buf[:0]); err != nil {
			return chunks.Meta{}, false, errors.Wrap(err, "read counter aggregate")
		}
		if len(d.buf) > 0 {
			c, app := newXOR()
			parts[aggrCounter] = c
			app.Append(0, d.buf[0].t, d.buf[0].v)
			lastT := downsampleBatch(d.buf, d.res, func(t int64, a *aggregator) {
				mint, maxt = min(mint, t), max(maxt, t)
				app.Append(0, t, a.counter)
			})
			app.Append(0, lastT, it.lastV)
		}
	}
	if mint > maxt {
		return chunks.Meta{}, false, nil
	}
	d.stats.Windows += windows
	return chunks.Meta{MinTime: mint, MaxTime: maxt, Chunk: encodeAggrChunk(parts)}, true, nil
}
