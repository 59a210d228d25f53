package query

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const (
	benchSeries   = 10_000
	benchInterval = 30 * time.Second
	benchSpan     = 24 * time.Hour
	benchSamples  = int(benchSpan / benchInterval) // per series
)

// benchRangeDB writes benchSeries counters bench_metric{instance="i-N", job="j-<N%10>"} × 24h at 30s (28.8M
// samples) into a TSDB under b.TempDir(), scrape by scrape, and compacts what the head would have cut into
// 2h blocks, as an ingester's TSDB holds it.
func benchRangeDB(b *testing.B) *tsdb.DB {
	b.Helper()
	start := time.Now()
	db, err := tsdb.Open(b.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(b, err)
	b.Cleanup(func() { _ = db.Close() })
	db.DisableCompactions()

	lsets := make([]labels.Labels, benchSeries)
	for s := range lsets {
		lsets[s] = labels.FromStrings("__name__", "bench_metric", "instance", fmt.Sprintf("i-%d", s), "job", fmt.Sprintf("j-%d", s%10))
	}
	refs := make([]storage.SeriesRef, benchSeries)
	vals := make([]float64, benchSeries)
	base := eqBase.UnixMilli()
	for i := range benchSamples {
		app := db.Appender(context.Background())
		t := base + int64(i)*benchInterval.Milliseconds()
		for s, lset := range lsets {
			vals[s] += float64((s*31+i*17)%100) / 8
			refs[s], err = app.Append(refs[s], lset, t, vals[s])
			testutil.Ok(b, err)
		}
		testutil.Ok(b, app.Commit())
	}
	appended := time.Since(start)
	testutil.Ok(b, db.Compact(context.Background()))
	b.Logf("fixture: %d series × %d samples (%v at %v) appended in %v, compacted into %d blocks in %v",
		benchSeries, benchSamples, benchSpan, benchInterval, appended.Round(time.Millisecond), len(db.Blocks()), (time.Since(start) - appended).Round(time.Millisecond))
	return db
}

// BenchmarkRangeQuery runs range queries over 10k series × 24h served from an ingester's TSDB: with
// Prometheus's engine directly on the TSDB (engine=prometheus), and with the querier's read path — the same
// TSDB behind one TSDBStore on loopback gRPC, a store.Client, the Proxy and the Queryable (engine=strata).
// It reports samples/s (samples the query reads / time per op) and, for strata, the ratio of its time per op
// to prometheus's (x-prometheus).
func BenchmarkRangeQuery(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 28.8M-sample TSDB")
	}
	db := benchRangeDB(b)
	logger := log.NewNopLogger()
	client := harnessServe(b, db)
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{client} }, 0, logger, nil)
	strata := NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil)
	h := &promqlHarness{
		ctx:          tenancy.WithTenants(context.Background(), []string{harnessTenant}),
		refDB:        db,
		refEngine:    promql.NewEngine(refEngineOpts(logger)),
		strata:       strata,
		strataEngine: promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)),
	}
	dataStart, dataEnd := eqBase, eqBase.Add(benchSpan-benchInterval)

	for _, q := range []struct {
		name    string
		query   string
		ev      harnessEval
		samples int // samples the query reads
	}{
		{
			name: "sum_by_job_rate_5m/24h_step_60s", query: `sum by (job) (rate(bench_metric[5m]))`,
			ev:      harnessEval{start: dataStart, end: dataEnd, step: time.Minute},
			samples: benchSeries * benchSamples,
		},
		{
			name: "selector/instant", query: `bench_metric`,
			ev:      harnessEval{instant: true, start: dataEnd},
			samples: benchSeries * int(5*time.Minute/benchInterval),
		},
	} {
		b.Run(q.name, func(b *testing.B) {
			// Both sides must agree before their speed is compared.
			c := h.compare(q.query, q.ev, false)
			testutil.Ok(b, c.refErr)
			testutil.Assert(b, c.diff == "", "strata and prometheus differ: %s", c.diff)
			testutil.Assert(b, c.refPoints > 0, "no result")

			var promNsPerOp float64
			for _, e := range []struct {
				name string
				eng  *promql.Engine
				q    storage.Queryable
			}{
				{"prometheus", h.refEngine, h.refDB},
				{"strata", h.strataEngine, h.strata},
			} {
				b.Run("engine="+e.name, func(b *testing.B) {
					b.ReportAllocs()
					n := 0
					for b.Loop() {
						qry, res := h.run(e.eng, e.q, q.query, q.ev)
						testutil.Ok(b, res.Err)
						qry.Close()
						n++
					}
					nsPerOp := float64(b.Elapsed().Nanoseconds()) / float64(n)
					b.ReportMetric(float64(q.samples)/(nsPerOp/1e9), "samples/s")
					switch e.name {
					case "prometheus":
						promNsPerOp = nsPerOp
					case "strata":
						if promNsPerOp > 0 {
							b.ReportMetric(nsPerOp/promNsPerOp, "x-prometheus")
						}
					}
				})
			}
		})
	}
}
