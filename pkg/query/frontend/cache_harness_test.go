package frontend_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/query/frontend"
	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// cacheClock is the injected clock every part of the harness reads.
type cacheClock struct {
	mtx sync.Mutex
	t   time.Time
}

func (c *cacheClock) Now() time.Time {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	return c.t
}

func (c *cacheClock) Advance(d time.Duration) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.t = c.t.Add(d)
}

type harnessLimits map[string]*tenancy.Limits

func (f harnessLimits) ByTenant(t string) *tenancy.Limits       { return f[t] }
func (f harnessLimits) AllByTenant() map[string]*tenancy.Limits { return f }

// cacheHarness is Strata's read path in one process: an ingester (its TSDBs, accept rules and late-write log)
// and a filesystem bucket served by a BucketStore, both over loopback gRPC, behind the querier's HTTP API.
type cacheHarness struct {
	t         testing.TB
	clock     *cacheClock
	overrides *tenancy.Overrides
	bkt       objstore.Bucket
	ing       *receive.Ingester
	ingURL    string // the ingester's HTTP endpoint (/ingester/late_writes)
	bs        *store.BucketStore
	finder    *query.BucketBlocksFinder
	querier   http.Handler
	stores    []*store.Client
}

// refresh reloads the stores' Info (their time ranges), as the querier's endpoints do periodically.
func (h *cacheHarness) refresh() {
	h.t.Helper()
	for _, c := range h.stores {
		testutil.Ok(h.t, c.RefreshInfo(context.Background(), 10*time.Second))
	}
}

// newCacheHarness starts the read path at now. Every tenant may write out of order up to 72h back.
func newCacheHarness(t testing.TB, now time.Time, tenants ...string) *cacheHarness {
	t.Helper()
	logger := log.NewNopLogger()
	h := &cacheHarness{t: t, clock: &cacheClock{t: now}}
	lim := harnessLimits{}
	for _, tn := range tenants {
		l := tenancy.DefaultLimits()
		l.OutOfOrderTimeWindow = model.Duration(72 * time.Hour)
		l.MaxQueryLength = 0
		lim[tn] = &l
	}
	h.overrides = tenancy.NewOverrides(tenancy.DefaultLimits(), lim)

	var err error
	h.bkt, err = filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)

	// The ingester ships nothing here: it keeps its blocks (rather than deleting them after 13h, as it may once
	// they are in the bucket), so that its answers do not change by themselves.
	ingCfg := receive.DefaultIngesterConfig()
	ingCfg.Retention = 90 * 24 * time.Hour
	h.ing = receive.NewIngester(ingCfg, t.TempDir(), h.overrides, nil, logger, nil, receive.WithIngesterClock(h.clock.Now))
	testutil.Ok(t, h.ing.Open())
	t.Cleanup(func() { _ = h.ing.Close() })
	ingSrv := httptest.NewServer(h.ing.LateWritesHandler())
	t.Cleanup(ingSrv.Close)
	h.ingURL = ingSrv.URL

	cfg := store.DefaultBucketStoreConfig()
	cfg.Dir = t.TempDir()
	cfg.IgnoreDeletionMarkDelay = 0
	idx := cache.NewInMemory("index", cache.InMemoryConfig{MaxSizeBytes: 64 << 20}, logger, nil)
	chk := cache.NewInMemory("chunks", cache.InMemoryConfig{MaxSizeBytes: 64 << 20}, logger, nil)
	h.bs = store.NewBucketStore(h.bkt, cfg, idx, chk, nil, nil, logger, nil, h.clock.Now)
	t.Cleanup(func() { _ = h.bs.Close() })
	// The frontend's view of the bucket: the querier's rules (here no grace period and no deletion-mark delay,
	// as the BucketStore's), read at every snapshot. Its clock is the real one: the shipper stamps blocks with
	// their real upload time, which the injected clock (in the past) would see as a future upload.
	h.finder = query.NewBucketBlocksFinder(h.bkt, 0, 0, 0, time.Now)

	ingStore := store.NewTSDBStore(h.ing, logger, store.WithExternalLabels(h.ing.ExternalLabels()), store.WithComponentType(store.ComponentReceive))
	h.stores = []*store.Client{serveStore(t, ingStore, ingStore), serveStore(t, h.bs, h.bs)}
	stores := []store.StoreClient{h.stores[0], h.stores[1]}
	proxy := store.NewProxy(func() []store.StoreClient { return stores }, 0, logger, nil)
	q := query.NewQueryable(proxy, h.overrides, nil, nil)
	h.querier = tenancy.Config{MultitenancyEnabled: true}.HTTPMiddleware(true)(query.NewAPI(q, h.overrides, query.APIConfig{Engine: query.DefaultEngineConfig()}, logger, nil))
	return h
}

// serveStore serves a StoreAPI on loopback gRPC with the tenancy interceptors of a Strata process.
func serveStore(t testing.TB, st storepb.StoreServer, info infopb.InfoServer) *store.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	cfg := tenancy.Config{MultitenancyEnabled: true}
	exempt := tenancy.GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/"}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(math.MaxInt32), grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.ChainUnaryInterceptor(cfg.UnaryServerInterceptor(exempt)), grpc.ChainStreamInterceptor(cfg.StreamServerInterceptor(exempt)))
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

// sample is one float sample of a series given as name and label pairs.
type sample struct {
	lset labels.Labels
	t    int64
	v    float64
}

// push writes samples through the ingester (its accept rules and late-write log).
func (h *cacheHarness) push(tenant string, samples []sample) {
	h.t.Helper()
	bySeries := map[string]*prompb.TimeSeries{}
	var order []string
	for _, s := range samples {
		k := s.lset.String()
		ts, ok := bySeries[k]
		if !ok {
			ts = &prompb.TimeSeries{}
			s.lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, &labelpb.Label{Name: l.Name, Value: l.Value}) })
			bySeries[k] = ts
			order = append(order, k)
		}
		ts.Samples = append(ts.Samples, &prompb.Sample{Timestamp: s.t, Value: s.v})
	}
	req := &storepb.WriteRequest{}
	for _, k := range order {
		req.Timeseries = append(req.Timeseries, bySeries[k])
	}
	testutil.Ok(h.t, h.ing.Push(context.Background(), tenant, req))
	h.refresh()
}

// upload writes samples into a new block of the tenant in the bucket (as an import or a sidecar would) and
// makes the store-gateway see it. It returns the blocks made.
func (h *cacheHarness) upload(tenant string, samples []sample) []ulid.ULID {
	h.t.Helper()
	db, err := tsdb.Open(h.t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(h.t, err)
	defer func() { _ = db.Close() }()
	db.DisableCompactions()
	app := db.Appender(context.Background())
	for _, s := range samples {
		_, err := app.Append(0, s.lset, s.t, s.v)
		testutil.Ok(h.t, err)
	}
	testutil.Ok(h.t, app.Commit())
	head := db.Head()
	testutil.Ok(h.t, db.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())))
	blockLabels := labels.FromStrings(tenancy.TenantIDLabel, tenant)
	shipper := block.NewShipper(nil, nil, db.Dir(), objstore.NewPrefixedBucket(h.bkt, tenant), func() labels.Labels { return blockLabels }, block.TestSource)
	n, err := shipper.Sync(context.Background())
	testutil.Ok(h.t, err)
	testutil.Assert(h.t, n > 0, "nothing shipped")
	var ids []ulid.ULID
	for _, b := range db.Blocks() {
		ids = append(ids, b.Meta().ULID)
	}
	testutil.Ok(h.t, h.bs.SyncBlocks(context.Background()))
	h.refresh()
	return ids
}

// deleteBlock marks a block for deletion (the store-gateway and the finder drop it at once: no delay here).
func (h *cacheHarness) deleteBlock(tenant string, id ulid.ULID) {
	h.t.Helper()
	testutil.Ok(h.t, block.MarkForDeletion(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(h.bkt, tenant), id, "test", h.clock.Now))
	testutil.Ok(h.t, h.bs.SyncBlocks(context.Background()))
	h.refresh()
}

// generations are the sources of Strata's read path: the bucket through the finder, the ingester over HTTP.
func (h *cacheHarness) generations() []frontend.GenerationSource {
	logs := frontend.IngesterLogsOverHTTP(http.DefaultClient, func() (map[string]string, error) {
		return map[string]string{"ingester-1": h.ingURL}, nil
	})
	return []frontend.GenerationSource{frontend.NewBucketGeneration(h.finder), frontend.NewIngesterGeneration(logs)}
}

// frontend returns the query-frontend over the harness's querier with a results cache over c.
func (h *cacheHarness) frontend(c cache.Cache, sources []frontend.GenerationSource, reg prometheus.Registerer) *frontend.Frontend {
	h.t.Helper()
	m := frontend.NewMetrics(reg)
	rc := frontend.NewResultsCache(c, sources, h.overrides, frontend.ResultsCacheOptions{
		SplitInterval: 24 * time.Hour, LookbackDelta: 5 * time.Minute, Now: h.clock.Now,
	}, log.NewNopLogger(), reg)
	cfg := frontend.DefaultConfig()
	f, err := frontend.New(cfg, frontend.Options{
		Auth: tenancy.Config{MultitenancyEnabled: true}, Limits: h.overrides, Downstream: frontend.NewInProcessDownstream(h.querier, m),
		ResultsCache: rc, Now: h.clock.Now, Metrics: m,
	})
	testutil.Ok(h.t, err)
	return f
}

// rangeQuery is one query_range request.
type rangeQuery struct {
	q                string
	start, end, step int64 // ms
}

func (q rangeQuery) String() string {
	return fmt.Sprintf("%s [%s, %s] step %s", q.q, time.UnixMilli(q.start).UTC().Format(time.RFC3339), time.UnixMilli(q.end).UTC().Format(time.RFC3339),
		time.Duration(q.step)*time.Millisecond)
}

// do runs q as tenant against handler and returns the status and the body.
func do(t testing.TB, handler http.Handler, tenant string, q rangeQuery) (int, string) {
	t.Helper()
	form := url.Values{
		"query": {q.q},
		"start": {strconv.FormatFloat(float64(q.start)/1000, 'f', -1, 64)},
		"end":   {strconv.FormatFloat(float64(q.end)/1000, 'f', -1, 64)},
		"step":  {strconv.FormatFloat(float64(q.step)/1000, 'f', -1, 64)},
	}
	req := httptest.NewRequest(http.MethodGet, "/prometheus/api/v1/query_range?"+form.Encode(), nil)
	req.Header.Set("X-Scope-OrgID", tenant)
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	testutil.Ok(t, err)
	return rec.Code, string(body)
}
