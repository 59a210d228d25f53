package receive

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// FuzzIngesterRemoteWrite feeds the ingester's gRPC write arbitrary bytes decoded as the gRPC codec decodes them
// (vtprotobuf, no UTF-8 check), on a real ingester over a temporary directory: whatever the request, it never
// panics, and no sample beyond now + creation_grace_period reaches a TSDB head. The tenant is in the request or,
// with tenantInMetadata, in gRPC metadata. Run it with
//
//	go test -run '^$' -fuzz '^FuzzIngesterRemoteWrite$' -fuzztime 30s ./pkg/receive/
func FuzzIngesterRemoteWrite(f *testing.F) {
	now := time.Now()
	nowMs := now.UnixMilli()
	seed := func(req *storepb.WriteRequest) {
		b, err := req.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	seed(&storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{
		ts(series("up", "job", "a", "instance", "i1"), nowMs-2000, nowMs-1000, nowMs),
		ts(series("requests_total", "code", "200"), nowMs),
	}})
	seed(&storepb.WriteRequest{Tenant: "b", Timeseries: []*prompb.TimeSeries{{
		Labels: series("latency_seconds"),
		Histograms: []*prompb.Histogram{{
			Count: &prompb.Histogram_CountInt{CountInt: 5}, Sum: 2.5, Schema: 0, ZeroThreshold: 1e-128,
			ZeroCount:     &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1},
			PositiveSpans: []*prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{2, 0}, Timestamp: nowMs,
		}, {
			Count: &prompb.Histogram_CountFloat{CountFloat: 3}, Sum: 1, Schema: -53, CustomValues: []float64{0.1, 1},
			PositiveSpans: []*prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveCounts: []float64{1, 2}, Timestamp: nowMs + 1,
		}},
	}}})
	seed(&storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{
		ts(series("up", "job", "a\xffb"), nowMs), ts(series("up"), math.MaxInt64), ts(series("up"), math.MinInt64),
		ts([]*labelpb.Label{{Name: "job", Value: "x"}, {Name: "__name__", Value: "up"}}, nowMs),
	}})
	seed(&storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("up"), nowMs)}})

	ing := fuzzIngester(f, now)

	f.Fuzz(func(t *testing.T, b []byte, tenantInMetadata bool) {
		var req storepb.WriteRequest
		if err := req.UnmarshalVT(b); err != nil {
			return
		}
		ctx := context.Background()
		if tenantInMetadata {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(tenancy.MetadataOrgID, req.GetTenant()))
			if tenant, err := tenancy.ParseTenantID(req.GetTenant()); err == nil {
				ctx = tenancy.WithTenants(ctx, []string{tenant}) // as the gRPC interceptor leaves it
			}
			req.Tenant = ""
		}
		_, _ = ing.RemoteWrite(ctx, &req)
		checkNoFutureSamples(t, ing, nowMs)
	})
}

// fuzzIngester returns an open ingester over a temporary directory whose clock stands at now.
func fuzzIngester(f *testing.F, now time.Time) *Ingester {
	reg := prometheus.NewRegistry()
	ing := NewIngester(DefaultIngesterConfig(), f.TempDir(), tenancy.NewOverrides(tenancy.DefaultLimits(), nil), NewDiscardedSamples(reg),
		log.NewNopLogger(), reg, WithIngesterClock(func() time.Time { return now }))
	if err := ing.Open(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = ing.Close() })
	return ing
}

// checkNoFutureSamples fails t if a head of ing holds a sample beyond nowMs + creation_grace_period (1h).
func checkNoFutureSamples(t *testing.T, ing *Ingester, nowMs int64) {
	for _, tenant := range ing.Tenants() {
		if u := ing.get(tenant); u != nil {
			if maxT := u.db.Head().MaxTime(); maxT != math.MinInt64 && maxT > nowMs+time.Hour.Milliseconds() {
				t.Fatalf("tenant %s: a sample at %d, beyond now + creation_grace_period, reached the head", tenant, maxT)
			}
		}
	}
}
