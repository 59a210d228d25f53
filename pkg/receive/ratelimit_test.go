package receive

import (
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	promprompb "github.com/prometheus/prometheus/prompb"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// samplesSeries is one valid series with n float samples (and e exemplars), all at now.
func samplesSeries(job string, n, e int) promprompb.TimeSeries {
	s := promprompb.TimeSeries{Labels: []promprompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: job}}}
	for i := range n {
		s.Samples = append(s.Samples, promprompb.Sample{Value: float64(i), Timestamp: testNowMs() - int64(n-i)})
	}
	for range e {
		s.Exemplars = append(s.Exemplars, promprompb.Exemplar{Labels: []promprompb.Label{{Name: "trace_id", Value: "t"}}, Timestamp: testNowMs()})
	}
	return s
}

func TestPushHandler_RateLimit(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 10, 20
	env := newTestEnv(t, limits)

	rec := env.do(t, encodeV1(t, samplesSeries("a", 10, 5)), ctV1) // 15 of 20 tokens
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())

	rec = env.do(t, encodeV1(t, samplesSeries("b", 6, 0)), ctV1) // 6 > 5 left: the whole request is refused
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code)
	testutil.Equals(t, "the request has been rejected because the tenant exceeded the ingestion rate limit, set to 10 items/s with a maximum allowed burst of 20. This limit is applied on the total number of samples, exemplars and metadata received across all distributors; the tenant is currently sending about 21 items/s (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure ingestion_rate and ingestion_burst_size, or contact your service administrator.\n", rec.Body.String())
	testutil.Equals(t, 1, env.pusher.calls())
	testutil.Equals(t, 6.0, discardedValue(t, env.reg, "team-a", ReasonRateLimited))

	rec = env.do(t, encodeV1(t, samplesSeries("b", 5, 0)), ctV1) // a refused request took no tokens: 5 fit
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	rec = env.do(t, encodeV1(t, samplesSeries("b", 1, 0)), ctV1)
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code)

	env.clock.Add(time.Second) // 10 tokens back
	rec = env.do(t, encodeV1(t, samplesSeries("c", 10, 0)), ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, 3, env.pusher.calls())

	// A request larger than the burst can never pass.
	env.clock.Add(time.Hour)
	rec = env.do(t, encodeV1(t, samplesSeries("d", 21, 0)), ctV1)
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code)
}

// TestPushHandler_RateLimitIsPerTenant: one tenant's traffic does not use another's tokens.
func TestPushHandler_RateLimitIsPerTenant(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 1, 10
	env := newTestEnv(t, limits)
	body := encodeV1(t, samplesSeries("a", 10, 0))
	testutil.Equals(t, http.StatusNoContent, env.do(t, body, ctV1).Code)
	testutil.Equals(t, http.StatusTooManyRequests, env.do(t, body, ctV1).Code)
	testutil.Equals(t, http.StatusNoContent, env.do(t, body, ctV1, tenancy.HeaderOrgID, "team-b").Code)
	testutil.Equals(t, []string{"team-a", "team-b"}, env.pusher.tenants)
}

// TestPushHandler_RateLimitGlobal: each of N distributors allows rate/N; the burst is not divided; N is read
// per request.
func TestPushHandler_RateLimitGlobal(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 100, 100
	var distributors atomic.Int64
	distributors.Store(4)
	env := newTestEnv(t, limits, WithDistributorCount(func() int { return int(distributors.Load()) }))

	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 100, 0)), ctV1).Code) // full burst
	env.clock.Add(time.Second)                                                                              // 100/4 = 25 tokens back
	testutil.Equals(t, http.StatusTooManyRequests, env.do(t, encodeV1(t, samplesSeries("a", 26, 0)), ctV1).Code)
	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 25, 0)), ctV1).Code)

	// The others left: this one now allows the whole rate, from the next request on (tokens already earned at
	// the old rate stay as they are).
	distributors.Store(1)
	env.clock.Add(time.Second)
	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 25, 0)), ctV1).Code)
	env.clock.Add(time.Second)
	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 100, 0)), ctV1).Code)

	distributors.Store(0) // no count (ring not joined yet): alone
	env.clock.Add(500 * time.Millisecond)
	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 50, 0)), ctV1).Code)
}

func TestIngestionRateStrategy(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 90, 7
	s := ingestionRateStrategy{overrides: tenancy.NewOverrides(limits, nil), distributors: func() int { return 3 }}
	testutil.Equals(t, 30.0, s.Limit("x"))
	testutil.Equals(t, 7, s.Burst("x"))

	limits.IngestionRate = math.Inf(1)
	s.overrides = tenancy.NewOverrides(limits, nil)
	testutil.Equals(t, math.MaxFloat64, s.Limit("x"))
}

// TestPushHandler_RuntimeOverrides: a change of the tenant's limits in the runtime overrides applies to the next
// request, without restart or waiting.
func TestPushHandler_RuntimeOverrides(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 1, 100
	env := newTestEnv(t, limits)
	fourLabels := encodeV1(t, series1(testNowMs(), "__name__", "up", "a", "1", "b", "2", "c", "3"))

	testutil.Equals(t, http.StatusNoContent, env.do(t, fourLabels, ctV1).Code)

	over := limits
	over.MaxLabelNamesPerSeries = 3
	env.limits.set("team-a", over)
	rec := env.do(t, fourLabels, ctV1)
	testutil.Equals(t, http.StatusBadRequest, rec.Code)
	testutil.Equals(t, `received a series whose number of labels exceeds the limit (actual: 4, limit: 3) series: '{__name__="up", a="1", b="2", c="3"}' (err-mimir-max-label-names-per-series). To adjust the related per-tenant limit, configure max_label_names_per_series, or contact your service administrator.`+"\n", rec.Body.String())
	testutil.Equals(t, http.StatusNoContent, env.do(t, fourLabels, ctV1, tenancy.HeaderOrgID, "team-b").Code, "other tenants keep the defaults")

	// Lower the burst: a request that fitted no longer does.
	over.MaxLabelNamesPerSeries = 30
	over.IngestionBurstSize = 5
	env.limits.set("team-a", over)
	rec = env.do(t, encodeV1(t, samplesSeries("a", 6, 0)), ctV1)
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code)
	testutil.Assert(t, strings.Contains(rec.Body.String(), "set to 1 items/s with a maximum allowed burst of 5"), rec.Body.String())

	// Raise the rate: 10ms now refill 5 tokens (at the old 1/s it would be 0.01).
	over.IngestionRate = 500
	env.limits.set("team-a", over)
	env.do(t, encodeV1(t, samplesSeries("a", 5, 0)), ctV1) // empty the bucket
	env.clock.Add(10 * time.Millisecond)
	testutil.Equals(t, http.StatusNoContent, env.do(t, encodeV1(t, samplesSeries("a", 5, 0)), ctV1).Code)
}
