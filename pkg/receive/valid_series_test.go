package receive

import (
	"net/http"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promprompb "github.com/prometheus/prometheus/prompb"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// TestDistributorValidatedSeries: a series whose labels passed the rules before, as received, is not checked
// again, under the same tenant and label limits only; its samples always are; a series whose labels were refused
// or changed (sorted) is never known.
func TestDistributorValidatedSeries(t *testing.T) {
	env := newTestEnv(t, testLimits())
	now := testNowMs()
	future := testNow.Add(time.Hour).UnixMilli()
	a := series1(now, "__name__", "up", "job", "a")
	b := series1(now, "__name__", "up", "job", "b")
	aFuture := series1(future, "__name__", "up", "job", "a")
	unsorted := series1(now, "job", "c", "__name__", "up")
	invalid := series1(now, "__name__", "up", "bad-name", "x")
	long, usual := testLimits(), testLimits()
	long.MaxLabelValueLength = 1

	for _, step := range []struct {
		name          string
		limits        *tenancy.Limits // team-a's limits from this step on, when not nil
		tenant        string          // default team-a
		series        []promprompb.TimeSeries
		wantCode      int
		wantPushed    int // series handed to the pusher
		hits, misses  float64
		wantDiscarded string // a reason the tenant's discarded samples rose for: by one sample, or discardedN
		discardedN    float64
	}{
		{name: "first write: checked", series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, misses: 2},
		{name: "again: known", series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, hits: 2},
		{name: "known series, sample too far in the future: refused", series: []promprompb.TimeSeries{aFuture, b}, wantCode: http.StatusBadRequest, wantPushed: 1, hits: 2, wantDiscarded: ReasonTooFarInFuture},
		{name: "unsorted: sorted, not recorded", series: []promprompb.TimeSeries{unsorted}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "unsorted again: checked again", series: []promprompb.TimeSeries{unsorted}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "invalid: refused", series: []promprompb.TimeSeries{invalid}, wantCode: http.StatusBadRequest, misses: 1, wantDiscarded: ReasonLabelInvalid},
		{name: "invalid again: refused again", series: []promprompb.TimeSeries{invalid}, wantCode: http.StatusBadRequest, misses: 1, wantDiscarded: ReasonLabelInvalid},
		{name: "another tenant: not known", tenant: "team-b", series: []promprompb.TimeSeries{a}, wantCode: http.StatusNoContent, wantPushed: 1, misses: 1},
		{name: "stricter limits: known series checked again, refused", limits: &long, series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusBadRequest, misses: 2, wantDiscarded: ReasonLabelValueTooLong, discardedN: 2},
		{name: "limits as before: known again", limits: &usual, series: []promprompb.TimeSeries{a, b}, wantCode: http.StatusNoContent, wantPushed: 2, hits: 2},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.limits != nil {
				env.limits.set("team-a", *step.limits)
			}
			tenant := step.tenant
			if tenant == "" {
				tenant = "team-a"
			}
			hits := counterValue(t, env.reg, "strata_distributor_validated_series_cache_hits_total", nil)
			misses := counterValue(t, env.reg, "strata_distributor_validated_series_cache_misses_total", nil)
			var discarded float64
			if step.wantDiscarded != "" {
				discarded = discardedValue(t, env.reg, tenant, step.wantDiscarded)
			}
			pushed := len(env.pusher.series())

			rec := env.do(t, encodeV1(t, step.series...), ctV1, tenancy.HeaderOrgID, tenant)
			testutil.Equals(t, step.wantCode, rec.Code, rec.Body.String())
			testutil.Equals(t, step.wantPushed, len(env.pusher.series())-pushed)
			testutil.Equals(t, step.hits, counterValue(t, env.reg, "strata_distributor_validated_series_cache_hits_total", nil)-hits)
			testutil.Equals(t, step.misses, counterValue(t, env.reg, "strata_distributor_validated_series_cache_misses_total", nil)-misses)
			if step.wantDiscarded != "" {
				testutil.Equals(t, discarded+max(1, step.discardedN), discardedValue(t, env.reg, tenant, step.wantDiscarded))
			}
		})
	}
	// The unsorted series reached the pusher sorted both times.
	for _, ts := range env.pusher.series() {
		for i := 1; i < len(ts.Labels); i++ {
			testutil.Assert(t, ts.Labels[i-1].Name < ts.Labels[i].Name, "labels not sorted: %v", ts.Labels)
		}
	}
}

// TestValidSeriesLimit: the map never holds more than its limit; beyond it, it starts again with what is recorded.
func TestValidSeriesLimit(t *testing.T) {
	testutil.Assert(t, newValidSeries(0, prometheus.NewRegistry()) == nil)
	var none *validSeries
	l := none.lookup("t", [3]int{}, [][]byte{[]byte("x")})
	testutil.Assert(t, !l.isKnown(0))
	l.found(0, []byte("x"))
	none.done(l) // no-op, no panic

	c := newValidSeries(3, prometheus.NewRegistry())
	record := func(runs ...string) (known []bool) {
		bs := make([][]byte, len(runs))
		for i, r := range runs {
			bs[i] = []byte(r)
		}
		l := c.lookup("t", [3]int{1, 2, 3}, bs)
		for i := range bs {
			known = append(known, l.isKnown(i))
			l.found(i, bs[i])
		}
		c.done(l)
		return known
	}
	testutil.Equals(t, []bool{false, false}, record("a", "b"))
	testutil.Equals(t, []bool{true, true}, record("a", "b"))
	testutil.Equals(t, 2, c.t.len())
	testutil.Equals(t, []bool{false, false, true}, record("c", "d", "a")) // 2 + 2 > 3: starts again with c, d
	testutil.Equals(t, 2, c.t.len())
	testutil.Equals(t, []bool{true, true, false}, record("c", "d", "a"))
	testutil.Equals(t, 3, c.t.len())
	testutil.Equals(t, []bool{false, false, false, false, false}, record("1", "2", "3", "4", "5")) // more than the limit at once
	testutil.Assert(t, c.t.len() <= 3, "%d entries", c.t.len())
}
