package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
)

// fedSeries are the series pushed to each tenant of TestFederatedReads: fed_m{job="x", i="0"} in both (the same
// labels: only __tenant_id__ tells them apart in a federated answer), others in one only. A sample's value is
// the tenant's factor × (i+1) plus its minute index, so every answer can be checked against what was pushed.
var fedSeries = map[string]struct {
	factor float64
	series [][]string // name, job, i
}{
	"fed-a": {factor: 1, series: [][]string{{"fed_m", "x", "0"}, {"fed_m", "x", "1"}, {"fed_only", "a", "0"}}},
	"fed-b": {factor: 1000, series: [][]string{{"fed_m", "x", "0"}, {"fed_m", "y", "2"}}},
}

// withTenantLabel returns the samples with __tenant_id__ set, as a federated read returns them.
func withTenantLabel(in []promSample, tenant string) []promSample {
	out := make([]promSample, 0, len(in))
	for _, s := range in {
		m := map[string]string{"__tenant_id__": tenant}
		for k, v := range s.Metric {
			m[k] = v
		}
		s.Metric = m
		out = append(out, s)
	}
	return out
}

// checkPushed checks a range answer of TestFederatedReads ([10m, 60m] after t0 by 1m) against the samples
// pushed to tenant: n series, each value the tenant's factor × (i+1) plus the minute.
func checkPushed(t *testing.T, tenant string, got []promSample, n int) {
	t.Helper()
	testutil.Equals(t, n, len(got), tenant)
	for _, smp := range got {
		var i float64
		_, err := fmt.Sscan(smp.Metric["i"], &i)
		testutil.Ok(t, err)
		testutil.Equals(t, 51, len(smp.Values), "%s %v", tenant, smp.Metric)
		for k, v := range smp.Values {
			testutil.Equals(t, fedSeries[tenant].factor*(i+1)+float64(k+10), sampleFloat(t, v), "%s %v step %d", tenant, smp.Metric, k)
		}
	}
}

// counterSum sums a counter's lines on /metrics whose tenant label is exactly tenant.
func counterSum(t *testing.T, p *proc, name, tenant string) float64 {
	t.Helper()
	sum := 0.0
	for _, l := range metricsLines(t, p, name+"{", `tenant="`+tenant+`"`) {
		_, v := metricLine(l)
		sum += v
	}
	return sum
}

// TestFederatedReads: `strata all` (its query-frontend and in-memory results cache in front of the querier).
// Answers for X-Scope-OrgID fed-a|fed-b (query, query_range, series, labels, label values, matchers on
// __tenant_id__) equal the union of fed-a's and fed-b's answers with __tenant_id__ set, and fed-a's and fed-b's
// equal what was pushed; a cached fed-a answer serves neither fed-a|fed-b nor fed-b (answers right, no hit on
// their first ask; the frontend's cache metrics), fed-b|fed-a is served from fed-a|fed-b's entries; max_tenants
// gives a 400 naming the key; writes naming two tenants are a 400.
func TestFederatedReads(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  fed-c:\n    max_tenants: 2\n"), 0o600))
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt)
	s.waitReady(t, 30*time.Second)
	base := s.url("/prometheus")

	// Samples every minute from 90 to 20 minutes ago: old enough for the results cache (max_cache_freshness 10m).
	t0 := time.Now().Add(-90 * time.Minute).Truncate(time.Minute)
	const minutes = 70
	for tenant, d := range fedSeries {
		var series []prompb.TimeSeries
		for _, sr := range d.series {
			ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: sr[0]}, {Name: "i", Value: sr[2]}, {Name: "job", Value: sr[1]}}}
			var i float64
			_, err := fmt.Sscan(sr[2], &i)
			testutil.Ok(t, err)
			for k := 0; k <= minutes; k++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0.Add(time.Duration(k) * time.Minute).UnixMilli(), Value: d.factor*(i+1) + float64(k)})
			}
			series = append(series, ts)
		}
		code, body := pushV1(t, s.url("/api/v1/push"), tenant, series)
		testutil.Assert(t, code/100 == 2, "push %s: %d %s", tenant, code, body)
	}

	// Writes naming several tenants stay refused, on every write path.
	for _, path := range []string{"/api/v1/push", "/api/v1/receive"} {
		code, body := pushV1(t, s.url(path), "fed-a|fed-b", seriesOf("fed_m", 1, time.Now().UnixMilli()))
		testutil.Equals(t, 400, code, "%s: %s", path, body)
		mustContain(t, body, "where one is required")
	}

	evalT := t0.Add(60 * time.Minute)
	instant := func(tenant, q string) []promSample {
		return instantQuery(t, base, tenant, q, evalT.UnixMilli())
	}
	start, end := t0.Add(10*time.Minute).UnixMilli(), t0.Add(60*time.Minute).UnixMilli()
	ranged := func(tenant, q string) []promSample {
		return rangeQuery(t, base, tenant, q, start, end, "1m", nil)
	}
	union := func(f func(tenant, q string) []promSample, q string) []promSample {
		out := append(withTenantLabel(f("fed-a", q), "fed-a"), withTenantLabel(f("fed-b", q), "fed-b")...)
		sortSamples(out)
		return out
	}
	waitUntil(t, 20*time.Second, "the pushed series to be queryable", func() bool {
		return len(instant("fed-a", "fed_m")) == 2 && len(instant("fed-b", "fed_m")) == 2
	})

	// Each tenant's own answers are what was pushed (so that the union below is a union of right answers).
	for tenant, d := range fedSeries {
		checkPushed(t, tenant, ranged(tenant, `{__name__=~"fed_.+"}`), len(d.series))
	}

	// query and query_range: the union with __tenant_id__, also through PromQL functions and tenant matchers.
	for _, q := range []string{`fed_m`, `{__name__=~"fed_.+"}`, `fed_m * 2`, `rate(fed_m[5m])`} {
		testutil.Equals(t, union(instant, q), instant("fed-a|fed-b", q), "instant %s", q)
		testutil.Equals(t, union(ranged, q), ranged("fed-b|fed-a", q), "range %s", q)
	}
	testutil.Equals(t, withTenantLabel(instant("fed-b", "fed_m"), "fed-b"), instant("fed-a|fed-b", `fed_m{__tenant_id__="fed-b"}`))
	testutil.Equals(t, withTenantLabel(ranged("fed-a", "fed_m"), "fed-a"), ranged("fed-a|fed-b", `fed_m{__tenant_id__!="fed-b"}`))
	sumBy := instant("fed-a|fed-b", `sum by (__tenant_id__) (fed_m)`)
	testutil.Equals(t, 2, len(sumBy), "sum by (__tenant_id__)")

	// series
	seriesOfTenant := func(tenant string) []map[string]string {
		var out []map[string]string
		promGet(t, base, tenant, "/api/v1/series", url.Values{"match[]": {`{__name__=~"fed_.+"}`}, "start": {unixS(t0)}, "end": {unixS(evalT)}}, &out)
		return out
	}
	var wantSeries []promSample
	for _, tenant := range []string{"fed-a", "fed-b"} {
		var ss []promSample
		for _, m := range seriesOfTenant(tenant) {
			ss = append(ss, promSample{Metric: m})
		}
		wantSeries = append(wantSeries, withTenantLabel(ss, tenant)...)
	}
	sortSamples(wantSeries)
	var gotSeries []promSample
	for _, m := range seriesOfTenant("fed-a|fed-b") {
		gotSeries = append(gotSeries, promSample{Metric: m})
	}
	testutil.Equals(t, 5, len(wantSeries))
	testutil.Equals(t, wantSeries, gotSeries, "series")

	// labels and label values
	unionOf := func(path string, extra ...string) []string {
		out := extra
		for _, tenant := range []string{"fed-a", "fed-b"} {
			var vs []string
			promGet(t, base, tenant, path, nil, &vs)
			out = append(out, vs...)
		}
		return slices.Compact(slices.Sorted(slices.Values(out)))
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{path: "/api/v1/labels", want: unionOf("/api/v1/labels", "__tenant_id__")},
		{path: "/api/v1/label/job/values", want: unionOf("/api/v1/label/job/values")},
		{path: "/api/v1/label/__name__/values", want: unionOf("/api/v1/label/__name__/values")},
		{path: "/api/v1/label/__tenant_id__/values", want: []string{"fed-a", "fed-b"}},
	} {
		var got []string
		promGet(t, base, "fed-a|fed-b", tc.path, nil, &got)
		testutil.Equals(t, tc.want, got, tc.path)
		testutil.Assert(t, len(got) >= 2, "%s: %v", tc.path, got)
	}
	testutil.Equals(t, []string{"x", "y"}, labelValues(t, base, "fed-b", "job"))

	// The results cache: fed-a's answer cached, then fed-a|fed-b and fed-b asked the same query must not be
	// served it (no hit, their own right answers); fed-b|fed-a is fed-a|fed-b (a hit).
	hits := func(tenant string) float64 {
		return counterSum(t, s, "strata_query_frontend_results_cache_hits_total", tenant)
	}
	lookups := func(tenant string) float64 {
		return counterSum(t, s, "strata_query_frontend_results_cache_lookups_total", tenant)
	}
	cq := `fed_m + 0` // a query text not asked above
	hA, lA := hits("fed-a"), lookups("fed-a")
	wantA := ranged("fed-a", cq)
	testutil.Assert(t, lookups("fed-a") > lA, "the results cache is not in use")
	testutil.Equals(t, hA, hits("fed-a"), "fed-a's first answer is a hit")
	checkPushed(t, "fed-a", wantA, 2)
	testutil.Equals(t, wantA, ranged("fed-a", cq))
	testutil.Assert(t, hits("fed-a") > hA, "fed-a's second answer is not from the cache")

	hAB, lAB := hits("fed-a|fed-b"), lookups("fed-a|fed-b")
	gotAB := ranged("fed-a|fed-b", cq)
	testutil.Assert(t, lookups("fed-a|fed-b") > lAB, "fed-a|fed-b was not looked up in the cache")
	testutil.Equals(t, hAB, hits("fed-a|fed-b"), "fed-a|fed-b's first answer is a hit")
	hB, lB := hits("fed-b"), lookups("fed-b")
	gotB := ranged("fed-b", cq)
	testutil.Assert(t, lookups("fed-b") > lB, "fed-b was not looked up in the cache")
	testutil.Equals(t, hB, hits("fed-b"), "fed-b's first answer is a hit")
	checkPushed(t, "fed-b", gotB, 2)
	wantAB := append(withTenantLabel(wantA, "fed-a"), withTenantLabel(gotB, "fed-b")...)
	sortSamples(wantAB)
	testutil.Equals(t, wantAB, gotAB, "fed-a|fed-b after fed-a was cached")
	testutil.Equals(t, wantAB, ranged("fed-b|fed-a", cq), "fed-b|fed-a")
	testutil.Assert(t, hits("fed-a|fed-b") > hAB, "fed-b|fed-a is not served from fed-a|fed-b's entries")

	// max_tenants: fed-c allows 2 tenants per request; a request naming it with two others is a 400.
	for _, path := range []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/labels", "/api/v1/series", "/api/v1/metadata"} {
		code, body := httpGet(base+path+"?"+url.Values{"query": {"fed_m"}, "match[]": {"fed_m"}, "start": {unixS(t0)}, "end": {unixS(evalT)}, "step": {"60"}}.Encode(),
			map[string]string{"X-Scope-OrgID": "fed-a|fed-b|fed-c"})
		testutil.Equals(t, 400, code, "%s: %s", path, body)
		mustContain(t, body, "too many tenant IDs present in the request. max: 2 actual: 3", "configure max_tenants")
	}
	code, body := httpGet(base+"/api/v1/query?query=fed_m", map[string]string{"X-Scope-OrgID": "fed-a|fed-c"})
	testutil.Equals(t, 200, code, body)
	code, body = httpGet(base+"/api/v1/metadata", map[string]string{"X-Scope-OrgID": "fed-a|fed-b"})
	testutil.Equals(t, 200, code, body)
	testutil.Assert(t, !strings.Contains(body, "error"), body)
}
