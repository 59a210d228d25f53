package compact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type tseries struct {
	lset    labels.Labels
	samples []tsample
}

// labelledBlock writes a block of the given series with Prometheus's TSDB and gives it external labels ext.
func labelledBlock(t testing.TB, dir string, series []tseries, ext map[string]string, src block.SourceType) string {
	t.Helper()
	var ss []storage.Series
	for _, s := range series {
		cs := make([]chunks.Sample, len(s.samples))
		for i := range s.samples {
			cs[i] = s.samples[i]
		}
		ss = append(ss, storage.NewListSeries(s.lset, cs))
	}
	blk, err := tsdb.CreateBlock(ss, dir, 1000*Resolution1h, slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	m, err := block.ReadMetaFromDir(blk)
	testutil.Ok(t, err)
	m.Thanos.Labels = ext
	m.Thanos.Source = src
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), blk))
	return blk
}

func floats(from, to, step int64, v float64) []tsample {
	var out []tsample
	for ts := from; ts < to; ts += step {
		out = append(out, tsample{t: ts, f: v + float64(ts/step)})
	}
	return out
}

// sidecarSeries: a metric without labels next to the same metric with a label (their order changes once
// cluster/replica are inserted), a series carrying cluster itself (the external label replaces it), a native
// histogram, over 2h every 15s.
func sidecarSeries() []tseries {
	var hist []tsample
	for i := int64(0); i < 200; i++ {
		hist = append(hist, tsample{t: i * 30_000, h: tsdbutil.GenerateTestHistogram(i)})
	}
	return []tseries{
		{labels.FromStrings("__name__", "up"), floats(0, 2*Resolution1h, 15_000, 1)},
		{labels.FromStrings("__name__", "up", "instance", "a"), floats(0, 2*Resolution1h, 15_000, 2)},
		{labels.FromStrings("__name__", "up", "instance", "b", "job", "j"), floats(0, 2*Resolution1h, 15_000, 3)},
		{labels.FromStrings("__name__", "temp", "cluster", "inner", "zone", "z"), floats(0, Resolution1h, 60_000, 4)},
		{labels.FromStrings("__name__", "hist", "job", "j"), hist},
	}
}

var sidecarExt = map[string]string{tenancy.TenantIDLabel: "a", "cluster": "eu", "replica": "r1"}

type chunkRec struct {
	enc        chunkenc.Encoding
	mint, maxt int64
	data       string
}

// blockChunks reads every series' chunks (encoding, range, bytes) with Prometheus's index and chunk readers, in
// index order, keyed by labels.
func blockChunks(t *testing.T, dir string) ([]string, map[string][]chunkRec) {
	t.Helper()
	ir, err := index.NewFileReader(filepath.Join(dir, block.IndexFilename), index.DecodePostingsRaw)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, ir.Close()) }()
	cr, err := chunks.NewDirReader(filepath.Join(dir, block.ChunksDirname), aggrPool{chunkenc.NewPool()})
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, cr.Close()) }()
	k, v := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), k, v)
	testutil.Ok(t, err)
	var (
		order []string
		b     labels.ScratchBuilder
		metas []chunks.Meta
	)
	out := map[string][]chunkRec{}
	for p.Next() {
		testutil.Ok(t, ir.Series(p.At(), &b, &metas))
		key := b.Labels().String()
		order = append(order, key)
		for _, m := range metas {
			c, _, err := cr.ChunkOrIterable(m)
			testutil.Ok(t, err)
			out[key] = append(out[key], chunkRec{enc: c.Encoding(), mint: m.MinTime, maxt: m.MaxTime, data: string(c.Bytes())})
		}
	}
	testutil.Ok(t, p.Err())
	return order, out
}

// blockSamples reads every sample of the block through Prometheus's block reader and querier.
func blockSamples(t *testing.T, dir string) map[string][]string {
	t.Helper()
	b, err := tsdb.OpenBlock(slog.New(slog.DiscardHandler), dir, nil, nil)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, b.Close()) }()
	q, err := tsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, q.Close()) }()
	return seriesSamples(t, q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")))
}

func seriesSamples(t *testing.T, ss storage.SeriesSet) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var it chunkenc.Iterator
	for ss.Next() {
		key := ss.At().Labels().String()
		it = ss.At().Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				out[key] = append(out[key], fmt.Sprintf("%d=%g", ts, v))
			case chunkenc.ValHistogram:
				ts, h := it.AtHistogram(nil)
				out[key] = append(out[key], fmt.Sprintf("%d=%s", ts, h.String()))
			default:
				ts, h := it.AtFloatHistogram(nil)
				out[key] = append(out[key], fmt.Sprintf("%d=%s", ts, h.String()))
			}
		}
		testutil.Ok(t, it.Err())
	}
	testutil.Ok(t, ss.Err())
	return out
}

// parseKey parses labels.Labels.String() of the tests' label sets (values without quotes, commas or escapes).
func parseKey(s string) (labels.Labels, error) {
	b := labels.NewScratchBuilder(4)
	for _, kv := range strings.Split(strings.Trim(s, "{}"), ", ") {
		k, v, ok := strings.Cut(kv, "=")
		uv, err := strconv.Unquote(v)
		if !ok || err != nil {
			return labels.EmptyLabels(), fmt.Errorf("bad label %q in %q", kv, s)
		}
		b.Add(k, uv)
	}
	b.Sort()
	return b.Labels(), nil
}

// moved applies the external labels to the keys of m (the series' label strings), as the store-gateway does.
func moved[V any](t *testing.T, m map[string][]V, ext map[string]string) map[string][]V {
	t.Helper()
	e := extraExternalLabels(&block.Meta{Thanos: block.ThanosMeta{Labels: ext}})
	out := map[string][]V{}
	lb := labels.NewBuilder(labels.EmptyLabels())
	for k, v := range m {
		lset, err := parseKey(k)
		testutil.Ok(t, err)
		key := withExternal(lb, lset, e).String()
		out[key] = append(out[key], v...)
	}
	return out
}

func TestNormalise_MovesExternalLabelsIntoSeries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		resolution int64 // 0: the raw block; else downsampled to it first
	}{
		{name: "raw sidecar block", resolution: ResolutionRaw},
		{name: "5m downsampled block (aggregate chunks)", resolution: Resolution5m},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logger := context.Background(), log.NewNopLogger()
			tmp := t.TempDir()
			src := labelledBlock(t, tmp, sidecarSeries(), sidecarExt, block.SidecarSource)
			if tc.resolution != ResolutionRaw {
				m, _, err := Downsample(ctx, logger, src, tmp, tc.resolution, ulid.MustNew(5, nil))
				testutil.Ok(t, err)
				src = filepath.Join(tmp, m.ULID.String())
			}
			srcMeta, err := block.ReadMetaFromDir(src)
			testutil.Ok(t, err)

			out := t.TempDir()
			id := ulid.MustNew(9, nil)
			nm, stats, err := Normalise(ctx, logger, src, out, id)
			testutil.Ok(t, err)
			dir := filepath.Join(out, id.String())
			onDisk, err := block.ReadMetaFromDir(dir)
			testutil.Ok(t, err)
			testutil.Equals(t, nm.ULID, onDisk.ULID)

			// meta.json: only tenant_id left, resolution, sources and source kept, the original as parent.
			testutil.Equals(t, map[string]string{tenancy.TenantIDLabel: "a"}, onDisk.Thanos.Labels)
			testutil.Equals(t, tc.resolution, onDisk.Thanos.Downsample.Resolution)
			testutil.Equals(t, srcMeta.Compaction.Sources, onDisk.Compaction.Sources)
			testutil.Equals(t, []tsdb.BlockDesc{{ULID: srcMeta.ULID, MinTime: srcMeta.MinTime, MaxTime: srcMeta.MaxTime}}, onDisk.Compaction.Parents)
			testutil.Equals(t, srcMeta.Thanos.Source, onDisk.Thanos.Source)
			testutil.Equals(t, 1, len(onDisk.Thanos.Rewrites))
			testutil.Equals(t, srcMeta.Stats.NumSamples, onDisk.Stats.NumSamples)
			testutil.Equals(t, srcMeta.Stats.NumSeries, onDisk.Stats.NumSeries)
			testutil.Equals(t, 0, stats.MergedSeries)

			// Chunks byte for byte (aggregate chunks included), under the moved labels, in label order.
			_, srcChunks := blockChunks(t, src)
			order, gotChunks := blockChunks(t, dir)
			testutil.Equals(t, moved(t, srcChunks, sidecarExt), gotChunks)
			testutil.Assert(t, sort.SliceIsSorted(order, func(i, j int) bool {
				a, _ := parseKey(order[i])
				b, _ := parseKey(order[j])
				return labels.Compare(a, b) < 0
			}), "series not in label order: %v", order)
			for k := range gotChunks {
				l, err := parseKey(k)
				testutil.Ok(t, err)
				testutil.Equals(t, "eu", l.Get("cluster"), k)
				testutil.Equals(t, "r1", l.Get("replica"), k)
				testutil.Assert(t, !l.Has(tenancy.TenantIDLabel), k)
			}
			if tc.resolution == ResolutionRaw {
				// Samples through Prometheus's block reader.
				want := moved(t, blockSamples(t, src), sidecarExt)
				testutil.Equals(t, 5, len(want))
				testutil.Equals(t, want, blockSamples(t, dir))
			} else {
				for _, cs := range gotChunks {
					for _, c := range cs {
						testutil.Equals(t, ChunkEncAggr, c.enc)
					}
				}
			}
		})
	}
}

func TestNormalise_SeriesThatBecomeOne(t *testing.T) {
	for _, tc := range []struct {
		name      string
		second    []tsample
		wantErr   bool
		wantTotal int
	}{
		{name: "chunks after each other: merged", second: floats(Resolution1h, 2*Resolution1h, 60_000, 100), wantTotal: 120},
		{name: "overlapping chunks: refused", second: floats(30*60_000, 90*60_000, 60_000, 100), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := labelledBlock(t, t.TempDir(), []tseries{
				{labels.FromStrings("__name__", "m", "cluster", "old"), floats(0, Resolution1h, 60_000, 1)},
				{labels.FromStrings("__name__", "m"), tc.second},
			}, sidecarExt, block.SidecarSource)
			out := t.TempDir()
			id := ulid.MustNew(9, nil)
			_, stats, err := Normalise(context.Background(), log.NewNopLogger(), src, out, id)
			if tc.wantErr {
				testutil.Assert(t, errors.Is(err, ErrNotNormalisable), "error %v", err)
				_, serr := block.ReadMetaFromDir(filepath.Join(out, id.String()))
				testutil.NotOk(t, serr, "a refused block leaves nothing behind")
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, 1, stats.MergedSeries)
			got := blockSamples(t, filepath.Join(out, id.String()))
			testutil.Equals(t, 1, len(got))
			testutil.Equals(t, tc.wantTotal, len(got[`{__name__="m", cluster="eu", replica="r1"}`]))
		})
	}
}

func fetchTenant(t *testing.T, root objstore.Bucket, now func() time.Time) *block.Discovered {
	t.Helper()
	d, err := block.NewMetaFetcher(root, 2, time.Hour, now).Fetch(context.Background(), "a")
	testutil.Ok(t, err)
	return d
}

// pushedSeries are sidecarSeries as an ingester ships them: cluster and replica in the series.
func pushedSeries() []tseries {
	var out []tseries
	for _, s := range sidecarSeries() {
		b := labels.NewBuilder(s.lset)
		b.Set("cluster", "eu")
		b.Set("replica", "r1")
		out = append(out, tseries{lset: b.Labels(), samples: s.samples})
	}
	return out
}

func TestNormaliseTenant(t *testing.T) {
	ctx, logger := context.Background(), log.NewNopLogger()
	now := func() time.Time { return time.Unix(1_800_000_000, 0) }
	for _, tc := range []struct {
		name string
		// interrupted: an earlier run uploaded the normalised copy and died before marking the original.
		interrupted bool
		// step: the first run is NormaliseStep (the compaction cycle's step) rather than NormaliseTenant.
		step bool
	}{
		{name: "first run, then a re-run"},
		{name: "after a run killed between upload and deletion mark", interrupted: true},
		{name: "as a cycle's step", step: true},
		{name: "as a cycle's step, after a killed run", interrupted: true, step: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := filesystem.NewBucket(t.TempDir())
			testutil.Ok(t, err)
			bkt := objstore.NewPrefixedBucket(root, "a")
			tmp := t.TempDir()
			sidecar := labelledBlock(t, filepath.Join(tmp, "s"), sidecarSeries(), sidecarExt, block.SidecarSource)
			pushed := labelledBlock(t, filepath.Join(tmp, "p"), pushedSeries(), map[string]string{tenancy.TenantIDLabel: "a"}, block.ReceiveSource)
			var metas []*block.Meta
			for _, dir := range []string{sidecar, pushed} {
				m, err := block.ReadMetaFromDir(dir)
				testutil.Ok(t, err)
				testutil.Ok(t, block.Upload(ctx, logger, bkt, dir, m))
				metas = append(metas, m)
			}
			sm, pm := metas[0], metas[1]
			if tc.interrupted {
				out := t.TempDir()
				nm, _, err := Normalise(ctx, logger, sidecar, out, ulid.MustNew(uint64(now().UnixMilli()), nil))
				testutil.Ok(t, err)
				testutil.Ok(t, block.Upload(ctx, logger, bkt, filepath.Join(out, nm.ULID.String()), nm))
			}

			var res NormaliseResult
			if tc.step {
				testutil.Ok(t, NormaliseStep(logger, t.TempDir(), now)(ctx, "a", bkt))
				// What the step did, as NormaliseTenant would report it: the original is marked.
				d := fetchTenant(t, root, now)
				res.Replaced = slices.Collect(maps.Keys(d.DeletionMarks))
				res.New = map[ulid.ULID]*block.Meta{}
				if !tc.interrupted {
					for id, m := range d.Metas {
						if id != sm.ULID && id != pm.ULID {
							res.New[id] = m
						}
					}
				}
			} else {
				d := fetchTenant(t, root, now)
				res, err = NormaliseTenant(ctx, logger, bkt, d.Metas, d.DeletionMarks, t.TempDir(), now)
				testutil.Ok(t, err)
			}
			testutil.Ok(t, err)
			testutil.Equals(t, 0, len(res.Failed))
			testutil.Equals(t, []ulid.ULID{sm.ULID}, res.Replaced)
			if tc.interrupted {
				testutil.Equals(t, 0, len(res.New), "the copy of the interrupted run is reused")
			} else {
				testutil.Equals(t, 1, len(res.New))
			}

			check := func() {
				t.Helper()
				d := fetchTenant(t, root, now)
				testutil.Equals(t, 3, len(d.Metas), "original (marked, still served), its one normalised copy, the pushed block")
				testutil.Equals(t, []ulid.ULID{sm.ULID}, slices.Collect(maps.Keys(d.DeletionMarks)))
				testutil.Equals(t, pm.Thanos.Labels, d.Metas[pm.ULID].Thanos.Labels, "the pushed block is untouched")
				var norm *block.Meta
				for id, m := range d.Metas {
					if id != sm.ULID && id != pm.ULID {
						norm = m
					}
				}
				// One compaction group: same external labels and resolution as the pushed block.
				testutil.Equals(t, pm.Thanos.Labels, norm.Thanos.Labels)
				testutil.Equals(t, pm.Thanos.Downsample.Resolution, norm.Thanos.Downsample.Resolution)
				testutil.Equals(t, GroupKey(pm.Thanos.Labels, pm.Thanos.Downsample.Resolution), GroupKey(norm.Thanos.Labels, norm.Thanos.Downsample.Resolution))
				testutil.Assert(t, GroupKey(sm.Thanos.Labels, 0) != GroupKey(norm.Thanos.Labels, 0), "before, the sidecar block was a group of its own")
				// And the same series, with the same samples.
				nd := filepath.Join(t.TempDir(), norm.ULID.String())
				testutil.Ok(t, normDownload(ctx, bkt, norm.ULID, nd))
				testutil.Equals(t, blockSamples(t, pushed), blockSamples(t, nd))
			}
			check()

			// A re-run (metas fetched again: the original marked) does nothing.
			d := fetchTenant(t, root, now)
			res, err = NormaliseTenant(ctx, logger, bkt, d.Metas, d.DeletionMarks, t.TempDir(), now)
			testutil.Ok(t, err)
			testutil.Equals(t, 0, len(res.New)+len(res.Replaced)+len(res.Failed))
			// Nor when the deletion mark has not been seen (e.g. the fetcher's view is older).
			res, err = NormaliseTenant(ctx, logger, bkt, d.Metas, nil, t.TempDir(), now)
			testutil.Ok(t, err)
			testutil.Equals(t, 0, len(res.New)+len(res.Failed))
			// Nor the step of a compaction cycle, which lists the bucket itself.
			testutil.Ok(t, NormaliseStep(logger, t.TempDir(), now)(ctx, "a", bkt))
			check()
		})
	}
}

// The querier answers the same over the original sidecar block and over its normalised copy, each served by a
// store-gateway.
func TestNormalise_QuerierAnswersTheSame(t *testing.T) {
	ctx, logger := context.Background(), log.NewNopLogger()
	tmp := t.TempDir()
	src := labelledBlock(t, tmp, sidecarSeries(), sidecarExt, block.SidecarSource)
	id := ulid.MustNew(9, nil)
	_, _, err := Normalise(ctx, logger, src, tmp, id)
	testutil.Ok(t, err)

	qctx := tenancy.WithTenants(ctx, []string{"a"})
	answer := func(dir string, ms ...*labels.Matcher) map[string][]string {
		q, err := gatewayQueryable(t, dir).Querier(math.MinInt64, math.MaxInt64)
		testutil.Ok(t, err)
		defer func() { testutil.Ok(t, q.Close()) }()
		return seriesSamples(t, q.Select(qctx, true, nil, ms...))
	}
	for _, ms := range [][]*labels.Matcher{
		{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")},
		{labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "eu")},
		{labels.MustNewMatcher(labels.MatchEqual, "__name__", "temp"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "inner")},
		{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"), labels.MustNewMatcher(labels.MatchEqual, "replica", "r2")},
	} {
		t.Run(fmt.Sprint(ms), func(t *testing.T) {
			want := answer(src, ms...)
			if ms[0].Type == labels.MatchRegexp && len(ms) == 1 {
				testutil.Equals(t, 5, len(want))
			}
			testutil.Equals(t, want, answer(filepath.Join(tmp, id.String()), ms...))
		})
	}
}

// Blocks that cannot be normalised (a no-compact mark; series that would merge with overlapping chunks) are
// skipped, not failed: the step carries on and reports no error, and they stay as they are.
func TestNormaliseTenant_Skips(t *testing.T) {
	ctx, logger := context.Background(), log.NewNopLogger()
	now := func() time.Time { return time.Unix(1_800_000_000, 0) }
	root, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	bkt := objstore.NewPrefixedBucket(root, "a")
	tmp := t.TempDir()
	noCompact := labelledBlock(t, filepath.Join(tmp, "n"), sidecarSeries(), sidecarExt, block.SidecarSource)
	overlap := labelledBlock(t, filepath.Join(tmp, "o"), []tseries{
		{labels.FromStrings("__name__", "m", "cluster", "old"), floats(0, Resolution1h, 60_000, 1)},
		{labels.FromStrings("__name__", "m"), floats(30*60_000, 90*60_000, 60_000, 100)},
	}, map[string]string{tenancy.TenantIDLabel: "a", "cluster": "us"}, block.SidecarSource)
	var ids []ulid.ULID
	for _, dir := range []string{noCompact, overlap} {
		m, err := block.ReadMetaFromDir(dir)
		testutil.Ok(t, err)
		testutil.Ok(t, block.Upload(ctx, logger, bkt, dir, m))
		ids = append(ids, m.ULID)
	}
	testutil.Ok(t, block.MarkForNoCompaction(ctx, logger, bkt, ids[0], block.ManualNoCompactReason, "test", now))

	testutil.Ok(t, NormaliseStep(logger, t.TempDir(), now)(ctx, "a", bkt))
	d := fetchTenant(t, root, now)
	res, err := NormaliseTenant(ctx, logger, bkt, d.Metas, d.DeletionMarks, t.TempDir(), now)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(res.New)+len(res.Replaced)+len(res.Failed))
	testutil.Equals(t, 2, len(res.Skipped))
	for _, id := range ids {
		testutil.Assert(t, errors.Is(res.Skipped[id], ErrNotNormalisable), "block %s: %v", id, res.Skipped[id])
	}
	testutil.Equals(t, 2, len(d.Metas))
	testutil.Equals(t, 0, len(d.DeletionMarks))
}

// The point of normalising: a sidecar's block and the pushed block of the same series (the overlap of a migration)
// end, after one compaction cycle, as one block holding each sample once.
func TestNormalise_MigratedAndPushedStoredOnce(t *testing.T) {
	ctx, logger := context.Background(), log.NewNopLogger()
	for _, tc := range []struct {
		name      string
		normalise bool
		wantLive  int
	}{
		{name: "normalising on: one block", normalise: true, wantLive: 1},
		{name: "normalising off: two groups, two copies", normalise: false, wantLive: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := filesystem.NewBucket(t.TempDir())
			testutil.Ok(t, err)
			bkt := objstore.NewPrefixedBucket(root, "a")
			tmp := t.TempDir()
			pushed := labelledBlock(t, filepath.Join(tmp, "p"), pushedSeries(), map[string]string{tenancy.TenantIDLabel: "a"}, block.ReceiveSource)
			sidecar := labelledBlock(t, filepath.Join(tmp, "s"), sidecarSeries(), sidecarExt, block.SidecarSource)
			var perCopy uint64
			for _, dir := range []string{pushed, sidecar} {
				m, err := block.ReadMetaFromDir(dir)
				testutil.Ok(t, err)
				perCopy = m.Stats.NumSamples
				testutil.Ok(t, block.Upload(ctx, logger, bkt, dir, m))
			}
			cfg := DefaultConfig()
			cfg.ConsistencyDelay = 0
			cfg.Normalise.Enabled = tc.normalise
			c, err := New(cfg, root, t.TempDir(), func(string) time.Duration { return 0 }, logger, nil, nil)
			testutil.Ok(t, err)
			testutil.Ok(t, c.RunOnce(ctx))

			d, err := block.NewMetaFetcher(root, 2, 0, nil).Fetch(ctx, "a") // marked blocks left out
			testutil.Ok(t, err)
			testutil.Equals(t, tc.wantLive, len(d.Metas))
			var total uint64
			for _, m := range d.Metas {
				total += m.Stats.NumSamples
			}
			testutil.Equals(t, uint64(tc.wantLive)*perCopy, total)
			if tc.normalise {
				for id := range d.Metas {
					got := filepath.Join(t.TempDir(), id.String())
					testutil.Ok(t, normDownload(ctx, bkt, id, got))
					testutil.Equals(t, blockSamples(t, pushed), blockSamples(t, got))
				}
			}
		})
	}
}
