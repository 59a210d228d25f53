package receive

import (
	"net/http"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	promprompb "github.com/prometheus/prometheus/prompb"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// counterValue returns the value of the counter name{labels} in reg, 0 when it does not exist.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func discardedValue(t testing.TB, reg *prometheus.Registry, tenant, reason string) float64 {
	t.Helper()
	return counterValue(t, reg, "strata_discarded_samples_total", map[string]string{"tenant": tenant, "reason": reason})
}

func TestDiscardedSamples(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := NewDiscardedSamples(reg)
	d.Add("a", ReasonRateLimited, 3)
	d.Add("a", ReasonRateLimited, 2)
	d.Add("b", ReasonLabelInvalid, 1)
	d.Add("b", ReasonTooFarInFuture, 0)  // no-op: no series created
	d.Add("b", ReasonTooFarInFuture, -4) // no-op, not a panic
	testutil.Ok(t, promtestutil.GatherAndCompare(reg, strings.NewReader(`
# HELP strata_discarded_samples_total Samples (float and histogram) rejected, by tenant and reason. Reasons follow Mimir's cortex_discarded_samples_total.
# TYPE strata_discarded_samples_total counter
strata_discarded_samples_total{reason="label_invalid",tenant="b"} 1
strata_discarded_samples_total{reason="rate_limited",tenant="a"} 5
`), "strata_discarded_samples_total"))
}

// TestPushHandler_Metrics checks the counters of a sequence of requests: discarded by reason (validation and
// rate limit), received samples, and requests by status code.
func TestPushHandler_Metrics(t *testing.T) {
	limits := testLimits()
	limits.IngestionRate, limits.IngestionBurstSize = 1, 5
	limits.MaxLabelValueLength = 10
	env := newTestEnv(t, limits)
	now := testNowMs()
	twoSamples := func(lbls ...string) promprompb.TimeSeries {
		s := series1(now, lbls...)
		s.Samples = append(s.Samples, promprompb.Sample{Value: 2, Timestamp: now + 1})
		return s
	}

	// 1: two valid samples, one invalid series of two samples (value too long), one without a name.
	rec := env.do(t, encodeV1(t,
		twoSamples("__name__", "up", "job", "a"),
		twoSamples("__name__", "up", "job", "much-too-long-value"),
		series1(now, "job", "x"),
	), ctV1)
	testutil.Equals(t, http.StatusBadRequest, rec.Code)
	// 2: four valid samples, but only 3 tokens are left: rate limited.
	rec = env.do(t, encodeV1(t, twoSamples("__name__", "up", "job", "a"), twoSamples("__name__", "up", "job", "b")), ctV1)
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code)
	// 3: one valid sample: fine.
	rec = env.do(t, encodeV1(t, series1(now, "__name__", "up", "job", "a")), ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code)
	// 4: undecodable.
	rec = env.do(t, []byte("junk"), ctV1)
	testutil.Equals(t, http.StatusBadRequest, rec.Code)

	testutil.Ok(t, promtestutil.GatherAndCompare(env.reg, strings.NewReader(`
# HELP strata_discarded_samples_total Samples (float and histogram) rejected, by tenant and reason. Reasons follow Mimir's cortex_discarded_samples_total.
# TYPE strata_discarded_samples_total counter
strata_discarded_samples_total{reason="label_value_too_long",tenant="team-a"} 2
strata_discarded_samples_total{reason="missing_metric_name",tenant="team-a"} 1
strata_discarded_samples_total{reason="rate_limited",tenant="team-a"} 4
# HELP strata_distributor_received_samples_total Samples (float and histogram) that passed validation and the rate limit and were handed on to the ingesters, by tenant.
# TYPE strata_distributor_received_samples_total counter
strata_distributor_received_samples_total{tenant="team-a"} 3
# HELP strata_distributor_requests_total Remote write requests answered by the distributor, by HTTP status code.
# TYPE strata_distributor_requests_total counter
strata_distributor_requests_total{code="202"} 0
strata_distributor_requests_total{code="204"} 1
strata_distributor_requests_total{code="400"} 2
strata_distributor_requests_total{code="401"} 0
strata_distributor_requests_total{code="405"} 0
strata_distributor_requests_total{code="413"} 0
strata_distributor_requests_total{code="415"} 0
strata_distributor_requests_total{code="429"} 1
strata_distributor_requests_total{code="500"} 0
strata_distributor_requests_total{code="503"} 0
`), "strata_discarded_samples_total", "strata_distributor_received_samples_total", "strata_distributor_requests_total"))
	// Every request that got to reading its body was measured; the junk one did not decompress.
	testutil.Equals(t, map[string]uint64{"compressed": 4, "decoded": 3}, histogramCounts(t, env.reg, "strata_distributor_request_body_size_bytes", "stage"))
}

// histogramCounts returns the sample count of each series of histogram name, by the value of label.
func histogramCounts(t testing.TB, reg *prometheus.Registry, name, label string) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// TestNewPushHandler_OwnDiscardedSamples: without WithDiscardedSamples the handler registers its own counter.
func TestNewPushHandler_OwnDiscardedSamples(t *testing.T) {
	reg := prometheus.NewRegistry()
	_ = NewDistributor(DefaultPushConfig(), tenancy.NewOverrides(testLimits(), nil), &fakePusher{}, log.NewNopLogger(), reg)
	err := reg.Register(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_discarded_samples_total", Help: "x"}, []string{"tenant", "reason"}))
	testutil.NotOk(t, err, "the handler should have registered strata_discarded_samples_total itself")
}
