package receive

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	promprompb "github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// usageEnv is a push handler over a Distributor writing to pusher, with a fake clock, and its user_stats.
type usageEnv struct {
	push, stats http.Handler
	d           *Distributor
	clock       *storetest.Clock
	reg         *prometheus.Registry
}

func newUsageEnv(t *testing.T, limits tenancy.Limits, pusher Pusher) *usageEnv {
	t.Helper()
	env := &usageEnv{clock: storetest.NewClock(testNow), reg: prometheus.NewRegistry()}
	d := NewDistributor(DefaultPushConfig(), tenancy.NewOverrides(limits, nil), pusher, log.NewNopLogger(), env.reg, WithClock(env.clock.Now))
	mw := tenancy.DefaultConfig().HTTPMiddleware(false)
	env.push, env.stats, env.d = mw(NewPushHandler(d)), mw(d.UserStatsHandler()), d
	return env
}

// pushSeries pushes series name{i="from".."to-1"} with one sample at the clock's time.
func (env *usageEnv) pushSeries(t *testing.T, tenant, name string, from, to int) *httptest.ResponseRecorder {
	t.Helper()
	var ss []promprompb.TimeSeries
	for i := from; i < to; i++ {
		ss = append(ss, series1(env.clock.Now().UnixMilli(), "__name__", name, "i", fmt.Sprint(i)))
	}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/push", strings.NewReader(string(encodeV1(t, ss...))))
	req.Header.Set(tenancy.HeaderOrgID, tenant)
	req.Header.Set("Content-Type", ctV1)
	req.Header.Set("Content-Encoding", "snappy")
	rec := httptest.NewRecorder()
	env.push.ServeHTTP(rec, req)
	return rec
}

// usageMetric returns strata_tenant_limit_usage_ratio of tenant and limit; false when it has no series.
func (env *usageEnv) usageMetric(t *testing.T, tenant, limit string) (float64, bool) {
	t.Helper()
	mfs, err := env.reg.Gather()
	testutil.Ok(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "strata_tenant_limit_usage_ratio" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["tenant"] == tenant && got["limit"] == limit {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func (env *usageEnv) userStats(t *testing.T, tenant string) UserStats {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/user_stats", nil)
	req.Header.Set(tenancy.HeaderOrgID, tenant)
	rec := httptest.NewRecorder()
	env.stats.ServeHTTP(rec, req)
	testutil.Equals(t, http.StatusOK, rec.Code, rec.Body.String())
	var out UserStats
	testutil.Ok(t, json.Unmarshal(rec.Body.Bytes(), &out))
	return out
}

// TestLimitWarningSeries: at limits_warning_ratio of max_global_series_per_user (and per metric) a successful
// write carries X-Strata-Limit-Warning and the usage is exported; below it, neither.
func TestLimitWarningSeries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		perUser    int
		perMetric  int
		series     int
		wantHeader string
	}{
		{name: "79% of the series limit: no warning", perUser: 100, series: 79},
		{name: "80%: warning", perUser: 100, series: 80, wantHeader: "max_global_series_per_user=0.80"},
		{name: "81%: warning", perUser: 100, series: 81, wantHeader: "max_global_series_per_user=0.81"},
		{name: "79% of the per-metric limit: no warning", perMetric: 100, series: 79},
		{name: "80% of the per-metric limit: warning naming the metric", perMetric: 100, series: 80, wantHeader: "max_global_series_per_metric=0.80;metric=big"},
		{name: "both", perUser: 200, perMetric: 100, series: 90, wantHeader: "max_global_series_per_metric=0.90;metric=big"},
		{name: "both over", perUser: 100, perMetric: 100, series: 95, wantHeader: "max_global_series_per_user=0.96, max_global_series_per_metric=0.95;metric=big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := testLimits()
			limits.MaxGlobalSeriesPerUser, limits.MaxGlobalSeriesPerMetric = tc.perUser, tc.perMetric
			ing := newTestIngester(t, t.TempDir(), fixedLimits{"t": &limits}, prometheus.NewRegistry())
			t.Cleanup(func() { _ = ing.Close() })
			env := newUsageEnv(t, limits, ing)

			rec := env.pushSeries(t, "t", "big", 0, tc.series)
			if tc.name == "both over" {
				rec = env.pushSeries(t, "t", "small", 0, 1) // the tenant has one more series than the metric
			}
			testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
			testutil.Equals(t, tc.wantHeader, rec.Header().Get(HeaderLimitWarning))
			for _, limit := range []string{limitSeriesPerUser, limitSeriesPerMetric} {
				v, ok := env.usageMetric(t, "t", limit)
				want := strings.Contains(tc.wantHeader, limit+"=")
				testutil.Equals(t, want, ok, "metric of %s", limit)
				if ok {
					testutil.Assert(t, v >= 0.8 && v < 1, "usage %v", v)
				}
			}
		})
	}
}

// TestLimitWarningRate: the rate limit's usage is the tenant's accepted rate (an EWMA ticking every second) over
// ingestion_rate; the 429 says how much the tenant sends.
func TestLimitWarningRate(t *testing.T) {
	for _, tc := range []struct {
		samples    int
		wantHeader string
	}{
		{samples: 79},
		{samples: 80, wantHeader: "ingestion_rate=0.80"},
		{samples: 95, wantHeader: "ingestion_rate=0.95"},
	} {
		t.Run(fmt.Sprint(tc.samples), func(t *testing.T) {
			limits := testLimits()
			limits.IngestionRate, limits.IngestionBurstSize = 100, 1000
			env := newUsageEnv(t, limits, &fakePusher{})
			// tc.samples in the first second, then one more write a second later: the rate is tc.samples/s.
			for i := 0; i < tc.samples; i++ {
				rec := env.pushSeries(t, "t", "m", i, i+1)
				testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
			}
			env.clock.Add(time.Second)
			rec := env.pushSeries(t, "t", "m", 0, 1)
			testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
			testutil.Equals(t, tc.wantHeader, rec.Header().Get(HeaderLimitWarning))
			v, ok := env.usageMetric(t, "t", limitIngestionRate)
			testutil.Equals(t, tc.wantHeader != "", ok)
			if ok {
				testutil.Equals(t, float64(tc.samples)/100, v)
			}
			testutil.Equals(t, float64(tc.samples), env.userStats(t, "t").IngestionRate)
		})
	}

	t.Run("429 names the limit and the current rate", func(t *testing.T) {
		limits := testLimits()
		limits.IngestionRate, limits.IngestionBurstSize = 100, 200
		env := newUsageEnv(t, limits, &fakePusher{})
		rec := env.pushSeries(t, "t", "m", 0, 150)
		testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
		rec = env.pushSeries(t, "t", "m", 0, 150)
		testutil.Equals(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
		for _, want := range []string{"set to 100 items/s", "burst of 200", "currently sending about 300 items/s", "configure ingestion_rate and ingestion_burst_size"} {
			testutil.Assert(t, strings.Contains(rec.Body.String(), want), "%q not in %q", want, rec.Body.String())
		}
		testutil.Equals(t, "", rec.Header().Get(HeaderLimitWarning), "no warning on a refused write")
	})
}

// TestLimitUsageIdleTenantsLeaveNoSeries: strata_tenant_limit_usage_ratio of a tenant without writes goes, and
// the distributor forgets the tenant.
func TestLimitUsageIdleTenantsLeaveNoSeries(t *testing.T) {
	limits := testLimits()
	limits.MaxGlobalSeriesPerUser = 10
	ing := newTestIngester(t, t.TempDir(), fixedLimits{"t": &limits}, prometheus.NewRegistry())
	t.Cleanup(func() { _ = ing.Close() })
	env := newUsageEnv(t, limits, ing)
	rec := env.pushSeries(t, "t", "m", 0, 9)
	testutil.Equals(t, "max_global_series_per_user=0.90", rec.Header().Get(HeaderLimitWarning))
	_, ok := env.usageMetric(t, "t", limitSeriesPerUser)
	testutil.Assert(t, ok)

	env.clock.Add(usageReportTTL - time.Second)
	_, ok = env.usageMetric(t, "t", limitSeriesPerUser)
	testutil.Assert(t, ok, "the ingester's report is still fresh")
	env.clock.Add(usageIdleTimeout - usageReportTTL + 2*time.Second)
	_, ok = env.usageMetric(t, "t", limitSeriesPerUser)
	testutil.Assert(t, !ok, "an idle tenant's series stays")
	env.d.usage.mtx.RLock()
	testutil.Equals(t, 0, len(env.d.usage.tenants), "the tenant is forgotten")
	env.d.usage.mtx.RUnlock()

	mfs, err := env.reg.Gather()
	testutil.Ok(t, err)
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(problems), "%v", problems)
}

// TestUserStatsOverTheRing: with RF 3 over 3 ingesters (in process), numSeries is the series pushed (the sum
// of the ingesters' / RF), and the usage of each limit is there.
func TestUserStatsOverTheRing(t *testing.T) {
	pusher, _ := testRing(t, "usage-ring", 3, false)
	env := newUsageEnv(t, testLimits(), pusher) // the ingesters' limits: the defaults
	for i := 0; i < 5; i++ {
		rec := env.pushSeries(t, "t", "m", i*10, i*10+10)
		testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	}
	// The third replica may answer after the quorum did: its report comes a little later.
	var s UserStats
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if s = env.userStats(t, "t"); s.NumSeries == 50 || time.Now().After(deadline) {
			break
		}
	}
	testutil.Equals(t, uint64(50), s.NumSeries)
	testutil.Equals(t, 0.0, s.RuleIngestionRate)
	testutil.Equals(t, 0.8, s.LimitsWarningRatio)
	testutil.Equals(t, 150000.0, s.Limits[limitSeriesPerUser].Limit)
	// Each ingester holds all 50 series (RF 3 of 3), and its share of the limit is all of it.
	testutil.Equals(t, 50.0/150000, s.Limits[limitSeriesPerUser].Usage)
	testutil.Equals(t, 0.0, s.Limits[limitSeriesPerMetric].Limit)
	testutil.Equals(t, uint64(0), env.userStats(t, "other").NumSeries)
}

// TestLimitUsageOverGRPC: a remote ingester reports the tenant's usage in the RemoteWrite response header; the
// distributor warns from it.
func TestLimitUsageOverGRPC(t *testing.T) {
	limits := testLimits()
	limits.MaxGlobalSeriesPerUser = 10
	ing := newTestIngester(t, t.TempDir(), fixedLimits{"t": &limits}, prometheus.NewRegistry())
	t.Cleanup(func() { _ = ing.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	srv := grpc.NewServer()
	RegisterWriteableStore(srv, ing)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	kv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	cfg := ring.DefaultConfig()
	cfg.HeartbeatPeriod = 100 * time.Millisecond
	ctx := context.Background()
	lc, err := ring.NewLifecycler(cfg, ring.InstanceConfig{ID: "remote", Addr: lis.Addr().String()}, kv, "ingester", "usage-grpc", log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, lc))
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, lc) })
	client, err := ring.NewClient(cfg, kv, "ingester", "usage-grpc", log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, client))
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, client) })
	deadline := time.Now().Add(10 * time.Second)
	for client.InstancesCount() < 1 {
		testutil.Assert(t, time.Now().Before(deadline), "ring did not see the ingester")
		time.Sleep(20 * time.Millisecond)
	}
	pusher := NewRingPusher(client, 5*time.Second, nil, log.NewNopLogger(), prometheus.NewRegistry())
	t.Cleanup(func() { _ = pusher.Close() })
	env := newUsageEnv(t, limits, pusher)

	rec := env.pushSeries(t, "t", "m", 0, 7)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, "", rec.Header().Get(HeaderLimitWarning))
	rec = env.pushSeries(t, "t", "m", 7, 9)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, "max_global_series_per_user=0.90", rec.Header().Get(HeaderLimitWarning))
	rec = env.pushSeries(t, "t", "m", 9, 12)
	testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	testutil.Assert(t, strings.Contains(rec.Body.String(), "configure max_global_series_per_user"), rec.Body.String())
	testutil.Assert(t, strings.Contains(rec.Body.String(), "metric with the most new series in this request: m"), rec.Body.String())
	s := env.userStats(t, "t")
	testutil.Equals(t, uint64(10), s.NumSeries)
	testutil.Equals(t, 1.0, s.Limits[limitSeriesPerUser].Usage)
}

func TestSeriesUsageEncoding(t *testing.T) {
	for _, su := range []seriesUsage{
		{},
		{series: 12345, perUser: 0.8, perMetric: 1.0 / 3, topMetric: "http_requests_total"},
		{series: 1, perUser: 1.25},
	} {
		got, ok := parseSeriesUsage(su.encode())
		testutil.Assert(t, ok, su.encode())
		testutil.Equals(t, su, got)
	}
	for _, bad := range []string{"", "1", "1 2", "x 0 0", "1 -1 0", "1 0 NaN", "-1 0 0"} {
		_, ok := parseSeriesUsage(bad)
		testutil.Assert(t, !ok, bad)
	}
	su, ok := parseSeriesUsage("1 0 0 bad\x01name")
	testutil.Assert(t, ok)
	testutil.Equals(t, "", su.topMetric)
}

// TestLimitUsageHotPathAllocations: what a write of a known tenant below its warning ratio costs the
// distributor's usage tracking (record, an ingester's report, the warning check) allocates nothing.
func TestLimitUsageHotPathAllocations(t *testing.T) {
	limits := testLimits()
	overrides := tenancy.NewOverrides(limits, nil)
	clock := storetest.NewClock(testNow)
	u := newLimitUsage(overrides, clock.Now, func() int { return 1 }, log.NewNopLogger(), nil)
	report := seriesUsage{series: 10, perUser: 0.1, topMetric: "m"}
	u.observe("t", "ingester-1", report)
	l := overrides.ForTenant("t")
	allocs := testing.AllocsPerRun(100, func() {
		now := clock.Now()
		tu := u.tenant("t", now)
		tu.record(now, 100, true)
		u.observe("t", "ingester-1", report)
		if w := u.warning(tu, "t", l, now); w != "" {
			t.Fatal(w)
		}
	})
	testutil.Equals(t, 0.0, allocs)
}
