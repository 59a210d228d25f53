package store

import (
	"context"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/indexheader"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const maxTime = math.MaxInt64

// BucketStoreConfig configures a BucketStore.
type BucketStoreConfig struct {
	// Dir holds the index-headers (<Dir>/<tenant>/<ULID>.index-header); it is a cache, safe to delete.
	Dir string
	// IndexHeaderIdleTimeout unloads an index-header not used for this long (0: never).
	IndexHeaderIdleTimeout time.Duration
	// MetaSyncConcurrency is how many meta.json files a sync reads at a time.
	MetaSyncConcurrency int
	// BlockQueryConcurrency is how many blocks one request reads at a time.
	BlockQueryConcurrency int
	// IgnoreDeletionMarkDelay: a block marked for deletion is still served until its mark is older than this
	// (Mimir's ignore_deletion_mark_delay), so that queriers that planned a query with it find it (0: dropped
	// at the first sync after its mark).
	IgnoreDeletionMarkDelay time.Duration
}

// DefaultBucketStoreConfig returns the defaults (Dir must still be set).
func DefaultBucketStoreConfig() BucketStoreConfig {
	return BucketStoreConfig{IndexHeaderIdleTimeout: time.Hour, MetaSyncConcurrency: 32, BlockQueryConcurrency: 16, IgnoreDeletionMarkDelay: time.Hour}
}

type bucketStoreMetrics struct {
	blocksLoaded   *prometheus.GaugeVec
	syncs          *prometheus.CounterVec
	syncDuration   prometheus.Histogram
	seriesRequests *prometheus.CounterVec
	blocksQueried  prometheus.Counter
	bytesFetched   *prometheus.CounterVec
	rangeRequests  *prometheus.CounterVec
	cacheRequests  *prometheus.CounterVec
	cacheHitsTotal *prometheus.CounterVec
}

func newBucketStoreMetrics(reg prometheus.Registerer) *bucketStoreMetrics {
	f := promauto.With(reg)
	m := &bucketStoreMetrics{
		blocksLoaded: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_bucket_store_blocks",
			Help: "Blocks the store serves, by resolution.",
		}, []string{"resolution"}),
		syncs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_syncs_total",
			Help: "Block syncs with the bucket, by outcome.",
		}, []string{"outcome"}),
		syncDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_bucket_store_sync_duration_seconds",
			Help:    "Time a block sync with the bucket took.",
			Buckets: []float64{0.01, 0.1, 0.5, 1, 5, 15, 60, 300},
		}),
		seriesRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_series_requests_total",
			Help: "Series requests served, by outcome.",
		}, []string{"outcome"}),
		blocksQueried: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_bucket_store_series_blocks_queried_total",
			Help: "Blocks read by Series requests.",
		}),
		bytesFetched: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_fetched_bytes_total",
			Help: "Bytes read from the bucket for queries, by file (index, chunks).",
		}, []string{"file"}),
		rangeRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_range_requests_total",
			Help: "Range requests sent to the bucket for queries, by file (index, chunks).",
		}, []string{"file"}),
		cacheRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_cache_requests_total",
			Help: "Items looked up in the caches, by item type (postings, series, chunks).",
		}, []string{"item"}),
		cacheHitsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_bucket_store_cache_hits_total",
			Help: "Items found in the caches, by item type (postings, series, chunks).",
		}, []string{"item"}),
	}
	for _, item := range []string{"postings", "series", "chunks"} {
		m.cacheRequests.WithLabelValues(item)
		m.cacheHitsTotal.WithLabelValues(item)
	}
	return m
}

func (m *bucketStoreMetrics) cacheHits(item string, hits, requests int) {
	m.cacheRequests.WithLabelValues(item).Add(float64(requests))
	m.cacheHitsTotal.WithLabelValues(item).Add(float64(hits))
}

// BlockOwnership decides whether this store serves a block (ring sharding); nil serves every block.
type BlockOwnership func(tenant string, id ulid.ULID) (bool, error)

// BucketStore serves the blocks of a tenant-isolated bucket (<tenant>/<ULID>/…) over the Thanos StoreAPI,
// without downloading them: each block has a small local index-header (symbols and postings offset table),
// loaded lazily and unloaded when idle; postings, series and chunks are read with range requests through the
// index and chunks caches.
//
// A request reads only the blocks of the tenants its context names; each series carries its block's
// thanos.labels (tenant_id included) as external labels. Of overlapping blocks with several resolutions, the
// coarsest not above the request's max_resolution_window is used, finer ones filling its gaps (Thanos).
type BucketStore struct {
	storepb.UnimplementedStoreServer
	infopb.UnimplementedInfoServer

	logger      log.Logger
	bkt         objstore.Bucket
	cfg         BucketStoreConfig
	fetcher     *block.MetaFetcher
	owns        BlockOwnership
	overrides   *tenancy.Overrides
	indexCache  Cache
	chunksCache Cache
	metrics     *bucketStoreMetrics
	hdrMetrics  *indexheader.Metrics
	now         func() time.Time

	syncMtx sync.Mutex // one sync at a time
	mtx     sync.RWMutex
	tenants map[string]map[ulid.ULID]*bucketBlock
	synced  bool
}

// NewBucketStore returns a store over bkt. Caches may be nil (no caching); overrides may be nil (no limits).
func NewBucketStore(bkt objstore.Bucket, cfg BucketStoreConfig, indexCache, chunksCache Cache, owns BlockOwnership, overrides *tenancy.Overrides, logger log.Logger, reg prometheus.Registerer, now func() time.Time) *BucketStore {
	if indexCache == nil {
		indexCache = noCache{}
	}
	if chunksCache == nil {
		chunksCache = noCache{}
	}
	if now == nil {
		now = time.Now
	}
	return &BucketStore{
		logger:      logger,
		bkt:         bkt,
		cfg:         cfg,
		fetcher:     block.NewMetaFetcher(bkt, cfg.MetaSyncConcurrency, cfg.IgnoreDeletionMarkDelay, now),
		owns:        owns,
		overrides:   overrides,
		indexCache:  indexCache,
		chunksCache: chunksCache,
		metrics:     newBucketStoreMetrics(reg),
		hdrMetrics:  indexheader.NewMetrics(reg),
		now:         now,
		tenants:     map[string]map[ulid.ULID]*bucketBlock{},
	}
}

type noCache struct{}

func (noCache) Fetch(context.Context, []string) map[string][]byte { return nil }
func (noCache) Store(map[string][]byte, time.Duration)            {}

func (s *BucketStore) limits(tenant string) tenancy.Limits {
	if s.overrides == nil {
		return tenancy.Limits{}
	}
	return *s.overrides.ForTenant(tenant)
}

// SyncBlocks discovers the tenants and blocks of the bucket, starts serving the new blocks this store owns and
// stops serving those gone (or without meta.json), marked for deletion longer ago than the ignore-deletion-mark
// delay, or no longer owned. Index-headers are not built here: a block
// is served from its first request on (the store is ready while it warms).
func (s *BucketStore) SyncBlocks(ctx context.Context) (err error) {
	s.syncMtx.Lock()
	defer s.syncMtx.Unlock()
	start := s.now()
	defer func() {
		s.metrics.syncDuration.Observe(s.now().Sub(start).Seconds())
		s.metrics.syncs.WithLabelValues(outcome(err)).Inc()
	}()
	tenants, err := block.ListTenants(ctx, s.bkt)
	if err != nil {
		return errors.Wrap(err, "sync blocks")
	}
	next := make(map[string]map[ulid.ULID]*bucketBlock, len(tenants))
	var errs []error
	for _, tenant := range tenants {
		d, err := s.fetcher.Fetch(ctx, tenant)
		if err != nil {
			errs = append(errs, err)
			// Keep serving what the tenant had.
			s.mtx.RLock()
			next[tenant] = s.tenants[tenant]
			s.mtx.RUnlock()
			continue
		}
		blocks := map[ulid.ULID]*bucketBlock{}
		for id, m := range d.Metas {
			if s.owns != nil {
				ok, err := s.owns(tenant, id)
				if err != nil {
					errs = append(errs, errors.Wrapf(err, "ownership of block %s of tenant %s", id, tenant))
					ok = s.serves(tenant, id) // keep what we had
				}
				if !ok {
					continue
				}
			}
			b := s.block(tenant, id)
			if b == nil {
				b = s.newBlock(tenant, m)
			}
			var marked int64
			if t, ok := d.DeletionMarks[id]; ok {
				marked = t.Unix()
			}
			b.deletionMark.Store(marked)
			blocks[id] = b
		}
		if len(blocks) > 0 {
			next[tenant] = blocks
		}
	}
	s.mtx.Lock()
	old := s.tenants
	s.tenants = next
	s.synced = true
	s.mtx.Unlock()

	// Close the blocks dropped once the requests reading them are done, and count what is served.
	for tenant, blocks := range old {
		for id, b := range blocks {
			if _, ok := next[tenant][id]; !ok {
				b.drop(func() {
					if err := b.header.Close(); err != nil {
						level.Warn(s.logger).Log("msg", "closing index-header of dropped block", "block", id, "err", err)
					}
					_ = os.Remove(s.headerPath(tenant, id))
				})
			}
		}
	}
	counts := map[int64]int{0: 0, 300000: 0, 3600000: 0}
	for _, blocks := range next {
		for _, b := range blocks {
			counts[b.resolution()]++
		}
	}
	for res, n := range counts {
		s.metrics.blocksLoaded.WithLabelValues(resolutionName(res)).Set(float64(n))
	}
	if len(errs) > 0 {
		return errors.Wrapf(errs[0], "sync blocks (%d errors)", len(errs))
	}
	return nil
}

func resolutionName(res int64) string {
	switch res {
	case 0:
		return "raw"
	case 300000:
		return "5m"
	case 3600000:
		return "1h"
	}
	return time.Duration(res * int64(time.Millisecond)).String()
}

func (s *BucketStore) block(tenant string, id ulid.ULID) *bucketBlock {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	return s.tenants[tenant][id]
}

func (s *BucketStore) serves(tenant string, id ulid.ULID) bool { return s.block(tenant, id) != nil }

func (s *BucketStore) newBlock(tenant string, m *block.Meta) *bucketBlock {
	dir := path.Join(tenant, m.ULID.String())
	b := labels.NewBuilder(labels.FromMap(m.Thanos.Labels))
	b.Set(tenancy.TenantIDLabel, tenant) // a store never serves a block of a tenant under another tenant_id
	hdrPath := s.headerPath(tenant, m.ULID)
	return &bucketBlock{
		tenant:  tenant,
		meta:    m,
		dir:     dir,
		ext:     b.Labels(),
		header:  indexheader.NewLazyReader(s.bkt, path.Join(dir, block.IndexFilename), hdrPath, s.hdrMetrics, log.With(s.logger, "block", dir), s.now),
		bkt:     s.bkt,
		index:   s.indexCache,
		chunks:  s.chunksCache,
		metrics: s.metrics,
	}
}

// headerPath is where a block's index-header is kept: one flat directory per tenant (a directory per block
// would cost a mkdir per header built).
func (s *BucketStore) headerPath(tenant string, id ulid.ULID) string {
	return filepath.Join(s.cfg.Dir, tenant, id.String()+".index-header")
}

// Synced reports whether a first sync completed (the store knows which blocks it serves).
func (s *BucketStore) Synced() bool {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	return s.synced
}

// UnloadIdle unloads the index-headers not used within the idle timeout; it returns how many.
func (s *BucketStore) UnloadIdle() int {
	if s.cfg.IndexHeaderIdleTimeout <= 0 {
		return 0
	}
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	n := 0
	for _, blocks := range s.tenants {
		for _, b := range blocks {
			if b.header.UnloadIfIdle(s.cfg.IndexHeaderIdleTimeout) {
				n++
			}
		}
	}
	return n
}

// Close unloads every index-header.
func (s *BucketStore) Close() error {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	var errs []error
	for _, blocks := range s.tenants {
		for _, b := range blocks {
			if err := b.header.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.tenants = map[string]map[ulid.ULID]*bucketBlock{}
	if len(errs) > 0 {
		return errors.Wrap(errs[0], "close index-headers")
	}
	return nil
}

// blocksFor returns the blocks of a tenant a request of [minT, maxT] reads at maxResolution (see BucketStore),
// restricted to those the block matchers name; considered are all the tenant's blocks the matchers name (the
// blocks this store answers for, whether or not they hold data in range). With allResolutions, every block
// overlapping the range is selected (label queries). The selected blocks stay open until release is called,
// even if a sync drops them meanwhile.
func (s *BucketStore) blocksFor(tenant string, minT, maxT, maxResolution int64, allResolutions bool, bms []*labels.Matcher) (selected, considered []*bucketBlock, release func()) {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	// Blocks with the same external labels form one set, resolved separately (Thanos's bucketBlockSet).
	sets := map[string][]*bucketBlock{}
	for _, b := range s.tenants[tenant] {
		if !matchBlock(bms, b.id().String()) {
			continue
		}
		considered = append(considered, b)
		if allResolutions {
			if b.meta.MinTime <= maxT && minT < b.meta.MaxTime {
				selected = append(selected, b)
			}
			continue
		}
		key := b.ext.String()
		sets[key] = append(sets[key], b)
	}
	for _, set := range sets {
		selected = append(selected, blocksAtResolution(set, minT, maxT, maxResolution)...)
	}
	sort.Slice(considered, func(i, j int) bool { return considered[i].id().Compare(considered[j].id()) < 0 })
	// Acquired under the read lock: a sync swaps the block set under the write lock, then closes the blocks it
	// dropped once their readers are done.
	for _, b := range selected {
		b.acquire()
	}
	return selected, considered, func() {
		for _, b := range selected {
			b.release()
		}
	}
}

// blocksAtResolution fills [minT, maxT] with the blocks of the coarsest resolution not above maxResolution and
// the gaps between them with finer ones (Thanos's bucketBlockSet.getFor).
func blocksAtResolution(blocks []*bucketBlock, minT, maxT, maxResolution int64) []*bucketBlock {
	var resolutions []int64
	for _, b := range blocks {
		if !slices.Contains(resolutions, b.resolution()) {
			resolutions = append(resolutions, b.resolution())
		}
	}
	slices.SortFunc(resolutions, func(a, b int64) int { return int(b - a) }) // coarsest first
	byRes := map[int64][]*bucketBlock{}
	for _, b := range blocks {
		byRes[b.resolution()] = append(byRes[b.resolution()], b)
	}
	for _, bs := range byRes {
		sort.Slice(bs, func(i, j int) bool { return bs[i].meta.MinTime < bs[j].meta.MinTime })
	}
	var getFor func(minT, maxT int64, i int) []*bucketBlock
	getFor = func(minT, maxT int64, i int) []*bucketBlock {
		if minT > maxT {
			return nil
		}
		for ; i < len(resolutions) && resolutions[i] > maxResolution; i++ {
		}
		if i >= len(resolutions) {
			return nil
		}
		var out []*bucketBlock
		start := minT
		for _, b := range byRes[resolutions[i]] {
			if b.meta.MaxTime <= minT {
				continue
			}
			if b.meta.MinTime > maxT {
				break
			}
			if i+1 < len(resolutions) {
				out = append(out, getFor(start, b.meta.MinTime-1, i+1)...)
			}
			out = append(out, b)
			start = b.meta.MaxTime
		}
		if i+1 < len(resolutions) {
			out = append(out, getFor(start, maxT, i+1)...)
		}
		return out
	}
	return getFor(minT, maxT, 0)
}

// BlockInfo describes a served block for the status pages.
type BlockInfo struct {
	ID                  ulid.ULID
	MinTime, MaxTime    int64
	Labels              labels.Labels
	Resolution          int64
	Source              string
	Level               int
	SizeBytes           int64
	Series, Samples     uint64
	IndexHeaderInMemory bool
	// DeletionMarkedAt is when the block was marked for deletion (zero: it is not): it is served until the mark
	// is older than the ignore-deletion-mark delay.
	DeletionMarkedAt time.Time
}

// Tenants returns the tenants the store serves blocks of, sorted.
func (s *BucketStore) Tenants() []string {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	out := make([]string, 0, len(s.tenants))
	for t := range s.tenants {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Blocks describes the blocks served of a tenant, by time then ID.
func (s *BucketStore) Blocks(tenant string) []BlockInfo {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	out := make([]BlockInfo, 0, len(s.tenants[tenant]))
	for _, b := range s.tenants[tenant] {
		var size int64
		for _, f := range b.meta.Thanos.Files {
			size += f.SizeBytes
		}
		out = append(out, BlockInfo{
			ID: b.id(), MinTime: b.meta.MinTime, MaxTime: b.meta.MaxTime, Labels: b.ext, Resolution: b.resolution(),
			Source: string(b.meta.Thanos.Source), Level: b.meta.Compaction.Level, SizeBytes: size,
			Series: b.meta.Stats.NumSeries, Samples: b.meta.Stats.NumSamples, IndexHeaderInMemory: b.header.Loaded(),
		})
		if t := b.deletionMark.Load(); t != 0 {
			out[len(out)-1].DeletionMarkedAt = time.Unix(t, 0)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].MinTime != out[j].MinTime {
			return out[i].MinTime < out[j].MinTime
		}
		return out[i].ID.Compare(out[j].ID) < 0
	})
	return out
}

// Info implements thanos.info.Info: one label set per served block label set of the caller's tenants (all
// tenants when it names none), and the time range of their blocks.
func (s *BucketStore) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		tenants = s.Tenants()
	}
	resp := &infopb.InfoResponse{
		ComponentType: ComponentStore,
		Store:         &infopb.StoreInfo{MinTime: math.MaxInt64, MaxTime: math.MinInt64},
	}
	seen := map[string]bool{}
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	for _, tenant := range tenants {
		for _, b := range s.tenants[tenant] {
			resp.Store.MinTime = min(resp.Store.MinTime, b.meta.MinTime)
			resp.Store.MaxTime = max(resp.Store.MaxTime, b.meta.MaxTime-1)
			key := b.ext.String()
			if seen[key] {
				continue
			}
			seen[key] = true
			resp.LabelSets = append(resp.LabelSets, &labelpb.ZLabelSet{Labels: LabelsToPB(b.ext)})
		}
	}
	sort.Slice(resp.LabelSets, func(i, j int) bool {
		return compareLabelsPB(resp.LabelSets[i].Labels, resp.LabelSets[j].Labels) < 0
	})
	if len(resp.LabelSets) == 0 {
		// Nothing yet: do not let a querier rule this store out before its first sync.
		resp.Store.MinTime, resp.Store.MaxTime = math.MinInt64, math.MaxInt64
	}
	return resp, nil
}
