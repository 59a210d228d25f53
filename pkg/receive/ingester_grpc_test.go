package receive

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestIngesterRemoteWriteRefusesWhatTheDistributorRefuses: the ingester's gRPC write trusts nothing of its
// caller. Each hostile request gets its gRPC code, nothing of its bad series reaches the TSDB (valid series of
// the same request do), the discarded samples are counted with their reason, and afterwards writes stamped now
// are still accepted: no far-future sample got into the head to make them "too old".
//
// It runs twice: calling RemoteWrite, and through the wire (the request marshalled and handed to the gRPC method
// handler RegisterWriteableStore registers, which decodes it its own way).
func TestIngesterRemoteWriteRefusesWhatTheDistributorRefuses(t *testing.T) {
	for _, wire := range []bool{false, true} {
		t.Run(fmt.Sprintf("wire=%v", wire), func(t *testing.T) { testIngesterRemoteWriteRefuses(t, wire) })
	}
}

// remoteWriteWire sends req through the gRPC method handler RegisterWriteableStore registers: as its wire bytes,
// decoded in place by forwardedWrite, as from a distributor (the interceptor aside). When the request is
// released its bytes are overwritten, as gRPC's pool would reuse them: whatever the ingester kept of the
// request (the labels of the series it created, the error's message) must be its own copy.
func remoteWriteWire(ctx context.Context, ing *Ingester, req *storepb.WriteRequest) error {
	b, err := req.MarshalVT()
	if err != nil {
		return err
	}
	return remoteWriteBytes(ctx, ing, b)
}

// remoteWriteBytes is remoteWriteWire of a request already encoded.
func remoteWriteBytes(ctx context.Context, ing *Ingester, b []byte) error {
	released := 0
	_, err := remoteWriteHandler(ing, ctx, func(v any) error {
		return v.(*forwardedWrite).UnmarshalInPlace(b, func() {
			released++
			for i := range b {
				b[i] = '#'
			}
		})
	}, nil)
	if released != 1 {
		return errors.Newf("the request's buffer was released %d times, want once", released)
	}
	return err
}

func testIngesterRemoteWriteRefuses(t *testing.T, wire bool) {
	reg := prometheus.NewRegistry()
	now := time.Unix(1_750_000_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, reg, WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	nowMs := now.UnixMilli()
	bg := context.Background()

	write := func(ctx context.Context, tenant string, tss ...*prompb.TimeSeries) error {
		req := &storepb.WriteRequest{Tenant: tenant, Timeseries: tss}
		if wire {
			return remoteWriteWire(ctx, ing, req)
		}
		_, err := ing.RemoteWrite(ctx, req)
		return err
	}
	testutil.Ok(t, write(bg, "a", ts(series("good"), nowMs-1000)))
	want := map[string][]int64{`{__name__="good", tenant_id="a"}`: {nowMs - 1000}}

	manyLabels := series("bad")
	for k := 0; k < 10_000; k++ {
		manyLabels = append(manyLabels, &labelpb.Label{Name: fmt.Sprintf("l_%05d", k), Value: "v"}) // sorted
	}

	for _, tc := range []struct {
		name     string
		ctx      context.Context
		tenant   string
		series   []*prompb.TimeSeries
		code     codes.Code
		reason   string // counted in strata_discarded_samples_total
		msg      string // in the error message
		appended []string
	}{
		{name: "no tenant", ctx: bg, series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.Unauthenticated, msg: "no org id"},
		{name: "request tenant differs from the metadata's", ctx: tenancy.WithTenants(bg, []string{"b"}), tenant: "a",
			series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.InvalidArgument, msg: "does not match"},
		{name: "invalid tenant in metadata", ctx: metadata.NewIncomingContext(bg, metadata.Pairs(tenancy.MetadataOrgID, "../x")), tenant: "a",
			series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.InvalidArgument, msg: "tenant in gRPC metadata"},
		{name: "invalid request tenant", ctx: bg, tenant: "../x", series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.InvalidArgument},
		{name: "federated tenants in metadata (a write names one)", ctx: tenancy.WithTenants(bg, []string{"a", "b"}),
			series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.InvalidArgument, msg: "does not match"},
		{name: "federated request tenant", ctx: bg, tenant: "a|b", series: []*prompb.TimeSeries{ts(series("bad"), nowMs)}, code: codes.InvalidArgument},
		{name: "sample 100 years ahead", ctx: bg, tenant: "a", series: []*prompb.TimeSeries{ts(series("bad"), now.AddDate(100, 0, 0).UnixMilli())},
			code: codes.InvalidArgument, reason: ReasonTooFarInFuture, msg: "err-mimir-too-far-in-future"},
		{name: "MaxInt64 timestamp", ctx: bg, tenant: "a", series: []*prompb.TimeSeries{ts(series("bad"), math.MaxInt64)},
			code: codes.InvalidArgument, reason: ReasonTooFarInFuture, msg: "creation_grace_period"},
		{name: "10,000 labels", ctx: bg, tenant: "a", series: []*prompb.TimeSeries{ts(manyLabels, nowMs)},
			code: codes.InvalidArgument, reason: ReasonMaxLabelNamesPerSeries, msg: "err-mimir-max-label-names-per-series"},
		{name: "invalid UTF-8 label value", ctx: bg, tenant: "a", series: []*prompb.TimeSeries{ts(series("bad", "job", "a\xff\xfeb"), nowMs)},
			code: codes.InvalidArgument, reason: ReasonLabelValueInvalid, msg: "err-mimir-label-value-invalid"},
		{name: "1 MiB label value", ctx: bg, tenant: "a", series: []*prompb.TimeSeries{ts(series("bad", "job", strings.Repeat("v", 1<<20)), nowMs)},
			code: codes.InvalidArgument, reason: ReasonLabelValueTooLong, msg: "max_label_value_length"},
		{name: "valid series of a request with an invalid one are appended", ctx: metadata.NewIncomingContext(bg, metadata.Pairs(tenancy.MetadataOrgID, "a")), tenant: "a",
			series: []*prompb.TimeSeries{ts(series("good2"), nowMs), ts(series("bad"), math.MaxInt64), ts(series("good3"), nowMs)},
			code:   codes.InvalidArgument, reason: ReasonTooFarInFuture, msg: "err-mimir-too-far-in-future",
			appended: []string{`{__name__="good2", tenant_id="a"}`, `{__name__="good3", tenant_id="a"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if tc.reason != "" {
				before = promtestutil.ToFloat64(ing.discarded.total.WithLabelValues("a", tc.reason))
			}
			err := write(tc.ctx, tc.tenant, tc.series...)
			testutil.Equals(t, tc.code, status.Code(err), "error: %v", err)
			testutil.Assert(t, strings.Contains(status.Convert(err).Message(), tc.msg), "message %q does not name %q", status.Convert(err).Message(), tc.msg)
			if tc.reason != "" {
				testutil.Equals(t, before+1, promtestutil.ToFloat64(ing.discarded.total.WithLabelValues("a", tc.reason)))
			}
			for _, s := range tc.appended {
				want[s] = []int64{nowMs}
			}
			testutil.Equals(t, want, readAll(t, ing, "a"))
			testutil.Equals(t, []string{"a"}, ing.Tenants()) // a refused write opens no TSDB
			testutil.Assert(t, ing.DB("a").(*tsdb.DB).Head().MaxTime() <= nowMs, "a sample newer than now reached the head")
		})
	}

	// Later writes stamped now are accepted.
	now = now.Add(time.Minute)
	testutil.Ok(t, write(bg, "a", ts(series("good"), now.UnixMilli())))
	testutil.Ok(t, write(tenancy.WithTenants(bg, []string{"a"}), "", ts(series("good"), now.UnixMilli()+1)))
	testutil.Equals(t, []int64{nowMs - 1000, now.UnixMilli(), now.UnixMilli() + 1}, readAll(t, ing, "a")[`{__name__="good", tenant_id="a"}`])
}

// TestIngesterAncientSampleDoesNotPoisonHead: a first sample near math.MinInt64 in a tenant's empty head is
// refused as too old, and does not make the head refuse every later sample (Prometheus's head computes the oldest
// time it accepts as its newest sample minus half a block range, which overflowed).
func TestIngesterAncientSampleDoesNotPoisonHead(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	for _, ancient := range []int64{math.MinInt64, math.MinInt64 + 1, math.MinInt64 + time.Hour.Milliseconds()} {
		t.Run(fmt.Sprint(ancient), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			ing := newTestIngester(t, t.TempDir(), nil, reg, WithIngesterClock(func() time.Time { return now }))
			defer ing.Close()
			for _, write := range []func(*storepb.WriteRequest) error{
				func(r *storepb.WriteRequest) error { return ing.Push(context.Background(), "a", r) },
				func(r *storepb.WriteRequest) error {
					r.Tenant = "b"
					_, err := ing.RemoteWrite(context.Background(), r)
					return err
				},
			} {
				err := write(&storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), ancient)}})
				testutil.Equals(t, codes.InvalidArgument, status.Code(err), "error: %v", err)
				testutil.Assert(t, strings.Contains(err.Error(), "err-mimir-sample-timestamp-too-old"), err.Error())
				testutil.Ok(t, write(&storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), now.UnixMilli())}}))
			}
			for _, tenant := range []string{"a", "b"} {
				testutil.Equals(t, map[string][]int64{`{__name__="m", tenant_id="` + tenant + `"}`: {now.UnixMilli()}}, readAll(t, ing, tenant))
			}
		})
	}
}

// A forwarded write whose every series is refused still stores the metric metadata it carries (metadata never
// fails with the write, as in Mimir), and answers the series' error.
func TestIngesterRemoteWriteKeepsMetadataOfRefusedSeries(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry(), WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	req := &storepb.WriteRequest{
		Tenant:     "a",
		Timeseries: []*prompb.TimeSeries{ts(series("m"), now.Add(100*365*24*time.Hour).UnixMilli())},
		Metadata:   []*prompb.MetricMetadata{md(prompb.MetricMetadata_GAUGE, "m", "help of m", "")},
	}
	_, err := ing.RemoteWrite(context.Background(), req)
	testutil.Equals(t, codes.InvalidArgument, status.Code(err), "error: %v", err)
	got := ing.metadata.read([]string{"a"}, "", 0)
	testutil.Equals(t, 1, len(got["m"]), "metadata of family m: %v", got)
	testutil.Equals(t, "help of m", got["m"][0].GetHelp())
	testutil.Equals(t, 0, len(ing.Tenants()), "no TSDB opened for a write whose every series was refused")
}

// TestIngesterPushSlots: a forwarded write waits for a push slot; one whose caller gives up meanwhile is answered
// with its context's error and appends nothing; once a slot frees, writes go through.
func TestIngesterPushSlots(t *testing.T) {
	reg := prometheus.NewRegistry()
	now := time.Unix(1_750_000_000, 0)
	ing := newTestIngester(t, t.TempDir(), nil, reg, WithIngesterClock(func() time.Time { return now }))
	defer ing.Close()
	ing.pushSlots = make(chan struct{}, 1)
	ing.pushSlots <- struct{}{} // the only slot, taken

	req := &storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{ts(series("m"), now.UnixMilli())}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := remoteWriteWire(ctx, ing, req)
	testutil.Equals(t, codes.DeadlineExceeded, status.Code(err), "error: %v", err)
	testutil.Equals(t, 0, len(ing.Tenants()))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(ing.metrics.pushes.WithLabelValues("waiting")))

	done := make(chan error, 1)
	go func() { done <- remoteWriteWire(context.Background(), ing, req) }()
	deadline := time.Now().Add(10 * time.Second)
	for promtestutil.ToFloat64(ing.metrics.pushes.WithLabelValues("waiting")) != 1 {
		testutil.Assert(t, time.Now().Before(deadline), "the write never waited")
		time.Sleep(5 * time.Millisecond)
	}
	<-ing.pushSlots // the slot frees
	testutil.Ok(t, <-done)
	testutil.Equals(t, map[string][]int64{`{__name__="m", tenant_id="a"}`: {now.UnixMilli()}}, readAll(t, ing, "a"))
	testutil.Equals(t, 0, len(ing.pushSlots))
}
