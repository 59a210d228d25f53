package receive

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// cardinalityCounts flattens an answer's labels: name → value → series.
func cardinalityCounts(res *cardinalitypb.CardinalityResponse) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, lv := range res.GetLabels() {
		if out[lv.GetName()] == nil {
			out[lv.GetName()] = map[string]uint64{}
		}
		for _, v := range lv.GetValues() {
			out[lv.GetName()][v.GetValue()] += v.GetSeries()
		}
	}
	return out
}

// pushKnownCardinality pushes to tenant: metric a with x in 5 values × y in 4 values (20 series, samples at
// aT), metric b with z in 3 values (3 series, samples at bT).
func pushKnownCardinality(t *testing.T, ing *Ingester, tenant string, aT, bT int64) {
	t.Helper()
	var tss []*prompb.TimeSeries
	for x := 0; x < 5; x++ {
		for y := 0; y < 4; y++ {
			tss = append(tss, ts(series("a", "x", fmt.Sprint("x", x), "y", fmt.Sprint("y", y)), aT))
		}
	}
	for z := 0; z < 3; z++ {
		tss = append(tss, ts(series("b", "z", fmt.Sprint(z)), bT))
	}
	testutil.Ok(t, ing.Push(context.Background(), tenant, &storepb.WriteRequest{Timeseries: tss}))
}

func TestIngesterReadCardinality(t *testing.T) {
	now := time.Unix(10_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry(), WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	// a's samples are 1m old, b's 30m: only a's series are active within the default 10m.
	pushKnownCardinality(t, ing, "t", now.Add(-time.Minute).UnixMilli(), now.Add(-30*time.Minute).UnixMilli())
	testutil.Ok(t, ing.Push(context.Background(), "other", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("a", "x", "other"), now.UnixMilli())}}))

	xs := map[string]uint64{"x0": 4, "x1": 4, "x2": 4, "x3": 4, "x4": 4}
	ys := map[string]uint64{"y0": 5, "y1": 5, "y2": 5, "y3": 5}
	zs := map[string]uint64{"0": 1, "1": 1, "2": 1}
	eq := func(name, value string) *storepb.LabelMatcher {
		return &storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: name, Value: value}
	}
	for _, tc := range []struct {
		name                 string
		tenants              []string
		req                  *cardinalitypb.CardinalityRequest
		series, total, chnks uint64
		want                 map[string]map[string]uint64
		wantCode             codes.Code
	}{
		{
			name: "every series, every label", tenants: []string{"t"}, req: &cardinalitypb.CardinalityRequest{},
			series: 23, total: 23, chnks: 23,
			want: map[string]map[string]uint64{"__name__": {"a": 20, "b": 3}, "x": xs, "y": ys, "z": zs},
		},
		{
			name: "selector and label names", tenants: []string{"t"},
			req:    &cardinalitypb.CardinalityRequest{Matchers: []*storepb.LabelMatcher{eq("__name__", "a")}, LabelNames: []string{"x", "z"}},
			series: 20, total: 23, chnks: 20,
			want: map[string]map[string]uint64{"x": xs},
		},
		{
			name: "regexp selector", tenants: []string{"t"},
			req:    &cardinalitypb.CardinalityRequest{Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "x", Value: "x[01]"}}, LabelNames: []string{"y"}},
			series: 8, total: 23, chnks: 8,
			want: map[string]map[string]uint64{"y": {"y0": 2, "y1": 2, "y2": 2, "y3": 2}},
		},
		{
			name: "active: series without a sample within the idle timeout are left out", tenants: []string{"t"},
			req:    &cardinalitypb.CardinalityRequest{CountMethod: cardinalitypb.CountMethod_ACTIVE, LabelNames: []string{"__name__"}},
			series: 20, total: 20, chnks: 20,
			want: map[string]map[string]uint64{"__name__": {"a": 20}},
		},
		{
			name: "active with a selector: the total counts active series only", tenants: []string{"t"},
			req:    &cardinalitypb.CardinalityRequest{CountMethod: cardinalitypb.CountMethod_ACTIVE, Matchers: []*storepb.LabelMatcher{eq("x", "x0")}, LabelNames: []string{"y"}},
			series: 4, total: 20, chnks: 4,
			want: map[string]map[string]uint64{"y": {"y0": 1, "y1": 1, "y2": 1, "y3": 1}},
		},
		{
			name: "two tenants add up", tenants: []string{"t", "other"},
			req:    &cardinalitypb.CardinalityRequest{LabelNames: []string{"__name__"}},
			series: 24, total: 24, chnks: 24,
			want: map[string]map[string]uint64{"__name__": {"a": 21, "b": 3}},
		},
		{
			name: "tenant without a TSDB here", tenants: []string{"nobody"}, req: &cardinalitypb.CardinalityRequest{},
			want: map[string]map[string]uint64{},
		},
		{
			name: "over max_label_values", tenants: []string{"t"}, req: &cardinalitypb.CardinalityRequest{MaxLabelValues: 10},
			wantCode: codes.ResourceExhausted,
		},
		{
			name: "exactly max_label_values", tenants: []string{"t"}, req: &cardinalitypb.CardinalityRequest{MaxLabelValues: 14},
			series: 23, total: 23, chnks: 23,
			want: map[string]map[string]uint64{"__name__": {"a": 20, "b": 3}, "x": xs, "y": ys, "z": zs},
		},
		{
			name: "bad regexp", tenants: []string{"t"},
			req:      &cardinalitypb.CardinalityRequest{Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "x", Value: "("}}},
			wantCode: codes.InvalidArgument,
		},
		{name: "no tenant", req: &cardinalitypb.CardinalityRequest{}, wantCode: codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.tenants != nil {
				ctx = tenancy.WithTenants(ctx, tc.tenants)
			}
			res, err := ing.ReadCardinality(ctx, tc.req)
			if tc.wantCode != codes.OK {
				testutil.NotOk(t, err)
				testutil.Equals(t, tc.wantCode, status.Code(err), err.Error())
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.series, res.GetSeries(), "series")
			testutil.Equals(t, tc.total, res.GetTotalSeries(), "total series")
			testutil.Equals(t, tc.chnks, res.GetChunks(), "chunks")
			testutil.Equals(t, tc.want, cardinalityCounts(res))
			if tc.series == 0 {
				testutil.Equals(t, int64(math.MaxInt64), res.GetMinTime())
				testutil.Equals(t, int64(math.MinInt64), res.GetMaxTime())
			} else {
				testutil.Equals(t, now.Add(-30*time.Minute).UnixMilli(), res.GetMinTime())
				testutil.Assert(t, res.GetMaxTime() >= now.Add(-time.Minute).UnixMilli(), "max time %d", res.GetMaxTime())
			}
		})
	}

	t.Run("canceled request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(tenancy.WithTenants(context.Background(), []string{"t"}))
		cancel()
		_, err := ing.ReadCardinality(ctx, &cardinalitypb.CardinalityRequest{})
		// 23 series are counted before the first look at the context: canceled or complete, never a panic.
		if err != nil {
			testutil.Equals(t, codes.Canceled, status.Code(err))
		}
	})
}

// cardinalityStream is the server side of one HeadCardinality call.
type cardinalityStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*cardinalitypb.CardinalityResponse
}

func (s *cardinalityStream) Context() context.Context { return s.ctx }
func (s *cardinalityStream) Send(m *cardinalitypb.CardinalityResponse) error {
	s.sent = append(s.sent, m)
	return nil
}

func TestIngesterHeadCardinalityBatches(t *testing.T) {
	now := time.Unix(10_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry(), WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	const n = cardinalityResponseBatch + 5
	tss := make([]*prompb.TimeSeries, 0, n)
	for i := 0; i < n; i++ {
		tss = append(tss, ts(series("m", "id", fmt.Sprint(i)), now.UnixMilli()))
	}
	testutil.Ok(t, ing.Push(context.Background(), "t", &storepb.WriteRequest{Timeseries: tss}))

	for _, tc := range []struct {
		name     string
		tenant   string
		messages int
		values   int
	}{
		{name: "more values than one message holds", tenant: "t", messages: 2, values: n + 1},
		{name: "empty answer is still one message", tenant: "nobody", messages: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &cardinalityStream{ctx: tenancy.WithTenants(context.Background(), []string{tc.tenant})}
			testutil.Ok(t, ing.CardinalityServer().HeadCardinality(&cardinalitypb.CardinalityRequest{}, srv))
			testutil.Equals(t, tc.messages, len(srv.sent))
			values := 0
			for i, m := range srv.sent {
				got := 0
				for _, lv := range m.GetLabels() {
					got += len(lv.GetValues())
				}
				testutil.Assert(t, got <= cardinalityResponseBatch, "message %d holds %d values", i, got)
				values += got
			}
			testutil.Equals(t, tc.values, values)
			if tc.tenant == "t" {
				testutil.Equals(t, uint64(n), srv.sent[0].GetSeries())
				testutil.Equals(t, uint64(0), srv.sent[1].GetSeries()) // totals only in the first message
			}
		})
	}
}
