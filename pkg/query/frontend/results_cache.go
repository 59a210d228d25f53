package frontend

// The results cache (Mimir's results cache of extents) and why it is never stale.
//
// Each split sub-request of a range query (one split window, e.g. one UTC day) has a key (cache_key.go: the
// tenants, the query text, the step and its grid, the window and every parameter but an allow-list). Under the
// key the cache keeps extents: answers for spans [Start, End] of the step grid. A request is answered from the
// valid extents that cover it, and only the steps no valid extent covers are asked downstream; the new answers
// are merged in and stored back. Only successful answers without warnings or infos are stored; a cache that
// fails (a miss, a corrupt entry, a generation that cannot be read) only costs the downstream request.
//
// An extent is only stored for steps whose whole data range (promql.FindMinMaxTime: lookback, ranges,
// subqueries, offsets and @ included) ends before now - max_cache_freshness (the largest of the request's
// tenants). That alone does not make it safe: the data behind an old range can still change. It changes in
// exactly two places, and each has a data generation (generation.go), snapshotted before the sub-request is
// sent downstream and stored in the extent as a token, then checked before the extent is used:
//
//   - the bucket: a block uploaded, imported, compacted or deleted. The token is a hash of the blocks the
//     queriers read (their finder's view: upload grace and deletion-mark delay applied) that overlap the
//     extent's data range. Any change in that set changes the hash.
//   - the ingesters: a sample appended into the past. The ingesters' accept rules bound samples by each
//     series' and head's newest sample, not by now (in-order within half a block of the head's max time,
//     out-of-order within out_of_order_time_window; a new, restarted or idle-reopened TSDB accepts anything
//     newer than its last block), so no age makes a range safe from writes. Every ingester therefore numbers
//     each commit holding a sample older than now - max_cache_freshness + 2m (its "late writes", with the
//     oldest sample), per tenant; the token is every ingester's (epoch, number); the extent is invalid once an
//     ingester restarted, joined or left, forgot the log since the token, or logged a later write whose oldest
//     sample is not after the extent's data range. Writes newer than that boundary cannot reach a cached
//     extent: its data ends before the boundary of the moment it was stored.
//
// The snapshot precedes the downstream request (one per client request, shared by its parts), and both logs
// change only after the data is queryable, so a change is either seen by the query or invalidates its extent.
// Tenants served by the queriers' static StoreAPI endpoints (sidecars, external stores) are never cached: no
// generation watches them (ExternalStores).
//
// What this rests on, and the windows left:
//   - The frontend's view of the bucket equals the queriers': same finder rules (upload grace period,
//     deletion-mark delay) on lists refreshed more often than both (strata checks this, else no cache). A
//     frontend whose clock is ahead of the queriers' would see a block count first and store an older answer
//     under the newer view, without bound; so a standalone frontend looks one minute back, and an extent may
//     then outlive a new block's grace period by that minute plus the skew (TestResultsCache_ViewLagWindow
//     shows such a window and its end). Blocks the ingesters ship hold data the queriers already read, so
//     only imported or backfilled blocks change answers there.
//   - A block deleted without a deletion mark (by hand; Strata's compactor always marks first) can still be
//     served by a store-gateway until its next sync while the frontend no longer lists it.
//   - Ingesters decide what is late with their own clock and overrides: clocks within 2m of the frontend's, and
//     a max_cache_freshness lowered at run time reaching the ingesters within the runtime-config reload
//     period, during which a late write may go unlogged.
//   - The querier settings that change answers are in the key (the caller's salt): queriers configured
//     otherwise than the frontend believes would be cached under the wrong salt.
//   - Limits decide between an answer and an error, and errors are not cached; but a request the cache
//     answers partly from extents asks the queriers less, so it may succeed where the querier alone would
//     exceed max_samples or max_fetched_* (the split does the same).

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// ResultsCacheConfig is the frontend's `results_cache:` section.
type ResultsCacheConfig struct {
	// Config selects the backend: `backend: inmemory` (default), `memcached` (with `memcached.addresses`) or
	// `none` (no results cache).
	cache.Config `yaml:",inline"`
	// TTL is how long an entry is kept at most (0: until evicted). Extents are checked on every read anyway;
	// the TTL only bounds the space.
	TTL time.Duration `yaml:"ttl"`
	// IngesterURLs are the HTTP base URLs of every ingester (their /ingester/late_writes), for a standalone
	// query-frontend: without them (and without in-process ingesters, as in `strata all`) nothing is cached,
	// since late writes could not be seen.
	IngesterURLs []string `yaml:"ingester_urls"`
}

// DefaultResultsCacheConfig is an in-memory cache of 256MiB, entries kept a week at most.
func DefaultResultsCacheConfig() ResultsCacheConfig {
	return ResultsCacheConfig{Config: cache.Config{Backend: cache.BackendInMemory}, TTL: 7 * 24 * time.Hour}
}

// Validate checks the backend's configuration.
func (c ResultsCacheConfig) Validate() error {
	if c.TTL < 0 {
		return errors.Newf("results_cache.ttl must not be negative, got %s", c.TTL)
	}
	return errors.Wrap(c.Config.Validate(), "results_cache")
}

// ResultsCacheOptions are what the results cache needs to know about the rest of the read path.
type ResultsCacheOptions struct {
	// SplitInterval is the split window (split_queries_by_interval), part of the key.
	SplitInterval time.Duration
	// LookbackDelta is the queriers' default lookback delta: the data range of a query is widened by the larger
	// of it and the request's lookback_delta.
	LookbackDelta time.Duration
	// Salt is a fingerprint of the querier configuration that changes answers (engine options, replica labels,
	// default partial_response, auto-downsampling), part of the key.
	Salt []byte
	// TTL of stored entries (0: none).
	TTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

type resultsCacheMetrics struct {
	lookups     *prometheus.CounterVec
	hits        *prometheus.CounterVec
	misses      *prometheus.CounterVec
	steps       *prometheus.CounterVec
	invalidated *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	failures    *prometheus.CounterVec
}

func newResultsCacheMetrics(reg prometheus.Registerer) *resultsCacheMetrics {
	f := promauto.With(reg)
	const ns = "strata_query_frontend_results_cache_"
	return &resultsCacheMetrics{
		lookups: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "lookups_total",
			Help: "Cacheable range sub-requests looked up in the results cache."}, []string{"tenant"}),
		hits: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "hits_total",
			Help: "Lookups answered entirely from cached extents."}, []string{"tenant"}),
		misses: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "misses_total",
			Help: "Lookups that sent at least part of their range downstream."}, []string{"tenant"}),
		steps: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "steps_total",
			Help: "Evaluation steps of looked-up sub-requests, by where their answer came from (cache or downstream)."}, []string{"tenant", "source"}),
		invalidated: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "invalidated_extents_total",
			Help: "Cached extents found unusable because the data under them changed (blocks, late writes)."}, []string{"tenant"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "bytes_total",
			Help: "Bytes of results cache entries read and written."}, []string{"tenant", "op"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{Name: ns + "failures_total",
			Help: "Results cache failures, each answered without the cache: corrupt entries, unreadable data generations."}, []string{"tenant", "reason"}),
	}
}

type resultsCache struct {
	next      Handler
	cache     cache.Cache
	sources   []GenerationSource
	overrides *tenancy.Overrides
	opts      ResultsCacheOptions
	parser    parser.Parser
	logger    log.Logger
	metrics   *resultsCacheMetrics
}

// NewResultsCache returns the results cache middleware over backend c for the range sub-requests of one split
// window. sources must cover every place a tenant's data can change (NewBucketGeneration and
// NewIngesterGeneration for Strata's read path); with a nil cache or no sources it passes every request
// through, since no extent could be proven current.
func NewResultsCache(c cache.Cache, sources []GenerationSource, overrides *tenancy.Overrides, opts ResultsCacheOptions, logger log.Logger, reg prometheus.Registerer) Middleware {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	m := newResultsCacheMetrics(reg)
	return func(next Handler) Handler {
		if c == nil || len(sources) == 0 || overrides == nil {
			return next
		}
		return &resultsCache{next: next, cache: c, sources: sources, overrides: overrides, opts: opts,
			parser: parser.NewParser(parser.Options{}), logger: log.With(logger, "component", "results-cache"), metrics: m}
	}
}

// plan is a cacheable request's evaluated facts.
type plan struct {
	expr     parser.Expr
	lookback time.Duration
	// cacheEnd is the last step whose data range ends before the freshness boundary (< Start: nothing cacheable).
	cacheEnd int64
}

// piece is a part of the answer: a span of steps and the matrix for it.
type piece struct {
	from, to int64
	matrix   []SampleStream
}

// Do implements Handler.
func (c *resultsCache) Do(ctx context.Context, r *Request) (*Response, error) {
	p, ok := c.plan(r)
	if !ok {
		return c.next.Do(ctx, r)
	}
	tenant := tenantLabel(r.Tenants)
	snaps, err := c.snapshots(ctx, r.Tenants)
	if errors.Is(err, ErrNotCovered) {
		c.metrics.failures.WithLabelValues(tenant, "not_covered").Inc()
		return c.next.Do(ctx, r)
	}
	if err != nil {
		c.metrics.failures.WithLabelValues(tenant, "generation").Inc()
		level.Warn(c.logger).Log("msg", "data generation unavailable: answering without the results cache", "tenant", tenant, "err", err)
		return c.next.Do(ctx, r)
	}
	c.metrics.lookups.WithLabelValues(tenant).Inc()
	key := newCacheKey(r, c.opts.SplitInterval, c.overrides, c.opts.Salt)
	cached := c.fetch(ctx, key, tenant)

	// Keep the extents still valid, in order.
	valid := cached[:0]
	for _, x := range cached {
		if x.End < x.Start || floorMod(x.Start-r.Start, r.Step) != 0 {
			continue
		}
		if !snaps.valid(x.Token, x.Data) {
			c.metrics.invalidated.WithLabelValues(tenant).Inc()
			continue
		}
		valid = append(valid, x)
	}
	slices.SortFunc(valid, func(a, b extent) int { return cmpInt64(a.Start, b.Start) })

	// Cover [r.Start, cacheEnd] with valid extents; the gaps, and the steps after cacheEnd, go downstream.
	var (
		pieces []piece
		gaps   [][2]int64
		cur    = r.Start
	)
	for _, x := range valid {
		if x.End < cur || cur > p.cacheEnd {
			continue
		}
		if x.Start > p.cacheEnd {
			break
		}
		if x.Start > cur {
			gaps = append(gaps, [2]int64{cur, x.Start - r.Step})
			cur = x.Start
		}
		to := min(x.End, p.cacheEnd)
		pieces = append(pieces, piece{from: cur, to: to, matrix: trimMatrix(x.Matrix, cur, to)})
		cur = to + r.Step
	}
	if cur <= r.End {
		gaps = append(gaps, [2]int64{cur, r.End}) // the last gap runs on past cacheEnd: one request
	}
	steps := func(from, to int64) float64 { return float64((to-from)/r.Step + 1) }
	var cachedSteps, fetchedSteps float64
	for _, pc := range pieces {
		cachedSteps += steps(pc.from, pc.to)
	}
	for _, g := range gaps {
		fetchedSteps += steps(g[0], g[1])
	}
	c.metrics.steps.WithLabelValues(tenant, "cache").Add(cachedSteps)
	c.metrics.steps.WithLabelValues(tenant, "downstream").Add(fetchedSteps)
	if len(gaps) == 0 {
		c.metrics.hits.WithLabelValues(tenant).Inc()
	} else {
		c.metrics.misses.WithLabelValues(tenant).Inc()
	}

	// A cold request: one downstream request for all of it, answered as is.
	if len(pieces) == 0 && len(gaps) == 1 && gaps[0] == [2]int64{r.Start, r.End} {
		resp, err := c.next.Do(ctx, r)
		if err == nil && cacheable(resp) && p.cacheEnd >= r.Start {
			c.store(key, tenant, r, p, snaps, nil, []piece{{from: r.Start, to: p.cacheEnd, matrix: trimMatrix(resp.Matrix, r.Start, p.cacheEnd)}})
		}
		return resp, err
	}

	var (
		fetched         []piece
		warnings, infos []string
		storeFetched    = true
		sub             *Request
	)
	for _, g := range gaps {
		sub = r.WithStartEnd(g[0], g[1])
		resp, err := c.next.Do(ctx, sub)
		if err != nil {
			return nil, err
		}
		if !resp.IsSuccess() {
			return resp, nil // the querier's error, as it answered it
		}
		if resp.Raw != nil {
			return nil, errors.Newf("range query answer for [%d, %d] was not decoded", g[0], g[1])
		}
		if !cacheable(resp) {
			storeFetched = false
		}
		warnings, infos = append(warnings, resp.Warnings...), append(infos, resp.Infos...)
		pc := piece{from: g[0], to: g[1], matrix: resp.Matrix}
		pieces = append(pieces, pc)
		if g[0] <= p.cacheEnd {
			to := min(g[1], p.cacheEnd)
			fetched = append(fetched, piece{from: g[0], to: to, matrix: trimMatrix(resp.Matrix, g[0], to)})
		}
	}
	slices.SortFunc(pieces, func(a, b piece) int { return cmpInt64(a.from, b.from) })
	out := &Response{StatusCode: 200, Status: "success", ResultType: "matrix", Matrix: mergePieces(pieces),
		Warnings: uniqueStrings(warnings), Infos: uniqueStrings(infos)}
	if storeFetched && (len(fetched) > 0 || len(valid) != len(cached)) {
		c.store(key, tenant, r, p, snaps, valid, fetched)
	}
	return out, nil
}

type snapshotScopeKey struct{}

// snapshotScope holds the snapshots of one client request, shared by its split parts.
type snapshotScope struct {
	mtx   sync.Mutex
	snaps map[string]snapshots
	errs  map[string]error
}

// WithSnapshotScope returns a context in which the results cache takes the data generations once per request
// and tenant set, for all the parts the split makes of it (the frontend wraps each client request with it). It is
// safe: the snapshot is still taken before any part is sent downstream, since every part waits for it.
func WithSnapshotScope(ctx context.Context) context.Context {
	return context.WithValue(ctx, snapshotScopeKey{}, &snapshotScope{snaps: map[string]snapshots{}, errs: map[string]error{}})
}

// snapshots returns the request's snapshots of the tenants' data generations (shared within a snapshot scope).
func (c *resultsCache) snapshots(ctx context.Context, tenants []string) (snapshots, error) {
	scope, ok := ctx.Value(snapshotScopeKey{}).(*snapshotScope)
	if !ok {
		return takeSnapshots(ctx, c.sources, tenants)
	}
	key := tenantLabel(tenants)
	scope.mtx.Lock()
	defer scope.mtx.Unlock()
	if s, ok := scope.snaps[key]; ok {
		return s, nil
	}
	if err, ok := scope.errs[key]; ok {
		return nil, err
	}
	s, err := takeSnapshots(ctx, c.sources, tenants)
	if err != nil {
		scope.errs[key] = err
		return nil, err
	}
	scope.snaps[key] = s
	return s, nil
}

// cacheable reports whether an answer may be stored: a success without warnings (a partial answer) or infos.
func cacheable(resp *Response) bool {
	return resp != nil && resp.IsSuccess() && resp.Raw == nil && resp.Status == "success" &&
		len(resp.Warnings) == 0 && len(resp.Infos) == 0 && resp.Stats == nil
}

// plan decides whether r can use the cache and up to which step.
func (c *resultsCache) plan(r *Request) (plan, bool) {
	var p plan
	if !r.IsRange || r.Path != PathQueryRange || r.Step <= 0 || r.End < r.Start || len(r.Tenants) == 0 {
		return p, false
	}
	if v, ok := r.Params["stats"]; ok && len(v) > 0 {
		return p, false // per-request statistics: not an answer to cache
	}
	if unsplittable(r, c.overrides) {
		// What the split sends whole (a series limit, too many points, longer than max_query_length, @
		// start()/end(), a query that does not parse) is not the sum of its steps: no extents either.
		return p, false
	}
	expr, err := c.parser.ParseExpr(r.Query)
	if err != nil {
		return p, false
	}
	p.expr = expr
	p.lookback = c.opts.LookbackDelta
	if v := r.Params.Get("lookback_delta"); v != "" {
		d, err := parseDurationParam(v)
		if err != nil {
			return p, false
		}
		p.lookback = max(p.lookback, d)
	}
	if p.lookback <= 0 {
		p.lookback = 5 * time.Minute
	}
	var freshness time.Duration
	for _, t := range r.Tenants {
		freshness = max(freshness, c.overrides.MaxCacheFreshness(t))
	}
	boundary := c.opts.Now().Add(-freshness).UnixMilli()
	// The last step k (0..n) whose step time and data range end before the boundary; the data range's end only
	// grows with the query's end.
	n := (r.End - r.Start) / r.Step
	ok := func(k int64) bool {
		t := r.Start + k*r.Step
		return t < boundary && p.dataRange(r.Start, t, r.Step).MaxT < boundary
	}
	lo, hi := int64(-1), n // ok(lo) holds (or lo = -1); find the largest
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if ok(mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	p.cacheEnd = r.Start + lo*r.Step
	return p, true
}

// dataRange is the span of samples a range query of p's expression over [start, end] reads.
func (p plan) dataRange(start, end, step int64) DataRange {
	mint, maxt := promql.FindMinMaxTime(&parser.EvalStmt{Expr: p.expr, Start: time.UnixMilli(start), End: time.UnixMilli(end),
		Interval: time.Duration(step) * time.Millisecond, LookbackDelta: p.lookback})
	return DataRange{MinT: mint, MaxT: maxt}
}

// fetch reads the extents of key; a missing, corrupt or foreign entry is no extents.
func (c *resultsCache) fetch(ctx context.Context, key cacheKey, tenant string) []extent {
	got := c.cache.Fetch(ctx, []string{key.key})
	b, ok := got[key.key]
	if !ok {
		return nil
	}
	c.metrics.bytes.WithLabelValues(tenant, "read").Add(float64(len(b)))
	e, err := decodeEntry(b)
	if err != nil {
		c.metrics.failures.WithLabelValues(tenant, "corrupt").Inc()
		level.Warn(c.logger).Log("msg", "ignoring a corrupt results cache entry", "tenant", tenant, "key", key.key, "err", err)
		return nil
	}
	if e.canonical != key.canonical {
		c.metrics.failures.WithLabelValues(tenant, "foreign").Inc()
		return nil
	}
	return e.extents
}

// store writes back the valid extents and the fetched pieces, adjacent ones merged. Tokens of new and merged
// extents come from snaps, taken before any of their data was fetched (and, for extents merged, after they
// were checked valid against it).
func (c *resultsCache) store(key cacheKey, tenant string, r *Request, p plan, snaps snapshots, valid []extent, fetched []piece) {
	all := slices.Clone(valid)
	for _, pc := range fetched {
		d := p.dataRange(pc.from, pc.to, r.Step)
		all = append(all, extent{Start: pc.from, End: pc.to, Data: d, Token: snaps.token(d), Matrix: pc.matrix})
	}
	slices.SortFunc(all, func(a, b extent) int { return cmpInt64(a.Start, b.Start) })
	merged := make([]extent, 0, len(all))
	for _, x := range all {
		if n := len(merged); n > 0 && merged[n-1].End+r.Step >= x.Start {
			last := merged[n-1]
			if x.End <= last.End {
				continue // covered
			}
			from := last.End + r.Step
			d := p.dataRange(last.Start, x.End, r.Step)
			merged[n-1] = extent{Start: last.Start, End: x.End, Data: d, Token: snaps.token(d),
				Matrix: mergePieces([]piece{{matrix: last.Matrix}, {matrix: trimMatrix(x.Matrix, from, x.End)}})}
			continue
		}
		merged = append(merged, x)
	}
	b := encodeEntry(cacheEntry{canonical: key.canonical, extents: merged})
	c.metrics.bytes.WithLabelValues(tenant, "write").Add(float64(len(b)))
	c.cache.Store(map[string][]byte{key.key: b}, c.opts.TTL)
}

// trimMatrix returns the points of m at [from, to], leaving out series without any.
func trimMatrix(m []SampleStream, from, to int64) []SampleStream {
	out := make([]SampleStream, 0, len(m))
	for _, s := range m {
		t := SampleStream{Labels: s.Labels, Floats: trimPoints(s.Floats, func(p FPoint) int64 { return p.T }, from, to),
			Histograms: trimPoints(s.Histograms, func(p HPoint) int64 { return p.T }, from, to)}
		if len(t.Floats) > 0 || len(t.Histograms) > 0 {
			out = append(out, t)
		}
	}
	return out
}

func trimPoints[P any](ps []P, ts func(P) int64, from, to int64) []P {
	i, _ := slices.BinarySearchFunc(ps, from, func(p P, t int64) int { return cmpInt64(ts(p), t) })
	j, _ := slices.BinarySearchFunc(ps, to+1, func(p P, t int64) int { return cmpInt64(ts(p), t) })
	if i >= j {
		return nil
	}
	return ps[i:j:j]
}

// mergePieces joins matrices of consecutive, non-overlapping spans (in time order) into one matrix sorted by
// labels, as Prometheus sorts a range query's answer.
func mergePieces(pieces []piece) []SampleStream {
	idx := map[string]int{}
	var out []SampleStream
	var buf []byte
	for _, pc := range pieces {
		for _, s := range pc.matrix {
			buf = s.Labels.Bytes(buf[:0])
			k, ok := idx[string(buf)]
			if !ok {
				k = len(out)
				idx[string(buf)] = k
				out = append(out, SampleStream{Labels: s.Labels})
			}
			out[k].Floats = append(out[k].Floats, s.Floats...)
			out[k].Histograms = append(out[k].Histograms, s.Histograms...)
		}
	}
	slices.SortFunc(out, func(a, b SampleStream) int { return labels.Compare(a.Labels, b.Labels) })
	if out == nil {
		out = []SampleStream{}
	}
	return out
}

func uniqueStrings(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	seen := map[string]bool{}
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseDurationParam reads a duration parameter as Prometheus's API does: seconds (float) or a PromQL duration.
func parseDurationParam(s string) (time.Duration, error) {
	if ms, ok := parseStepMs(s); ok {
		return time.Duration(ms) * time.Millisecond, nil
	}
	return 0, errors.Newf("invalid duration %q", strings.TrimSpace(s))
}
