package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
)

// TestQuerier: `strata all` answers the Prometheus HTTP API under /prometheus/api/v1 and /api/v1, per tenant.
// Tenant isolation through every endpoint (tenant_id matchers, {__name__=~".+"}, label listings); an HA pair
// (replica label) with a gap in one replica comes back as one continuous series (two with dedup=false); the
// per-tenant query limits answer with their Mimir errors; bad requests get Prometheus's errors.
func TestQuerier(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte(`overrides:
  limited:
    max_fetched_series_per_query: 3
    max_query_length: 1h
  samples:
    max_samples: 3
`), 0o600))
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt, "--query.replica-label=replica")
	s.waitReady(t, 30*time.Second)
	push := s.url("/api/v1/push")
	now := time.Now().Truncate(time.Second).UnixMilli()

	// Two tenants, overlapping metric names.
	for _, tc := range []struct {
		tenant string
		series []prompb.TimeSeries
	}{
		{"team-a", seriesOf("shared_metric", 4, now, prompb.Label{Name: "team", Value: "a"})},
		{"team-b", append(seriesOf("shared_metric", 2, now, prompb.Label{Name: "team", Value: "b"}), seriesOf("secret_b", 1, now)...)},
		{"limited", seriesOf("many", 5, now)},
		{"samples", seriesOf("many", 5, now)},
	} {
		code, body := pushV1(t, push, tc.tenant, tc.series)
		testutil.Assert(t, code/100 == 2, "push %s: %d %s", tc.tenant, code, body)
	}

	for _, prefix := range []string{"/prometheus", ""} {
		base := s.url(prefix)
		t.Run("isolation"+prefix, func(t *testing.T) {
			for _, q := range []string{`{__name__=~".+"}`, `shared_metric`, `{__name__=~".+", tenant_id=~".*"}`, `{__name__=~".+", tenant_id!="team-a"}`} {
				vec := instantQuery(t, base, "team-a", q, now)
				testutil.Assert(t, len(vec) > 0, "%s: nothing", q)
				for _, smp := range vec {
					testutil.Equals(t, "a", smp.Metric["team"], "%s as team-a returned %v", q, smp.Metric)
					_, has := smp.Metric["tenant_id"]
					testutil.Assert(t, !has, "tenant_id leaked: %v", smp.Metric)
				}
			}
			testutil.Equals(t, 4, len(instantQuery(t, base, "team-a", `shared_metric`, now)))
			for _, q := range []string{`{tenant_id="team-b"}`, `{tenant_id=~"team-.*"}`, `secret_b`, `{__name__=~"secret.*"}`, `shared_metric{team="b"}`} {
				testutil.Equals(t, 0, len(instantQuery(t, base, "team-a", q, now)), "%s as team-a", q)
			}
			testutil.Equals(t, 1, len(instantQuery(t, base, "team-b", `secret_b`, now)))

			testutil.Equals(t, []string{"shared_metric"}, labelValues(t, base, "team-a", "__name__"))
			testutil.Equals(t, []string{"a"}, labelValues(t, base, "team-a", "team"))
			testutil.Equals(t, 0, len(labelValues(t, base, "team-a", "tenant_id")))
			var names []string
			promGet(t, base, "team-a", "/api/v1/labels", nil, &names)
			testutil.Equals(t, []string{"__name__", "i", "team"}, names)

			var series, none []map[string]string
			promGet(t, base, "team-a", "/api/v1/series", url.Values{"match[]": {`{__name__=~".+"}`}}, &series)
			testutil.Equals(t, 4, len(series))
			for _, ls := range series {
				testutil.Equals(t, "a", ls["team"])
			}
			promGet(t, base, "team-a", "/api/v1/series", url.Values{"match[]": {`{tenant_id=~"team-b"}`}}, &none)
			testutil.Equals(t, 0, len(none))
		})
	}

	t.Run("ha pair dedup", func(t *testing.T) {
		// Two replicas scrape the same target every 15s, 1s apart; replica r1 misses minutes 3 to 6.
		start := now - 10*time.Minute.Milliseconds()
		var r1, r2 prompb.TimeSeries
		r1.Labels = []prompb.Label{{Name: "__name__", Value: "ha_metric"}, {Name: "cluster", Value: "c1"}, {Name: "replica", Value: "r1"}}
		r2.Labels = []prompb.Label{{Name: "__name__", Value: "ha_metric"}, {Name: "cluster", Value: "c1"}, {Name: "replica", Value: "r2"}}
		for ts := start; ts <= now; ts += 15000 {
			if off := ts - start; off < 3*60000 || off > 6*60000 {
				r1.Samples = append(r1.Samples, prompb.Sample{Timestamp: ts, Value: float64(ts-start) / 1000})
			}
			r2.Samples = append(r2.Samples, prompb.Sample{Timestamp: ts + 1000, Value: float64(ts+1000-start) / 1000})
		}
		code, body := pushV1(t, push, "team-ha", []prompb.TimeSeries{r1, r2})
		testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)

		// With a 1m lookback r1 alone has a hole in the middle; the penalty algorithm switches to r2 within
		// 2 scrape intervals, which the lookback covers.
		extra := url.Values{"lookback_delta": {"1m"}}
		m := rangeQuery(t, s.url("/prometheus"), "team-ha", "ha_metric", start, now, "15s", extra)
		testutil.Equals(t, 1, len(m), "deduplicated series")
		testutil.Equals(t, map[string]string{"__name__": "ha_metric", "cluster": "c1"}, m[0].Metric)
		testutil.Equals(t, int((now-start)/15000)+1, len(m[0].Values), "one point per step, no gap: %v", m[0].Values)
		prev := -1.0
		for _, v := range m[0].Values {
			f := sampleFloat(t, v)
			testutil.Assert(t, f >= prev, "values go back: %v after %v", f, prev)
			prev = f
		}

		extra.Set("dedup", "false")
		m = rangeQuery(t, s.url("/prometheus"), "team-ha", "ha_metric", start, now, "15s", extra)
		testutil.Equals(t, 2, len(m), "with dedup=false both replicas")
		var replicas []string
		for _, smp := range m {
			replicas = append(replicas, smp.Metric["replica"])
			if smp.Metric["replica"] == "r1" {
				testutil.Assert(t, len(smp.Values) < int((now-start)/15000)+1, "r1 alone has no hole: the test shows nothing")
			}
		}
		slices.Sort(replicas)
		testutil.Equals(t, []string{"r1", "r2"}, replicas)
	})

	t.Run("limits and errors", func(t *testing.T) {
		base := s.url("/prometheus")
		code, r := promAPI(t, base, "limited", "/api/v1/query", url.Values{"query": {"many"}, "time": {fmt.Sprint(now / 1000)}})
		testutil.Equals(t, 422, code, r.Error)
		mustContain(t, r.Error, "(err-mimir-max-series-per-query)", "max_fetched_series_per_query")
		testutil.Equals(t, 2, len(instantQuery(t, base, "limited", `many{i=~"0|1"}`, now)))

		code, r = promAPI(t, base, "limited", "/api/v1/query_range", url.Values{"query": {`many{i="0"}`},
			"start": {fmt.Sprint(now/1000 - 7200)}, "end": {fmt.Sprint(now / 1000)}, "step": {"60"}})
		testutil.Equals(t, 400, code, r.Error)
		mustContain(t, r.Error, "(err-mimir-max-query-length)", "max_query_length")

		code, r = promAPI(t, base, "samples", "/api/v1/query", url.Values{"query": {`many`}, "time": {fmt.Sprint(now / 1000)}})
		testutil.Equals(t, 422, code, r.Error)
		mustContain(t, r.Error, "the query exceeded the maximum number of samples", "(err-mimir-max-samples-per-query)", "max_samples")

		code, r = promAPI(t, base, "team-a", "/api/v1/query", url.Values{"query": {"sum(rate("}})
		testutil.Equals(t, 400, code)
		testutil.Equals(t, "bad_data", r.ErrorType)
		code, _ = httpGet(base+"/api/v1/query?query=up", nil)
		testutil.Equals(t, 401, code)
		code, r = promAPI(t, base, "team-a", "/api/v1/query", url.Values{"query": {"up"}, "dedup": {"maybe"}})
		testutil.Equals(t, 400, code, r.Error)

		for _, path := range []string{"/api/v1/status/buildinfo", "/api/v1/metadata", "/api/v1/query_exemplars?query=up", "/api/v1/format_query?query=sum(up)by(job)"} {
			code, body := httpGet(base+path, map[string]string{"X-Scope-OrgID": "team-a"})
			testutil.Equals(t, 200, code, "%s: %s", path, body)
			mustContain(t, body, `"status":"success"`)
		}
	})
}

// TestQuerierTenantBoundEndpoint: --endpoint=<tenant>=<addr> sends only that tenant's queries to a StoreAPI that
// does not enforce tenancy itself (here a second Strata with multi-tenancy off, standing in for a team's Thanos
// sidecar): the team reads its old data through Strata, and no other tenant ever sees it.
func TestQuerierTenantBoundEndpoint(t *testing.T) {
	legacy := startStrata(t, t.TempDir(), "all", "--no-auth.multitenancy-enabled")
	legacy.waitReady(t, 30*time.Second)
	now := time.Now().Truncate(time.Second).UnixMilli()
	code, body := pushV1(t, legacy.url("/api/v1/push"), "", seriesOf("legacy_metric", 3, now))
	testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)

	s := startStrata(t, t.TempDir(), "all", "--endpoint=team-a="+legacy.grpcAddr)
	s.waitReady(t, 30*time.Second)
	code, body = pushV1(t, s.url("/api/v1/push"), "team-b", seriesOf("new_metric", 1, now))
	testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)
	base := s.url("/prometheus")

	vec := instantQuery(t, base, "team-a", `legacy_metric`, now)
	testutil.Equals(t, 3, len(vec), "team-a reads its bound endpoint")
	for _, smp := range vec {
		_, has := smp.Metric["tenant_id"]
		testutil.Assert(t, !has, "tenant_id leaked: %v", smp.Metric)
	}
	for _, q := range []string{`legacy_metric`, `{__name__=~".+"}`, `{__name__=~"legacy.*", tenant_id=~".*"}`} {
		for _, smp := range instantQuery(t, base, "team-b", q, now) {
			testutil.Assert(t, smp.Metric["__name__"] != "legacy_metric", "team-b sees team-a's endpoint: %v", smp.Metric)
		}
	}
	testutil.Equals(t, []string{"new_metric"}, labelValues(t, base, "team-b", "__name__"))
	testutil.Equals(t, []string{"legacy_metric"}, labelValues(t, base, "team-a", "__name__"))
}
