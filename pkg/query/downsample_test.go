package query

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const (
	res5m = int64(5 * time.Minute / time.Millisecond)
	res1h = int64(time.Hour / time.Millisecond)
)

// downsampledStore is a StoreAPI holding only downsampled data (5m and 1h), as a store-gateway with only
// downsampled blocks sends it: the coarsest resolution not above the request's max_resolution_window, and only
// the aggregates the request asks for. Raw requests get nothing.
type downsampledStore struct {
	storepb.UnimplementedStoreServer
	infopb.UnimplementedInfoServer
	byRes map[int64][]*storepb.Series

	mtx  sync.Mutex
	reqs []*storepb.SeriesRequest
	maxT int64
}

func (s *downsampledStore) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	return &infopb.InfoResponse{ComponentType: "store", Store: &infopb.StoreInfo{MinTime: 0, MaxTime: s.maxT}}, nil
}

func (s *downsampledStore) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	s.mtx.Lock()
	s.reqs = append(s.reqs, r)
	s.mtx.Unlock()
	ms, err := store.MatchersFromPB(r.GetMatchers())
	if err != nil {
		return err
	}
	res := int64(0)
	for _, c := range []int64{res1h, res5m} {
		if c <= r.GetMaxResolutionWindow() {
			res = c
			break
		}
	}
	want := r.GetAggregates()
	for _, series := range s.byRes[res] {
		lset := store.LabelsFromPB(series.GetLabels())
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(lset.Get(m.Name))
		}
		if !ok {
			continue
		}
		out := &storepb.Series{Labels: series.GetLabels()}
		for _, c := range series.GetChunks() {
			if c.GetMaxTime() < r.GetMinTime() || c.GetMinTime() > r.GetMaxTime() {
				continue
			}
			o := &storepb.AggrChunk{MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime()}
			for _, a := range want {
				switch a {
				case storepb.Aggr_COUNT:
					o.Count = c.GetCount()
				case storepb.Aggr_SUM:
					o.Sum = c.GetSum()
				case storepb.Aggr_MIN:
					o.Min = c.GetMin()
				case storepb.Aggr_MAX:
					o.Max = c.GetMax()
				case storepb.Aggr_COUNTER:
					o.Counter = c.GetCounter()
				}
			}
			out.Chunks = append(out.Chunks, o)
		}
		if err := srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: out}}); err != nil {
			return err
		}
	}
	return nil
}

// downsampleForTest downsamples raw samples as Thanos's compactor does (pkg/compact/downsample): one aggregate
// sample per window at the window's last millisecond (count, sum, min, max, and the counter with resets
// applied); chunks of chunkWindows windows; each counter chunk starts with the chunk's first raw sample and ends
// with a repeat of its last timestamp holding the last raw value.
func downsampleForTest(t testing.TB, samples []harnessSample, res int64, chunkWindows int) []*storepb.AggrChunk {
	t.Helper()
	type window struct {
		end                           int64
		count, sum, min, max, counter float64
	}
	var (
		out     []*storepb.AggrChunk
		windows []window
		first   harnessSample
		lastRaw float64
		counter float64
	)
	flush := func() {
		if len(windows) == 0 {
			return
		}
		var chks [5]*chunkenc.XORChunk
		var apps [5]chunkenc.Appender
		for i := range chks {
			chks[i] = chunkenc.NewXORChunk()
			app, err := chks[i].Appender()
			testutil.Ok(t, err)
			apps[i] = app
		}
		apps[4].Append(0, first.t, first.f)
		for _, w := range windows {
			apps[0].Append(0, w.end, w.count)
			apps[1].Append(0, w.end, w.sum)
			apps[2].Append(0, w.end, w.min)
			apps[3].Append(0, w.end, w.max)
			apps[4].Append(0, w.end, w.counter)
		}
		last := windows[len(windows)-1]
		apps[4].Append(0, last.end, lastRaw)
		pb := func(c *chunkenc.XORChunk) *storepb.Chunk {
			return &storepb.Chunk{Type: storepb.Chunk_XOR, Data: c.Bytes()}
		}
		out = append(out, &storepb.AggrChunk{
			MinTime: first.t, MaxTime: last.end,
			Count: pb(chks[0]), Sum: pb(chks[1]), Min: pb(chks[2]), Max: pb(chks[3]), Counter: pb(chks[4]),
		})
		windows = nil
	}
	for _, s := range samples {
		end := s.t - s.t%res + res - 1
		newWindow := len(windows) == 0 || windows[len(windows)-1].end != end
		if newWindow && len(windows) == chunkWindows {
			flush()
		}
		switch {
		case len(windows) == 0:
			first, counter = s, s.f
		case s.f >= lastRaw:
			counter += s.f - lastRaw
		default:
			counter += s.f // reset
		}
		if newWindow {
			windows = append(windows, window{end: end, min: math.Inf(1), max: math.Inf(-1)})
		}
		w := &windows[len(windows)-1]
		w.count++
		w.sum += s.f
		w.min, w.max = min(w.min, s.f), max(w.max, s.f)
		w.counter = counter
		lastRaw = s.f
	}
	flush()
	return out
}

// downsampleTestSeries are a counter (one reset) and a gauge scraped every 15s for 16h.
func downsampleTestSeries() []harnessSeries {
	var counter, gauge []harnessSample
	v := 0.0
	for i := 0; i < 16*240; i++ {
		ts := int64(i) * 15_000
		v += float64(1 + i%7)
		if i == 2000 || i == 3000 || i == 3360 || i == 3600 { // resets: inside chunks (8h20m, 12h30m), at chunks' starts (14h, 15h)
			v = 3
		}
		counter = append(counter, harnessSample{t: ts, f: v})
		gauge = append(gauge, harnessSample{t: ts, f: 50 + 10*math.Sin(float64(i)/20) + float64(i%13)})
	}
	return []harnessSeries{
		{lset: labels.FromStrings("__name__", "ds_counter", "job", "a"), samples: counter},
		{lset: labels.FromStrings("__name__", "ds_gauge", "job", "a"), samples: gauge},
	}
}

func newDownsampledStore(t testing.TB, series []harnessSeries) *downsampledStore {
	s := &downsampledStore{byRes: map[int64][]*storepb.Series{}, maxT: 16 * res1h}
	// 5m: chunks of 1h, so that counter resets across chunks are read too; 1h: chunks of 3h.
	for res, windows := range map[int64]int{res5m: 12, res1h: 3} {
		for _, hs := range series {
			s.byRes[res] = append(s.byRes[res], &storepb.Series{Labels: store.LabelsToPB(hs.lset), Chunks: downsampleForTest(t, hs.samples, res, windows)})
		}
	}
	return s
}

// relDiff is |a-b| relative to |a|.
func relDiff(a, b float64) float64 { return math.Abs(a-b) / math.Abs(a) }

// rangeRes is the range of rate/increase in resolutions (at least 3h): PromQL extrapolates over points one resolution apart,
// which underestimates by up to about half a resolution over the range.
const rangeRes = 12

// Downsampled answers agree with the raw ones within stated tolerances; the test fails past them. Thanos
// documents no number: docs/components/compact.md ("Downsampling") says downsampling rewrites series "to reduce
// overall resolution of the samples without losing accuracy over longer time ranges", the aggregates being
// kept "to keep precision on large duration queries" (docs/components/query.md, "Auto downsampling", only says
// which resolution a query reads). Strata's tolerances, with ranges that are multiples of the resolution and
// evaluation times on window ends:
//   - count_over_time: exact (tolerance 0): the COUNT aggregates are summed (see countSamplesLabel);
//   - sum/min/max/avg_over_time: the aggregates of exactly the raw samples in range, up to float rounding
//     (1e-9 relative);
//   - rate/increase over the counter aggregate: one point per window, over which PromQL extrapolates: within
//     10% with a range of at least 12 resolutions and 3h (rangeRes); measured 0.14% at 5m, 5.3% at 1h.
func TestDownsampledReads_AgreeWithRaw(t *testing.T) {
	series := downsampleTestSeries()
	refDB := harnessOpenDB(t, series, func(int64) bool { return true })
	ds := newDownsampledStore(t, series)
	logger := log.NewNopLogger()
	client := harnessServeStore(t, ds, ds)
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{client} }, 0, logger, nil)
	q := NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil)
	eng, refEng := promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)), promql.NewEngine(refEngineOpts(logger))
	ctx := tenancy.WithTenants(context.Background(), []string{harnessTenant})

	start, end, step := time.UnixMilli(12*res1h-1), time.UnixMilli(16*res1h-1), time.Hour
	rangeQuery := func(ctx context.Context, q storage.Queryable, qs string) promql.Matrix {
		t.Helper()
		eng := eng
		if q == storage.Queryable(refDB) {
			eng = refEng
		}
		qry, err := eng.NewRangeQuery(ctx, q, nil, qs, start, end, step)
		testutil.Ok(t, err)
		defer qry.Close()
		res := qry.Exec(ctx)
		testutil.Ok(t, res.Err)
		m, err := res.Matrix()
		testutil.Ok(t, err)
		out := make(promql.Matrix, 0, len(m)) // the query's points go back to a pool on Close
		for _, s := range m {
			out = append(out, promql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats)})
		}
		return out
	}
	for _, tc := range []struct {
		query string // %s: the range, rangeRes resolutions
		tol   float64
		aggrs []storepb.Aggr
	}{
		{query: "sum_over_time(ds_gauge[1h])", tol: 1e-9, aggrs: []storepb.Aggr{storepb.Aggr_SUM}},
		{query: "min_over_time(ds_gauge[1h])", tol: 1e-9, aggrs: []storepb.Aggr{storepb.Aggr_MIN}},
		{query: "max_over_time(ds_gauge[1h])", tol: 1e-9, aggrs: []storepb.Aggr{storepb.Aggr_MAX}},
		{query: "avg_over_time(ds_gauge[1h])", tol: 1e-9, aggrs: []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}},
		{query: "count_over_time(ds_gauge[1h])", tol: 0, aggrs: []storepb.Aggr{storepb.Aggr_COUNT}},
		{query: "count_over_time(ds_counter[%s])", tol: 0, aggrs: []storepb.Aggr{storepb.Aggr_COUNT}},
		{query: "sum(count_over_time(ds_gauge[3h] offset 1h))", tol: 0, aggrs: []storepb.Aggr{storepb.Aggr_COUNT}},
		{query: "rate(ds_counter[%s])", tol: 0.1, aggrs: []storepb.Aggr{storepb.Aggr_COUNTER}},
		{query: "increase(ds_counter[%s])", tol: 0.1, aggrs: []storepb.Aggr{storepb.Aggr_COUNTER}},
		{query: "sum(rate(ds_counter[%s]))", tol: 0.1, aggrs: []storepb.Aggr{storepb.Aggr_COUNTER}},
	} {
		for _, res := range []time.Duration{5 * time.Minute, time.Hour} {
			qs := tc.query
			if strings.Contains(qs, "%s") {
				qs = fmt.Sprintf(qs, model.Duration(max(rangeRes*res, 3*time.Hour))) // across chunk boundaries at 5m too
			}
			t.Run(fmt.Sprintf("%s@%s", qs, res), func(t *testing.T) {
				raw := rangeQuery(ctx, refDB, qs)
				testutil.Equals(t, 1, len(raw))
				testutil.Equals(t, 5, len(raw[0].Floats))
				ds.mtx.Lock()
				ds.reqs = nil
				ds.mtx.Unlock()
				got := rangeQuery(WithRequestOptions(ctx, RequestOptions{Dedup: true, PartialResponse: true, MaxSourceResolution: res}), q, qs)
				ds.mtx.Lock()
				testutil.Equals(t, 1, len(ds.reqs))
				testutil.Equals(t, res.Milliseconds(), ds.reqs[0].GetMaxResolutionWindow())
				testutil.Equals(t, tc.aggrs, ds.reqs[0].GetAggregates())
				ds.mtx.Unlock()
				testutil.Equals(t, 1, len(got))
				testutil.Equals(t, len(raw[0].Floats), len(got[0].Floats))
				worst := 0.0
				for i, p := range raw[0].Floats {
					g := got[0].Floats[i]
					testutil.Equals(t, p.T, g.T)
					testutil.Assert(t, relDiff(p.F, g.F) <= tc.tol, "at %d: raw %v, downsampled %v (relative difference %v > %v)", p.T, p.F, g.F, relDiff(p.F, g.F), tc.tol)
					worst = max(worst, relDiff(p.F, g.F))
				}
				t.Logf("largest relative difference: %.3g", worst)
			})
		}
	}

	// The store holds this range only downsampled: raw reads see nothing, downsampled reads answer it.
	t.Run("downsampled only", func(t *testing.T) {
		testutil.Equals(t, 0, len(rangeQuery(ctx, q, "sum_over_time(ds_gauge[1h])")))
		auto := WithRequestOptions(ctx, RequestOptions{Dedup: true, PartialResponse: true, AutoDownsampling: true})
		ds.mtx.Lock()
		ds.reqs = nil
		ds.mtx.Unlock()
		got := rangeQuery(auto, q, "ds_gauge")
		ds.mtx.Lock()
		testutil.Equals(t, step.Milliseconds()/5, ds.reqs[0].GetMaxResolutionWindow()) // auto: step/5
		ds.mtx.Unlock()
		testutil.Equals(t, 1, len(got))
		testutil.Equals(t, 5, len(got[0].Floats))
		for _, p := range got[0].Floats {
			testutil.Assert(t, p.F > 30 && p.F < 85, "ds_gauge at %d: %v is not an average of the raw samples' range", p.T, p.F)
		}
	})
}

// The HTTP API reads max_source_resolution (Thanos's 0s|5m|1h|auto) and --query.auto-downsampling into the
// stores' max_resolution_window.
func TestAPIMaxSourceResolution(t *testing.T) {
	ds := newDownsampledStore(t, downsampleTestSeries())
	client := harnessServeStore(t, ds, ds)
	rangeParams := func(res string) url.Values {
		v := url.Values{"query": {"avg_over_time(ds_gauge[1h])"}, "start": {"43199.999"}, "end": {"57599.999"}, "step": {"3600"}}
		if res != "" {
			v.Set("max_source_resolution", res)
		}
		return v
	}
	for _, tc := range []struct {
		name       string
		auto       bool
		path       string
		params     url.Values
		wantCode   int
		wantWindow int64
		wantBody   string
	}{
		{name: "raw by default", path: "/api/v1/query_range", params: rangeParams(""), wantCode: 200, wantWindow: 0, wantBody: `"result":[]`},
		{name: "0s", path: "/api/v1/query_range", params: rangeParams("0s"), wantCode: 200, wantWindow: 0, wantBody: `"result":[]`},
		{name: "5m", path: "/api/v1/query_range", params: rangeParams("5m"), wantCode: 200, wantWindow: res5m, wantBody: `"job":"a"`},
		{name: "1h as seconds", path: "/api/v1/query_range", params: rangeParams("3600"), wantCode: 200, wantWindow: res1h, wantBody: `"job":"a"`},
		{name: "auto: step/5", path: "/api/v1/query_range", params: rangeParams("auto"), wantCode: 200, wantWindow: res1h / 5, wantBody: `"job":"a"`},
		{name: "--query.auto-downsampling", auto: true, path: "/api/v1/query_range", params: rangeParams(""), wantCode: 200, wantWindow: res1h / 5, wantBody: `"job":"a"`},
		{name: "--query.auto-downsampling, 0s asked", auto: true, path: "/api/v1/query_range", params: rangeParams("0s"), wantCode: 200, wantWindow: 0, wantBody: `"result":[]`},
		{name: "instant query at 1h", path: "/api/v1/query", params: url.Values{"query": {"max_over_time(ds_gauge[1h])"}, "time": {"43199.999"}, "max_source_resolution": {"1h"}},
			wantCode: 200, wantWindow: res1h, wantBody: `"job":"a"`},
		{name: "count_over_time counts raw samples at 1h", path: "/api/v1/query", params: url.Values{"query": {"count_over_time(ds_gauge[1h])"}, "time": {"43199.999"}, "max_source_resolution": {"1h"}},
			wantCode: 200, wantWindow: res1h, wantBody: `[43199.999,"240"]`},
		{name: "not a duration", path: "/api/v1/query_range", params: rangeParams("5x"), wantCode: 400, wantWindow: -1, wantBody: "max_source_resolution"},
		{name: "negative", path: "/api/v1/query_range", params: rangeParams("-5m"), wantCode: 400, wantWindow: -1, wantBody: "max_source_resolution"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds.mtx.Lock()
			ds.reqs = nil
			ds.mtx.Unlock()
			h := newTestAPI(t, APIConfig{Engine: DefaultEngineConfig(), AutoDownsampling: tc.auto}, nil, client)
			rec := serveWithin(t, h, apiRequest(context.Background(), http.MethodGet, tc.path, tc.params), time.Minute)
			body := rec.Body.String()
			testutil.Equals(t, tc.wantCode, rec.Code, "body: %s", body)
			testutil.Assert(t, strings.Contains(body, tc.wantBody), "body %q does not contain %q", body, tc.wantBody)
			ds.mtx.Lock()
			defer ds.mtx.Unlock()
			if tc.wantWindow < 0 {
				testutil.Equals(t, 0, len(ds.reqs))
				return
			}
			testutil.Equals(t, 1, len(ds.reqs))
			testutil.Equals(t, tc.wantWindow, ds.reqs[0].GetMaxResolutionWindow())
		})
	}
}

// Recent data raw in the ingesters, older data downsampled in a store-gateway: a counter reads as one across
// both, its resets (one in the downsampled range) applied once, so rate and increase over the boundary agree
// with the raw data's; count_over_time over the boundary counts both exactly.
func TestDownsampledReads_CounterAcrossRawAndDownsampled(t *testing.T) {
	series := downsampleTestSeries()
	const cut = 12 * res1h
	var old []harnessSeries
	for _, hs := range series {
		var ss []harnessSample
		for _, s := range hs.samples {
			if s.t < cut {
				ss = append(ss, s)
			}
		}
		old = append(old, harnessSeries{lset: hs.lset, samples: ss})
	}
	refDB := harnessOpenDB(t, series, func(int64) bool { return true })
	ds := newDownsampledStore(t, old)
	recent := harnessServe(t, harnessOpenDB(t, series, func(ts int64) bool { return ts >= cut }))
	logger := log.NewNopLogger()
	client := harnessServeStore(t, ds, ds)
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{client, recent} }, 0, logger, nil)
	q := NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil)
	eng, refEng := promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)), promql.NewEngine(refEngineOpts(logger))
	ctx := tenancy.WithTenants(context.Background(), []string{harnessTenant})
	matrix := func(ctx context.Context, q storage.Queryable, qs string) promql.Matrix {
		t.Helper()
		eng := eng
		if q == storage.Queryable(refDB) {
			eng = refEng
		}
		qry, err := eng.NewRangeQuery(ctx, q, nil, qs, time.UnixMilli(12*res1h-1), time.UnixMilli(16*res1h-1), time.Hour)
		testutil.Ok(t, err)
		defer qry.Close()
		res := qry.Exec(ctx)
		testutil.Ok(t, res.Err)
		m, err := res.Matrix()
		testutil.Ok(t, err)
		out := make(promql.Matrix, 0, len(m))
		for _, s := range m {
			out = append(out, promql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats)})
		}
		return out
	}
	for _, qs := range []string{"rate(ds_counter[3h])", "increase(ds_counter[6h])", "count_over_time(ds_gauge[6h])", "count_over_time(ds_counter[3h])"} {
		tol := 0.1 // rate/increase: see TestDownsampledReads_AgreeWithRaw
		if strings.HasPrefix(qs, "count_over_time") {
			tol = 0 // raw samples counted one by one, downsampled windows by their COUNT aggregate
		}
		t.Run(qs, func(t *testing.T) {
			raw := matrix(ctx, refDB, qs)
			got := matrix(WithRequestOptions(ctx, RequestOptions{Dedup: true, PartialResponse: true, MaxSourceResolution: 5 * time.Minute}), q, qs)
			testutil.Equals(t, 1, len(raw))
			testutil.Equals(t, 1, len(got))
			testutil.Equals(t, 5, len(raw[0].Floats))
			testutil.Equals(t, len(raw[0].Floats), len(got[0].Floats))
			for i, p := range raw[0].Floats {
				g := got[0].Floats[i]
				testutil.Equals(t, p.T, g.T)
				testutil.Assert(t, relDiff(p.F, g.F) <= tol, "at %d: raw %v, downsampled+raw %v", p.T, p.F, g.F)
			}
		})
	}
}

// The querier's parser evaluates count_over_time over a range selector as sum_over_time over a selection marked
// to be read as sample counts; everything else is Prometheus's parse.
func TestCountOverTimeParser(t *testing.T) {
	p := newCountOverTimeParser()
	for _, tc := range []struct{ in, want string }{
		{`count_over_time(m[5m])`, `sum_over_time(m{__strata_count_samples__="1"}[5m])`},
		{`sum by (job) (count_over_time({__name__=~"a.+", job="x"}[1h] offset 5m))`,
			`sum by (job) (sum_over_time({__name__=~"a.+",__strata_count_samples__="1",job="x"}[1h] offset 5m))`},
		{`count_over_time(m[5m] @ 100) / count_over_time(n[5m])`,
			`sum_over_time(m{__strata_count_samples__="1"}[5m] @ 100.000) / sum_over_time(n{__strata_count_samples__="1"}[5m])`},
		// A subquery's points are the engine's own: counted as Prometheus counts them.
		{`count_over_time(rate(m[5m])[1h:5m])`, `count_over_time(rate(m[5m])[1h:5m])`},
		{`sum_over_time(m[5m]) + count(m)`, `sum_over_time(m[5m]) + count(m)`},
	} {
		expr, err := p.ParseExpr(tc.in)
		testutil.Ok(t, err)
		testutil.Equals(t, tc.want, expr.String(), "parsing %s", tc.in)
	}
	_, err := p.ParseExpr(`count_over_time(m)`)
	testutil.NotOk(t, err)

	ms, marked := withoutCountMarker([]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"), labels.MustNewMatcher(labels.MatchEqual, countSamplesLabel, "1")})
	testutil.Assert(t, marked, "marker found")
	testutil.Equals(t, 1, len(ms))
	testutil.Equals(t, "__name__", ms[0].Name)
	_, marked = withoutCountMarker(ms)
	testutil.Assert(t, !marked, "no marker")
}
