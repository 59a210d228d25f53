package compact

import (
	"context"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// gatewayQueryable serves the blocks in dirs (tenant a) from a store-gateway's bucket store over loopback gRPC
// and returns Strata's querier over it.
func gatewayQueryable(t *testing.T, dirs ...string) *query.Queryable {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	for _, dir := range dirs {
		m, err := block.ReadMetaFromDir(dir)
		testutil.Ok(t, err)
		testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, "a"), dir, m))
	}
	cfg := store.DefaultBucketStoreConfig()
	cfg.Dir = t.TempDir()
	st := store.NewBucketStore(bkt, cfg, nil, nil, nil, nil, log.NewNopLogger(), prometheus.NewRegistry(), nil)
	t.Cleanup(func() { _ = st.Close() })
	testutil.Ok(t, st.SyncBlocks(context.Background()))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	tc := tenancy.Config{MultitenancyEnabled: true}
	exempt := tenancy.GRPCExempt{"/thanos.info.Info/"}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(tc.UnaryServerInterceptor(exempt)), grpc.ChainStreamInterceptor(tc.StreamServerInterceptor(exempt)))
	storepb.RegisterStoreServer(srv, st)
	infopb.RegisterInfoServer(srv, st)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	c, conn, err := store.Dial(l.Addr().String())
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	testutil.Ok(t, c.RefreshInfo(context.Background(), 10*time.Second))
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{c} }, 0, log.NewNopLogger(), nil)
	return query.NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil)
}

// PromQL over blocks this package downsampled, read by the store-gateway and the querier, agrees with PromQL over
// the raw block within the tolerances of pkg/query's TestDownsampledReads_AgreeWithRaw (Thanos documents no
// figure): count_over_time exact; sum/min/max/avg_over_time to float rounding; rate/increase within 10% over at
// least 12 resolutions. Ranges are multiples of the resolution, evaluated at window ends.
func TestDownsample_QueriesAgreeWithRaw(t *testing.T) {
	logger := log.NewNopLogger()
	rawDir := rawBlock(t, testSeries())
	out := t.TempDir()
	m5, _, err := Downsample(context.Background(), logger, rawDir, out, Resolution5m, ulid.MustNew(1, nil))
	testutil.Ok(t, err)
	m1h, _, err := Downsample(context.Background(), logger, filepath.Join(out, m5.ULID.String()), out, Resolution1h, ulid.MustNew(2, nil))
	testutil.Ok(t, err)

	raw := gatewayQueryable(t, rawDir)
	ds := gatewayQueryable(t, filepath.Join(out, m5.ULID.String()), filepath.Join(out, m1h.ULID.String()))
	eng := promql.NewEngine(query.EngineOpts(query.DefaultEngineConfig(), logger, nil))
	ctx := tenancy.WithTenants(context.Background(), []string{"a"})
	start, end := time.UnixMilli(13*Resolution1h-1), time.UnixMilli(71*Resolution1h-1)
	run := func(ctx context.Context, q *query.Queryable, qs string) promql.Matrix {
		t.Helper()
		qry, err := eng.NewRangeQuery(ctx, q, nil, qs, start, end, time.Hour)
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
	for _, res := range []time.Duration{5 * time.Minute, time.Hour} {
		rateRange := model.Duration(max(12*res, 3*time.Hour))
		for _, tc := range []struct {
			query string
			tol   float64
		}{
			{"count_over_time(gauge[1h])", 0},
			{"count_over_time(counter[3h])", 0},
			{"sum_over_time(gauge[1h])", 1e-9},
			{"min_over_time(gauge[2h])", 1e-9},
			{"max_over_time(gauge[1h])", 1e-9},
			{"avg_over_time(gauge[1h])", 1e-9},
			{fmt.Sprintf("rate(counter[%s])", rateRange), 0.1},
			{fmt.Sprintf("increase(counter[%s])", rateRange), 0.1},
		} {
			t.Run(fmt.Sprintf("%s@%s", tc.query, res), func(t *testing.T) {
				want := run(ctx, raw, tc.query)
				got := run(query.WithRequestOptions(ctx, query.RequestOptions{Dedup: true, MaxSourceResolution: res}), ds, tc.query)
				testutil.Equals(t, 1, len(want))
				testutil.Equals(t, 1, len(got))
				testutil.Equals(t, want[0].Metric, got[0].Metric)
				testutil.Assert(t, len(want[0].Floats) > 40, "points: %d", len(want[0].Floats))
				testutil.Equals(t, len(want[0].Floats), len(got[0].Floats), "points (the gauge's gap included)")
				worst := 0.0
				for i, p := range want[0].Floats {
					g := got[0].Floats[i]
					testutil.Equals(t, p.T, g.T)
					d := math.Abs(p.F-g.F) / math.Max(math.Abs(p.F), 1e-300)
					testutil.Assert(t, d <= tc.tol, "at %d: raw %v, downsampled %v (relative difference %.3g > %v)", p.T, p.F, g.F, d, tc.tol)
					worst = max(worst, d)
				}
				t.Logf("largest relative difference: %.3g", worst)
			})
		}
	}
}
