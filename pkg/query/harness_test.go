package query

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// harnessTenant is the tenant every harness store holds and every harness query runs as.
const harnessTenant = "team-a"

// harnessSample is one sample of a harnessSeries: an integer histogram when h is set, a float histogram when
// fh is set, a float (possibly a staleness marker) otherwise.
type harnessSample struct {
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

// harnessSeries is one series and its samples, in time order. Histograms are shared by every DB the harness
// writes and must not be modified.
type harnessSeries struct {
	lset    labels.Labels
	samples []harnessSample
}

// harnessLayout is how the Strata side of the harness spreads the data over its two stores.
type harnessLayout int

const (
	// layoutFullCopies: each store holds all the data (two ingesters' RF copies): every series comes twice and
	// the Queryable merges identical samples.
	layoutFullCopies harnessLayout = iota
	// layoutSplitOverlap: store 1 holds [0, 70%] of the data's time range, store 2 [30%, 100%]: the Queryable
	// chains the two halves and drops the duplicates of the overlap.
	layoutSplitOverlap
	// layoutBucket: all the data cut into blocks, shipped to a bucket by the ingesters' shipper and served by a
	// store-gateway's BucketStore (range reads, index-headers, caches).
	layoutBucket
	// layoutShippingBoundary: a BucketStore serves [0, 70%] (shipped blocks), a TSDBStore [30%, 100%] (the
	// ingester's head and blocks not deleted yet): the shipping boundary.
	layoutShippingBoundary
)

func (l harnessLayout) String() string {
	switch l {
	case layoutFullCopies:
		return "full-copies"
	case layoutSplitOverlap:
		return "split-overlap"
	case layoutBucket:
		return "bucket"
	case layoutShippingBoundary:
		return "shipping-boundary"
	}
	return fmt.Sprintf("layout-%d", int(l))
}

// promqlHarness runs a query twice: with Prometheus's engine over a reference TSDB, and with the querier's
// engine options over Strata's read path (TSDBStores on loopback gRPC → store.Clients → Proxy → Queryable),
// both holding the same samples.
type promqlHarness struct {
	ctx          context.Context // carries the tenant
	refDB        *tsdb.DB
	refEngine    *promql.Engine
	strata       *Queryable
	strataEngine *promql.Engine
}

// newPromQLHarness writes series into a reference TSDB and into two TSDBs behind Strata's read path, spread as
// layout says.
func newPromQLHarness(t testing.TB, series []harnessSeries, layout harnessLayout) *promqlHarness {
	t.Helper()
	// Prometheus's engine asks for unsorted series, and a TSDB head returns those in the order the series were
	// created; Strata returns them sorted by labels. That order decides how PromQL breaks ties (topk, sort) and
	// in what order aggregations add floats (last-bit differences), neither of which PromQL defines. Writing
	// the series in label order makes the reference's order the one Strata uses.
	series = slices.Clone(series)
	slices.SortFunc(series, func(a, b harnessSeries) int { return labels.Compare(a.lset, b.lset) })
	mint, maxt := harnessTimeRange(series)
	all := func(int64) bool { return true }
	keep1, keep2 := all, all
	if layout == layoutSplitOverlap || layout == layoutShippingBoundary {
		span := maxt - mint
		cut1, cut2 := mint+span*7/10, mint+span*3/10
		keep1 = func(ts int64) bool { return ts <= cut1 }
		keep2 = func(ts int64) bool { return ts >= cut2 }
	}
	ref := harnessOpenDB(t, series, all)
	var stores []store.StoreClient
	switch layout {
	case layoutBucket:
		stores = []store.StoreClient{harnessServeBucket(t, harnessOpenDB(t, series, all))}
	case layoutShippingBoundary:
		stores = []store.StoreClient{harnessServeBucket(t, harnessOpenDB(t, series, keep1)), harnessServe(t, harnessOpenDB(t, series, keep2))}
	default:
		stores = []store.StoreClient{harnessServe(t, harnessOpenDB(t, series, keep1)), harnessServe(t, harnessOpenDB(t, series, keep2))}
	}

	logger := log.NewNopLogger()
	proxy := store.NewProxy(func() []store.StoreClient { return stores }, 0, logger, nil)
	return &promqlHarness{
		ctx:          tenancy.WithTenants(context.Background(), []string{harnessTenant}),
		refDB:        ref,
		refEngine:    promql.NewEngine(refEngineOpts(logger)),
		strata:       NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil),
		strataEngine: promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)),
	}
}

// refEngineOpts are the querier's engine options with Prometheus's own parser, for engines that query a plain
// TSDB as the reference (the querier's parser marks count_over_time selections for this package's Queryable).
func refEngineOpts(logger log.Logger) promql.EngineOpts {
	opts := EngineOpts(DefaultEngineConfig(), logger, nil)
	opts.Parser = nil
	return opts
}

func harnessTimeRange(series []harnessSeries) (int64, int64) {
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range series {
		if len(s.samples) == 0 {
			continue
		}
		mint = min(mint, s.samples[0].t)
		maxt = max(maxt, s.samples[len(s.samples)-1].t)
	}
	return mint, maxt
}

// harnessOpenDB opens a Prometheus TSDB (default options: out-of-order disabled) in a temp dir, appends the
// samples keep accepts in one transaction, and compacts what the head would have cut into blocks, so queries
// read both blocks and the head.
func harnessOpenDB(t testing.TB, series []harnessSeries, keep func(int64) bool) *tsdb.DB {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.DisableCompactions() // compacted below, once, so that the layout does not depend on timing

	app := db.Appender(context.Background())
	for _, s := range series {
		var (
			ref  storage.SeriesRef
			prev harnessSample
		)
		for _, smp := range s.samples {
			if !keep(smp.t) {
				continue
			}
			switch {
			case smp.h != nil || smp.fh != nil:
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, smp.h, smp.fh)
			// A staleness marker in a histogram series is a histogram, as the head makes it once the series'
			// last histogram is committed (here it is in the same transaction).
			case value.IsStaleNaN(smp.f) && prev.h != nil:
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, &histogram.Histogram{Sum: smp.f}, nil)
			case value.IsStaleNaN(smp.f) && prev.fh != nil:
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, nil, &histogram.FloatHistogram{Sum: smp.f})
			default:
				ref, err = app.Append(ref, s.lset, smp.t, smp.f)
			}
			testutil.Ok(t, err, "append %s @%d", s.lset, smp.t)
			prev = smp
		}
	}
	testutil.Ok(t, app.Commit())
	testutil.Ok(t, db.Compact(context.Background()))
	return db
}

// harnessServeBucket cuts all of db's head into blocks, ships them with the ingesters' shipper into a
// filesystem bucket under the harness tenant, and serves the bucket with a BucketStore (in-memory caches) on
// loopback gRPC.
func harnessServeBucket(t testing.TB, db *tsdb.DB) *store.Client {
	t.Helper()
	return harnessServeBucketExt(t, db, labels.EmptyLabels(), block.ReceiveSource)
}

// harnessServeBucketExt is harnessServeBucket with the blocks' external labels (thanos.labels) being ext plus
// tenant_id, and their source, as a sidecar's uploads have them.
func harnessServeBucketExt(t testing.TB, db *tsdb.DB, ext labels.Labels, source block.SourceType) *store.Client {
	t.Helper()
	head := db.Head()
	if head.NumSeries() > 0 {
		testutil.Ok(t, db.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())))
	}
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	lb := labels.NewBuilder(ext)
	lb.Set(tenancy.TenantIDLabel, harnessTenant)
	blockLabels := lb.Labels()
	shipper := block.NewShipper(nil, nil, db.Dir(), objstore.NewPrefixedBucket(bkt, harnessTenant), func() labels.Labels { return blockLabels }, source)
	n, err := shipper.Sync(context.Background())
	testutil.Ok(t, err)
	testutil.Assert(t, n > 0, "nothing shipped")

	logger := log.NewNopLogger()
	cfg := store.DefaultBucketStoreConfig()
	cfg.Dir = t.TempDir()
	idx := cache.NewInMemory("index", cache.InMemoryConfig{MaxSizeBytes: 64 << 20}, logger, nil)
	chk := cache.NewInMemory("chunks", cache.InMemoryConfig{MaxSizeBytes: 64 << 20}, logger, nil)
	bs := store.NewBucketStore(bkt, cfg, idx, chk, nil, nil, logger, nil, nil)
	testutil.Ok(t, bs.SyncBlocks(context.Background()))
	testutil.Equals(t, n, len(bs.Blocks(harnessTenant)))
	t.Cleanup(func() { _ = bs.Close() })
	return harnessServeStore(t, bs, bs)
}

// harnessServe serves db as a TSDBStore on a loopback gRPC server with the tenancy interceptors a Strata
// process uses, and returns a client of it with its Info loaded.
func harnessServe(t testing.TB, db *tsdb.DB, opts ...store.TSDBStoreOption) *store.Client {
	t.Helper()
	st := store.NewTSDBStore(store.SingleTenant(harnessTenant, db), log.NewNopLogger(), opts...)
	return harnessServeStore(t, st, st)
}

// harnessServeStore serves a StoreAPI on a loopback gRPC server with the tenancy interceptors a Strata process
// uses, and returns a client of it with its Info loaded.
func harnessServeStore(t testing.TB, st storepb.StoreServer, info infopb.InfoServer) *store.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	cfg := tenancy.Config{MultitenancyEnabled: true}
	exempt := tenancy.GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/"}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(math.MaxInt32),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.ChainUnaryInterceptor(cfg.UnaryServerInterceptor(exempt)),
		grpc.ChainStreamInterceptor(cfg.StreamServerInterceptor(exempt)),
	)
	storepb.RegisterStoreServer(srv, st)
	infopb.RegisterInfoServer(srv, info)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	c, conn, err := store.Dial(l.Addr().String())
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	testutil.Ok(t, c.RefreshInfo(context.Background(), 10*time.Second))
	return c
}

// harnessEval is one evaluation of a query: instant at start, or a range query [start, end] at step.
type harnessEval struct {
	name       string
	instant    bool
	start, end time.Time
	step       time.Duration
}

// run evaluates qs on eng over q. The caller closes the returned query once done with its result.
func (h *promqlHarness) run(eng *promql.Engine, q storage.Queryable, qs string, ev harnessEval) (promql.Query, *promql.Result) {
	var (
		qry promql.Query
		err error
	)
	if ev.instant {
		qry, err = eng.NewInstantQuery(h.ctx, q, nil, qs, ev.start)
	} else {
		qry, err = eng.NewRangeQuery(h.ctx, q, nil, qs, ev.start, ev.end, ev.step)
	}
	if err != nil {
		return nil, &promql.Result{Err: err}
	}
	return qry, qry.Exec(h.ctx)
}

// harnessComparison is the outcome of one compare.
type harnessComparison struct {
	diff      string // how Strata's answer differs from the reference's; "" when it does not
	refPoints int    // points the reference returned
	refErr    error  // the reference's error
	// layoutOnly counts histogram points that are equal only once empty buckets are dropped (see sameHistogram).
	layoutOnly int
}

// compare evaluates qs on both sides and compares the answers.
func (h *promqlHarness) compare(qs string, ev harnessEval, keepOrder bool) harnessComparison {
	refQ, ref := h.run(h.refEngine, h.refDB, qs, ev)
	gotQ, got := h.run(h.strataEngine, h.strata, qs, ev)
	defer func() {
		for _, q := range []promql.Query{refQ, gotQ} {
			if q != nil {
				q.Close()
			}
		}
	}()
	c := &histogramCompare{}
	return harnessComparison{diff: diffResults(ref, got, keepOrder, c), refPoints: resultPoints(ref), refErr: ref.Err, layoutOnly: c.layoutOnly}
}

// resultPoints counts the points (samples, or 1 for a scalar or string) of a result; 0 for an error.
func resultPoints(r *promql.Result) int {
	if r.Err != nil {
		return 0
	}
	switch v := r.Value.(type) {
	case promql.Matrix:
		n := 0
		for _, s := range v {
			n += len(s.Floats) + len(s.Histograms)
		}
		return n
	case promql.Vector:
		return len(v)
	case promql.Scalar, promql.String:
		return 1
	}
	return 0
}

// diffResults compares two results exactly: both fail, or both have the same value type, the same series (by
// labels; sorted by labels first unless keepOrder) with the same points: same timestamps, floats equal bit for
// bit (so NaN equals NaN), histograms equal as hc says. Warnings are not compared.
func diffResults(ref, got *promql.Result, keepOrder bool, hc *histogramCompare) string {
	switch {
	case ref.Err != nil && got.Err != nil:
		return ""
	case ref.Err != nil:
		return fmt.Sprintf("reference failed (%v), Strata did not (%s)", ref.Err, describeValue(got.Value))
	case got.Err != nil:
		return fmt.Sprintf("Strata failed: %v (reference: %s)", got.Err, describeValue(ref.Value))
	}
	if ref.Value.Type() != got.Value.Type() {
		return fmt.Sprintf("value type: reference %s, Strata %s", ref.Value.Type(), got.Value.Type())
	}
	switch rv := ref.Value.(type) {
	case promql.Matrix:
		return diffMatrix(rv, got.Value.(promql.Matrix), keepOrder, hc)
	case promql.Vector:
		return diffVector(rv, got.Value.(promql.Vector), keepOrder, hc)
	case promql.Scalar:
		gv := got.Value.(promql.Scalar)
		if rv.T != gv.T || !sameFloat(rv.V, gv.V) {
			return fmt.Sprintf("scalar: reference %v, Strata %v", rv, gv)
		}
	case promql.String:
		if gv := got.Value.(promql.String); rv != gv {
			return fmt.Sprintf("string: reference %v, Strata %v", rv, gv)
		}
	default:
		return fmt.Sprintf("unexpected value type %T", ref.Value)
	}
	return ""
}

func describeValue(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// histogramCompare compares histograms by FloatHistogram.Equals, and failing that by Equals once both have
// their empty buckets dropped (Compact(0)), counting those. A histogram sample carries the bucket layout of
// the chunk it was read from — a chunk's layout is the union of its samples' — so the same sample read from
// differently cut chunks (a store that holds only part of the time range) can differ in empty buckets. That
// is not visible in the HTTP API, which leaves empty buckets out.
type histogramCompare struct{ layoutOnly int }

func (c *histogramCompare) same(a, b *histogram.FloatHistogram) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a.Equals(b) {
		return true
	}
	if a.Copy().Compact(0).Equals(b.Copy().Compact(0)) {
		c.layoutOnly++
		return true
	}
	return false
}

// alignByLabels returns ref and got sorted by labels (copies; unless keepOrder: a query whose order matters), and
// how their label sets differ ("" when they are the same).
func alignByLabels[S ~[]E, E any](ref, got S, keepOrder bool, metric func(E) labels.Labels) (S, S, string) {
	if !keepOrder {
		ref, got = slices.Clone(ref), slices.Clone(got)
		byLabels := func(a, b E) int { return labels.Compare(metric(a), metric(b)) }
		slices.SortFunc(ref, byLabels)
		slices.SortFunc(got, byLabels)
	}
	return ref, got, diffSeriesLabels(len(ref), len(got), func(i int) labels.Labels { return metric(ref[i]) }, func(i int) labels.Labels { return metric(got[i]) })
}

func diffMatrix(ref, got promql.Matrix, keepOrder bool, hc *histogramCompare) string {
	ref, got, d := alignByLabels(ref, got, keepOrder, func(s promql.Series) labels.Labels { return s.Metric })
	if d != "" {
		return d
	}
	for i := range ref {
		r, g := ref[i], got[i]
		if len(r.Floats) != len(g.Floats) || len(r.Histograms) != len(g.Histograms) {
			return fmt.Sprintf("series %s: reference %d floats %d histograms, Strata %d floats %d histograms\n  first points ref %s\n  first points got %s",
				r.Metric, len(r.Floats), len(r.Histograms), len(g.Floats), len(g.Histograms), firstMismatchContext(r, g), firstMismatchContext(g, r))
		}
		for j := range r.Floats {
			if r.Floats[j].T != g.Floats[j].T || !sameFloat(r.Floats[j].F, g.Floats[j].F) {
				return fmt.Sprintf("series %s, float point %d: reference %v (bits %x), Strata %v (bits %x)",
					r.Metric, j, r.Floats[j], math.Float64bits(r.Floats[j].F), g.Floats[j], math.Float64bits(g.Floats[j].F))
			}
		}
		for j := range r.Histograms {
			if r.Histograms[j].T != g.Histograms[j].T || !hc.same(r.Histograms[j].H, g.Histograms[j].H) {
				return fmt.Sprintf("series %s, histogram point %d: reference %v, Strata %v", r.Metric, j, r.Histograms[j], g.Histograms[j])
			}
		}
	}
	return ""
}

// firstMismatchContext lists the timestamps of a's first points that b lacks, to show where series diverge.
func firstMismatchContext(a, b promql.Series) string {
	has := map[int64]bool{}
	for _, p := range b.Floats {
		has[p.T] = true
	}
	for _, p := range b.Histograms {
		has[p.T] = true
	}
	var missing []string
	for _, p := range a.Floats {
		if !has[p.T] && len(missing) < 5 {
			missing = append(missing, fmt.Sprint(p))
		}
	}
	for _, p := range a.Histograms {
		if !has[p.T] && len(missing) < 5 {
			missing = append(missing, fmt.Sprintf("histogram @[%d]", p.T))
		}
	}
	return "not in the other: [" + strings.Join(missing, ", ") + "]"
}

func diffVector(ref, got promql.Vector, keepOrder bool, hc *histogramCompare) string {
	ref, got, d := alignByLabels(ref, got, keepOrder, func(s promql.Sample) labels.Labels { return s.Metric })
	if d != "" {
		return d
	}
	for i := range ref {
		r, g := ref[i], got[i]
		if r.T != g.T || !sameFloat(r.F, g.F) || !hc.same(r.H, g.H) {
			return fmt.Sprintf("sample %d %s: reference %v @%d (bits %x, histogram %v), Strata %v @%d (bits %x, histogram %v)",
				i, r.Metric, r.F, r.T, math.Float64bits(r.F), r.H, g.F, g.T, math.Float64bits(g.F), g.H)
		}
	}
	return ""
}

// diffSeriesLabels compares the label sets of two results, in order.
func diffSeriesLabels(nRef, nGot int, ref, got func(int) labels.Labels) string {
	for i := 0; i < nRef && i < nGot; i++ {
		if !labels.Equal(ref(i), got(i)) {
			return fmt.Sprintf("series %d: reference %s, Strata %s (reference has %d series, Strata %d)", i, ref(i), got(i), nRef, nGot)
		}
	}
	switch {
	case nRef > nGot:
		return fmt.Sprintf("Strata is missing %d series, first %s", nRef-nGot, ref(nGot))
	case nGot > nRef:
		return fmt.Sprintf("Strata has %d extra series, first %s", nGot-nRef, got(nRef))
	}
	return ""
}

// TestHarnessDiffResults checks that the comparison the equality tests rely on sees what it must.
func TestHarnessDiffResults(t *testing.T) {
	ls := func(v string) labels.Labels { return labels.FromStrings("__name__", "m", "i", v) }
	h1 := &histogram.FloatHistogram{Count: 3, Sum: 2, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}, {Offset: 1, Length: 1}}, PositiveBuckets: []float64{1, 2}}
	// The same histogram with the empty bucket between its two in its layout: equal only up to empty buckets.
	h1Wide := &histogram.FloatHistogram{Count: 3, Sum: 2, PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []float64{1, 0, 2}}
	h2 := h1.Copy()
	h2.Sum = math.Nextafter(2, 3)
	matrix := func(f float64, h *histogram.FloatHistogram, names ...string) *promql.Result {
		var m promql.Matrix
		for _, n := range names {
			m = append(m, promql.Series{Metric: ls(n), Floats: []promql.FPoint{{T: 1, F: f}}, Histograms: []promql.HPoint{{T: 2, H: h}}})
		}
		return &promql.Result{Value: m}
	}
	nan := math.NaN()
	for _, c := range []struct {
		name       string
		ref, got   *promql.Result
		keepOrder  bool
		equal      bool
		layoutOnly int
	}{
		{"same", matrix(1, h1, "a", "b"), matrix(1, h1, "a", "b"), false, true, 0},
		{"series order is ignored", matrix(1, h1, "a", "b"), matrix(1, h1, "b", "a"), false, true, 0},
		{"unless the order matters", matrix(1, h1, "a", "b"), matrix(1, h1, "b", "a"), true, false, 0},
		{"NaN equals NaN", matrix(nan, h1, "a"), matrix(nan, h1, "a"), false, true, 0},
		{"one ulp", matrix(1, h1, "a"), matrix(math.Nextafter(1, 2), h1, "a"), false, false, 0},
		{"negative zero", matrix(0, h1, "a"), matrix(math.Copysign(0, -1), h1, "a"), false, false, 0},
		{"histogram sum one ulp", matrix(1, h1, "a"), matrix(1, h2, "a"), false, false, 0},
		{"histogram empty bucket", matrix(1, h1, "a"), matrix(1, h1Wide, "a"), false, true, 1},
		{"missing series", matrix(1, h1, "a", "b"), matrix(1, h1, "a"), false, false, 0},
		{"extra series", matrix(1, h1, "a"), matrix(1, h1, "a", "b"), false, false, 0},
		{"both fail", &promql.Result{Err: fmt.Errorf("x")}, &promql.Result{Err: fmt.Errorf("y")}, false, true, 0},
		{"only the reference fails", &promql.Result{Err: fmt.Errorf("x")}, matrix(1, h1, "a"), false, false, 0},
		{"only Strata fails", matrix(1, h1, "a"), &promql.Result{Err: fmt.Errorf("x")}, false, false, 0},
		{"value type", matrix(1, h1, "a"), &promql.Result{Value: promql.Vector{}}, false, false, 0},
		{"vector timestamp", &promql.Result{Value: promql.Vector{{T: 1, F: 1, Metric: ls("a")}}}, &promql.Result{Value: promql.Vector{{T: 2, F: 1, Metric: ls("a")}}}, false, false, 0},
		{"scalar", &promql.Result{Value: promql.Scalar{T: 1, V: 1}}, &promql.Result{Value: promql.Scalar{T: 1, V: 2}}, false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			hc := &histogramCompare{}
			diff := diffResults(c.ref, c.got, c.keepOrder, hc)
			testutil.Equals(t, c.equal, diff == "", "diff: %q", diff)
			testutil.Equals(t, c.layoutOnly, hc.layoutOnly)
		})
	}
}
