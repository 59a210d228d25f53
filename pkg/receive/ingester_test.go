package receive

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type fixedLimits map[string]*tenancy.Limits

func (f fixedLimits) ByTenant(t string) *tenancy.Limits       { return f[t] }
func (f fixedLimits) AllByTenant() map[string]*tenancy.Limits { return f }

func series(name string, kv ...string) []*labelpb.Label {
	out := []*labelpb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &labelpb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func ts(lbls []*labelpb.Label, samples ...int64) *prompb.TimeSeries {
	t := &prompb.TimeSeries{Labels: lbls}
	for _, s := range samples {
		t.Samples = append(t.Samples, &prompb.Sample{Timestamp: s, Value: float64(s)})
	}
	return t
}

type countingShipper struct {
	mtx   sync.Mutex
	syncs int
	dir   string
}

func (c *countingShipper) Sync(context.Context) (int, error) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.syncs++
	return 0, nil
}

func newTestIngester(t *testing.T, dir string, limits fixedLimits, reg prometheus.Registerer, opts ...IngesterOption) *Ingester {
	t.Helper()
	cfg := DefaultIngesterConfig()
	ing := NewIngester(cfg, dir, tenancy.NewOverrides(tenancy.DefaultLimits(), limits), NewDiscardedSamples(reg), log.NewNopLogger(), reg, opts...)
	testutil.Ok(t, ing.Open())
	return ing
}

// readAll returns every series of a tenant, as the ingester's StoreAPI serves them, with their sample times.
func readAll(t *testing.T, ing *Ingester, tenant string) map[string][]int64 {
	t.Helper()
	st := store.NewTSDBStore(ing, log.NewNopLogger())
	srv := storetest.NewSeriesServer(tenancy.WithTenants(context.Background(), []string{tenant}))
	testutil.Ok(t, st.Series(&storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}}}, srv))
	out := map[string][]int64{}
	for _, s := range srv.Series {
		samples, err := storetest.SeriesSamples(s)
		testutil.Ok(t, err)
		cs := store.LabelsFromPB(s.Labels).String()
		for _, smp := range samples {
			out[cs] = append(out[cs], smp.T)
		}
	}
	return out
}

func TestIngesterPushAndRead(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{
		ts(series("up", "job", "x"), 1000, 2000, 3000),
		ts(series("up", "job", "y"), 1000),
	}}))
	testutil.Ok(t, ing.Push(context.Background(), "b", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("up", "job", "x"), 5000)}}))

	testutil.Equals(t, map[string][]int64{
		`{__name__="up", job="x", tenant_id="a"}`: {1000, 2000, 3000},
		`{__name__="up", job="y", tenant_id="a"}`: {1000},
	}, readAll(t, ing, "a"))
	testutil.Equals(t, map[string][]int64{`{__name__="up", job="x", tenant_id="b"}`: {5000}}, readAll(t, ing, "b"))
	testutil.Equals(t, []string{"a", "b"}, ing.Tenants())
}

func TestIngesterHistograms(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	h := tsdbutil.GenerateTestHistogram(3)
	pbh := &prompb.Histogram{
		Count: &prompb.Histogram_CountInt{CountInt: h.Count}, Sum: h.Sum, Schema: h.Schema, ZeroThreshold: h.ZeroThreshold,
		ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: h.ZeroCount}, PositiveDeltas: h.PositiveBuckets, NegativeDeltas: h.NegativeBuckets,
		Timestamp: 1000,
	}
	for _, s := range h.PositiveSpans {
		pbh.PositiveSpans = append(pbh.PositiveSpans, &prompb.BucketSpan{Offset: s.Offset, Length: s.Length})
	}
	for _, s := range h.NegativeSpans {
		pbh.NegativeSpans = append(pbh.NegativeSpans, &prompb.BucketSpan{Offset: s.Offset, Length: s.Length})
	}
	fh := &prompb.Histogram{Count: &prompb.Histogram_CountFloat{CountFloat: 3.5}, Sum: 7, Schema: 0, ZeroCount: &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: 0.5},
		PositiveSpans: []*prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveCounts: []float64{1, 2}, Timestamp: 1000}
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{
		{Labels: series("int_hist"), Histograms: []*prompb.Histogram{pbh}},
		{Labels: series("float_hist"), Histograms: []*prompb.Histogram{fh}},
	}}))
	got := readAll(t, ing, "a")
	testutil.Equals(t, []int64{1000}, got[`{__name__="int_hist", tenant_id="a"}`])
	testutil.Equals(t, []int64{1000}, got[`{__name__="float_hist", tenant_id="a"}`])

	q, err := ing.DB("a").ChunkQuerier(0, math.MaxInt64)
	testutil.Ok(t, err)
	defer q.Close()
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "int_hist"))
	testutil.Assert(t, set.Next())
	it := set.At().Iterator(nil)
	testutil.Assert(t, it.Next())
	ci := it.At().Chunk.Iterator(nil)
	ci.Next()
	_, got0 := ci.AtHistogram(nil)
	testutil.Equals(t, h.Count, got0.Count)
	testutil.Equals(t, h.Sum, got0.Sum)
}

// TestIngesterAppendErrors: bad samples are refused with Mimir's messages and counted; the good ones of the
// same push are kept.
func TestIngesterAppendErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	ing := newTestIngester(t, t.TempDir(), nil, reg)
	defer ing.Close()
	ctx := context.Background()
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 5000)}}))

	for _, tc := range []struct {
		name   string
		req    *prompb.TimeSeries
		wantID tenancy.ErrorID
		reason string
	}{
		{name: "out of order", req: ts(series("m"), 4000), wantID: tenancy.IDSampleOutOfOrder, reason: reasonSampleOutOfOrder},
		{name: "duplicate timestamp, other value", req: &prompb.TimeSeries{Labels: series("m"), Samples: []*prompb.Sample{{Timestamp: 5000, Value: 42}}}, wantID: tenancy.IDSampleDuplicateTimestamp, reason: reasonSampleDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{tc.req, ts(series("good", "case", tc.name), 6000)}})
			var te *tenancy.Error
			testutil.Assert(t, errors.As(err, &te), "want *tenancy.Error, got %v", err)
			testutil.Equals(t, tc.wantID, te.ID)
			testutil.Equals(t, 400, te.Status)
			testutil.Assert(t, strings.Contains(te.Error(), "(err-mimir-"+string(tc.wantID)+")"), te.Error())
			testutil.Equals(t, 1.0, promtestutil.ToFloat64(ing.discarded.total.WithLabelValues("a", tc.reason)))
			_, kept := readAll(t, ing, "a")[`{__name__="good", case="`+tc.name+`", tenant_id="a"}`]
			testutil.Assert(t, kept, "the good series of the push was not kept")
		})
	}
}

// TestIngesterSeriesLimits: the per-user limit (times this ingester's share) refuses new series and names the
// metric with the most refused series; the per-metric limit names its metric; existing series still append.
func TestIngesterSeriesLimits(t *testing.T) {
	limits := tenancy.DefaultLimits()
	limits.MaxGlobalSeriesPerUser = 6
	perMetric := tenancy.DefaultLimits()
	perMetric.MaxGlobalSeriesPerMetric = 2
	reg := prometheus.NewRegistry()
	ing := newTestIngester(t, t.TempDir(), fixedLimits{"a": &limits, "pm": &perMetric}, reg, WithLimitShare(func(string) float64 { return 0.5 }))
	defer ing.Close()
	ctx := context.Background()

	var req []*prompb.TimeSeries
	for i := 0; i < 3; i++ {
		req = append(req, ts(series("first", "i", string(rune('0'+i))), 1000))
	}
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: req})) // 3 = 6 × 0.5: at the limit now

	err := ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{
		ts(series("first", "i", "0"), 2000), // existing: accepted
		ts(series("few"), 2000),
		ts(series("many", "i", "1"), 2000), ts(series("many", "i", "2"), 2000),
	}})
	var te *tenancy.Error
	testutil.Assert(t, errors.As(err, &te), "got %v", err)
	testutil.Equals(t, tenancy.IDMaxSeriesPerUser, te.ID)
	testutil.Equals(t, "per-user series limit of 6 exceeded, metric with the most new series in this request: many, metric with the most series: first (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure max_global_series_per_user, or contact your service administrator.", te.Error())
	testutil.Equals(t, 3.0, promtestutil.ToFloat64(ing.discarded.total.WithLabelValues("a", reasonPerUserSeriesLimit)))
	testutil.Equals(t, []int64{1000, 2000}, readAll(t, ing, "a")[`{__name__="first", i="0", tenant_id="a"}`])

	// Per metric: 2 × 0.5 = 1 series of a metric.
	err = ing.Push(ctx, "pm", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m", "i", "1"), 1000), ts(series("m", "i", "2"), 1000), ts(series("other"), 1000)}})
	testutil.Assert(t, errors.As(err, &te), "got %v", err)
	testutil.Equals(t, tenancy.IDMaxSeriesPerMetric, te.ID)
	testutil.Assert(t, strings.Contains(te.Error(), "for metric m "), te.Error())
	testutil.Equals(t, 2, len(readAll(t, ing, "pm")))
}

// TestIngesterRestartReplaysWAL: data acknowledged before a crash (no flush, no clean close of the head) is
// back after reopening; limits do not refuse series that already existed.
func TestIngesterRestartReplaysWAL(t *testing.T) {
	dir := t.TempDir()
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry())
	var req []*prompb.TimeSeries
	for i := 0; i < 50; i++ {
		req = append(req, ts(series("m", "i", string(rune('A'+i))), 1000, 2000))
	}
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: req}))
	before := readAll(t, ing, "a")
	testutil.Ok(t, ing.Close())

	limits := tenancy.DefaultLimits()
	limits.MaxGlobalSeriesPerUser = 1
	ing2 := newTestIngester(t, dir, fixedLimits{"a": &limits}, prometheus.NewRegistry())
	defer ing2.Close()
	testutil.Equals(t, before, readAll(t, ing2, "a"))
	testutil.Equals(t, 50, len(before))
}

func TestIngesterFlushShips(t *testing.T) {
	dir := t.TempDir()
	shippers := map[string]*countingShipper{}
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry(), WithShippers(func(tenant, d string, lbls labels.Labels, _ prometheus.Registerer) (Shipper, error) {
		testutil.Equals(t, tenant, lbls.Get("tenant_id"))
		s := &countingShipper{dir: d}
		shippers[tenant] = s
		return s, nil
	}))
	defer ing.Close()
	hour := int64(time.Hour / time.Millisecond)
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 10, hour, 2*hour+10, 3*hour)}}))
	testutil.Ok(t, ing.Flush(context.Background()))
	testutil.Equals(t, 1, shippers["a"].syncs)

	// Blocks aligned to the 2h block duration: [0,2h) and [2h,4h).
	entries, err := os.ReadDir(filepath.Join(dir, "a"))
	testutil.Ok(t, err)
	blocks := 0
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, "a", e.Name(), "meta.json")); err == nil {
			blocks++
		}
	}
	testutil.Equals(t, 2, blocks)
	testutil.Equals(t, []int64{10, hour, 2*hour + 10, 3 * hour}, readAll(t, ing, "a")[`{__name__="m", tenant_id="a"}`])

	ing.StopWrites()
	err = ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 4*hour)}})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
}

func TestIngesterRemoteWriteTenant(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	req := func(tenant string) *storepb.WriteRequest {
		return &storepb.WriteRequest{Tenant: tenant, Timeseries: []*prompb.TimeSeries{ts(series("m"), 1000)}}
	}
	_, err := ing.RemoteWrite(context.Background(), req("a"))
	testutil.Ok(t, err)
	_, err = ing.RemoteWrite(context.Background(), req("../x"))
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
	_, err = ing.RemoteWrite(context.Background(), req(""))
	testutil.Equals(t, codes.Unauthenticated, status.Code(err)) // no tenant at all: "no org id", as Mimir
	_, err = ing.RemoteWrite(tenancy.WithTenants(context.Background(), []string{"b"}), req("a"))
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
	_, err = ing.RemoteWrite(tenancy.WithTenants(context.Background(), []string{"c"}), req(""))
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"a", "c"}, ing.Tenants())
}

// TestIngesterCloseIdle: a tenant without writes for the idle timeout, with an empty head and its blocks shipped,
// is closed and its directory removed; a later write opens it again.
func TestIngesterCloseIdle(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry(), WithIngesterClock(clock),
		WithShippers(func(tenant, d string, lbls labels.Labels, _ prometheus.Registerer) (Shipper, error) {
			return &countingShipper{dir: d}, nil
		}))
	defer ing.Close()
	ing.cfg.CloseIdleTSDBTimeout = time.Hour
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 1000)}}))

	now = now.Add(2 * time.Hour)
	testutil.Equals(t, 0, len(ing.CloseIdle())) // the head still holds the series
	db := ing.DB("a").(*tsdb.DB)
	testutil.Ok(t, compactHead(db, ing.cfg.BlockDuration.Milliseconds()))
	testutil.Ok(t, db.Head().Truncate(math.MaxInt64)) // what head GC does once the block is cut
	testutil.Equals(t, 0, len(ing.CloseIdle()))       // the block is not shipped yet

	var ids []ulid.ULID
	for _, b := range db.Blocks() {
		ids = append(ids, b.Meta().ULID)
	}
	testutil.Equals(t, 1, len(ids))
	testutil.Ok(t, block.WriteShipperMeta(log.NewNopLogger(), filepath.Join(dir, "a"), &block.ShipperMeta{Version: 1, Uploaded: ids}))
	testutil.Equals(t, []string{"a"}, ing.CloseIdle())
	_, err := os.Stat(filepath.Join(dir, "a"))
	testutil.Assert(t, os.IsNotExist(err), "the idle tenant's directory is still there")
	testutil.Equals(t, 0, len(ing.Tenants()))

	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 9_000_000)}}))
	testutil.Equals(t, []string{"a"}, ing.Tenants())
}

// TestIngesterOutOfOrderWindowAtRuntime: raising a tenant's out_of_order_time_window in the runtime overrides
// lets the open TSDB take older samples, without reopening it.
func TestIngesterOutOfOrderWindowAtRuntime(t *testing.T) {
	limits := fixedLimits{}
	ing := newTestIngester(t, t.TempDir(), limits, prometheus.NewRegistry())
	defer ing.Close()
	ctx := context.Background()
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 600_000)}}))
	err := ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 500_000)}})
	var te *tenancy.Error
	testutil.Assert(t, errors.As(err, &te) && te.ID == tenancy.IDSampleOutOfOrder, "got %v", err)

	l := tenancy.DefaultLimits()
	l.OutOfOrderTimeWindow = model.Duration(time.Hour)
	limits["a"] = &l
	ing.ApplyLimits()
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 500_000)}}))
	testutil.Equals(t, []int64{500_000, 600_000}, readAll(t, ing, "a")[`{__name__="m", tenant_id="a"}`])
}

// TestIngesterConcurrentSeriesCreationSurvivesCrash: pushes that race to create the same new series, then a crash
// (the WAL copied while the TSDB is open, as kill -9 leaves it): a restart brings back every sample the pushes
// acknowledged, and nothing more. Prometheus's head logs a series record when its creator commits, and a commit
// writes the WAL before the head: without the ingester's ordering, a concurrent push's samples could precede
// that record, or reach the WAL and the head in different orders, and a replay would differ from the head.
func TestIngesterConcurrentSeriesCreationSurvivesCrash(t *testing.T) {
	// In process (labels), and forwarded (series known by their received labels are appended by reference:
	// seriesRefs); each push also writes the series of the round before.
	for _, forwarded := range []bool{false, true} {
		t.Run(fmt.Sprintf("forwarded=%v", forwarded), func(t *testing.T) {
			testConcurrentSeriesCreationSurvivesCrash(t, forwarded)
		})
	}
}

func testConcurrentSeriesCreationSurvivesCrash(t *testing.T, forwarded bool) {
	dir := t.TempDir()
	ing := newTestIngester(t, dir, nil, prometheus.NewRegistry())
	defer ing.Close()
	const (
		rounds    = 30
		pushers   = 8
		perRound  = 20
		timeStep  = 1000
		roundStep = 100000
	)
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for p := 0; p < pushers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var req []*prompb.TimeSeries
				for s := 0; s < perRound; s++ {
					req = append(req, ts(series("m", "round", string(rune('A'+r)), "s", string(rune('a'+s))), int64(r*roundStep+p*timeStep)))
					if r > 0 {
						req = append(req, ts(series("m", "round", string(rune('A'+r-1)), "s", string(rune('a'+s))), int64(r*roundStep+p*timeStep)))
					}
				}
				// Out-of-order refusals are expected (the pushers race); what was accepted must survive.
				if forwarded {
					_ = remoteWriteWire(context.Background(), ing, &storepb.WriteRequest{Tenant: "a", Timeseries: req})
					return
				}
				_ = ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: req})
			}()
		}
		wg.Wait()
	}
	acked := readAll(t, ing, "a")
	testutil.Equals(t, rounds*perRound, len(acked))
	if forwarded {
		testutil.Equals(t, rounds*perRound, ing.get("a").refs.len())
	}

	crashed := t.TempDir()
	testutil.Ok(t, filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(crashed, rel), 0o755)
		}
		if info.Name() == "lock" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(crashed, rel), b, 0o644)
	}))
	restarted := newTestIngester(t, crashed, nil, prometheus.NewRegistry())
	defer restarted.Close()
	replayed := readAll(t, restarted, "a")
	for s, samples := range acked {
		testutil.Equals(t, samples, replayed[s], "samples of %s after the crash", s)
	}
	testutil.Equals(t, len(acked), len(replayed))
}

// TestIngesterSharedPushNeverCreatesSeries: while shared pushes run, the TSDB's PreCreation refuses a new series,
// and a shared append that meets one rolls back everything it appended (the push is then redone alone); one that
// meets only existing series commits.
func TestIngesterSharedPushNeverCreatesSeries(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	ctx := context.Background()
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("old"), 1000)}}))
	u, err := ing.getOrOpen("a", 0)
	testutil.Ok(t, err)

	for _, tc := range []struct {
		name          string
		req           []*prompb.TimeSeries
		wantExclusive bool
		want          map[string][]int64
	}{
		{
			name: "existing series only",
			req:  []*prompb.TimeSeries{ts(series("old"), 2000)},
			want: map[string][]int64{`{__name__="old", tenant_id="a"}`: {1000, 2000}},
		},
		{
			name:          "a new series after an existing one",
			req:           []*prompb.TimeSeries{ts(series("old"), 3000), ts(series("new"), 3000)},
			wantExclusive: true,
			want:          map[string][]int64{`{__name__="old", tenant_id="a"}`: {1000, 2000}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u.sharedAppends.Add(1)
			exclusive, err := ing.appendRequest(ctx, "a", u, &storepb.WriteRequest{Timeseries: tc.req}, nil, true)
			u.sharedAppends.Add(-1)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.wantExclusive, exclusive)
			testutil.Equals(t, tc.want, readAll(t, ing, "a"))
			testutil.Equals(t, uint64(1), u.db.Head().NumSeries())
		})
	}
	// Redone alone, the push creates the series.
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("old"), 3000), ts(series("new"), 3000)}}))
	testutil.Equals(t, map[string][]int64{`{__name__="old", tenant_id="a"}`: {1000, 2000, 3000}, `{__name__="new", tenant_id="a"}`: {3000}}, readAll(t, ing, "a"))
}

// TestIngesterMmapHeadChunks: MmapHeadChunks lets the full chunks of every tenant's head go from the Go heap
// (written to chunks_head), keeping each series' open chunk: with two tenants of 3,000 series of ~8 full chunks
// each (≥ 40 MB of chunk bytes, which Prometheus's DB would keep until its once-a-minute m-mapping), the live
// heap drops by more than half of that (each head's chunk write buffer keeps its last 4 MiB of chunks until it is
// flushed); and every sample is still read back, from the m-mapped chunks.
func TestIngesterMmapHeadChunks(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer ing.Close()
	const nSeries, nSamples = 6000, 1000 // over both tenants
	rng := rand.New(rand.NewSource(1))
	for _, tenant := range []string{"a", "b"} {
		for from := 0; from < nSamples; from += 100 {
			req := &storepb.WriteRequest{}
			for s := range nSeries / 2 {
				one := &prompb.TimeSeries{Labels: series("m", "s", fmt.Sprint(s))}
				for k := from; k < from+100; k++ {
					one.Samples = append(one.Samples, &prompb.Sample{Timestamp: testNowMs() + int64(k)*1000, Value: rng.Float64()}) // incompressible
				}
				req.Timeseries = append(req.Timeseries, one)
			}
			testutil.Ok(t, ing.Push(context.Background(), tenant, req))
		}
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC() // a second time: what sync.Pools held goes at the first
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	ing.MmapHeadChunks()
	after := heap()
	const fullChunkBytes = nSeries * (nSamples/120 - 1) * 120 * 8 // ≥ 8 bytes per random float: a lower bound
	t.Logf("live heap %d MB → %d MB; full chunks ≥ %d MB", before>>20, after>>20, fullChunkBytes>>20)
	testutil.Assert(t, before > after && before-after > fullChunkBytes/2, "live heap %d → %d bytes: the full chunks (≥ %d bytes) stayed", before, after, fullChunkBytes)
	for _, tenant := range []string{"a", "b"} {
		got := readAll(t, ing, tenant)
		testutil.Equals(t, nSeries/2, len(got))
		for s, samples := range got {
			testutil.Equals(t, nSamples, len(samples), "series %s", s)
		}
	}
}
