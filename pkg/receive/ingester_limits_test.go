package receive

import (
	"context"
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
			cfg.InstanceLimits = tc.limits
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
