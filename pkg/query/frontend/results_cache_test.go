package frontend_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/cache/cachetest"
	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/query/frontend"
)

var (
	harnessNow = time.Date(2026, 1, 15, 10, 37, 0, 0, time.UTC)
	// ingesterFrom: the ingester holds the data from here (the start of yesterday), the bucket before.
	ingesterFrom = time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC)
)

func harnessSeries(tenant string) []labels.Labels {
	var out []labels.Labels
	for _, job := range []string{"api", "db"} {
		for _, inst := range []string{"1", "2"} {
			out = append(out, labels.FromStrings("__name__", "m_total", "job", job, "instance", inst, "owner", tenant),
				labels.FromStrings("__name__", "m_gauge", "job", job, "instance", inst, "owner", tenant))
		}
	}
	return out
}

// value is a deterministic sample value: counters grow, gauges wander.
func value(lset labels.Labels, t int64) float64 {
	h := float64(lset.Hash()%97) + 1
	if lset.Get("__name__") == "m_total" {
		return float64(t/1000)*h/1000 + h
	}
	return h + float64((t/1000)%3600)/100
}

func samplesOf(series []labels.Labels, from, to time.Time, every time.Duration, offset time.Duration) []sample {
	var out []sample
	for _, l := range series {
		for t := from.Add(offset); !t.After(to); t = t.Add(every) {
			out = append(out, sample{lset: l, t: t.UnixMilli(), v: value(l, t.UnixMilli())})
		}
	}
	return out
}

// fillHarness writes days of bucket data (blocks of 2 days, 5m resolution) before ingesterFrom and 1m data in
// the ingester from there to now. It returns the blocks uploaded, oldest first.
func fillHarness(h *cacheHarness, tenant string, days int) [][]ulid.ULID {
	return fillWith(h, tenant, days, harnessSeries(tenant))
}

// fillWith is fillHarness with the given series.
func fillWith(h *cacheHarness, tenant string, days int, series []labels.Labels) [][]ulid.ULID {
	var blocks [][]ulid.ULID
	from := ingesterFrom.Add(-time.Duration(days) * 24 * time.Hour)
	for t := from; t.Before(ingesterFrom); t = t.Add(48 * time.Hour) {
		end := t.Add(48*time.Hour - time.Minute)
		if !end.Before(ingesterFrom) {
			end = ingesterFrom.Add(-time.Minute)
		}
		blocks = append(blocks, h.upload(tenant, samplesOf(series, t, end, 5*time.Minute, 0)))
	}
	h.push(tenant, samplesOf(series, ingesterFrom, h.clock.Now(), time.Minute, 0))
	return blocks
}

var harnessQueries = []string{
	"m_gauge",
	"sum by (job) (rate(m_total[5m]))",
	"avg_over_time(m_gauge[15m])",
	"m_gauge offset 1h",
	"count by (job) (m_gauge)",
	"max_over_time(m_gauge[1h]) - min_over_time(m_gauge[1h])",
	"sum(m_total)",
}

var harnessSteps = []time.Duration{15 * time.Second, 30 * time.Second, 37 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute}

// randomQueries returns n range queries over the last 3.5 days, a fifth of them ending at now, crossing day
// boundaries, with starts at any second.
func randomQueries(rng *rand.Rand, n int, now time.Time) []rangeQuery {
	out := make([]rangeQuery, 0, n)
	for range n {
		start := now.Add(-time.Duration(rng.Int64N(int64(84*time.Hour)/1e9)) * time.Second).Add(-time.Minute)
		end := start.Add(time.Duration(60+rng.Int64N(int64(60*time.Hour)/1e9)) * time.Second)
		if end.After(now) || rng.IntN(5) == 0 {
			end = now
		}
		step := harnessSteps[rng.IntN(len(harnessSteps))]
		for end.Sub(start)/step > 11000 {
			step *= 2
		}
		out = append(out, rangeQuery{q: harnessQueries[rng.IntN(len(harnessQueries))], start: start.UnixMilli(), end: end.UnixMilli(), step: step.Milliseconds()})
	}
	return out
}

// alwaysValid is a generation source that never invalidates: the cache without the never-stale mechanism,
// the control that shows the differential test can fail.
type alwaysValid struct{}

func (alwaysValid) Name() string { return "always-valid" }
func (alwaysValid) Snapshot(context.Context, string) (frontend.Snapshot, error) {
	return alwaysValid{}, nil
}
func (alwaysValid) Token(frontend.DataRange) []byte       { return nil }
func (alwaysValid) Valid([]byte, frontend.DataRange) bool { return true }

// compareAll runs every query through the frontend and directly against the querier; every answer must be a
// 200 with the same body. It returns how many answers of control (if any) differed from the querier's.
func compareAll(t *testing.T, h *cacheHarness, fe, control http.Handler, tenant string, qs []rangeQuery, phase string) int {
	t.Helper()
	stale, empty := 0, 0
	for _, q := range qs {
		wantCode, want := do(t, h.querier, tenant, q)
		testutil.Equals(t, http.StatusOK, wantCode, "%s: querier: %s: %s", phase, q, want)
		if strings.Contains(want, `"result":[]`) {
			empty++
		}
		gotCode, got := do(t, fe, tenant, q)
		testutil.Equals(t, wantCode, gotCode, "%s: %s", phase, q)
		if want != got && os.Getenv("STRATA_DEBUG") != "" {
			nocache := h.frontend(nil, nil, nil)
			_, nc := do(t, nocache, tenant, q)
			t.Logf("without the cache: equal %v", nc == want)
			_ = os.WriteFile("/tmp/want.json", []byte(want), 0o644)
			_ = os.WriteFile("/tmp/got.json", []byte(got), 0o644)
		}
		testutil.Equals(t, want, got, "%s: frontend answer differs from the querier's for %s", phase, q)
		if control != nil {
			if _, c := do(t, control, tenant, q); c != want {
				stale++
			}
		}
	}
	testutil.Assert(t, empty < len(qs)/10, "%s: %d of %d answers are empty", phase, empty, len(qs))
	return stale
}

// TestResultsCache_Differential: ≥ 200 randomized range queries through the frontend (split by day, results
// cache) equal the querier's direct answers, byte for byte, with the cache cold, warm, after out-of-order writes
// into cached ranges, after a block upload into a cached range and after a block deletion. A control frontend
// whose extents never expire answers stale after the writes, so the comparison does catch staleness.
func TestResultsCache_Differential(t *testing.T) {
	const tenant = "team-a"
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("STRATA_TEST_SEED"), 10, 64); err == nil {
		seed = v // to replay a failure
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 12))

	h := newCacheHarness(t, harnessNow, tenant)
	blocks := fillHarness(h, tenant, 6)
	reg := prometheus.NewRegistry()
	fe := h.frontend(cache.NewInMemory("results", cache.InMemoryConfig{}, nil, nil), h.generations(), reg)
	control := h.frontend(cache.NewInMemory("control", cache.InMemoryConfig{}, nil, nil), []frontend.GenerationSource{alwaysValid{}}, nil)
	qs := randomQueries(rng, 60, h.clock.Now())
	metric := func(name string, lv ...string) float64 { return counterValue(t, reg, name, lv...) }

	compareAll(t, h, fe, control, tenant, qs, "cold")
	coldHits := metric("strata_query_frontend_results_cache_hits_total", "tenant", tenant)

	// Warm: a minute later, with that minute's samples written.
	h.clock.Advance(time.Minute)
	h.push(tenant, samplesOf(harnessSeries(tenant), h.clock.Now().Add(-59*time.Second), h.clock.Now(), time.Minute, 0))
	compareAll(t, h, fe, control, tenant, qs, "warm")
	hits := metric("strata_query_frontend_results_cache_hits_total", "tenant", tenant)
	testutil.Assert(t, hits > coldHits, "no cache hit when warm")
	testutil.Assert(t, metric("strata_query_frontend_results_cache_steps_total", "tenant", tenant, "source", "cache") > 0, "no step from the cache")

	// Out-of-order writes into cached ranges of the ingester's data: existing series between their samples,
	// and a new series.
	series := harnessSeries(tenant)
	var ooo []sample
	for range 20 {
		l := series[rng.IntN(len(series))]
		t0 := ingesterFrom.Add(time.Duration(rng.Int64N(int64(30*time.Hour)/1e9)) * time.Second).Truncate(time.Minute).Add(30 * time.Second)
		ooo = append(ooo, sample{lset: l, t: t0.UnixMilli(), v: -1000 * value(l, t0.UnixMilli())})
	}
	late := labels.FromStrings("__name__", "m_gauge", "job", "late", "instance", "1", "owner", tenant)
	ooo = append(ooo, samplesOf([]labels.Labels{late}, ingesterFrom.Add(3*time.Hour), ingesterFrom.Add(20*time.Hour), 10*time.Minute, 0)...)
	before := metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant)
	h.push(tenant, ooo)
	stale := compareAll(t, h, fe, control, tenant, qs, "after out-of-order writes")
	testutil.Assert(t, stale > 0, "the control answered nothing stale after out-of-order writes: the test would not see staleness")
	testutil.Assert(t, metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant) > before, "no extent invalidated")

	// A block uploaded (an import) into a cached range of the bucket's data.
	imported := labels.FromStrings("__name__", "m_gauge", "job", "imported", "instance", "1", "owner", tenant)
	upload := samplesOf([]labels.Labels{imported}, ingesterFrom.Add(-60*time.Hour), ingesterFrom.Add(-time.Hour), 5*time.Minute, 0)
	upload = append(upload, samplesOf(series[:2], ingesterFrom.Add(-50*time.Hour), ingesterFrom.Add(-2*time.Hour), 5*time.Minute, 150*time.Second)...)
	h.upload(tenant, upload)
	before = metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant)
	stale = compareAll(t, h, fe, control, tenant, qs, "after a block upload")
	testutil.Assert(t, stale > 0, "the control answered nothing stale after a block upload")
	testutil.Assert(t, metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant) > before, "no extent invalidated")

	// The newest block of the original bucket data deleted.
	last := blocks[len(blocks)-1]
	for _, id := range last {
		h.deleteBlock(tenant, id)
	}
	before = metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant)
	compareAll(t, h, fe, nil, tenant, qs, "after a block deletion")
	testutil.Assert(t, metric("strata_query_frontend_results_cache_invalidated_extents_total", "tenant", tenant) > before, "no extent invalidated")

	// And once more with a new random set, half an hour later (new near-now windows).
	h.clock.Advance(30 * time.Minute)
	h.push(tenant, samplesOf(series, h.clock.Now().Add(-30*time.Minute+time.Second), h.clock.Now(), time.Minute, 0))
	compareAll(t, h, fe, nil, tenant, append(randomQueries(rng, 30, h.clock.Now()), qs[:30]...), "later")
}

func counterValue(t testing.TB, reg *prometheus.Registry, name string, lv ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(lv); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == lv[i] && lp.GetValue() == lv[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestResultsCache_TenantIsolation: the same query text from two tenants gets each tenant only its own data,
// cold and warm, with the in-memory and the memcached backend.
func TestResultsCache_TenantIsolation(t *testing.T) {
	for _, backend := range []string{cache.BackendInMemory, cache.BackendMemcached} {
		t.Run(backend, func(t *testing.T) {
			cfg := cache.Config{Backend: backend}
			if backend == cache.BackendMemcached {
				cfg.Memcached.Addresses = []string{cachetest.StartMemcached(t)}
			}
			c, err := cache.New("results", cfg, nil, nil)
			testutil.Ok(t, err)
			t.Cleanup(func() { cache.Close(c) })

			h := newCacheHarness(t, harnessNow, "team-a", "team-b")
			fillHarness(h, "team-a", 3)
			fillHarness(h, "team-b", 3)
			reg := prometheus.NewRegistry()
			fe := h.frontend(c, h.generations(), reg)
			qs := []rangeQuery{
				{q: "m_gauge", start: harnessNow.Add(-50 * time.Hour).UnixMilli(), end: harnessNow.UnixMilli(), step: 60_000},
				{q: "sum by (owner) (m_total)", start: harnessNow.Add(-70 * time.Hour).UnixMilli(), end: harnessNow.Add(-time.Hour).UnixMilli(), step: 300_000},
			}
			check := func(phase string) {
				for _, q := range qs {
					for _, tenant := range []string{"team-a", "team-b"} {
						_, want := do(t, h.querier, tenant, q)
						code, got := do(t, fe, tenant, q)
						testutil.Equals(t, http.StatusOK, code)
						testutil.Equals(t, want, got, "%s: tenant %s: %s", phase, tenant, q)
						other := map[string]string{"team-a": "team-b", "team-b": "team-a"}[tenant]
						testutil.Assert(t, strings.Contains(got, `"owner":"`+tenant+`"`), "%s: %s has no series of its own", phase, tenant)
						testutil.Assert(t, !strings.Contains(got, `"owner":"`+other+`"`), "%s: %s got %s's series", phase, tenant, other)
					}
				}
			}
			check("cold")
			// memcached stores asynchronously: wait (bounded) until both tenants' entries are readable.
			for i := 0; i < 200; i++ {
				if backend == cache.BackendInMemory {
					break
				}
				found := 0
				for _, tenant := range []string{"team-a", "team-b"} {
					before := counterValue(t, reg, "strata_query_frontend_results_cache_hits_total", "tenant", tenant)
					do(t, fe, tenant, qs[1])
					if counterValue(t, reg, "strata_query_frontend_results_cache_hits_total", "tenant", tenant) > before {
						found++
					}
				}
				if found == 2 {
					break
				}
				time.Sleep(25 * time.Millisecond)
			}
			hitsBefore := counterValue(t, reg, "strata_query_frontend_results_cache_hits_total")
			check("warm")
			for _, tenant := range []string{"team-a", "team-b"} {
				testutil.Assert(t, counterValue(t, reg, "strata_query_frontend_results_cache_hits_total", "tenant", tenant) > 0, "no hit for %s", tenant)
			}
			testutil.Assert(t, counterValue(t, reg, "strata_query_frontend_results_cache_hits_total") > hitsBefore, "warm run had no hits")
		})
	}
}

// TestResultsCache_ThirtyDays: a 30-day query repeated is served ≥ 90% from the cache (the steps metric) with
// the querier's answer; also when the dashboard refreshes 5 minutes later, one step further.
func TestResultsCache_ThirtyDays(t *testing.T) {
	const tenant = "team-a"
	h := newCacheHarness(t, harnessNow, tenant)
	fillHarness(h, tenant, 31)
	reg := prometheus.NewRegistry()
	fe := h.frontend(cache.NewInMemory("results", cache.InMemoryConfig{}, nil, nil), h.generations(), reg)
	steps := func(source string) float64 {
		return counterValue(t, reg, "strata_query_frontend_results_cache_steps_total", "tenant", tenant, "source", source)
	}
	q := rangeQuery{q: "sum by (job) (rate(m_total[15m]))", start: harnessNow.Add(-30 * 24 * time.Hour).UnixMilli(), end: harnessNow.UnixMilli(), step: 300_000}
	for _, run := range []struct {
		name    string
		advance time.Duration
	}{{"first", 0}, {"repeated", 0}, {"refreshed 5m later", 5 * time.Minute}} {
		if run.advance > 0 {
			h.clock.Advance(run.advance)
			h.push(tenant, samplesOf(harnessSeries(tenant), h.clock.Now().Add(-run.advance+time.Minute), h.clock.Now(), time.Minute, 0))
			q.start, q.end = q.start+run.advance.Milliseconds(), q.end+run.advance.Milliseconds()
		}
		cached0, down0 := steps("cache"), steps("downstream")
		_, want := do(t, h.querier, tenant, q)
		code, got := do(t, fe, tenant, q)
		testutil.Equals(t, http.StatusOK, code)
		testutil.Equals(t, want, got, run.name)
		cached, down := steps("cache")-cached0, steps("downstream")-down0
		ratio := cached / (cached + down)
		t.Logf("%s: %.0f steps from the cache, %.0f downstream: %.2f%% cached", run.name, cached, down, 100*ratio)
		if run.name != "first" {
			testutil.Assert(t, ratio >= 0.9, "%s: only %.2f%% from the cache", run.name, 100*ratio)
		}
	}
}

// TestResultsCache_ViewLagWindow documents the one window left on the bucket side: while the frontend's view of
// the bucket lags the queriers' (its clock behind theirs, so a block's upload grace period ends later for it), an
// extent computed before a block became visible to the queriers is still served, stale, until the frontend's
// view catches up; then it is dropped. Equal views (same rules, same clock: `strata all`) have no such window.
func TestResultsCache_ViewLagWindow(t *testing.T) {
	const tenant = "team-a"
	h := newCacheHarness(t, harnessNow, tenant)
	fillHarness(h, tenant, 4)
	// The frontend's block list: a 10m upload grace period, on a clock either 20m ahead (every block visible) or
	// stopped just past the grace period of the blocks uploaded so far (a block uploaded later is not visible
	// to it yet). The querier here (a BucketStore the test syncs) serves every block at once.
	uploaded := time.Now()
	time.Sleep(10 * time.Millisecond)
	var ahead atomic.Bool
	h.finder = query.NewBucketBlocksFinder(h.bkt, 0, 10*time.Minute, 0, func() time.Time {
		if ahead.Load() {
			return time.Now().Add(20 * time.Minute)
		}
		return uploaded.Add(10*time.Minute + time.Millisecond)
	})
	ahead.Store(true) // every block uploaded so far is visible to both
	fe := h.frontend(cache.NewInMemory("results", cache.InMemoryConfig{}, nil, nil), h.generations(), nil)
	q := rangeQuery{q: "count by (job) (m_gauge)", start: ingesterFrom.Add(-72 * time.Hour).UnixMilli(), end: ingesterFrom.Add(-time.Hour).UnixMilli(), step: 300_000}
	_, before := do(t, fe, tenant, q)

	ahead.Store(false) // the frontend now lags: a new block is in its grace period for it, not for the querier
	imported := labels.FromStrings("__name__", "m_gauge", "job", "imported", "instance", "1", "owner", tenant)
	h.upload(tenant, samplesOf([]labels.Labels{imported}, ingesterFrom.Add(-60*time.Hour), ingesterFrom.Add(-2*time.Hour), 5*time.Minute, 0))
	_, want := do(t, h.querier, tenant, q)
	testutil.Assert(t, want != before, "the upload changed nothing")
	_, got := do(t, fe, tenant, q)
	testutil.Equals(t, before, got, "within the lag: the old answer")

	ahead.Store(true) // the frontend's view caught up: the extent is dropped
	_, got = do(t, fe, tenant, q)
	testutil.Equals(t, want, got)
}

// TestResultsCache_Federation: a federated read ("team-a|team-b") has cache entries of its own: a cached answer
// of team-a never serves team-a|team-b nor team-b (each answers as the querier does, a miss the first time),
// and "team-b|team-a" is the same federation as "team-a|team-b" (served from its entries).
func TestResultsCache_Federation(t *testing.T) {
	c, err := cache.New("results", cache.Config{Backend: cache.BackendInMemory}, nil, nil)
	testutil.Ok(t, err)
	t.Cleanup(func() { cache.Close(c) })
	h := newCacheHarness(t, harnessNow, "team-a", "team-b")
	fillHarness(h, "team-a", 3)
	fillHarness(h, "team-b", 3)
	var reg *prometheus.Registry
	hits := func(tenant string) float64 {
		return counterValue(t, reg, "strata_query_frontend_results_cache_hits_total", "tenant", tenant)
	}
	lookups := func(tenant string) float64 {
		return counterValue(t, reg, "strata_query_frontend_results_cache_lookups_total", "tenant", tenant)
	}
	for _, q := range []rangeQuery{
		{q: "m_gauge", start: harnessNow.Add(-50 * time.Hour).UnixMilli(), end: harnessNow.Add(-time.Hour).UnixMilli(), step: 60_000},
		{q: "sum by (owner) (m_total)", start: harnessNow.Add(-70 * time.Hour).UnixMilli(), end: harnessNow.Add(-time.Hour).UnixMilli(), step: 300_000},
	} {
		// A registry per query: the "first time" checks below read absolute counts.
		reg = prometheus.NewRegistry()
		fe := h.frontend(c, h.generations(), reg)
		answer := func(handler http.Handler, tenant string) string {
			code, body := do(t, handler, tenant, q)
			testutil.Equals(t, http.StatusOK, code, "%s: %s: %s", tenant, q, body)
			return body
		}
		// team-a, twice: cached.
		wantA := answer(h.querier, "team-a")
		testutil.Equals(t, wantA, answer(fe, "team-a"), q.String())
		hitsA := hits("team-a")
		testutil.Equals(t, wantA, answer(fe, "team-a"), q.String())
		testutil.Assert(t, hits("team-a") > hitsA, "%s: team-a's second answer is not from the cache", q)

		// team-a|team-b: a miss, the querier's federated answer, both tenants in it.
		wantAB := answer(h.querier, "team-a|team-b")
		if q.q == "m_gauge" {
			testutil.Assert(t, strings.Contains(wantAB, `"__tenant_id__":"team-b"`), "%s: no __tenant_id__ in the federated answer", q)
		}
		for _, tenant := range []string{"team-a", "team-b"} {
			testutil.Assert(t, strings.Contains(wantAB, `"owner":"`+tenant+`"`), "%s: the federated answer has no series of %s", q, tenant)
		}
		before := lookups("team-a|team-b")
		testutil.Equals(t, wantAB, answer(fe, "team-a|team-b"), q.String())
		testutil.Assert(t, lookups("team-a|team-b") > before, "%s: team-a|team-b not looked up", q)
		testutil.Equals(t, 0.0, hits("team-a|team-b"), "%s: team-a|team-b served from another entry", q)

		// team-b: a miss, its own answer.
		wantB := answer(h.querier, "team-b")
		testutil.Assert(t, !strings.Contains(wantB, `"owner":"team-a"`), "%s: team-b's answer has team-a's series", q)
		testutil.Equals(t, wantB, answer(fe, "team-b"), q.String())
		testutil.Equals(t, 0.0, hits("team-b"), "%s: team-b served from another entry", q)

		// team-b|team-a is team-a|team-b: its entries.
		before = hits("team-a|team-b")
		testutil.Equals(t, wantAB, answer(fe, "team-b|team-a"), q.String())
		testutil.Assert(t, hits("team-a|team-b") > before, "%s: team-b|team-a not served from team-a|team-b's entries", q)
	}
}
