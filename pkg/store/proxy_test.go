package store

import (
	"context"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
)

// countingClient counts the Series calls a store receives and can pretend to hold another range or labels.
type countingClient struct {
	StoreClient
	series    atomic.Int32
	minT      int64
	maxT      int64
	labelSets []labels.Labels
}

func (c *countingClient) Series(ctx context.Context, r *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	c.series.Add(1)
	return c.StoreClient.Series(ctx, r, opts...)
}
func (c *countingClient) TimeRange() (int64, int64)  { return c.minT, c.maxT }
func (c *countingClient) LabelSets() []labels.Labels { return c.labelSets }

// slowStore answers Series only after delay (or never, if the caller gives up first).
type slowStore struct {
	*TSDBStore
	delay time.Duration
}

func (s slowStore) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	select {
	case <-time.After(s.delay):
	case <-srv.Context().Done():
		return status.FromContextError(srv.Context().Err()).Err()
	}
	return s.TSDBStore.Series(r, srv)
}

// failingStore fails every Series call.
type failingStore struct{ *TSDBStore }

func (failingStore) Series(*storepb.SeriesRequest, storepb.Store_SeriesServer) error {
	return status.Error(codes.Internal, "disk on fire")
}

func storesOf(cs ...StoreClient) func() []StoreClient { return func() []StoreClient { return cs } }

func newTestProxy(timeout time.Duration, cs ...StoreClient) *Proxy {
	return NewProxy(storesOf(cs...), timeout, log.NewNopLogger(), prometheus.NewRegistry())
}

// TestProxyMergesReplicas: three stores hold the RF copies of one series, partly overlapping in time, plus a
// series each. Through the proxy (itself served over gRPC): one stream, sorted, the copies merged into one series
// with every sample once.
func TestProxyMergesReplicas(t *testing.T) {
	vals := func(i int) float64 { return float64(i) * 0.5 }
	shared := func(from, to int) []sample {
		var out []sample
		for i := from; i < to; i++ {
			out = append(out, sample{t: int64(i) * 1000, v: vals(i)})
		}
		return out
	}
	stores := []*Client{
		serve(t, NewTSDBStore(SingleTenant("t", openDB(t, map[string][]sample{`m{s="shared"}`: shared(0, 400), `m{s="only1"}`: shared(0, 10)})), log.NewNopLogger())),
		serve(t, NewTSDBStore(SingleTenant("t", openDB(t, map[string][]sample{`m{s="shared"}`: shared(100, 500), `m{s="only2"}`: shared(0, 10)})), log.NewNopLogger())),
		serve(t, NewTSDBStore(SingleTenant("t", openDB(t, map[string][]sample{`m{s="shared"}`: shared(0, 500), `a{s="only3"}`: shared(0, 10)})), log.NewNopLogger())),
	}
	proxy := serve(t, newTestProxy(0, stores[0], stores[1], stores[2]))

	series, warnings, err := collect(tenantCtx("t"), proxy, &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("s", ".+")}})
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(warnings))
	testutil.Equals(t, []string{
		`{__name__="a", s="only3", tenant_id="t"}`,
		`{__name__="m", s="only1", tenant_id="t"}`,
		`{__name__="m", s="only2", tenant_id="t"}`,
		`{__name__="m", s="shared", tenant_id="t"}`,
	}, lsetsOf(series))

	got := decodeSamples(t, series[3], math.MinInt64, math.MaxInt64)
	testutil.Equals(t, 500, len(got))
	for i, s := range got {
		testutil.Equals(t, sample{t: int64(i) * 1000, v: vals(i)}, s)
	}
	testutil.Equals(t, 10, len(decodeSamples(t, series[0], math.MinInt64, math.MaxInt64)))
}

func TestProxyStoreSelection(t *testing.T) {
	db := openDB(t, map[string][]sample{`m`: samplesN(10, 1000, func(int) float64 { return 1 })})
	c := serve(t, NewTSDBStore(SingleTenant("t", db), log.NewNopLogger()))
	early := &countingClient{StoreClient: c, minT: 0, maxT: 1000}
	late := &countingClient{StoreClient: c, minT: 5000, maxT: 9000}
	zoneX := &countingClient{StoreClient: c, minT: math.MinInt64, maxT: math.MaxInt64, labelSets: []labels.Labels{labels.FromStrings("tenant_id", "t", "zone", "x")}}
	unknown := &countingClient{StoreClient: c, minT: math.MinInt64, maxT: math.MaxInt64}
	p := serve(t, newTestProxy(0, early, late, zoneX, unknown))

	for _, tc := range []struct {
		name       string
		minT, maxT int64
		matchers   []*storepb.LabelMatcher
		want       map[*countingClient]int32
	}{
		{name: "early range", minT: 0, maxT: 500, matchers: []*storepb.LabelMatcher{eq("__name__", "m")}, want: map[*countingClient]int32{early: 1, zoneX: 1, unknown: 1}},
		{name: "gap between the ranges", minT: 2000, maxT: 3000, matchers: []*storepb.LabelMatcher{eq("__name__", "m")}, want: map[*countingClient]int32{zoneX: 1, unknown: 1}},
		{name: "bounds are inclusive", minT: 1000, maxT: 5000, matchers: []*storepb.LabelMatcher{eq("__name__", "m")}, want: map[*countingClient]int32{early: 1, late: 1, zoneX: 1, unknown: 1}},
		{name: "external label rules a store out", minT: 0, maxT: math.MaxInt64, matchers: []*storepb.LabelMatcher{eq("__name__", "m"), eq("zone", "y")}, want: map[*countingClient]int32{early: 1, late: 1, unknown: 1}},
		{name: "external label selects it", minT: 0, maxT: math.MaxInt64, matchers: []*storepb.LabelMatcher{eq("__name__", "m"), re("zone", "x|y")}, want: map[*countingClient]int32{early: 1, late: 1, zoneX: 1, unknown: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cc := range []*countingClient{early, late, zoneX, unknown} {
				cc.series.Store(0)
			}
			_, _, err := collect(tenantCtx("t"), p, &storepb.SeriesRequest{MinTime: tc.minT, MaxTime: tc.maxT, Matchers: tc.matchers})
			testutil.Ok(t, err)
			for _, cc := range []*countingClient{early, late, zoneX, unknown} {
				testutil.Equals(t, tc.want[cc], cc.series.Load(), "store [%d,%d] %v", cc.minT, cc.maxT, cc.labelSets)
			}
		})
	}
}

// TestProxyPartialResponse: one store slow beyond the per-store timeout, or failing; WARN returns the others'
// data and a warning naming the store, ABORT fails the request with the store's code.
func TestProxyPartialResponse(t *testing.T) {
	good := serve(t, NewTSDBStore(SingleTenant("t", openDB(t, map[string][]sample{`m{s="good"}`: samplesN(5, 1000, func(int) float64 { return 1 })})), log.NewNopLogger()))
	slowDB := openDB(t, map[string][]sample{`m{s="slow"}`: samplesN(5, 1000, func(int) float64 { return 1 })})
	slow := serve(t, slowStore{TSDBStore: NewTSDBStore(SingleTenant("t", slowDB), log.NewNopLogger()), delay: 10 * time.Second})
	failing := serve(t, failingStore{NewTSDBStore(SingleTenant("t", slowDB), log.NewNopLogger())})

	for _, tc := range []struct {
		name        string
		bad         *Client
		strategy    storepb.PartialResponseStrategy
		disabled    bool
		wantCode    codes.Code
		wantWarning string
	}{
		{name: "slow, warn", bad: slow, strategy: storepb.PartialResponseStrategy_WARN, wantWarning: "DeadlineExceeded"},
		{name: "slow, abort", bad: slow, strategy: storepb.PartialResponseStrategy_ABORT, wantCode: codes.DeadlineExceeded},
		{name: "slow, partial response disabled (deprecated field)", bad: slow, disabled: true, wantCode: codes.DeadlineExceeded},
		{name: "failing, warn", bad: failing, strategy: storepb.PartialResponseStrategy_WARN, wantWarning: "disk on fire"},
		{name: "failing, abort", bad: failing, strategy: storepb.PartialResponseStrategy_ABORT, wantCode: codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serve(t, newTestProxy(300*time.Millisecond, good, tc.bad))
			start := time.Now()
			series, warnings, err := collect(tenantCtx("t"), p, &storepb.SeriesRequest{
				MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "m")},
				PartialResponseStrategy: tc.strategy,
				PartialResponseDisabled: tc.disabled, //nolint:staticcheck // older Thanos queriers still send it

			})
			testutil.Assert(t, time.Since(start) < 5*time.Second, "the slow store was waited for: %s", time.Since(start))
			if tc.wantCode != codes.OK {
				testutil.Equals(t, tc.wantCode, status.Code(err), "err: %v", err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.bad.String()), "error does not name the store: %v", err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, []string{`{__name__="m", s="good", tenant_id="t"}`}, lsetsOf(series))
			testutil.Equals(t, 1, len(warnings))
			testutil.Assert(t, strings.Contains(warnings[0], tc.bad.String()) && strings.Contains(warnings[0], tc.wantWarning), "warning %q", warnings[0])
		})
	}
}

// TestProxyTenantIsolation: the tenant reaches the stores through the proxy, and each store answers only for it.
func TestProxyTenantIsolation(t *testing.T) {
	dbs := tenantMap{
		"a": openDB(t, map[string][]sample{`m{team="a"}`: samplesN(5, 1000, func(int) float64 { return 1 })}),
		"b": openDB(t, map[string][]sample{`m{team="b"}`: samplesN(5, 1000, func(int) float64 { return 2 })}),
	}
	s1 := serve(t, NewTSDBStore(dbs, log.NewNopLogger()))
	s2 := serve(t, NewTSDBStore(tenantMap{"a": dbs["a"]}, log.NewNopLogger()))
	p := serve(t, newTestProxy(0, s1, s2))
	for _, tc := range []struct {
		tenants  []string
		matchers []*storepb.LabelMatcher
		want     []string
	}{
		{tenants: []string{"a"}, matchers: []*storepb.LabelMatcher{re("__name__", ".+")}, want: []string{`{__name__="m", team="a", tenant_id="a"}`}},
		{tenants: []string{"b"}, matchers: []*storepb.LabelMatcher{re("__name__", ".+")}, want: []string{`{__name__="m", team="b", tenant_id="b"}`}},
		{tenants: []string{"b"}, matchers: []*storepb.LabelMatcher{re("__name__", ".+"), re("tenant_id", "a|b")}, want: []string{`{__name__="m", team="b", tenant_id="b"}`}},
		{tenants: []string{"b"}, matchers: []*storepb.LabelMatcher{eq("team", "a")}, want: []string{}},
		{tenants: []string{"a", "b"}, matchers: []*storepb.LabelMatcher{re("__name__", ".+")}, want: []string{`{__name__="m", team="a", tenant_id="a"}`, `{__name__="m", team="b", tenant_id="b"}`}},
	} {
		series, _, err := collect(tenantCtx(tc.tenants...), p, &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: tc.matchers})
		testutil.Ok(t, err)
		testutil.Equals(t, tc.want, append([]string{}, lsetsOf(series)...), "tenants %v", tc.tenants)
	}
	vals, err := p.LabelValues(tenantCtx("b"), &storepb.LabelValuesRequest{Label: "team", End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"b"}, vals.Values)
	names, err := p.LabelNames(tenantCtx("a"), &storepb.LabelNamesRequest{End: math.MaxInt64})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "team", "tenant_id"}, names.Names)

	_, _, err = collect(context.Background(), p, &storepb.SeriesRequest{MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{re("__name__", ".+")}})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))

	testutil.Ok(t, s1.RefreshInfo(context.Background(), 5*time.Second))
	testutil.Ok(t, s2.RefreshInfo(context.Background(), 5*time.Second))
	testutil.Ok(t, p.RefreshInfo(context.Background(), 5*time.Second))
	testutil.Equals(t, []labels.Labels{labels.FromStrings("tenant_id", "a"), labels.FromStrings("tenant_id", "b")}, p.LabelSets())
}

// TestResponseBatching: with response_batch_size set, TSDBStore and Proxy pack series into SeriesBatch messages
// (as Thanos stores do, and as a Thanos querier asks for), without losing or reordering series.
func TestResponseBatching(t *testing.T) {
	series := map[string][]sample{}
	for i := 0; i < 10; i++ {
		series[`m{i="`+string(rune('a'+i))+`"}`] = samplesN(3, 1000, func(int) float64 { return 1 })
	}
	st := serve(t, NewTSDBStore(SingleTenant("t", openDB(t, series)), log.NewNopLogger()))
	px := serve(t, newTestProxy(0, st))
	for name, c := range map[string]*Client{"tsdb store": st, "proxy": px} {
		for _, tc := range []struct {
			batch        int64
			wantMessages int
		}{{batch: 0, wantMessages: 10}, {batch: 1, wantMessages: 10}, {batch: 4, wantMessages: 3}, {batch: 64, wantMessages: 1}} {
			res, err := storetest.Series(tenantCtx("t"), c, &storepb.SeriesRequest{MaxTime: math.MaxInt64, ResponseBatchSize: tc.batch, Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}})
			testutil.Ok(t, err)
			var got []string
			for _, s := range res.Series {
				got = append(got, LabelsFromPB(s.Labels).Get("i"))
			}
			for _, r := range res.Responses {
				testutil.Assert(t, r.GetSeries() == nil || tc.batch <= 1, "%s: a single series with batch size %d", name, tc.batch)
			}
			testutil.Equals(t, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, got, "%s batch %d", name, tc.batch)
			testutil.Equals(t, tc.wantMessages, len(res.Responses), "%s batch %d", name, tc.batch)
		}
	}
}

// replicaClient marks a store as one replica of a group (an ingester).
type replicaClient struct {
	*Client
	group       string
	maxFailures int
}

func (r replicaClient) ReplicaGroup() (string, int) { return r.group, r.maxFailures }

// downStore fails Series and LabelNames.
type downStore struct{ *TSDBStore }

func (downStore) Series(*storepb.SeriesRequest, storepb.Store_SeriesServer) error {
	return status.Error(codes.Internal, "disk on fire")
}

func (downStore) LabelNames(context.Context, *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	return nil, status.Error(codes.Internal, "disk on fire")
}

// TestProxyReplicaFailureBudget: failures of replica stores (ingesters) within their group's budget are absorbed
// silently, even with ABORT; one more than the budget counts as usual (warning or error).
func TestProxyReplicaFailureBudget(t *testing.T) {
	db := openDB(t, map[string][]sample{`m{s="x"}`: samplesN(5, 1000, func(int) float64 { return 1 })})
	good := serve(t, NewTSDBStore(SingleTenant("t", db), log.NewNopLogger()))
	bad1 := serve(t, downStore{NewTSDBStore(SingleTenant("t", db), log.NewNopLogger())})
	bad2 := serve(t, downStore{NewTSDBStore(SingleTenant("t", db), log.NewNopLogger())})
	for _, tc := range []struct {
		name         string
		stores       []StoreClient
		strategy     storepb.PartialResponseStrategy
		wantCode     codes.Code
		wantWarnings int
	}{
		{"one of three down, abort", []StoreClient{replicaClient{good, "ing", 1}, replicaClient{bad1, "ing", 1}, replicaClient{good, "ing", 1}}, storepb.PartialResponseStrategy_ABORT, codes.OK, 0},
		{"one of three down, warn", []StoreClient{replicaClient{good, "ing", 1}, replicaClient{bad1, "ing", 1}}, storepb.PartialResponseStrategy_WARN, codes.OK, 0},
		{"two down, warn", []StoreClient{replicaClient{good, "ing", 1}, replicaClient{bad1, "ing", 1}, replicaClient{bad2, "ing", 1}}, storepb.PartialResponseStrategy_WARN, codes.OK, 1},
		{"two down, abort", []StoreClient{replicaClient{good, "ing", 1}, replicaClient{bad1, "ing", 1}, replicaClient{bad2, "ing", 1}}, storepb.PartialResponseStrategy_ABORT, codes.Internal, 0},
		{"no budget (RF 1)", []StoreClient{replicaClient{good, "ing", 0}, replicaClient{bad1, "ing", 0}}, storepb.PartialResponseStrategy_WARN, codes.OK, 1},
		{"not a replica", []StoreClient{good, bad1}, storepb.PartialResponseStrategy_WARN, codes.OK, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serve(t, newTestProxy(0, tc.stores...))
			series, warnings, err := collect(tenantCtx("t"), p, &storepb.SeriesRequest{MaxTime: math.MaxInt64,
				Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}, PartialResponseStrategy: tc.strategy})
			testutil.Equals(t, tc.wantCode, status.Code(err), "err: %v", err)
			if tc.wantCode != codes.OK {
				return
			}
			testutil.Equals(t, []string{`{__name__="m", s="x", tenant_id="t"}`}, lsetsOf(series))
			testutil.Equals(t, tc.wantWarnings, len(warnings), "warnings: %v", warnings)

			names, err := p.LabelNames(tenantCtx("t"), &storepb.LabelNamesRequest{End: math.MaxInt64, PartialResponseStrategy: tc.strategy})
			testutil.Ok(t, err)
			testutil.Equals(t, tc.wantWarnings, len(names.GetWarnings()), "label warnings: %v", names.GetWarnings())
		})
	}
}
