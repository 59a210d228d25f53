package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// pushV1Header is pushV1 returning the response's X-Strata-Limit-Warning too.
func pushV1Header(t *testing.T, url, tenant string, series []prompb.TimeSeries) (code int, body, warning string) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	testutil.Ok(t, err)
	req, err := http.NewRequest("POST", url, bytes.NewReader(snappy.Encode(nil, raw)))
	testutil.Ok(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("X-Scope-OrgID", tenant)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	testutil.Ok(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("X-Strata-Limit-Warning")
}

// userStats is /api/v1/user_stats of a tenant.
type userStats struct {
	NumSeries         uint64  `json:"numSeries"`
	IngestionRate     float64 `json:"ingestionRate"`
	APIIngestionRate  float64 `json:"APIIngestionRate"`
	RuleIngestionRate float64 `json:"RuleIngestionRate"`
	Limits            map[string]struct {
		Limit, Usage float64
		Metric       string
		Warning      bool
	} `json:"limits"`
}

func getUserStats(t *testing.T, p *proc, tenant string) userStats {
	t.Helper()
	code, body := httpGet(p.url("/api/v1/user_stats"), map[string]string{"X-Scope-OrgID": tenant})
	testutil.Equals(t, 200, code, body)
	var s userStats
	testutil.Ok(t, json.Unmarshal([]byte(body), &s), body)
	return s
}

// TestLimitWarnings: at 80% of a limit (limits_warning_ratio's default) a successful write is answered with
// X-Strata-Limit-Warning naming the limit's key and the usage, and strata_tenant_limit_usage_ratio shows it;
// below, neither. Over the limit the error names the key and the metric (the series limits) or the tenant's
// current rate (the rate limit). /api/v1/user_stats counts what was pushed.
func TestLimitWarnings(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte(limitWarningsOverrides), 0o600))
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt)
	s.waitReady(t, 30*time.Second)
	push := s.url("/api/v1/push")
	now := time.Now().UnixMilli()
	usageLine := func(tenant, limit string) []string { return usageLines(t, s, tenant, limit) }

	t.Run("series", func(t *testing.T) { checkSeriesLimitWarnings(t, s, now) })

	t.Run("ingestion rate", func(t *testing.T) {
		// Pushes every 200ms: 40 samples each (200/s, 20% of the limit) for 1.4s, then 600 each (3000/s): the
		// rate (an EWMA updated every second) passes 80% within a few seconds, before the burst of 10000 is
		// used up (at 2000/s net, after ~5s), and then the token bucket refuses.
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		ts := now
		for i := 0; i < 7; i++ {
			<-tick.C
			ts++
			code, body, warning := pushV1Header(t, push, "rate", seriesOf("r", 40, ts))
			testutil.Equals(t, 204, code, body)
			testutil.Assert(t, !strings.Contains(warning, "ingestion_rate"), "at 20%% of the rate limit: %q", warning)
		}
		testutil.Equals(t, 0, len(usageLine("rate", "ingestion_rate")))
		warned, limited := false, ""
		for i := 0; i < 75 && limited == ""; i++ { // 15s at most
			<-tick.C
			ts++
			code, body, warning := pushV1Header(t, push, "rate", seriesOf("r", 600, ts))
			switch {
			case code == 429:
				limited = body
			case code != 204:
				t.Fatalf("push: %d %s", code, body)
			case strings.Contains(warning, "ingestion_rate=") && !warned:
				warned = true
				lines := usageLine("rate", "ingestion_rate")
				testutil.Equals(t, 1, len(lines))
				var v float64
				_, err := fmt.Sscanf(lines[0][strings.LastIndexByte(lines[0], ' ')+1:], "%g", &v)
				testutil.Ok(t, err)
				testutil.Assert(t, v >= 0.8, "usage %v", v)
			}
		}
		testutil.Assert(t, warned, "no warning before the rate limit")
		testutil.Assert(t, limited != "", "never rate limited")
		mustContain(t, limited, "(err-mimir-tenant-max-ingestion-rate)", "set to 1000 items/s", "currently sending about",
			"configure ingestion_rate and ingestion_burst_size")
		st := getUserStats(t, s, "rate")
		testutil.Equals(t, 1000.0, st.Limits["ingestion_rate"].Limit)
		testutil.Assert(t, st.IngestionRate > 800, "%+v", st)
		testutil.Equals(t, uint64(600), st.NumSeries)
	})
}

const limitWarningsOverrides = `overrides:
  series:
    max_global_series_per_user: 100
  metric:
    max_global_series_per_metric: 10
  rate:
    ingestion_rate: 1000
    ingestion_burst_size: 10000
`

func usageLines(t *testing.T, p *proc, tenant, limit string) []string {
	return metricsLines(t, p, "strata_tenant_limit_usage_ratio{", `tenant="`+tenant+`"`, `limit="`+limit+`"`)
}

// checkSeriesLimitWarnings pushes to distributor d (limitWarningsOverrides): tenant series up to 79% then 81%
// of max_global_series_per_user, then over it; tenant metric up to 70% then 90% of max_global_series_per_metric,
// then over it.
func checkSeriesLimitWarnings(t *testing.T, s *proc, now int64) {
	push := s.url("/api/v1/push")
	usageLine := func(tenant, limit string) []string { return usageLines(t, s, tenant, limit) }
	t.Run("series per user", func(t *testing.T) {
		code, body, warning := pushV1Header(t, push, "series", append(seriesOf("big", 60, now), seriesOf("small", 19, now)...))
		testutil.Equals(t, 204, code, body)
		testutil.Equals(t, "", warning, "79%% of the limit")
		testutil.Equals(t, 0, len(usageLine("series", "max_global_series_per_user")))

		code, body, warning = pushV1Header(t, push, "series", seriesOf("small", 21, now)[19:])
		testutil.Equals(t, 204, code, body)
		testutil.Equals(t, "max_global_series_per_user=0.81", warning)
		testutil.Equals(t, []string{`strata_tenant_limit_usage_ratio{limit="max_global_series_per_user",tenant="series"} 0.81`},
			usageLine("series", "max_global_series_per_user"))

		code, body, _ = pushV1Header(t, push, "series", seriesOf("fresh", 30, now))
		testutil.Equals(t, 400, code, body)
		mustContain(t, body, "per-user series limit of 100 exceeded", "configure max_global_series_per_user",
			"metric with the most new series in this request: fresh", "metric with the most series: big")

		// 81, and 19 of the 30 before the limit. With replicas, the one answering after the first refusal may
		// report a moment later.
		var st userStats
		waitUntil(t, 5*time.Second, "numSeries 100", func() bool { st = getUserStats(t, s, "series"); return st.NumSeries == 100 })
		testutil.Equals(t, 100.0, st.Limits["max_global_series_per_user"].Limit)
		testutil.Equals(t, 1.0, st.Limits["max_global_series_per_user"].Usage)
		testutil.Assert(t, st.Limits["max_global_series_per_user"].Warning)
		testutil.Assert(t, st.IngestionRate > 0 && st.IngestionRate == st.APIIngestionRate && st.RuleIngestionRate == 0, "%+v", st)
	})

	t.Run("series per metric", func(t *testing.T) {
		code, body, warning := pushV1Header(t, push, "metric", seriesOf("m", 7, now))
		testutil.Equals(t, 204, code, body)
		testutil.Equals(t, "", warning)
		code, body, warning = pushV1Header(t, push, "metric", seriesOf("m", 9, now)[7:])
		testutil.Equals(t, 204, code, body)
		testutil.Equals(t, "max_global_series_per_metric=0.90;metric=m", warning)
		testutil.Equals(t, 1, len(usageLine("metric", "max_global_series_per_metric")))
		code, body, _ = pushV1Header(t, push, "metric", seriesOf("m", 12, now)[9:])
		testutil.Equals(t, 400, code, body)
		mustContain(t, body, "per-metric series limit of 10 exceeded for metric m", "configure max_global_series_per_metric")
		st := getUserStats(t, s, "metric")
		testutil.Equals(t, uint64(10), st.NumSeries)
		testutil.Equals(t, "m", st.Limits["max_global_series_per_metric"].Metric)
	})

}

// TestLimitWarningsCluster: the same warnings and errors with the ingesters in their own processes (RF 2 over
// 2), which report the tenant's usage in their gRPC answers to the distributor.
func TestLimitWarningsCluster(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte(limitWarningsOverrides), 0o600))
	gossip := newMemberlist(t, 3)
	common := func(i int) []string {
		return append(gossip.flags(i), "--runtime-config.file="+rt, "--ingester.ring.heartbeat-period=1s", "--ingester.ring.replication-factor=2")
	}
	i1 := startStrata(t, dir, append([]string{"ingester", "--ingester.id=i1"}, common(0)...)...)
	i2 := startStrata(t, dir, append([]string{"ingester", "--ingester.id=i2"}, common(1)...)...)
	d := startStrata(t, dir, append([]string{"distributor", "--distributor.id=d1"}, common(2)...)...)
	for _, p := range []*proc{i1, i2, d} {
		p.waitReady(t, 60*time.Second)
	}
	waitUntil(t, 30*time.Second, "the distributor sees both ingesters", func() bool {
		_, ir := httpGet(d.url("/ingester/ring"), map[string]string{"Accept": "application/json"})
		return strings.Count(ir, `"state":"ACTIVE"`) == 2
	})
	checkSeriesLimitWarnings(t, d, time.Now().UnixMilli())
}
