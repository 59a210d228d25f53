package frontend

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/cache/cachetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type unitLimits map[string]*tenancy.Limits

func (f unitLimits) ByTenant(t string) *tenancy.Limits       { return f[t] }
func (f unitLimits) AllByTenant() map[string]*tenancy.Limits { return f }

func baseRequest() *Request {
	return &Request{Method: http.MethodGet, Path: PathQueryRange, Tenants: []string{"team-a"}, IsRange: true,
		Query: "sum(rate(m[5m]))", Start: 1_768_348_800_000, End: 1_768_352_400_000, Step: 60_000,
		Params: url.Values{"dedup": {"true"}}}
}

// TestCacheKey: every parameter and every part of the request that can change an answer changes the key; the
// ones that cannot (timeout, the end within the window, a start moved by whole steps) do not.
func TestCacheKey(t *testing.T) {
	lim := tenancy.DefaultLimits()
	lim.QueryReplicaLabels = []string{"replica"}
	overrides := tenancy.NewOverrides(tenancy.DefaultLimits(), unitLimits{"team-r": &lim})
	base := newCacheKey(baseRequest(), 24*time.Hour, overrides, []byte("salt"))
	for _, tc := range []struct {
		name   string
		change func(r *Request) []byte // returns the salt
		same   bool
	}{
		{name: "nothing", same: true},
		{name: "timeout", change: func(r *Request) []byte { r.Params.Set("timeout", "10s"); return nil }, same: true},
		{name: "end", change: func(r *Request) []byte { r.End += 3600_000; return nil }, same: true},
		{name: "start by whole steps", change: func(r *Request) []byte { r.Start += 10 * r.Step; return nil }, same: true},
		{name: "start phase", change: func(r *Request) []byte { r.Start++; return nil }},
		{name: "next window", change: func(r *Request) []byte { r.Start += 24 * 3600_000; return nil }},
		{name: "step", change: func(r *Request) []byte { r.Step = 30_000; return nil }},
		{name: "query whitespace", change: func(r *Request) []byte { r.Query = "sum(rate(m[5m])) "; return nil }},
		{name: "tenant", change: func(r *Request) []byte { r.Tenants = []string{"team-b"}; return nil }},
		{name: "federated", change: func(r *Request) []byte { r.Tenants = []string{"team-a", "team-b"}; return nil }},
		{name: "tenant replica labels", change: func(r *Request) []byte { r.Tenants = []string{"team-r"}; return nil }},
		{name: "path", change: func(r *Request) []byte { r.Path = "/api/v1/other"; return nil }},
		{name: "dedup", change: func(r *Request) []byte { r.Params.Set("dedup", "false"); return nil }},
		{name: "partial_response", change: func(r *Request) []byte { r.Params.Set("partial_response", "true"); return nil }},
		{name: "replicaLabels[]", change: func(r *Request) []byte { r.Params["replicaLabels[]"] = []string{"a"}; return nil }},
		{name: "replicaLabels[] order", change: func(r *Request) []byte { r.Params["replicaLabels[]"] = []string{"b", "a"}; return nil }},
		{name: "max_source_resolution", change: func(r *Request) []byte { r.Params.Set("max_source_resolution", "5m"); return nil }},
		{name: "lookback_delta", change: func(r *Request) []byte { r.Params.Set("lookback_delta", "1m"); return nil }},
		{name: "stats", change: func(r *Request) []byte { r.Params.Set("stats", "all"); return nil }},
		{name: "engine option", change: func(r *Request) []byte { r.Params.Set("engine", "thanos"); return nil }},
		{name: "unknown parameter", change: func(r *Request) []byte { r.Params.Set("new_option", "1"); return nil }},
		{name: "empty unknown parameter", change: func(r *Request) []byte { r.Params["new_option"] = []string{""}; return nil }},
		{name: "parameter value split", change: func(r *Request) []byte { r.Params["dedup"] = []string{"tr", "ue"}; return nil }},
		{name: "salt", change: func(*Request) []byte { return []byte("other querier config") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := baseRequest()
			salt := []byte("salt")
			if tc.change != nil {
				if s := tc.change(r); s != nil {
					salt = s
				}
			}
			k := newCacheKey(r, 24*time.Hour, overrides, salt)
			testutil.Equals(t, tc.same, k == base, "key equal to the base request's")
		})
	}
}

// TestEntryEncoding: an entry comes back bit for bit (NaN, stale markers, -0, ±Inf, histograms), and any
// truncation or corruption is an error, never a panic.
func TestEntryEncoding(t *testing.T) {
	e := cacheEntry{canonical: [32]byte{1, 2, 3}, extents: []extent{{
		Start: -60_000, End: 120_000, Data: DataRange{MinT: -360_000, MaxT: 120_000}, Token: []byte("token"),
		Matrix: []SampleStream{
			{Labels: labels.FromStrings("__name__", "m", "job", "x"), Floats: []FPoint{{T: -60_000, F: math.NaN()},
				{T: 0, F: math.Float64frombits(value.StaleNaN)}, {T: 60_000, F: math.Copysign(0, -1)}, {T: 120_000, F: math.Inf(1)}}},
			{Labels: labels.FromStrings("a", "ü"), Histograms: []HPoint{{T: 60_000, H: json.RawMessage(`{"count":"1","sum":"2"}`)}}},
		},
	}, {Start: 180_000, End: 180_000}}}
	b := encodeEntry(e)
	got, err := decodeEntry(b)
	testutil.Ok(t, err)
	testutil.Equals(t, e.canonical, got.canonical)
	testutil.Equals(t, len(e.extents), len(got.extents))
	for i, x := range e.extents {
		g := got.extents[i]
		testutil.Equals(t, []int64{x.Start, x.End, x.Data.MinT, x.Data.MaxT}, []int64{g.Start, g.End, g.Data.MinT, g.Data.MaxT})
		testutil.Equals(t, string(x.Token), string(g.Token))
		testutil.Equals(t, len(x.Matrix), len(g.Matrix))
		for j, s := range x.Matrix {
			testutil.Equals(t, s.Labels, g.Matrix[j].Labels)
			testutil.Equals(t, len(s.Floats), len(g.Matrix[j].Floats))
			for k, p := range s.Floats {
				testutil.Equals(t, p.T, g.Matrix[j].Floats[k].T)
				testutil.Equals(t, math.Float64bits(p.F), math.Float64bits(g.Matrix[j].Floats[k].F))
			}
			testutil.Equals(t, len(s.Histograms), len(g.Matrix[j].Histograms))
			for k, p := range s.Histograms {
				testutil.Equals(t, string(p.H), string(g.Matrix[j].Histograms[k].H))
			}
		}
	}
	for n := range len(b) {
		_, err := decodeEntry(b[:n])
		testutil.NotOk(t, err, "truncated to %d bytes", n)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0xff
		_, _ = decodeEntry(c) // must not panic; a flipped value byte may still decode
	}
	_, err = decodeEntry(append(append([]byte(nil), b...), 0))
	testutil.NotOk(t, err, "trailing byte")
}

// fakeDownstream answers a range query with one series whose value at t is t/1000 + bias, counting calls.
type fakeDownstream struct {
	calls    atomic.Int64
	bias     atomic.Int64
	warnings []string
	status   int
}

func (f *fakeDownstream) Do(_ context.Context, r *Request) (*Response, error) {
	f.calls.Add(1)
	if f.status != 0 {
		return NewErrorResponse(f.status, "internal", "boom"), nil
	}
	s := SampleStream{Labels: labels.FromStrings("__name__", "m")}
	for t := r.Start; t <= r.End; t += r.Step {
		s.Floats = append(s.Floats, FPoint{T: t, F: float64(t/1000 + f.bias.Load())})
	}
	return &Response{StatusCode: 200, Status: "success", ResultType: "matrix", Matrix: []SampleStream{s}, Warnings: f.warnings}, nil
}

// staticSource is a generation source with a settable generation number, or an error.
type staticSource struct {
	gen atomic.Int64
	err error
}

func (s *staticSource) Name() string { return "static" }
func (s *staticSource) Snapshot(context.Context, string) (Snapshot, error) {
	if s.err != nil {
		return nil, s.err
	}
	return staticSnapshot(s.gen.Load()), nil
}

type staticSnapshot int64

func (s staticSnapshot) Token(DataRange) []byte { return []byte{byte(s)} }
func (s staticSnapshot) Valid(token []byte, _ DataRange) bool {
	return len(token) == 1 && token[0] == byte(s)
}

// garbageCache returns bytes that are not an entry for every key.
type garbageCache struct{ cache.Cache }

func (garbageCache) Fetch(_ context.Context, keys []string) map[string][]byte {
	out := map[string][]byte{}
	for _, k := range keys {
		out[k] = []byte(entryMagic + "garbage that is not an entry at all, longer than a digest")
	}
	return out
}
func (garbageCache) Store(map[string][]byte, time.Duration) {}

// TestResultsCache_Behaviour: extents are reused and only missing steps fetched; a new generation drops them;
// failures of the cache or of a generation never fail a query; warnings and errors are never cached; nothing
// within max_cache_freshness of now is cached.
func TestResultsCache_Behaviour(t *testing.T) {
	now := time.UnixMilli(1_768_400_000_000)
	lim := tenancy.DefaultLimits()
	lim.MaxCacheFreshness = model.Duration(10 * time.Minute)
	overrides := tenancy.NewOverrides(lim, nil)
	day := int64(24 * 3600_000)
	r := baseRequest()
	r.Query = "m"
	r.Start, r.End = now.UnixMilli()-day/2, now.UnixMilli()

	setup := func(c cache.Cache, src GenerationSource) (Handler, *fakeDownstream, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		down := &fakeDownstream{}
		mw := NewResultsCache(c, []GenerationSource{src}, overrides, ResultsCacheOptions{SplitInterval: 24 * time.Hour, Now: func() time.Time { return now }}, nil, reg)
		return mw(down), down, reg
	}
	want, _ := (&fakeDownstream{}).Do(context.Background(), r)
	ctx := context.Background()

	t.Run("reuse, partial fetch and freshness", func(t *testing.T) {
		src := &staticSource{}
		h, down, reg := setup(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), src)
		got, err := h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, want.Matrix, got.Matrix)
		testutil.Equals(t, int64(1), down.calls.Load())
		// Only the steps within max_cache_freshness (10m) of now go downstream again (the data of "m" ends at the step).
		got, err = h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, want.Matrix, got.Matrix)
		testutil.Equals(t, int64(2), down.calls.Load())
		fetched := promtestutil.ToFloat64(stepsCounter(t, reg, "downstream"))
		total := float64((r.End-r.Start)/r.Step + 1)
		testutil.Equals(t, total+11, fetched, "cold: all steps; warm: the 11 within 10m of now")
		// A wider request reuses the extent and fetches only the steps before it.
		wide := r.WithStartEnd(r.Start-3600_000, r.End)
		wantWide, _ := (&fakeDownstream{}).Do(ctx, wide)
		got, err = h.Do(ctx, wide)
		testutil.Ok(t, err)
		testutil.Equals(t, wantWide.Matrix, got.Matrix)
		testutil.Equals(t, total+11+60+11, promtestutil.ToFloat64(stepsCounter(t, reg, "downstream")))
		// A new generation: the data changed, the extents are unusable.
		src.gen.Add(1)
		down.bias.Store(1000)
		wantNew, _ := down.Do(ctx, r)
		down.calls.Add(-1)
		got, err = h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, wantNew.Matrix, got.Matrix)
	})
	t.Run("memcached killed mid-run or never up: answers stay right", func(t *testing.T) {
		mc := cachetest.RunMemcached(t)
		for _, addr := range []string{mc.Addr, "127.0.0.1:1"} {
			c, err := cache.NewMemcached("results", cache.MemcachedConfig{Addresses: []string{addr}}, log.NewNopLogger(), prometheus.NewRegistry())
			testutil.Ok(t, err)
			h, _, _ := setup(c, &staticSource{})
			for i := range 4 {
				if i == 2 {
					mc.Stop() // kill -9
				}
				start := time.Now()
				got, err := h.Do(ctx, r)
				testutil.Ok(t, err)
				testutil.Equals(t, want.Matrix, got.Matrix)
				testutil.Assert(t, time.Since(start) < 5*time.Second, "a dead memcached must not stall the query")
			}
			c.Stop()
		}
	})
	t.Run("generation unavailable: answered without the cache", func(t *testing.T) {
		h, down, reg := setup(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), &staticSource{err: errors.New("bucket down")})
		for range 2 {
			got, err := h.Do(ctx, r)
			testutil.Ok(t, err)
			testutil.Equals(t, want.Matrix, got.Matrix)
		}
		testutil.Equals(t, int64(2), down.calls.Load())
		testutil.Equals(t, 2.0, promtestutil.ToFloat64(failuresCounter(t, reg, "generation")))
	})
	t.Run("tenants of static endpoints are not cached", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		down := &fakeDownstream{}
		h := NewResultsCache(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), []GenerationSource{NewExternalStores([]string{"team-s"}), &staticSource{}},
			overrides, ResultsCacheOptions{SplitInterval: 24 * time.Hour, Now: func() time.Time { return now }}, nil, reg)(down)
		sidecar := *r
		sidecar.Tenants = []string{"team-s"}
		for range 2 {
			_, _ = h.Do(ctx, &sidecar)
		}
		testutil.Equals(t, int64(2), down.calls.Load(), "team-s: every request downstream")
		testutil.Equals(t, 2.0, promtestutil.ToFloat64(failuresCounter(t, reg, "not_covered")))
		for range 2 {
			_, _ = h.Do(ctx, r)
		}
		testutil.Equals(t, float64((r.End-r.Start)/r.Step+1+11), promtestutil.ToFloat64(stepsCounter(t, reg, "downstream")), "team-a: cached (cold, then the last 10m)")
		_, err := NewExternalStores([]string{""}).Snapshot(ctx, "anyone")
		testutil.Assert(t, errors.Is(err, ErrNotCovered), "an endpoint of every tenant covers every tenant")
	})
	t.Run("corrupt entries are misses", func(t *testing.T) {
		h, down, reg := setup(garbageCache{}, &staticSource{})
		got, err := h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, want.Matrix, got.Matrix)
		testutil.Equals(t, int64(1), down.calls.Load())
		testutil.Equals(t, 1.0, promtestutil.ToFloat64(failuresCounter(t, reg, "corrupt")))
	})
	t.Run("warnings are not cached", func(t *testing.T) {
		h, down, _ := setup(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), &staticSource{})
		down.warnings = []string{"partial response: store x unavailable"}
		for i := range 2 {
			got, err := h.Do(ctx, r)
			testutil.Ok(t, err)
			testutil.Equals(t, down.warnings, got.Warnings)
			testutil.Equals(t, int64(i+1), down.calls.Load())
		}
		down.warnings = nil
		_, _ = h.Do(ctx, r)
		got, err := h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, 0, len(got.Warnings), "no warning comes back from the cache")
	})
	t.Run("errors are not cached", func(t *testing.T) {
		h, down, _ := setup(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), &staticSource{})
		down.status = http.StatusUnprocessableEntity
		got, err := h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, http.StatusUnprocessableEntity, got.StatusCode)
		down.status = 0
		got, err = h.Do(ctx, r)
		testutil.Ok(t, err)
		testutil.Equals(t, want.Matrix, got.Matrix)
		testutil.Equals(t, int64(2), down.calls.Load())
	})
	t.Run("not cacheable: stats, limit, @ end(), near now only", func(t *testing.T) {
		for _, mod := range []func(*Request) *Request{
			func(r *Request) *Request { c := *r; c.Params = url.Values{"stats": {"all"}}; return &c },
			func(r *Request) *Request { c := *r; c.Params = url.Values{"limit": {"3"}}; return &c },
			func(r *Request) *Request { c := *r; c.Query = "m @ end()"; return &c },
			func(r *Request) *Request { return r.WithStartEnd(now.UnixMilli()-5*60_000, now.UnixMilli()) },
			func(r *Request) *Request { c := *r; c.Query = "m offset -1d"; return &c },
		} {
			h, down, _ := setup(cache.NewInMemory("t", cache.InMemoryConfig{}, nil, nil), &staticSource{})
			req := mod(r)
			_, _ = h.Do(ctx, req)
			_, _ = h.Do(ctx, req)
			testutil.Equals(t, int64(2), down.calls.Load(), "%s %v", req.Query, req.Params)
		}
	})
}

func stepsCounter(t *testing.T, reg *prometheus.Registry, source string) prometheus.Collector {
	t.Helper()
	return counterOf(t, reg, "strata_query_frontend_results_cache_steps_total", "source", source)
}

func failuresCounter(t *testing.T, reg *prometheus.Registry, reason string) prometheus.Collector {
	t.Helper()
	return counterOf(t, reg, "strata_query_frontend_results_cache_failures_total", "reason", reason)
}

// counterOf returns a constant collector with the sum of the counters of name whose label l is v.
func counterOf(t *testing.T, reg *prometheus.Registry, name, l, v string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == l && lp.GetValue() == v {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return sum })
}

// TestIngesterSnapshot: an extent stays valid exactly while no ingester restarted, joined or left, forgot its
// log, or logged a late write reaching into the extent's data range.
func TestIngesterSnapshot(t *testing.T) {
	type ev = struct {
		Seq     uint64 `json:"seq"`
		MinTime int64  `json:"min_time"`
	}
	stored := map[string]IngesterLog{"i1": {Epoch: "e1", Seq: 5}, "i2": {Epoch: "e2", Seq: 0}}
	r := DataRange{MinT: 1000, MaxT: 2000}
	for _, tc := range []struct {
		name  string
		now   map[string]IngesterLog
		valid bool
	}{
		{name: "unchanged", now: stored, valid: true},
		{name: "late write after the range", now: map[string]IngesterLog{"i1": {Epoch: "e1", Seq: 6, Events: []ev{{6, 2001}}}, "i2": stored["i2"]}, valid: true},
		{name: "late write in the range", now: map[string]IngesterLog{"i1": {Epoch: "e1", Seq: 6, Events: []ev{{6, 1500}}}, "i2": stored["i2"]}},
		{name: "late write before the range", now: map[string]IngesterLog{"i1": stored["i1"], "i2": {Epoch: "e2", Seq: 1, Events: []ev{{1, 10}}}}},
		{name: "write logged before the token", now: map[string]IngesterLog{"i1": {Epoch: "e1", Seq: 5, Events: []ev{{5, 1500}}}, "i2": stored["i2"]}, valid: true},
		{name: "log forgotten", now: map[string]IngesterLog{"i1": {Epoch: "e1", Seq: 2000, Since: 6, Events: []ev{{2000, 5000}}}, "i2": stored["i2"]}},
		{name: "restarted", now: map[string]IngesterLog{"i1": {Epoch: "e1b", Seq: 5}, "i2": stored["i2"]}},
		{name: "joined", now: map[string]IngesterLog{"i1": stored["i1"], "i2": stored["i2"], "i3": {Epoch: "e3"}}},
		{name: "left", now: map[string]IngesterLog{"i1": stored["i1"]}},
		{name: "replaced", now: map[string]IngesterLog{"i1": stored["i1"], "i3": {Epoch: "e2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewIngesterGeneration(func(context.Context, string) (map[string]IngesterLog, error) { return stored, nil })
			before, err := g.Snapshot(context.Background(), "t")
			testutil.Ok(t, err)
			token := before.Token(r)
			g = NewIngesterGeneration(func(context.Context, string) (map[string]IngesterLog, error) { return tc.now, nil })
			after, err := g.Snapshot(context.Background(), "t")
			testutil.Ok(t, err)
			testutil.Equals(t, tc.valid, after.Valid(token, r))
		})
	}
}
