package frontend

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// FuzzFrontendEdge sends hostile range queries (times and steps of any spelling, NaN, ±Inf, 100 years at 1s,
// odd tenants) through the whole chain, results cache included: never a panic, a status of 2xx–5xx, and the
// work bounded: at most maxSplitsPerQuery parts, none of them over 11,000 points unless it is the request as sent.
func FuzzFrontendEdge(f *testing.F) {
	for _, s := range [][4]string{
		{"0", "3153600000", "1", "up"},
		{"-3153600000", "3153600000", "1s", "rate(m[5m])"},
		{"NaN", "Inf", "-Inf", "m"},
		{"1e300", "-1e300", "0", "m"},
		{"2020-01-01T00:00:00Z", "2120-01-01T00:00:00Z", "1d", "m @ end()"},
		{"0", "86400000", "0.001", "sum(m)"},
		{"1", "2", "1e-9", "m"},
		{"0", "3153600000", "86400", "m"},
	} {
		f.Add(s[0], s[1], s[2], s[3], "t")
	}
	f.Add("0", "100", "1", "m", "a|b")
	f.Fuzz(func(t *testing.T, start, end, step, query, tenant string) {
		var mtx sync.Mutex
		calls := 0
		down := HandlerFunc(func(_ context.Context, r *Request) (*Response, error) {
			mtx.Lock()
			calls++
			mtx.Unlock()
			if r.IsRange && r.raw == nil && (r.End-r.Start)/r.Step > maxPointsPerSeries {
				t.Errorf("a part of %d points was made", (r.End-r.Start)/r.Step+1)
			}
			return &Response{StatusCode: 200, Status: "success", ResultType: "matrix"}, nil
		})
		cfg := DefaultConfig()
		reg := prometheus.NewRegistry()
		lim := tenancy.DefaultLimits()
		rc := NewResultsCache(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), []GenerationSource{&staticSource{}},
			tenancy.NewOverrides(lim, nil), ResultsCacheOptions{SplitInterval: cfg.SplitQueriesByInterval, Now: func() time.Time { return time.UnixMilli(1_768_400_000_000) }}, nil, reg)
		fe, err := New(cfg, Options{Auth: tenancy.DefaultConfig(), Limits: staticLimits{parallelism: 4}, Downstream: down, Metrics: NewMetrics(reg), ResultsCache: rc})
		if err != nil {
			t.Fatal(err)
		}
		w := serve(t, fe, http.MethodPost, "/api/v1/query_range", url.Values{"query": {query}, "start": {start}, "end": {end}, "step": {step}}, tenant)
		if w.Code < 200 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		if calls > maxSplitsPerQuery {
			t.Fatalf("%d downstream requests", calls)
		}
	})
}
