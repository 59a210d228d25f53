package receive

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestIngesterInstanceLimits: over real gRPC, a forwarded write beyond ingester.instance_limits (requests held,
// or their bytes) is answered Unavailable at once and appends nothing, while the writes held go on; once they
// are done the same write is accepted, and nothing stays counted.
func TestIngesterInstanceLimits(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	req := func(name string) *storepb.WriteRequest {
		return &storepb.WriteRequest{Tenant: "a", Timeseries: []*prompb.TimeSeries{ts(series(name), now.UnixMilli())}}
	}
	size := req("held").SizeVT() // every request below has a name of 4 bytes: the same size
	for _, tc := range []struct {
		name      string
		limits    InstanceLimits
		wantInMsg string
		reason    string
	}{
		{name: "requests", limits: InstanceLimits{MaxInflightPushRequests: 1}, wantInMsg: "ingester.instance_limits.max_inflight_push_requests)",
			reason: "ingester_max_inflight_push_requests"},
		{name: "bytes", limits: InstanceLimits{MaxInflightPushRequestsBytes: 2*size - 1}, wantInMsg: "ingester.instance_limits.max_inflight_push_requests_bytes",
			reason: "ingester_max_inflight_push_requests_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := DefaultIngesterConfig()
			cfg.InstanceLimits = IngesterInstanceLimits{InstanceLimits: tc.limits}
			testutil.Ok(t, cfg.Validate())
			ing := NewIngester(cfg, t.TempDir(), tenancy.NewOverrides(tenancy.DefaultLimits(), nil), NewDiscardedSamples(reg), log.NewNopLogger(), reg,
				WithIngesterClock(func() time.Time { return now }))
			testutil.Ok(t, ing.Open())
			defer ing.Close()
			srv := grpc.NewServer(server.Config{}.GRPCMsgSizeOptions()...)
			RegisterWriteableStore(srv, ing)
			conn := serveBench(t, srv)
			write := func(ctx context.Context, r *storepb.WriteRequest) error {
				return conn.Invoke(ctx, storepb.WriteableStore_RemoteWrite_FullMethodName, r, &storepb.WriteResponse{})
			}
			rejected := func() float64 {
				return counterValue(t, reg, "strata_ingester_instance_rejected_requests_total", map[string]string{"reason": tc.reason})
			}

			// One write held: it waits for the only push slot, taken.
			ing.pushSlots = make(chan struct{}, 1)
			ing.pushSlots <- struct{}{}
			held := make(chan error, 1)
			go func() { held <- write(context.Background(), req("held")) }()
			deadline := time.Now().Add(10 * time.Second)
			for promtestutil.ToFloat64(ing.metrics.pushes.WithLabelValues("waiting")) != 1 {
				testutil.Assert(t, time.Now().Before(deadline), "the first write never waited")
				time.Sleep(5 * time.Millisecond)
			}
			testutil.Equals(t, float64(size), promtestutil.ToFloat64(ing.metrics.pushBytes))

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := write(ctx, req("more")) // answered at once, not after waiting for the slot
			testutil.Equals(t, codes.Unavailable, status.Code(err), "error: %v", err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantInMsg), err.Error())
			testutil.Equals(t, 1.0, rejected())

			<-ing.pushSlots // the slot frees: the held write is appended
			testutil.Ok(t, <-held)
			testutil.Ok(t, write(ctx, req("more")))
			testutil.Equals(t, map[string][]int64{`{__name__="held", tenant_id="a"}`: {now.UnixMilli()}, `{__name__="more", tenant_id="a"}`: {now.UnixMilli()}},
				readAll(t, ing, "a"))
			testutil.Equals(t, 1.0, rejected())
			testutil.Equals(t, int64(0), ing.inflight.requests.Load())
			testutil.Equals(t, int64(0), ing.inflight.bytes.Load())
		})
	}
}

// TestIngesterInstanceSeriesTenantsRateLimits: the ingester's own limits over all tenants (Mimir's
// instance_limits max_series, max_tenants, max_ingestion_rate). Beyond each, the write is answered Unavailable
// (the distributor's replica failure, never a client's 4xx) and counted by reason; what was already held keeps
// being written; at startup every tenant on disk is opened whatever max_tenants says.
func TestIngesterInstanceSeriesTenantsRateLimits(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	clock := func() time.Time { return now }
	ctx := context.Background()
	push := func(ing *Ingester, tenant string, t0 int64, names ...string) error {
		req := &storepb.WriteRequest{}
		for _, n := range names {
			req.Timeseries = append(req.Timeseries, ts(series(n), t0))
		}
		return ing.Push(ctx, tenant, req)
	}
	newIng := func(t *testing.T, dir string, limits IngesterInstanceLimits, reg prometheus.Registerer) *Ingester {
		cfg := DefaultIngesterConfig()
		cfg.InstanceLimits = limits
		testutil.Ok(t, cfg.Validate())
		ing := NewIngester(cfg, dir, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), NewDiscardedSamples(reg), log.NewNopLogger(), reg,
			WithIngesterClock(clock))
		testutil.Ok(t, ing.Open())
		return ing
	}
	unavailable := func(t *testing.T, err error, wantInMsg string) {
		t.Helper()
		testutil.NotOk(t, err)
		testutil.Equals(t, codes.Unavailable, status.Code(err), "%v", err)
		testutil.Assert(t, strings.Contains(err.Error(), wantInMsg), "%v", err)
	}
	rejected := func(t *testing.T, reg *prometheus.Registry, reason string) float64 {
		return counterValue(t, reg, "strata_ingester_instance_rejected_requests_total", map[string]string{"reason": reason})
	}
	t0 := now.UnixMilli()

	t.Run("max_series", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		ing := newIng(t, t.TempDir(), IngesterInstanceLimits{MaxSeries: 5}, reg)
		defer ing.Close()
		testutil.Ok(t, push(ing, "a", t0, "a1", "a2", "a3"))
		// Two of b's four new series fit: the write is refused, the two are created and written.
		unavailable(t, push(ing, "b", t0, "b1", "b2", "b3", "b4"), "ingester.instance_limits.max_series")
		testutil.Equals(t, 5, ing.seriesInMemory())
		testutil.Equals(t, 1.0, rejected(t, reg, reasonInstanceMaxSeries))
		// Existing series are still written, in both tenants; one new series among them refuses the write again.
		testutil.Ok(t, push(ing, "a", t0+1000, "a1", "a2", "a3"))
		unavailable(t, push(ing, "b", t0+1000, "b1", "b2", "b9"), "max_series")
		testutil.Equals(t, 5, ing.seriesInMemory())
		got := readAll(t, ing, "b")
		testutil.Equals(t, 2, len(got), "%v", got)
		for s, samples := range got {
			testutil.Equals(t, []int64{t0, t0 + 1000}, samples, s)
		}
		testutil.Equals(t, 3, len(readAll(t, ing, "a")))
		testutil.Equals(t, 2.0, rejected(t, reg, reasonInstanceMaxSeries))
	})

	t.Run("max_tenants", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		dir := t.TempDir()
		ing := newIng(t, dir, IngesterInstanceLimits{MaxTenants: 2}, reg)
		testutil.Ok(t, push(ing, "a", t0, "m"))
		testutil.Ok(t, push(ing, "b", t0, "m"))
		unavailable(t, push(ing, "c", t0, "m"), "ingester.instance_limits.max_tenants")
		testutil.Equals(t, 1.0, rejected(t, reg, reasonInstanceMaxTenants))
		testutil.Ok(t, push(ing, "a", t0+1000, "m")) // an open tenant still writes
		testutil.Equals(t, []string{"a", "b"}, ing.Tenants())
		testutil.Ok(t, ing.Close())

		// Three tenants on disk (c's by an ingester without the limit): a restart opens them all, and then no
		// fourth.
		free := newIng(t, dir, IngesterInstanceLimits{}, prometheus.NewRegistry())
		testutil.Ok(t, push(free, "c", t0, "m"))
		testutil.Ok(t, free.Close())
		ing = newIng(t, dir, IngesterInstanceLimits{MaxTenants: 2}, prometheus.NewRegistry())
		defer ing.Close()
		testutil.Equals(t, []string{"a", "b", "c"}, ing.Tenants())
		testutil.Equals(t, 1, len(readAll(t, ing, "c")))
		unavailable(t, push(ing, "d", t0, "m"), "max_tenants")
	})

	t.Run("max_ingestion_rate", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		ing := newIng(t, t.TempDir(), IngesterInstanceLimits{MaxIngestionRate: 1000}, reg)
		defer ing.Close()
		names := func(prefix string, n int) []string {
			out := make([]string, n)
			for k := range out {
				out[k] = prefix + strconv.Itoa(k)
			}
			return out
		}
		testutil.Ok(t, push(ing, "a", t0, names("x", 600)...))
		testutil.Ok(t, push(ing, "a", t0, names("y", 600)...)) // 600/s before it: under the limit
		// 1,200 samples in this second: refused, and nothing appended.
		unavailable(t, push(ing, "a", t0, "z"), "ingester.instance_limits.max_ingestion_rate")
		testutil.Equals(t, 1200, ing.seriesInMemory())
		testutil.Equals(t, 1.0, rejected(t, reg, reasonInstanceMaxIngestionRate))
		now = now.Add(time.Second) // the average: 1,200/s
		unavailable(t, push(ing, "a", t0+1000, "z"), "max_ingestion_rate")
		now = now.Add(5 * time.Second) // 1,200 × 0.8^5 ≈ 393/s
		testutil.Ok(t, push(ing, "a", t0+1000, "z"))
		testutil.Equals(t, 2.0, rejected(t, reg, reasonInstanceMaxIngestionRate))
	})
}

// TestIngesterInstanceLimitsValidate: negative limits, and a rate that is not a number, are refused.
func TestIngesterInstanceLimitsValidate(t *testing.T) {
	for _, l := range []IngesterInstanceLimits{
		{MaxSeries: -1}, {MaxTenants: -1}, {MaxIngestionRate: -1}, {MaxIngestionRate: math.NaN()}, {MaxIngestionRate: math.Inf(1)},
		{InstanceLimits: InstanceLimits{MaxInflightPushRequests: -1}},
	} {
		testutil.NotOk(t, l.Validate(), "%+v", l)
	}
	testutil.Ok(t, IngesterInstanceLimits{MaxSeries: 1, MaxTenants: 1, MaxIngestionRate: 0.5}.Validate())
	testutil.Ok(t, DefaultIngesterInstanceLimits().Validate())
}
