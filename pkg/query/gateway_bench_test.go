package query

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
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

// The store-gateway benchmark (the issue's "1,000 small blocks → time to ready and RSS; a 7-day range over 1,000
// series, cold and warm"), every figure measured against a plain Prometheus engine reading the same blocks from
// local disk in the same run:
//
//   - BenchmarkGatewayStartup: 1,000 small blocks; time and memory until a BucketStore knows them (NewBucketStore +
//     first SyncBlocks: the gateway is ready) vs opening the 1,000 block directories with the Prometheus TSDB;
//     then the first query touching every block (the gateway builds all 1,000 index-headers) vs Prometheus's.
//   - BenchmarkGateway7DayRange: 1,000 series × 7 days at 60s in 84 2h blocks; range queries at step 5m with
//     Prometheus's engine over the gateway (loopback gRPC → store.Client → Proxy → Queryable), cold (a new
//     BucketStore, empty caches, no index-header on disk, first sync included) and warm (same store, caches
//     populated), vs Prometheus's engine over the blocks opened from local disk (cold: tsdb.OpenDBReadOnly per
//     query; warm: the blocks opened once, as a running Prometheus holds them).
//
// scripts/bench-gateway.sh measures the same at process level (strata store-gateway vs the prometheus binary); it
// writes its blocks with BenchmarkWriteGatewayBenchFixture.

const (
	gwTenant = harnessTenant

	// The 7-day fixture: gwSeries series (half counters, half gauges) scraped every gwInterval over gwSpan, cut
	// into gwBlockRange blocks.
	gwSeries     = 1000
	gwInterval   = time.Minute
	gwSpan       = 7 * 24 * time.Hour
	gwBlockRange = 2 * time.Hour

	// The small-blocks fixture: gwSmallBlocks blocks of gwSmallSeries series × gwSmallSamples samples at
	// gwInterval, one after the other (distinct time ranges of gwSmallSamples minutes).
	gwSmallBlocks  = 1000
	gwSmallSeries  = 10
	gwSmallSamples = 10

	// gwFixtureEnv names the directory BenchmarkWriteGatewayBenchFixture writes the small-blocks fixture into.
	gwFixtureEnv = "STRATA_GATEWAY_BENCH_FIXTURE_DIR"
)

// gwBase is the start of both fixtures, aligned to 2h as a Prometheus block range is.
var gwBase = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)

// gwFixture is a set of blocks, as plain TSDB block directories under localDir (the baseline reads them from
// there) and uploaded with a Thanos meta.json (thanos.labels tenant_id=team-a) to a filesystem bucket whose root is
// bucketDir (<bucketDir>/team-a/<ULID>/…).
type gwFixture struct {
	localDir, bucketDir string
	blocks              int
	mint, maxt          int64 // of the samples
}

func (f *gwFixture) bucket(tb testing.TB) objstore.Bucket {
	tb.Helper()
	bkt, err := filesystem.NewBucket(f.bucketDir)
	testutil.Ok(tb, err)
	return bkt
}

// gwBlockSpec is one block to write: the series, their timestamps and values.
type gwBlockSpec struct {
	lsets []labels.Labels
	ts    []int64
	value func(series, sample int) float64 // sample indexes ts
}

// writeGatewayFixture writes n blocks (spec(i) says what block i holds) into root/prometheus with Prometheus's
// block writer and uploads each to root/bucket under the tenant, GOMAXPROCS blocks at a time.
func writeGatewayFixture(tb testing.TB, root string, n int, spec func(i int) gwBlockSpec) *gwFixture {
	tb.Helper()
	f := &gwFixture{localDir: filepath.Join(root, "prometheus"), bucketDir: filepath.Join(root, "bucket"), blocks: n, mint: math.MaxInt64, maxt: math.MinInt64}
	testutil.Ok(tb, os.MkdirAll(f.localDir, 0o750))
	testutil.Ok(tb, os.MkdirAll(f.bucketDir, 0o750))
	bkt := objstore.NewPrefixedBucket(f.bucket(tb), gwTenant)
	logger := slog.New(slog.DiscardHandler)

	var (
		mtx  sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				s := spec(i)
				if err := writeGatewayBlock(logger, f.localDir, bkt, s); err != nil {
					mtx.Lock()
					errs = append(errs, fmt.Errorf("block %d: %w", i, err))
					mtx.Unlock()
					continue
				}
				mtx.Lock()
				f.mint, f.maxt = min(f.mint, s.ts[0]), max(f.maxt, s.ts[len(s.ts)-1])
				mtx.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	testutil.Ok(tb, errorsJoin(errs))
	return f
}

func errorsJoin(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
}

func writeGatewayBlock(logger *slog.Logger, dir string, bkt objstore.Bucket, s gwBlockSpec) error {
	w, err := tsdb.NewBlockWriter(logger, dir, gwBlockRange.Milliseconds())
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	ctx := context.Background()
	app := w.Appender(ctx)
	for si, lset := range s.lsets {
		var ref storage.SeriesRef
		for i, t := range s.ts {
			if ref, err = app.Append(ref, lset, t, s.value(si, i)); err != nil {
				return err
			}
		}
	}
	if err := app.Commit(); err != nil {
		return err
	}
	id, err := w.Flush(ctx)
	if err != nil {
		return err
	}
	bdir := filepath.Join(dir, id.String())
	m, err := block.ReadMetaFromDir(bdir)
	if err != nil {
		return err
	}
	m.Thanos.Labels = map[string]string{tenancy.TenantIDLabel: gwTenant}
	m.Thanos.Source = block.TestSource
	return block.Upload(ctx, log.NewNopLogger(), bkt, bdir, m)
}

// gw7DayFixture: 1,000 series × 7 days at 60s (10.08M samples) in 84 2h blocks: 500 counters
// gw_requests_total{job, instance, method, code} and 500 gauges gw_memory_bytes{job, instance, area}; 5 jobs, 50
// instances.
func gw7DayFixture(tb testing.TB, root string) *gwFixture {
	tb.Helper()
	var lsets []labels.Labels
	methods, codes := []string{"GET", "POST"}, []string{"200", "201", "404", "500", "503"}
	areas := []string{"heap", "stack", "mmap", "cache", "buffers", "rss", "anon", "file", "shmem", "other"}
	for s := range gwSeries / 2 {
		lsets = append(lsets, labels.FromStrings("__name__", "gw_requests_total", "job", "job-"+strconv.Itoa(s%5),
			"instance", "i"+strconv.Itoa(s%50), "method", methods[(s/50)%2], "code", codes[s/100]))
	}
	for s := range gwSeries / 2 {
		lsets = append(lsets, labels.FromStrings("__name__", "gw_memory_bytes", "job", "job-"+strconv.Itoa(s%5),
			"instance", "i"+strconv.Itoa(s%50), "area", areas[s/50]))
	}
	perBlock := int(gwBlockRange / gwInterval)
	nBlocks := int(gwSpan / gwBlockRange)
	return writeGatewayFixture(tb, root, nBlocks, func(b int) gwBlockSpec {
		ts := make([]int64, perBlock)
		for i := range ts {
			ts[i] = gwBase.Add(gwBlockRange*time.Duration(b) + gwInterval*time.Duration(i)).UnixMilli()
		}
		return gwBlockSpec{lsets: lsets, ts: ts, value: func(s, i int) float64 {
			n := b*perBlock + i // sample number since the start
			if s < gwSeries/2 { // counter: non-decreasing, a few rates
				return float64(n*(s%7+1)) + float64((n/10)*(s%3))
			}
			return 1e6 + float64((s*31+n*17)%1000)/7.5
		}}
	})
}

// gwSmallBlocksFixture: 1,000 blocks of 10 series small_metric{job, instance} × 10 samples at 60s; block i holds
// [base + 10m·i, base + 10m·i + 9m].
func gwSmallBlocksFixture(tb testing.TB, root string) *gwFixture {
	tb.Helper()
	lsets := make([]labels.Labels, gwSmallSeries)
	for s := range lsets {
		lsets[s] = labels.FromStrings("__name__", "small_metric", "job", "job-"+strconv.Itoa(s%2), "instance", "i"+strconv.Itoa(s))
	}
	return writeGatewayFixture(tb, root, gwSmallBlocks, func(b int) gwBlockSpec {
		ts := make([]int64, gwSmallSamples)
		for i := range ts {
			ts[i] = gwBase.Add(gwInterval * time.Duration(b*gwSmallSamples+i)).UnixMilli()
		}
		return gwBlockSpec{lsets: lsets, ts: ts, value: func(s, i int) float64 { return float64(b*gwSmallSamples + i + s) }}
	})
}

// BenchmarkWriteGatewayBenchFixture is not a measurement but the fixture writer of scripts/bench-gateway.sh: it
// writes the small-blocks fixture into $STRATA_GATEWAY_BENCH_FIXTURE_DIR (prometheus/: plain block directories;
// bucket/: a filesystem bucket with them under team-a/), once, and reports how long that took. Without the
// variable it is skipped. Run: go test -run '^$' -bench '^BenchmarkWriteGatewayBenchFixture$' -benchtime 1x.
func BenchmarkWriteGatewayBenchFixture(b *testing.B) {
	dir := os.Getenv(gwFixtureEnv)
	if dir == "" {
		b.Skip(gwFixtureEnv + " not set: this writes the fixture of scripts/bench-gateway.sh")
	}
	if b.N != 1 {
		b.Fatalf("the fixture is written once: run with -benchtime 1x, not %d times", b.N)
	}
	f := gwSmallBlocksFixture(b, dir)
	b.ReportMetric(float64(f.blocks), "blocks")
	b.Logf("wrote %d blocks into %s (samples %d..%d ms)", f.blocks, dir, f.mint, f.maxt)
}

// ---------------------------------------------------------------------------------------------------------------
// Both sides.

// blocksQueryable is what a running Prometheus queries: blocks opened once, a block querier over each block that
// overlaps the range, merged (tsdb.DB.Querier without the head).
type blocksQueryable []tsdb.BlockReader

func (bq blocksQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	var qs []storage.Querier
	for _, b := range bq {
		if m := b.Meta(); m.MaxTime <= mint || m.MinTime > maxt {
			continue
		}
		q, err := tsdb.NewBlockQuerier(b, mint, maxt)
		if err != nil {
			for _, q := range qs {
				_ = q.Close()
			}
			return nil, err
		}
		qs = append(qs, q)
	}
	return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge), nil
}

// readOnlyQueryable opens the directory with tsdb.OpenDBReadOnly on every Querier (a cold Prometheus), and closes
// it with the querier.
type readOnlyQueryable struct{ dir string }

func (r readOnlyQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	db, err := tsdb.OpenDBReadOnly(r.dir, "", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	q, err := db.Querier(mint, maxt)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return closeWith{Querier: q, db: db}, nil
}

type closeWith struct {
	storage.Querier
	db *tsdb.DBReadOnly
}

func (c closeWith) Close() error {
	err := c.Querier.Close()
	if cerr := c.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// gwGateway is a BucketStore over a fixture's bucket, served on loopback gRPC with the tenancy interceptors of a
// Strata process, and the querier's read path over it.
type gwGateway struct {
	bs        *store.BucketStore
	client    *store.Client
	queryable *Queryable
	hdrDir    string
	stop      func()
}

// newGateway starts a gateway with empty in-memory caches (the sizes of `strata store-gateway`'s defaults) and
// an empty index-header directory. It is not synced: call sync.
func newGateway(tb testing.TB, f *gwFixture) *gwGateway {
	tb.Helper()
	logger := log.NewNopLogger()
	hdrDir, err := os.MkdirTemp(tb.TempDir(), "index-headers")
	testutil.Ok(tb, err)
	cfg := store.DefaultBucketStoreConfig()
	cfg.Dir = hdrDir
	indexCache := cache.NewInMemory("index", cache.InMemoryConfig{MaxSizeBytes: 256 << 20}, logger, nil)
	chunksCache := cache.NewInMemory("chunks", cache.InMemoryConfig{MaxSizeBytes: 512 << 20}, logger, nil)
	bs := store.NewBucketStore(f.bucket(tb), cfg, indexCache, chunksCache, nil, nil, logger, nil, time.Now)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(tb, err)
	tcfg := tenancy.Config{MultitenancyEnabled: true}
	exempt := tenancy.GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/"}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(math.MaxInt32),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.ChainUnaryInterceptor(tcfg.UnaryServerInterceptor(exempt)),
		grpc.ChainStreamInterceptor(tcfg.StreamServerInterceptor(exempt)),
	)
	storepb.RegisterStoreServer(srv, bs)
	infopb.RegisterInfoServer(srv, bs)
	go func() { _ = srv.Serve(l) }()
	client, conn, err := store.Dial(l.Addr().String())
	testutil.Ok(tb, err)
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{client} }, 0, logger, nil)
	return &gwGateway{
		bs: bs, client: client, hdrDir: hdrDir,
		queryable: NewQueryable(proxy, tenancy.NewOverrides(tenancy.DefaultLimits(), nil), nil, nil),
		stop: func() {
			_ = conn.Close()
			srv.Stop()
			_ = bs.Close()
			_ = os.RemoveAll(hdrDir)
		},
	}
}

// sync runs the first block sync (after which the gateway is ready) and loads the endpoint's Info, as the querier
// does before it asks a store.
func (g *gwGateway) sync(tb testing.TB) {
	tb.Helper()
	testutil.Ok(tb, g.bs.SyncBlocks(context.Background()))
	testutil.Ok(tb, g.client.RefreshInfo(context.Background(), 10*time.Second))
}

// gwRun evaluates a range query and returns its result; it fails tb on an error.
func gwRun(tb testing.TB, eng *promql.Engine, q storage.Queryable, qs string, start, end time.Time, step time.Duration) *promql.Result {
	tb.Helper()
	ctx := tenancy.WithTenants(context.Background(), []string{gwTenant})
	qry, err := eng.NewRangeQuery(ctx, q, nil, qs, start, end, step)
	testutil.Ok(tb, err)
	defer qry.Close()
	res := qry.Exec(ctx)
	testutil.Ok(tb, res.Err, "query %s", qs)
	// The result is only valid until Close: keep a copy of the matrix.
	if m, ok := res.Value.(promql.Matrix); ok {
		c := make(promql.Matrix, len(m))
		for i, s := range m {
			c[i] = promql.Series{Metric: s.Metric, Floats: append([]promql.FPoint(nil), s.Floats...), Histograms: append([]promql.HPoint(nil), s.Histograms...)}
		}
		res = &promql.Result{Value: c, Warnings: res.Warnings}
	}
	return res
}

func gwSameResult(tb testing.TB, what string, ref, got *promql.Result) {
	tb.Helper()
	testutil.Assert(tb, resultPoints(ref) > 0, "%s: the reference returned no points", what)
	diff := diffResults(ref, got, false, &histogramCompare{})
	testutil.Assert(tb, diff == "", "%s: strata and prometheus differ: %s", what, diff)
}

// memSnapshot is the heap in use after a GC, and the process's resident set once the runtime returned what it
// could to the OS.
type memSnapshot struct{ heap, rss uint64 }

func takeMemSnapshot() memSnapshot {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{heap: ms.HeapInuse, rss: vmRSS()}
}

// vmRSS is VmRSS of /proc/self/status in bytes; 0 where there is none.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// mbDelta is after-before in MiB (negative when memory was freed).
func mbDelta(before, after uint64) float64 { return (float64(after) - float64(before)) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ---------------------------------------------------------------------------------------------------------------
// Startup.

// gwStartupFigures are what one startup iteration measures.
type gwStartupFigures struct {
	ready, warm                            time.Duration
	readyHeap, readyRSS, warmHeap, warmRSS float64 // MiB above the process's before the store was created
}

func (s *gwStartupFigures) add(o gwStartupFigures) {
	s.ready += o.ready
	s.warm += o.warm
	s.readyHeap += o.readyHeap
	s.readyRSS += o.readyRSS
	s.warmHeap += o.warmHeap
	s.warmRSS += o.warmRSS
}

func (s gwStartupFigures) div(n int) gwStartupFigures {
	d := float64(n)
	return gwStartupFigures{
		ready: s.ready / time.Duration(n), warm: s.warm / time.Duration(n),
		readyHeap: s.readyHeap / d, readyRSS: s.readyRSS / d, warmHeap: s.warmHeap / d, warmRSS: s.warmRSS / d,
	}
}

// BenchmarkGatewayStartup: over 1,000 small blocks, per iteration and from scratch,
//
//	system=prometheus: tsdb.OpenDBReadOnly(dir).Blocks() (Prometheus opening its blocks), then a range query
//	  touching every block over those blocks;
//	system=strata: NewBucketStore + the first SyncBlocks (the gateway is ready), then the same query through
//	  gRPC → Proxy → Queryable (it builds the 1,000 index-headers).
//
// It reports ready-ms and warm-ms (the first query), the heap in use after a GC (heap-MB) and VmRSS (rss-MB)
// above the process's before, at ready and after the first query, and for strata each figure over
// prometheus's (x-prom).
func BenchmarkGatewayStartup(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 1,000 blocks")
	}
	start := time.Now()
	f := gwSmallBlocksFixture(b, b.TempDir())
	b.Logf("fixture: %d blocks × %d series × %d samples written and uploaded in %v", f.blocks, gwSmallSeries, gwSmallSamples, time.Since(start).Round(time.Millisecond))

	logger := log.NewNopLogger()
	eng, refEng := promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil)), promql.NewEngine(refEngineOpts(logger))
	const qs = `sum by (job) (count_over_time(small_metric[10m]))`
	qStart, qEnd, step := time.UnixMilli(f.mint), time.UnixMilli(f.maxt), 10*time.Minute

	// The answer both must give, and a check that each sees every block.
	ref := gwRun(b, refEng, readOnlyQueryable{f.localDir}, qs, qStart, qEnd, step)
	{
		g := newGateway(b, f)
		g.sync(b)
		gwSameResult(b, "startup query", ref, gwRun(b, eng, g.queryable, qs, qStart, qEnd, step))
		g.stop()
	}

	var prom gwStartupFigures
	for _, system := range []string{"prometheus", "strata"} {
		b.Run("system="+system, func(b *testing.B) {
			var sum gwStartupFigures
			n := 0
			for b.Loop() {
				var fig gwStartupFigures
				m0 := takeMemSnapshot()
				switch system {
				case "prometheus":
					t0 := time.Now()
					db, err := tsdb.OpenDBReadOnly(f.localDir, "", slog.New(slog.DiscardHandler))
					testutil.Ok(b, err)
					blocks, err := db.Blocks()
					testutil.Ok(b, err)
					fig.ready = time.Since(t0)
					testutil.Equals(b, f.blocks, len(blocks))
					m1 := takeMemSnapshot()
					t1 := time.Now()
					res := gwRun(b, refEng, blocksQueryable(blocks), qs, qStart, qEnd, step)
					fig.warm = time.Since(t1)
					m2 := takeMemSnapshot()
					if n == 0 {
						gwSameResult(b, "prometheus first query", ref, res)
					}
					testutil.Ok(b, db.Close())
					fig.readyHeap, fig.readyRSS = mbDelta(m0.heap, m1.heap), mbDelta(m0.rss, m1.rss)
					fig.warmHeap, fig.warmRSS = mbDelta(m0.heap, m2.heap), mbDelta(m0.rss, m2.rss)
				case "strata":
					t0 := time.Now()
					g := newGateway(b, f)
					g.sync(b)
					fig.ready = time.Since(t0)
					m1 := takeMemSnapshot()
					t1 := time.Now()
					res := gwRun(b, eng, g.queryable, qs, qStart, qEnd, step)
					fig.warm = time.Since(t1)
					m2 := takeMemSnapshot()
					if n == 0 {
						gwSameResult(b, "strata first query", ref, res)
					}
					g.stop()
					fig.readyHeap, fig.readyRSS = mbDelta(m0.heap, m1.heap), mbDelta(m0.rss, m1.rss)
					fig.warmHeap, fig.warmRSS = mbDelta(m0.heap, m2.heap), mbDelta(m0.rss, m2.rss)
				}
				sum.add(fig)
				n++
			}
			avg := sum.div(n)
			b.ReportMetric(ms(avg.ready), "ready-ms")
			b.ReportMetric(avg.readyHeap, "ready-heap-MB")
			b.ReportMetric(avg.readyRSS, "ready-rss-MB")
			b.ReportMetric(ms(avg.warm), "warm-ms")
			b.ReportMetric(avg.warmHeap, "warm-heap-MB")
			b.ReportMetric(avg.warmRSS, "warm-rss-MB")
			switch system {
			case "prometheus":
				prom = avg
			case "strata":
				if prom.ready > 0 {
					b.ReportMetric(ms(avg.ready)/ms(prom.ready), "ready-x-prom")
					b.ReportMetric(ms(avg.warm)/ms(prom.warm), "warm-x-prom")
					b.ReportMetric(avg.readyHeap/prom.readyHeap, "ready-heap-x-prom")
					b.ReportMetric(avg.warmHeap/prom.warmHeap, "warm-heap-x-prom")
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------------------------
// 7-day range.

// BenchmarkGateway7DayRange runs range queries over 7 days at step 5m over 1,000 series in 84 2h blocks:
//
//	mode=cold: every iteration a new BucketStore (empty caches, no index-headers on disk) whose first sync and
//	  query are timed, vs tsdb.OpenDBReadOnly + the query (Prometheus opening the blocks for the query);
//	mode=warm: the same store, its index-headers loaded and caches populated, vs the blocks opened once.
//
// Same engine options on both sides; the answers are checked equal first. It reports samples/s (samples the query
// reads / time per op) and, for strata, its time per op over prometheus's (x-prometheus).
func BenchmarkGateway7DayRange(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 10M samples in 84 blocks")
	}
	start := time.Now()
	f := gw7DayFixture(b, b.TempDir())
	b.Logf("fixture: %d series × %v at %v in %d blocks written and uploaded in %v", gwSeries, gwSpan, gwInterval, f.blocks, time.Since(start).Round(time.Millisecond))

	logger := log.NewNopLogger()
	promEng := promql.NewEngine(refEngineOpts(logger))
	strataEng := promql.NewEngine(EngineOpts(DefaultEngineConfig(), logger, nil))
	qStart, qEnd := time.UnixMilli(f.mint), time.UnixMilli(f.maxt)
	samplesPerSeries := int(gwSpan / gwInterval)

	// Prometheus with its blocks open (warm baseline), and a warm gateway.
	db, err := tsdb.OpenDBReadOnly(f.localDir, "", slog.New(slog.DiscardHandler))
	testutil.Ok(b, err)
	b.Cleanup(func() { _ = db.Close() })
	blocks, err := db.Blocks()
	testutil.Ok(b, err)
	testutil.Equals(b, f.blocks, len(blocks))
	warmGW := newGateway(b, f)
	b.Cleanup(warmGW.stop)
	warmGW.sync(b)

	for _, q := range []struct {
		name    string
		query   string
		step    time.Duration
		samples int
	}{
		{"sum_by_job_rate_5m/step_5m", `sum by (job) (rate(gw_requests_total[5m]))`, 5 * time.Minute, gwSeries / 2 * samplesPerSeries},
		{"selector_instance/step_5m", `{__name__="gw_memory_bytes", instance="i1"}`, 5 * time.Minute, gwSeries / 2 / 50 * samplesPerSeries},
	} {
		b.Run(q.name, func(b *testing.B) {
			ref := gwRun(b, promEng, blocksQueryable(blocks), q.query, qStart, qEnd, q.step)
			gwSameResult(b, "prometheus cold", ref, gwRun(b, promEng, readOnlyQueryable{f.localDir}, q.query, qStart, qEnd, q.step))
			gwSameResult(b, "strata warm (first query)", ref, gwRun(b, strataEng, warmGW.queryable, q.query, qStart, qEnd, q.step))
			gwSameResult(b, "strata warm (cached)", ref, gwRun(b, strataEng, warmGW.queryable, q.query, qStart, qEnd, q.step))

			for _, mode := range []string{"cold", "warm"} {
				var promNsPerOp float64
				for _, system := range []string{"prometheus", "strata"} {
					b.Run("mode="+mode+"/system="+system, func(b *testing.B) {
						b.ReportAllocs()
						var elapsed time.Duration
						n := 0
						for b.Loop() {
							var res *promql.Result
							switch {
							case system == "prometheus" && mode == "cold":
								t0 := time.Now()
								res = gwRun(b, promEng, readOnlyQueryable{f.localDir}, q.query, qStart, qEnd, q.step)
								elapsed += time.Since(t0)
							case system == "prometheus":
								t0 := time.Now()
								res = gwRun(b, promEng, blocksQueryable(blocks), q.query, qStart, qEnd, q.step)
								elapsed += time.Since(t0)
							case mode == "cold":
								b.StopTimer()
								g := newGateway(b, f)
								b.StartTimer()
								t0 := time.Now()
								g.sync(b)
								res = gwRun(b, strataEng, g.queryable, q.query, qStart, qEnd, q.step)
								elapsed += time.Since(t0)
								b.StopTimer()
								g.stop()
								b.StartTimer()
							default:
								t0 := time.Now()
								res = gwRun(b, strataEng, warmGW.queryable, q.query, qStart, qEnd, q.step)
								elapsed += time.Since(t0)
							}
							if n == 0 {
								b.StopTimer()
								gwSameResult(b, mode+" "+system, ref, res)
								b.StartTimer()
							}
							n++
						}
						nsPerOp := float64(elapsed.Nanoseconds()) / float64(n)
						b.ReportMetric(nsPerOp/1e6, "query-ms")
						b.ReportMetric(float64(q.samples)/(nsPerOp/1e9), "samples/s")
						switch system {
						case "prometheus":
							promNsPerOp = nsPerOp
						case "strata":
							if promNsPerOp > 0 {
								b.ReportMetric(nsPerOp/promNsPerOp, "x-prometheus")
							}
						}
					})
				}
			}
		})
	}
}
