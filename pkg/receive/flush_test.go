package receive

import (
	"context"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// blockRanges returns the [MinTime, MaxTime) of a tenant's local blocks, sorted.
func blockRanges(t *testing.T, ing *Ingester, tenant string) [][2]int64 {
	t.Helper()
	db, ok := ing.DB(tenant).(*tsdb.DB)
	testutil.Assert(t, ok, "no TSDB for tenant %s", tenant)
	var out [][2]int64
	for _, b := range db.Blocks() {
		out = append(out, [2]int64{b.Meta().MinTime, b.Meta().MaxTime})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

func push(ing *Ingester, tenant string, series ...*prompb.TimeSeries) error {
	return ing.Push(context.Background(), tenant, &storepb.WriteRequest{Timeseries: series})
}

// TestIngesterFlushCutsAtTheDataMaxTime: a flush (POST /ingester/flush, or a graceful shutdown) cuts the head into
// blocks that end at the data's last sample, not at the end of the aligned block range, so the ingester goes on
// accepting every sample newer than what it held — as Mimir's forced compaction does. (A block ending at the
// range's end made the TSDB refuse every sample of up to 2 hours as too old.) Samples not newer than the data's
// max time are refused as too old after the flush, unless the out-of-order window takes them (Mimir's behaviour);
// those are cut into blocks by the next flush. Every acknowledged sample is served exactly once, before and after
// a restart, and after a flush nothing is left in the head.
func TestIngesterFlushCutsAtTheDataMaxTime(t *testing.T) {
	const (
		hour = int64(time.Hour / time.Millisecond)
		now  = int64(1_780_000_123_456) // not aligned to 2h
	)
	a, b := series("m", "s", "a"), series("m", "s", "b")
	for _, tc := range []struct {
		name      string
		oooWindow time.Duration
		before    []*prompb.TimeSeries // pushed before the flush
		after     []*prompb.TimeSeries // pushed after the flush, must be accepted
		tooOld    *prompb.TimeSeries   // pushed after the flush, must be refused as too old
		flushes   int                  // flushes after the pushes of after (0 or 1)
		blocks    [][2]int64
		want      map[string][]int64
	}{
		{
			name:   "one sample, then samples 1s newer of the same and of another series",
			before: []*prompb.TimeSeries{ts(a, now)},
			after:  []*prompb.TimeSeries{ts(a, now+1000), ts(b, now+1000)},
			tooOld: ts(b, now-10_000),
			blocks: [][2]int64{{now, now + 1}},
			want:   map[string][]int64{`{__name__="m", s="a", tenant_id="t"}`: {now, now + 1000}, `{__name__="m", s="b", tenant_id="t"}`: {now + 1000}},
		},
		{
			name:   "the next sample 1ms after the last one",
			before: []*prompb.TimeSeries{ts(a, now-5000, now), ts(b, now-3000)},
			after:  []*prompb.TimeSeries{ts(b, now+1)},
			tooOld: ts(b, now),
			blocks: [][2]int64{{now - 5000, now + 1}},
			want:   map[string][]int64{`{__name__="m", s="a", tenant_id="t"}`: {now - 5000, now}, `{__name__="m", s="b", tenant_id="t"}`: {now - 3000, now + 1}},
		},
		{
			name:    "data over three aligned ranges: one block per range, the last ending at the data",
			before:  []*prompb.TimeSeries{ts(a, 10, hour, 2*hour+10, 5*hour+7)},
			after:   []*prompb.TimeSeries{ts(a, 5*hour+8)},
			tooOld:  ts(b, 5*hour+7),
			flushes: 1,
			// Each block starts at its first sample; ranges without data ([4h, 6h) up to 5h+7) are skipped.
			blocks: [][2]int64{{10, 2 * hour}, {2*hour + 10, 4 * hour}, {5*hour + 7, 5*hour + 8}, {5*hour + 8, 5*hour + 9}},
			want:   map[string][]int64{`{__name__="m", s="a", tenant_id="t"}`: {10, hour, 2*hour + 10, 5*hour + 7, 5*hour + 8}},
		},
		{
			name:      "with an out-of-order window, older samples are taken and the next flush cuts them too",
			oooWindow: time.Hour,
			before:    []*prompb.TimeSeries{ts(a, now)},
			after:     []*prompb.TimeSeries{ts(b, now-10_000), ts(a, now+1000)},
			tooOld:    ts(b, now-2*hour),
			flushes:   1,
			// In-order [now, now+1), then [now+1000, now+1001); the out-of-order sample in a block of its own, which
			// the TSDB aligns to its 2h range.
			blocks: [][2]int64{{now - now%(2*hour), now - now%(2*hour) + 2*hour}, {now, now + 1}, {now + 1000, now + 1001}},
			want:   map[string][]int64{`{__name__="m", s="a", tenant_id="t"}`: {now, now + 1000}, `{__name__="m", s="b", tenant_id="t"}`: {now - 10_000}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			limits := tenancy.DefaultLimits()
			limits.OutOfOrderTimeWindow = model.Duration(tc.oooWindow)
			lim := fixedLimits{"t": &limits}
			ing := newTestIngester(t, dir, lim, prometheus.NewRegistry())
			testutil.Ok(t, push(ing, "t", tc.before...))
			testutil.Ok(t, ing.Flush(context.Background()))
			for _, s := range tc.after {
				testutil.Ok(t, push(ing, "t", s), "push after the flush")
			}
			err := push(ing, "t", tc.tooOld)
			var te *tenancy.Error
			testutil.Assert(t, errors.As(err, &te) && te.Status == 400, "want a 400 for a sample not newer than the flushed data, got %v", err)
			for range tc.flushes {
				testutil.Ok(t, ing.Flush(context.Background()))
				testutil.Equals(t, uint64(0), ing.DB("t").(*tsdb.DB).Head().NumSeries(), "series left in the head after a flush")
			}
			testutil.Equals(t, tc.blocks, blockRanges(t, ing, "t"))
			testutil.Equals(t, tc.want, readAll(t, ing, "t"))

			// A restart serves the same samples, once, and takes newer ones.
			testutil.Ok(t, ing.Close())
			ing = newTestIngester(t, dir, lim, prometheus.NewRegistry())
			defer ing.Close()
			testutil.Equals(t, tc.want, readAll(t, ing, "t"))
			testutil.Ok(t, push(ing, "t", ts(a, 10*hour+now)), "push after the restart")
		})
	}
}

// TestIngesterRestartAfterFlushTakesWrites: the sequence of a graceful restart — push, flush, close, open on the
// same directory — then a push stamped a moment later is accepted, and every sample is served once.
func TestIngesterRestartAfterFlushTakesWrites(t *testing.T) {
	now := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC).UnixMilli() + 1234
	dir := t.TempDir()
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry())
	testutil.Ok(t, push(ing, "t", ts(series("m"), now-15_000, now)))
	ing.StopWrites()
	testutil.Ok(t, ing.Flush(context.Background()))
	testutil.Ok(t, ing.Close())

	ing = newTestIngester(t, dir, nil, prometheus.NewRegistry())
	defer ing.Close()
	testutil.Ok(t, push(ing, "t", ts(series("m"), now+1000)))
	testutil.Ok(t, push(ing, "t", ts(series("m", "x", "new"), now+1000)))
	testutil.Equals(t, map[string][]int64{
		`{__name__="m", tenant_id="t"}`:          {now - 15_000, now, now + 1000},
		`{__name__="m", tenant_id="t", x="new"}`: {now + 1000},
	}, readAll(t, ing, "t"))
}

// TestCompactHeadExtremeTimestamps: cutting a head that holds samples at the ends of int64 ends (a sample stamped
// math.MaxInt64, after which an older ingester's flush looped forever), with everything cuttable in blocks and
// the rest left in the head.
func TestCompactHeadExtremeTimestamps(t *testing.T) {
	const blockMs = int64(2 * time.Hour / time.Millisecond)
	for _, tc := range []struct {
		name    string
		samples []int64
		blocks  [][2]int64
		head    int // series left in the head
	}{
		// The first range ends at the end of its aligned range (1_779_998_400_000 + 2h); the MaxInt64 sample stays.
		{name: "now and MaxInt64", samples: []int64{1_780_000_000_000, math.MaxInt64}, blocks: [][2]int64{{1_780_000_000_000, 1_780_005_600_000}}, head: 1},
		{name: "now and MaxInt64-1", samples: []int64{1_780_000_000_000, math.MaxInt64 - 1}, blocks: [][2]int64{
			{1_780_000_000_000, 1_780_005_600_000}, {math.MaxInt64 - 1, math.MaxInt64}}},
		{name: "only MaxInt64", samples: []int64{math.MaxInt64}, head: 1},
		{name: "MaxInt64-1", samples: []int64{math.MaxInt64 - 1}, blocks: [][2]int64{{math.MaxInt64 - 1, math.MaxInt64}}},
		{name: "negative and now", samples: []int64{-5, 1_780_000_000_000}, blocks: [][2]int64{{-5, 0}, {1_780_000_000_000, 1_780_000_000_001}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tsdb.DefaultOptions()
			opts.MinBlockDuration, opts.MaxBlockDuration = blockMs, blockMs
			opts.RetentionDuration = 0 // else the block at MaxInt64-1 puts the others out of retention
			db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
			testutil.Ok(t, err)
			defer db.Close()
			// The TSDB's own head compaction walks every 2h range up to a sample at MaxInt64 (holding the compaction
			// lock): the ingester refuses such samples; here only compactHead is under test.
			db.DisableCompactions()
			app := db.Appender(context.Background())
			for i, s := range tc.samples {
				_, err := app.Append(0, labels.FromStrings("__name__", "m", "i", string(rune('a'+i))), s, 1)
				testutil.Ok(t, err)
			}
			testutil.Ok(t, app.Commit())
			testutil.Ok(t, compactHead(db, blockMs))
			var got [][2]int64
			for _, b := range db.Blocks() {
				got = append(got, [2]int64{b.Meta().MinTime, b.Meta().MaxTime})
			}
			sort.Slice(got, func(i, j int) bool { return got[i][0] < got[j][0] })
			testutil.Equals(t, tc.blocks, got)
			testutil.Equals(t, uint64(tc.head), db.Head().NumSeries())
		})
	}
}

func TestNextHeadRange(t *testing.T) {
	const bd = int64(7200_000)
	for _, tc := range []struct {
		name             string
		headMin, headMax int64
		minT, maxT       int64
		ok, last         bool
	}{
		{name: "empty head", headMin: math.MaxInt64, headMax: math.MinInt64, last: true},
		{name: "one sample", headMin: 1000, headMax: 1000, minT: 1000, maxT: 1000, ok: true, last: true},
		{name: "within one range", headMin: 1000, headMax: bd - 1, minT: 1000, maxT: bd - 1, ok: true, last: true},
		{name: "over two ranges", headMin: 1000, headMax: bd, minT: 1000, maxT: bd - 1, ok: true},
		{name: "negative", headMin: -1, headMax: 5, minT: -1, maxT: -1, ok: true},
		{name: "max at MaxInt64", headMin: math.MaxInt64 - 10, headMax: math.MaxInt64, minT: math.MaxInt64 - 10, maxT: math.MaxInt64 - 1, ok: true, last: true},
		{name: "only MaxInt64", headMin: math.MaxInt64, headMax: math.MaxInt64, last: true},
		{name: "min above max", headMin: math.MaxInt64 - 1, headMax: math.MaxInt64 - 2, last: true},
		// MinInt64's aligned range starts below MinInt64 (MinInt64 mod 2h is 2824192): the range is cut from MinInt64.
		{name: "MinInt64 to MaxInt64", headMin: math.MinInt64, headMax: math.MaxInt64, minT: math.MinInt64, maxT: math.MinInt64 + bd - 1, ok: true},
		{name: "MinInt64 to now", headMin: math.MinInt64 + 3, headMax: 1_780_000_000_000, minT: math.MinInt64 + 3, maxT: math.MinInt64 + bd - 1, ok: true},
		{name: "the first aligned range above MinInt64", headMin: math.MinInt64 + 4375808, headMax: 0, minT: math.MinInt64 + 4375808, maxT: math.MinInt64 + 4375808 + bd - 1, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			minT, maxT, ok, last := nextHeadRange(tc.headMin, tc.headMax, bd)
			testutil.Equals(t, [4]any{tc.minT, tc.maxT, tc.ok, tc.last}, [4]any{minT, maxT, ok, last})
		})
	}
}
