package frontend_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/query"
)

// benchSeries are 100 series: 10 jobs × 5 instances × a counter and a gauge.
func benchSeries(tenant string) []labels.Labels {
	var out []labels.Labels
	for j := range 10 {
		for i := range 5 {
			job, inst := fmt.Sprintf("job-%d", j), fmt.Sprintf("%d", i)
			out = append(out, labels.FromStrings("__name__", "m_total", "job", job, "instance", inst, "owner", tenant),
				labels.FromStrings("__name__", "m_gauge", "job", job, "instance", inst, "owner", tenant))
		}
	}
	return out
}

// newBenchHarness is the harness with 31 days of 100 series (bucket blocks at 5m, the last day and a half in
// the ingester at 1m), and the frontend's block list refreshed every minute as the querier's default.
func newBenchHarness(b *testing.B) *cacheHarness {
	const tenant = "team-a"
	h := newCacheHarness(b, harnessNow, tenant)
	fillWith(h, tenant, 31, benchSeries(tenant))
	h.finder = query.NewBucketBlocksFinder(h.bkt, time.Minute, 0, 0, time.Now)
	return h
}

// BenchmarkResultsCache30Days: the same 30-day range query (step 5m) through the frontend, with a cold cache
// (a new one each time: split, every day asked of the querier) and warm (the same query again: all but the
// last minutes from the cache). Reported: cold-ms, warm-ms, warm/cold-%.
func BenchmarkResultsCache30Days(b *testing.B) {
	h := newBenchHarness(b)
	q := rangeQuery{q: "sum(rate(m_total[15m]))", start: harnessNow.Add(-30 * 24 * time.Hour).UnixMilli(), end: harnessNow.UnixMilli(), step: 300_000}
	_, want := do(b, h.querier, "team-a", q)
	var cold, warm time.Duration
	b.ResetTimer()
	for b.Loop() {
		fe := h.frontend(cache.NewInMemory("results", cache.InMemoryConfig{}, nil, nil), h.generations(), nil)
		start := time.Now()
		code, got := do(b, fe, "team-a", q)
		cold += time.Since(start)
		testutil.Equals(b, http.StatusOK, code)
		testutil.Equals(b, want, got)
		start = time.Now()
		_, got = do(b, fe, "team-a", q)
		warm += time.Since(start)
		testutil.Equals(b, want, got)
	}
	n := float64(b.N)
	b.ReportMetric(float64(cold.Microseconds())/1000/n, "cold-ms")
	b.ReportMetric(float64(warm.Microseconds())/1000/n, "warm-ms")
	b.ReportMetric(100*float64(warm)/float64(cold), "warm/cold-%")
}

// BenchmarkFrontendSplit7Days: a 7-day range query (step 1m) asked of the querier alone, and through the
// frontend (split by day, the days in parallel, no results cache). Reported: querier-ms, frontend-ms,
// frontend/querier-%.
func BenchmarkFrontendSplit7Days(b *testing.B) {
	h := newBenchHarness(b)
	q := rangeQuery{q: "sum by (job) (rate(m_total[15m]))", start: harnessNow.Add(-7 * 24 * time.Hour).UnixMilli(), end: harnessNow.UnixMilli(), step: 60_000}
	fe := h.frontend(nil, nil, nil)
	_, want := do(b, h.querier, "team-a", q)
	var direct, split time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		_, got := do(b, h.querier, "team-a", q)
		direct += time.Since(start)
		testutil.Equals(b, want, got)
		start = time.Now()
		_, got = do(b, fe, "team-a", q)
		split += time.Since(start)
		testutil.Equals(b, want, got)
	}
	n := float64(b.N)
	b.ReportMetric(float64(direct.Microseconds())/1000/n, "querier-ms")
	b.ReportMetric(float64(split.Microseconds())/1000/n, "frontend-ms")
	b.ReportMetric(100*float64(split)/float64(direct), "frontend/querier-%")
}
