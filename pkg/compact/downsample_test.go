package compact

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const minute = int64(60_000)

type tsample struct {
	t int64
	f float64
	h *histogram.Histogram
}

func (s tsample) T() int64                      { return s.t }
func (s tsample) ST() int64                     { return 0 }
func (s tsample) F() float64                    { return s.f }
func (s tsample) H() *histogram.Histogram       { return s.h }
func (s tsample) FH() *histogram.FloatHistogram { return nil }
func (s tsample) Copy() chunks.Sample           { return s }
func (s tsample) Type() chunkenc.ValueType {
	if s.h != nil {
		return chunkenc.ValHistogram
	}
	return chunkenc.ValFloat
}

// rawBlock writes a block with Prometheus's TSDB (its head and compactor) with the given series, and gives it
// Thanos external labels, as a sidecar-shipped block has.
func rawBlock(t testing.TB, series map[string][]tsample) string {
	t.Helper()
	var ss []storage.Series
	for name, smp := range series {
		cs := make([]chunks.Sample, len(smp))
		for i := range smp {
			cs[i] = smp[i]
		}
		ss = append(ss, storage.NewListSeries(labels.FromStrings("__name__", name, "job", "test"), cs))
	}
	dir, err := tsdb.CreateBlock(ss, t.TempDir(), 1000*Resolution1h, slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	m, err := block.ReadMetaFromDir(dir)
	testutil.Ok(t, err)
	m.Thanos.Labels = map[string]string{tenancy.TenantIDLabel: "a", "cluster": "eu"}
	m.Thanos.Source = block.SidecarSource
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), dir))
	return dir
}

// testSeries: a gauge with a stale marker and a 3h gap (non-negative: the counter aggregate, which every
// series has, reads drops as resets, and with negative values re-aggregating it no longer matches the raw), a counter with resets (one of them where the 5m
// block cuts a chunk, checked by the test), a series with a single sample and a native histogram, over 3 days
// every minute.
func testSeries() map[string][]tsample {
	const n = 3 * 24 * 60
	var gauge, counter []tsample
	c := 0.0
	for i := int64(0); i < n; i++ {
		ts := i*minute + 7_000 // not aligned on windows
		if i < 600 || i >= 780 {
			gauge = append(gauge, tsample{t: ts, f: float64((i * 37) % 101)})
		}
		if i == 100 {
			gauge = append(gauge, tsample{t: ts + 1, f: math.Float64frombits(value.StaleNaN)})
		}
		switch {
		case i == 620 || i == 2000 || i%997 == 0 && i > 0:
			c = float64(i % 3) // resets to 0, 1 or 2
		case i == 3000:
			c /= 2 // a partial drop is a reset too
		default:
			c += float64(i % 5)
		}
		counter = append(counter, tsample{t: ts, f: c})
	}
	var hist []tsample
	for i := int64(0); i < 300; i++ {
		hist = append(hist, tsample{t: i * minute, h: tsdbutil.GenerateTestHistogram(i)})
	}
	return map[string][]tsample{
		"gauge":   gauge,
		"counter": counter,
		"single":  {{t: 5*Resolution1h + 123, f: 42}},
		"hist":    hist,
	}
}

// window is what the aggregates of one window must hold, computed from the raw samples.
type window struct {
	count         float64
	sum, min, max float64
	lastT         int64 // the window's last raw sample
}

func expectedWindows(raw []tsample, res int64) map[int64]window {
	out := map[int64]window{}
	for _, s := range raw {
		if math.IsNaN(s.f) {
			continue
		}
		end := s.t - s.t%res + res - 1
		w, ok := out[end]
		if !ok {
			w = window{min: s.f, max: s.f}
		}
		w.count++
		w.sum += s.f
		w.min, w.max = math.Min(w.min, s.f), math.Max(w.max, s.f)
		w.lastT = s.t
		out[end] = w
	}
	return out
}

// cumulative is the counter with resets applied at the last raw sample at or before t, as rate() sees it.
func cumulative(raw []tsample, t int64) float64 {
	total, last, n := 0.0, 0.0, 0
	for _, s := range raw {
		if s.t > t {
			break
		}
		if math.IsNaN(s.f) {
			continue
		}
		n++
		switch {
		case n == 1:
			total = s.f
		case s.f < last:
			total += s.f
		default:
			total += s.f - last
		}
		last = s.f
	}
	return total
}

func rawAt(raw []tsample, t int64) float64 {
	v := math.NaN()
	for _, s := range raw {
		if s.t <= t && !math.IsNaN(s.f) {
			v = s.f
		}
	}
	return v
}

// served reads series name from a store-gateway over a bucket holding only blk, at max resolution res.
func served(t *testing.T, blk string, res int64) map[string]*storepb.Series {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	m, err := block.ReadMetaFromDir(blk)
	testutil.Ok(t, err)
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, "a"), blk, m))
	cfg := store.DefaultBucketStoreConfig()
	cfg.Dir = t.TempDir()
	st := store.NewBucketStore(bkt, cfg, nil, nil, nil, nil, log.NewNopLogger(), prometheus.NewRegistry(), nil)
	t.Cleanup(func() { _ = st.Close() })
	testutil.Ok(t, st.SyncBlocks(context.Background()))
	srv := storetest.NewSeriesServer(tenancy.WithTenants(context.Background(), []string{"a"}))
	testutil.Ok(t, st.Series(&storepb.SeriesRequest{
		MinTime: math.MinInt64, MaxTime: math.MaxInt64, MaxResolutionWindow: res,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}},
	}, srv))
	out := map[string]*storepb.Series{}
	for _, s := range srv.Series {
		out[store.LabelsFromPB(s.GetLabels()).Get("__name__")] = s
	}
	return out
}

func pbSamples(t *testing.T, c *storepb.Chunk) []tsample {
	t.Helper()
	if c == nil {
		return nil
	}
	chk, err := storetest.RawChunkFromPB(c)
	testutil.Ok(t, err)
	var out []tsample
	it := chk.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		out = append(out, tsample{t: ts, f: v})
	}
	testutil.Ok(t, it.Err())
	return out
}

// checkAggregates checks a served downsampled series against its raw samples: every window's count, sum, min
// and max (a window split between two chunks, which 5m → 1h may do, merged), the windows' timestamps, the raw
// first and last values each counter chunk carries, and the counter read across chunks with resets applied.
// It returns the merged windows and whether a counter reset fell between two chunks.
func checkAggregates(t *testing.T, s *storepb.Series, raw []tsample, res int64) (map[int64]window, bool) {
	t.Helper()
	want := expectedWindows(raw, res)
	got := map[int64]window{}
	var counterIts []chunkenc.Iterator
	resetBetween := false
	prevLast := math.NaN()
	for _, c := range s.GetChunks() {
		testutil.Assert(t, c.GetRaw() == nil, "raw chunk in a downsampled block")
		cnt, sum, mn, mx := pbSamples(t, c.GetCount()), pbSamples(t, c.GetSum()), pbSamples(t, c.GetMin()), pbSamples(t, c.GetMax())
		testutil.Assert(t, len(cnt) > 0 && len(cnt) == len(sum) && len(cnt) == len(mn) && len(cnt) == len(mx), "aggregates of one chunk aligned")
		testutil.Equals(t, cnt[0].t, c.GetMinTime())
		testutil.Equals(t, cnt[len(cnt)-1].t, c.GetMaxTime())
		for i, x := range cnt {
			testutil.Assert(t, sum[i].t == x.t && mn[i].t == x.t && mx[i].t == x.t, "timestamps aligned")
			end := x.t - x.t%res + res - 1
			w, ok := want[end]
			testutil.Assert(t, ok, "window %d has no raw samples", end)
			// Stamped with the window's end, or, for a chunk's last window, with the chunk's last raw sample.
			testutil.Assert(t, x.t == end || (i == len(cnt)-1 && x.t < end && x.t <= w.lastT), "window %d stamped %d", end, x.t)
			g, seen := got[end]
			if !seen {
				g = window{min: math.Inf(1), max: math.Inf(-1)}
			}
			g.count += x.f
			g.sum += sum[i].f
			g.min, g.max = math.Min(g.min, mn[i].f), math.Max(g.max, mx[i].f)
			got[end] = g
		}
		ctr := pbSamples(t, c.GetCounter())
		testutil.Assert(t, len(ctr) == len(cnt)+2, "counter: raw first value, %d windows, raw last value; got %d samples", len(cnt), len(ctr))
		first, last := ctr[0], ctr[len(ctr)-1]
		testutil.Equals(t, ctr[len(ctr)-2].t, last.t)
		testutil.Equals(t, rawAt(raw, first.t), first.f, "raw first value of the chunk")
		testutil.Equals(t, rawAt(raw, last.t), last.f, "raw last value of the chunk")
		if first.f < prevLast {
			resetBetween = true
		}
		prevLast = last.f
		chk, err := storetest.RawChunkFromPB(c.GetCounter())
		testutil.Ok(t, err)
		counterIts = append(counterIts, chk.Iterator(nil))
	}
	testutil.Equals(t, len(want), len(got), "windows")
	for end, w := range want {
		g := got[end]
		testutil.Equals(t, w.count, g.count, "count of window %d", end)
		testutil.Assert(t, math.Abs(w.sum-g.sum) <= 1e-9*math.Max(1, math.Abs(w.sum)), "sum of window %d: want %v got %v", end, w.sum, g.sum)
		testutil.Equals(t, w.min, g.min, "min of window %d", end)
		testutil.Equals(t, w.max, g.max, "max of window %d", end)
	}
	// Read across chunks with resets applied (as the querier's rate does), the counter is the raw counter's.
	it := newCounterResetsIterator(counterIts...)
	n := 0
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		testutil.Equals(t, cumulative(raw, ts), v, "counter at %d", ts)
		n++
	}
	testutil.Ok(t, it.Err())
	testutil.Assert(t, n >= len(want), "counter samples %d, windows %d", n, len(want))
	return got, resetBetween
}

func TestDownsample_ReadBackThroughStoreGateway(t *testing.T) {
	logger := log.NewNopLogger()
	raw := testSeries()
	rawDir := rawBlock(t, raw)
	src, err := block.ReadMetaFromDir(rawDir)
	testutil.Ok(t, err)
	out := t.TempDir()
	ctx := context.Background()

	m5, st5, err := Downsample(ctx, logger, rawDir, out, Resolution5m, ulid.MustNew(1, nil))
	testutil.Ok(t, err)
	dir5 := filepath.Join(out, m5.ULID.String())
	m1h, _, err := Downsample(ctx, logger, dir5, out, Resolution1h, ulid.MustNew(2, nil))
	testutil.Ok(t, err)
	dir1h := filepath.Join(out, m1h.ULID.String())
	direct, _, err := Downsample(ctx, logger, rawDir, out, Resolution1h, ulid.MustNew(3, nil))
	testutil.Ok(t, err)
	dirDirect := filepath.Join(out, direct.ULID.String())

	t.Run("meta", func(t *testing.T) {
		for _, tc := range []struct {
			dir string
			res int64
		}{{dir5, Resolution5m}, {dir1h, Resolution1h}, {dirDirect, Resolution1h}} {
			m, err := block.ReadMetaFromDir(tc.dir)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.res, m.Thanos.Downsample.Resolution)
			testutil.Equals(t, src.Thanos.Labels, m.Thanos.Labels)
			testutil.Equals(t, block.CompactorSource, m.Thanos.Source)
			testutil.Equals(t, src.Compaction, m.Compaction)
			testutil.Equals(t, src.MinTime, m.MinTime)
			testutil.Equals(t, src.MaxTime, m.MaxTime)
			testutil.Equals(t, uint64(3), m.Stats.NumSeries, "hist left out")
			testutil.Equals(t, []string{"000001"}, m.Thanos.SegmentFiles)
			_, err = os.Stat(tc.dir + ".tmp-downsample")
			testutil.Assert(t, os.IsNotExist(err), "no temporary dir left")
		}
		testutil.Assert(t, st5.SkippedHistogramChunks > 0, "histogram chunks skipped")
		testutil.Equals(t, 1, st5.SkippedSeries)
		testutil.Equals(t, uint64(st5.Windows), m5.Stats.NumSamples)
	})

	got5 := served(t, dir5, Resolution5m)
	t.Run("5m from raw", func(t *testing.T) {
		testutil.Equals(t, 3, len(got5), "hist left out")
		testutil.Equals(t, `{__name__="gauge", cluster="eu", job="test", tenant_id="a"}`, store.LabelsFromPB(got5["gauge"].GetLabels()).String())
		testutil.Assert(t, len(got5["counter"].GetChunks()) > 1, "several chunks")
		_, resetBetween := checkAggregates(t, got5["counter"], raw["counter"], Resolution5m)
		testutil.Assert(t, resetBetween, "test data must put a counter reset between two 5m chunks")
		gauge, _ := checkAggregates(t, got5["gauge"], raw["gauge"], Resolution5m)
		for end := 600*minute + 7_000; end < 780*minute; end += Resolution5m {
			_, ok := gauge[end-end%Resolution5m+Resolution5m-1]
			testutil.Assert(t, !ok, "window in the gap at %d", end)
		}
		single, _ := checkAggregates(t, got5["single"], raw["single"], Resolution5m)
		testutil.Equals(t, map[int64]window{5*Resolution1h + Resolution5m - 1: {count: 1, sum: 42, min: 42, max: 42}}, single)
	})

	got1h, gotDirect := served(t, dir1h, Resolution1h), served(t, dirDirect, Resolution1h)
	for _, name := range []string{"gauge", "counter", "single"} {
		t.Run("1h from 5m equals 1h from raw: "+name, func(t *testing.T) {
			from5m, _ := checkAggregates(t, got1h[name], raw[name], Resolution1h)
			fromRaw, _ := checkAggregates(t, gotDirect[name], raw[name], Resolution1h)
			testutil.Equals(t, fromRaw, from5m)
		})
	}
	// A 5m store-gateway query over the 1h block only: Thanos serves 1h data to max_source_resolution=1h only.
	testutil.Equals(t, 0, len(served(t, dir1h, Resolution5m)))
}

func TestDownsample_Refuses(t *testing.T) {
	logger := log.NewNopLogger()
	rawDir := rawBlock(t, map[string][]tsample{"x": {{t: 0, f: 1}, {t: minute, f: 2}}})
	out := t.TempDir()
	id5, err := DownsampleDir(logger, rawDir, out, Resolution5m)
	testutil.Ok(t, err)
	for _, tc := range []struct {
		name string
		dir  string
		res  int64
	}{
		{"raw to raw", rawDir, ResolutionRaw},
		{"5m to 5m", filepath.Join(out, id5.String()), Resolution5m},
		{"no block", t.TempDir(), Resolution5m},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DownsampleDir(logger, tc.dir, out, tc.res)
			testutil.NotOk(t, err)
		})
	}
	ents, err := os.ReadDir(out)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(ents), "only the 5m block")
}

// The counter aggregates of consecutive chunks read as one counter, resets between chunks applied.
func TestDownsample_CounterIteratorAcrossChunks(t *testing.T) {
	// Two chunks as raw → 5m writes them: raw first value, windows, raw last value repeated at the last time.
	mk := func(s ...tsample) chunkenc.Iterator {
		c, app := newXOR()
		for _, x := range s {
			app.Append(0, x.t, x.f)
		}
		return c.Iterator(nil)
	}
	for _, tc := range []struct {
		name string
		its  []chunkenc.Iterator
		want []tsample
	}{
		{
			name: "reset between chunks",
			its: []chunkenc.Iterator{
				mk(tsample{t: 10, f: 5}, tsample{t: 99, f: 8}, tsample{t: 150, f: 12}, tsample{t: 150, f: 12}),
				mk(tsample{t: 210, f: 1}, tsample{t: 299, f: 4}, tsample{t: 299, f: 4}),
			},
			want: []tsample{{t: 10, f: 5}, {t: 99, f: 8}, {t: 150, f: 12}, {t: 210, f: 13}, {t: 299, f: 16}},
		},
		{
			name: "no reset; raw last value differs from the cumulative",
			its: []chunkenc.Iterator{
				// The chunk had a reset inside: cumulative 30 at 150 while the raw last value is 3.
				mk(tsample{t: 10, f: 20}, tsample{t: 150, f: 30}, tsample{t: 150, f: 3}),
				mk(tsample{t: 210, f: 7}, tsample{t: 299, f: 9}, tsample{t: 299, f: 9}),
			},
			want: []tsample{{t: 10, f: 20}, {t: 150, f: 30}, {t: 210, f: 34}, {t: 299, f: 36}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := newCounterResetsIterator(tc.its...)
			var got []tsample
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				got = append(got, tsample{t: ts, f: v})
			}
			testutil.Ok(t, it.Err())
			testutil.Equals(t, tc.want, got)
		})
	}
}

func TestCurrentWindow(t *testing.T) {
	for _, tc := range []struct{ t, want int64 }{
		{0, 299_999}, {299_999, 299_999}, {300_000, 599_999}, {-1, -1}, {-300_000, -1}, {-300_001, -300_001},
	} {
		testutil.Equals(t, tc.want, currentWindow(tc.t, Resolution5m), "t=%d", tc.t)
	}
}

// BenchmarkDownsample: raw → 5m of a block of 200 series × 1 day every 15s (1.15M samples).
func BenchmarkDownsample(b *testing.B) {
	series := map[string][]tsample{}
	for s := 0; s < 200; s++ {
		var smp []tsample
		v := 0.0
		for ts := int64(0); ts < 24*Resolution1h; ts += 15_000 {
			v += float64((ts / 15_000 * int64(s+1)) % 7)
			smp = append(smp, tsample{t: ts, f: v})
		}
		series["m"+string(rune('a'+s%26))+string(rune('a'+s/26))] = smp
	}
	dir := rawBlock(b, series)
	total := 0
	for _, s := range series {
		total += len(s)
	}
	out := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m, _, err := Downsample(context.Background(), log.NewNopLogger(), dir, out, Resolution5m, ulid.MustNew(uint64(i+1), nil))
		testutil.Ok(b, err)
		b.StopTimer()
		testutil.Ok(b, os.RemoveAll(filepath.Join(out, m.ULID.String())))
		b.StartTimer()
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
