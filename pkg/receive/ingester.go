package receive

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Reasons the ingester discards samples for, counted in strata_discarded_samples_total.
const (
	reasonPerUserSeriesLimit   = "per_user_series_limit"
	reasonPerMetricSeriesLimit = "per_metric_series_limit"
	reasonSampleOutOfOrder     = "sample_out_of_order"
	reasonSampleTooOld         = "sample_too_old"
	reasonSampleDuplicate      = "sample_duplicate_timestamp"
	reasonInvalid              = "invalid_sample"
)

// IngesterConfig configures the ingester's TSDBs.
type IngesterConfig struct {
	// BlockDuration is how much time one block covers (and how often blocks are cut): 2h, or ≥ 1m for tests.
	BlockDuration time.Duration `yaml:"block_duration"`
	// Retention is how long blocks stay on local disk after they are cut (they are deleted only once shipped).
	Retention time.Duration `yaml:"retention"`
	// ShipInterval is how often new blocks are looked for and shipped to the bucket.
	ShipInterval time.Duration `yaml:"ship_interval"`
	// ExternalLabels are added to every series served and to every shipped block, besides tenant_id.
	ExternalLabels map[string]string `yaml:"external_labels"`
	// CloseIdleTSDBTimeout closes a tenant's TSDB that has had no write for this long once its head is empty and
	// every block is shipped, and removes its directory (its data is in the bucket). 0 disables it.
	CloseIdleTSDBTimeout time.Duration `yaml:"close_idle_tsdb_timeout"`
	// MetadataRetainPeriod is how long remote-written metric metadata is kept after it was last received
	// (Mimir's metadata_retain_period; 0: DefaultMetadataRetainPeriod).
	MetadataRetainPeriod time.Duration `yaml:"metadata_retain_period"`
}

// DefaultIngesterConfig is Mimir's: 2h blocks, kept 13h locally, shipped every minute.
func DefaultIngesterConfig() IngesterConfig {
	return IngesterConfig{BlockDuration: 2 * time.Hour, Retention: 13 * time.Hour, ShipInterval: time.Minute, CloseIdleTSDBTimeout: 13 * time.Hour,
		MetadataRetainPeriod: DefaultMetadataRetainPeriod}
}

// Validate checks the config.
func (c IngesterConfig) Validate() error {
	if c.BlockDuration < time.Minute {
		return errors.Newf("ingester: block duration must be at least 1m, got %s", c.BlockDuration)
	}
	if c.Retention < c.BlockDuration {
		return errors.Newf("ingester: retention (%s) must be at least the block duration (%s)", c.Retention, c.BlockDuration)
	}
	if c.ShipInterval <= 0 {
		return errors.New("ingester: ship interval must be positive")
	}
	return nil
}

// Shipper uploads the new blocks of one tenant's TSDB directory to the bucket.
type Shipper interface {
	Sync(ctx context.Context) (uploaded int, err error)
}

// ShipperFactory makes the shipper of a tenant's TSDB directory; lbls are the labels its blocks carry. reg is the
// tenant's registerer: what the shipper registers there carries the tenant label and is unregistered when the
// tenant's TSDB is closed (idle), so that opening it again registers the same metrics again.
type ShipperFactory func(tenant, dir string, lbls labels.Labels, reg prometheus.Registerer) (Shipper, error)

type ingesterMetrics struct {
	appendedSamples *prometheus.CounterVec
	activeSeries    *prometheus.GaugeVec
	walReplay       *prometheus.GaugeVec
	shippedBlocks   *prometheus.CounterVec
	shipFailures    *prometheus.CounterVec
	tsdbs           prometheus.Gauge
}

func newIngesterMetrics(reg prometheus.Registerer) *ingesterMetrics {
	return &ingesterMetrics{
		appendedSamples: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ingester_ingested_samples_total", Help: "Samples appended to a tenant's TSDB.",
		}, []string{"tenant"}),
		activeSeries: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_ingester_active_series", Help: "Series in a tenant's TSDB head.",
		}, []string{"tenant"}),
		walReplay: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_ingester_wal_replay_duration_seconds", Help: "How long opening a tenant's TSDB (replaying its WAL) took.",
		}, []string{"tenant"}),
		shippedBlocks: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ingester_shipped_blocks_total", Help: "Blocks shipped to the bucket.",
		}, []string{"tenant"}),
		shipFailures: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ingester_ship_failures_total", Help: "Failed attempts to ship a tenant's blocks.",
		}, []string{"tenant"}),
		tsdbs: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Name: "strata_ingester_tsdbs", Help: "Tenant TSDBs open in this ingester.",
		}),
	}
}

// Ingester holds one Prometheus TSDB per tenant under <dir>/<tenant>, appends what the distributors send,
// serves it as a Thanos StoreAPI (via store.TSDBStore) and ships the blocks it cuts to the bucket.
// It is safe for concurrent use.
type Ingester struct {
	storepb.UnimplementedWriteableStoreServer

	cfg       IngesterConfig
	dir       string
	overrides *tenancy.Overrides
	shippers  ShipperFactory
	discarded *DiscardedSamples
	// limitShare is this ingester's share of a tenant's global series limits (RF / zones / ingesters in zone).
	limitShare func() float64
	now        func() time.Time
	logger     log.Logger
	reg        prometheus.Registerer
	metrics    *ingesterMetrics
	metadata   *ingesterMetadata // metric metadata (ingester_metadata.go)

	mtx      sync.RWMutex
	tsdbs    map[string]*userTSDB
	creating sync.Mutex // serialises opening TSDBs (WAL replay), not appends
	closed   bool
	stopped  atomic.Bool // no writes accepted: the ingester is shutting down
}

// StopWrites makes every later Push fail with Unavailable (the distributor then counts on the other replicas).
func (i *Ingester) StopWrites() { i.stopped.Store(true) }

// IngesterOption configures an Ingester.
type IngesterOption func(*Ingester)

// WithLimitShare sets the function giving this ingester's share of global series limits (default 1).
func WithLimitShare(f func() float64) IngesterOption { return func(i *Ingester) { i.limitShare = f } }

// WithIngesterClock sets the clock idle TSDBs and samples too far in the future are judged by (tests).
func WithIngesterClock(now func() time.Time) IngesterOption { return func(i *Ingester) { i.now = now } }

// WithShippers sets how blocks are shipped; without it blocks stay local.
func WithShippers(f ShipperFactory) IngesterOption { return func(i *Ingester) { i.shippers = f } }

// NewIngester returns an ingester keeping its TSDBs under dir. Call Open before use.
func NewIngester(cfg IngesterConfig, dir string, overrides *tenancy.Overrides, discarded *DiscardedSamples, logger log.Logger, reg prometheus.Registerer, opts ...IngesterOption) *Ingester {
	i := &Ingester{
		cfg: cfg, dir: dir, overrides: overrides, discarded: discarded, logger: logger, reg: reg,
		limitShare: func() float64 { return 1 },
		now:        time.Now,
		metrics:    newIngesterMetrics(reg),
		tsdbs:      map[string]*userTSDB{},
	}
	for _, o := range opts {
		o(i)
	}
	i.metadata = newIngesterMetadata(i, NewDiscardedMetadata(reg), reg)
	return i
}

// Open opens (replaying their WALs) the TSDBs of every tenant that has a directory under dir, so their data is
// served and shipped before any new write arrives.
func (i *Ingester) Open() error {
	if err := os.MkdirAll(i.dir, 0o750); err != nil {
		return errors.Wrapf(err, "create TSDB directory %s", i.dir)
	}
	entries, err := os.ReadDir(i.dir)
	if err != nil {
		return errors.Wrapf(err, "list TSDB directory %s", i.dir)
	}
	for _, e := range entries {
		if !e.IsDir() || tenancy.ValidateTenantID(e.Name()) != nil {
			continue
		}
		if _, err := i.getOrOpen(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// userTSDB is one tenant's TSDB. It is the TSDB's series lifecycle callback, which enforces the series limits.
type userTSDB struct {
	tenant  string
	db      *tsdb.DB
	shipper Shipper
	ing     *Ingester
	// reg holds the tenant's own collectors (its shipper's), unregistered when the TSDB is closed.
	reg *tenantRegisterer

	// replaying is true while the WAL is replayed: series that existed are never refused.
	replaying bool
	// oooWindow is the out-of-order window (ms) the TSDB runs with; see ApplyLimits.
	oooWindow atomic.Int64
	// lastWrite is the unix nanoseconds of the last push.
	lastWrite atomic.Int64
	// closeMtx: pushes hold it shared; closing an idle TSDB holds it exclusively, and sets closed.
	closeMtx sync.RWMutex
	// appendMtx: pushes that append to existing series hold it shared; a push that creates series, exclusively.
	appendMtx sync.RWMutex
	commitMtx sync.Mutex
	closed    bool
	mtx       sync.Mutex
	perMetric map[string]int
}

func (u *userTSDB) localLimit(global int) int {
	if global <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(float64(global)*u.ing.limitShare())))
}

var (
	errPerUserSeriesLimit   = errors.New("per-user series limit reached")
	errPerMetricSeriesLimit = errors.New("per-metric series limit reached")
)

// PreCreation implements tsdb.SeriesLifecycleCallback: it refuses a new series beyond the tenant's limits.
func (u *userTSDB) PreCreation(lset labels.Labels) error {
	if u.replaying {
		return nil
	}
	if limit := u.localLimit(u.ing.overrides.MaxGlobalSeriesPerUser(u.tenant)); limit > 0 && int(u.db.Head().NumSeries()) >= limit {
		return errPerUserSeriesLimit
	}
	if limit := u.localLimit(u.ing.overrides.MaxGlobalSeriesPerMetric(u.tenant)); limit > 0 {
		u.mtx.Lock()
		n := u.perMetric[lset.Get(model.MetricNameLabel)]
		u.mtx.Unlock()
		if n >= limit {
			return errPerMetricSeriesLimit
		}
	}
	return nil
}

// PostCreation implements tsdb.SeriesLifecycleCallback.
func (u *userTSDB) PostCreation(lset labels.Labels) {
	u.mtx.Lock()
	u.perMetric[lset.Get(model.MetricNameLabel)]++
	u.mtx.Unlock()
}

// PostDeletion implements tsdb.SeriesLifecycleCallback.
func (u *userTSDB) PostDeletion(deleted map[chunks.HeadSeriesRef]labels.Labels) {
	u.mtx.Lock()
	defer u.mtx.Unlock()
	for _, lset := range deleted {
		name := lset.Get(model.MetricNameLabel)
		if u.perMetric[name]--; u.perMetric[name] <= 0 {
			delete(u.perMetric, name)
		}
	}
}

// tenantLabels are the labels of every series served and block shipped for a tenant.
func (i *Ingester) tenantLabels(tenant string) labels.Labels {
	b := labels.NewBuilder(labels.FromMap(i.cfg.ExternalLabels))
	b.Set(tenancy.TenantIDLabel, tenant)
	return b.Labels()
}

// ExternalLabels returns the configured external labels (without tenant_id).
func (i *Ingester) ExternalLabels() labels.Labels { return labels.FromMap(i.cfg.ExternalLabels) }

func (i *Ingester) get(tenant string) *userTSDB {
	i.mtx.RLock()
	defer i.mtx.RUnlock()
	return i.tsdbs[tenant]
}

// getOrOpen returns a tenant's TSDB, opening (or creating) it the first time. tenant must be valid.
func (i *Ingester) getOrOpen(tenant string) (*userTSDB, error) {
	if u := i.get(tenant); u != nil {
		return u, nil
	}
	i.creating.Lock()
	defer i.creating.Unlock()
	if u := i.get(tenant); u != nil {
		return u, nil
	}
	i.mtx.RLock()
	closed := i.closed
	i.mtx.RUnlock()
	if closed {
		return nil, status.Error(codes.Unavailable, "ingester is shutting down")
	}

	dir := filepath.Join(i.dir, tenant)
	u := &userTSDB{tenant: tenant, ing: i, replaying: true, perMetric: map[string]int{}, reg: newTenantRegisterer(i.reg, tenant)}
	u.lastWrite.Store(i.now().UnixNano())
	opts := tsdb.DefaultOptions()
	opts.MinBlockDuration = i.cfg.BlockDuration.Milliseconds()
	opts.MaxBlockDuration = i.cfg.BlockDuration.Milliseconds() // no local compaction: the compactor merges
	opts.RetentionDuration = i.cfg.Retention.Milliseconds()
	opts.OutOfOrderTimeWindow = i.overrides.OutOfOrderTimeWindow(tenant).Milliseconds()
	opts.EnableOverlappingCompaction = false
	opts.SeriesLifecycleCallback = u
	if i.shippers != nil {
		// Retention deletes only blocks already in the bucket: a block that could not be shipped stays.
		opts.BlocksToDelete = func(blocks []*tsdb.Block) map[ulid.ULID]struct{} {
			if u.db == nil {
				return nil // called while opening: nothing is deleted before the TSDB is up
			}
			candidates := tsdb.DefaultBlocksToDelete(u.db)(blocks)
			shipped, err := block.ReadShipperMeta(dir)
			if err != nil {
				return nil
			}
			out := map[ulid.ULID]struct{}{}
			for _, id := range shipped.Uploaded {
				if _, ok := candidates[id]; ok {
					out[id] = struct{}{}
				}
			}
			return out
		}
	}
	start := time.Now()
	db, err := tsdb.Open(dir, server.Slog(log.With(i.logger, "tenant", tenant)), nil, opts, nil)
	if err != nil {
		return nil, errors.Wrapf(err, "open TSDB of tenant %s", tenant)
	}
	u.db = db
	u.replaying = false
	u.oooWindow.Store(opts.OutOfOrderTimeWindow)
	i.metrics.walReplay.WithLabelValues(tenant).Set(time.Since(start).Seconds())
	if i.shippers != nil {
		s, err := i.shippers(tenant, dir, i.tenantLabels(tenant), u.reg)
		if err != nil {
			u.reg.unregisterAll()
			_ = db.Close()
			return nil, errors.Wrapf(err, "create shipper of tenant %s", tenant)
		}
		u.shipper = s
	}
	level.Info(i.logger).Log("msg", "opened TSDB", "tenant", tenant, "dir", dir, "series", db.Head().NumSeries(), "took", time.Since(start))

	i.mtx.Lock()
	i.tsdbs[tenant] = u
	i.metrics.tsdbs.Set(float64(len(i.tsdbs)))
	i.mtx.Unlock()
	return u, nil
}

// DB implements store.TenantDBs.
func (i *Ingester) DB(tenant string) store.TenantDB {
	if u := i.get(tenant); u != nil {
		return u.db
	}
	return nil
}

// Tenants implements store.TenantDBs.
func (i *Ingester) Tenants() []string {
	i.mtx.RLock()
	defer i.mtx.RUnlock()
	out := make([]string, 0, len(i.tsdbs))
	for t := range i.tsdbs {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// appendErrors keeps the first error of each kind in a push, and which metrics hit the series limit.
type appendErrors struct {
	first         map[string]error
	order         []string
	limitedMetric map[string]int
}

func (a *appendErrors) add(reason string, err error) {
	if a.first == nil {
		a.first = map[string]error{}
	}
	if _, ok := a.first[reason]; !ok {
		a.first[reason] = err
		a.order = append(a.order, reason)
	}
}

// Push appends a tenant's series. Samples that fail (limits, out of order, too old, duplicates) are skipped
// and counted; the rest are committed, and the first failure is returned as a 400 *tenancy.Error, as Mimir
// does. An error other than *tenancy.Error means nothing was committed. Metric metadata is stored best effort
// (ingesterMetadata.add): it never fails a push.
func (i *Ingester) Push(ctx context.Context, tenant string, req *storepb.WriteRequest) error {
	if i.stopped.Load() {
		return status.Error(codes.Unavailable, "ingester is shutting down")
	}
	if i.metadata.add(tenant, req.GetMetadata()); len(req.GetTimeseries()) == 0 {
		return nil // metadata only: no TSDB to open
	}
	u, err := i.getOrOpen(tenant)
	if err != nil {
		return err
	}
	u.closeMtx.RLock()
	if u.closed { // closed as idle between the lookup and now: open it again
		u.closeMtx.RUnlock()
		return i.Push(ctx, tenant, req)
	}
	defer u.closeMtx.RUnlock()
	u.lastWrite.Store(i.now().UnixNano())
	// Pushes that only append to existing series run concurrently; a push that creates series runs alone.
	// Prometheus's head logs a new series to the WAL when the appender that created it commits, so a
	// concurrent appender that found the series could commit samples before that record, and a WAL replay
	// after a crash would drop those acknowledged samples as referring to an unknown series.
	u.appendMtx.RLock()
	exclusive, err := i.appendRequest(ctx, tenant, u, req, true)
	u.appendMtx.RUnlock()
	if exclusive {
		u.appendMtx.Lock()
		_, err = i.appendRequest(ctx, tenant, u, req, false)
		u.appendMtx.Unlock()
	}
	return err
}

// appendRequest appends a request in one appender and commits it. With onlyExisting it rolls back and reports
// needExclusive as soon as a series does not exist yet.
func (i *Ingester) appendRequest(ctx context.Context, tenant string, u *userTSDB, req *storepb.WriteRequest, onlyExisting bool) (needExclusive bool, err error) {
	var (
		app      = u.db.Appender(ctx)
		getRef   = app.(storage.GetRef)
		errs     appendErrors
		appended int
		b        = labels.NewScratchBuilder(16)
	)
	tss := req.GetTimeseries()
	lsets := make([]labels.Labels, len(tss))
	refs := make([]storage.SeriesRef, len(tss))
	for k, ts := range tss {
		b.Reset()
		for _, l := range ts.GetLabels() {
			b.Add(l.GetName(), l.GetValue())
		}
		b.Sort()
		lsets[k] = b.Labels()
		if onlyExisting {
			// Before any append, so that nothing is counted twice when the push is redone exclusively.
			if refs[k], _ = getRef.GetRef(lsets[k], lsets[k].Hash()); refs[k] == 0 {
				if err := app.Rollback(); err != nil {
					return false, status.Errorf(codes.Internal, "roll back samples of tenant %s: %v", tenant, err)
				}
				return true, nil
			}
		}
	}
	for k, ts := range tss {
		lset, ref := lsets[k], refs[k]
		skipSeries := false
		for _, s := range ts.GetSamples() {
			if err = checkNotAncient(s.GetTimestamp()); err == nil {
				ref, err = app.Append(ref, lset, s.GetTimestamp(), s.GetValue())
			}
			if err == nil {
				appended++
				continue
			}
			if skipSeries = i.handleAppendErr(tenant, lset, s.GetTimestamp(), err, &errs); skipSeries {
				break
			}
		}
		if skipSeries {
			continue
		}
		for _, h := range ts.GetHistograms() {
			if err = checkNotAncient(h.GetTimestamp()); err == nil {
				ih, fh := HistogramFromPB(h)
				ref, err = app.AppendHistogram(ref, lset, h.GetTimestamp(), ih, fh)
			}
			if err == nil {
				appended++
				continue
			}
			if i.handleAppendErr(tenant, lset, h.GetTimestamp(), err, &errs) {
				break
			}
		}
	}
	// Commits of one tenant are serialized: Commit writes the WAL and then the head, so two concurrent commits to
	// one series (a replica write overtaken by the next push) could reach the WAL in one order and the head in
	// the other, and a replay would then drop a sample the head had accepted.
	u.commitMtx.Lock()
	err = app.Commit()
	u.commitMtx.Unlock()
	if err != nil {
		return false, status.Errorf(codes.Internal, "commit samples of tenant %s: %v", tenant, err)
	}
	i.metrics.appendedSamples.WithLabelValues(tenant).Add(float64(appended))
	i.metrics.activeSeries.WithLabelValues(tenant).Set(float64(u.db.Head().NumSeries()))
	return false, i.pushError(tenant, &errs)
}

// handleAppendErr counts a failed append and reports whether the rest of the series should be skipped.
func (i *Ingester) handleAppendErr(tenant string, lset labels.Labels, t int64, err error, errs *appendErrors) bool {
	series := lset.String()
	switch {
	case errors.Is(err, errPerUserSeriesLimit):
		i.discard(tenant, reasonPerUserSeriesLimit, 1)
		if errs.limitedMetric == nil {
			errs.limitedMetric = map[string]int{}
		}
		errs.limitedMetric[lset.Get(model.MetricNameLabel)]++
		errs.add(reasonPerUserSeriesLimit, nil)
		return true
	case errors.Is(err, errPerMetricSeriesLimit):
		i.discard(tenant, reasonPerMetricSeriesLimit, 1)
		errs.add(reasonPerMetricSeriesLimit, tenancy.NewMaxSeriesPerMetricError(i.overrides.MaxGlobalSeriesPerMetric(tenant), lset.Get(model.MetricNameLabel)))
		return true
	case errors.Is(err, storage.ErrOutOfOrderSample), errors.Is(err, storage.ErrTooOldSample):
		i.discard(tenant, reasonSampleOutOfOrder, 1)
		errs.add(reasonSampleOutOfOrder, tenancy.NewSampleOutOfOrderError(t, series))
	case errors.Is(err, storage.ErrOutOfBounds):
		i.discard(tenant, reasonSampleTooOld, 1)
		errs.add(reasonSampleTooOld, tenancy.NewSampleTimestampTooOldError(t, series))
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		i.discard(tenant, reasonSampleDuplicate, 1)
		errs.add(reasonSampleDuplicate, tenancy.NewSampleDuplicateTimestampError(t, series))
	default:
		i.discard(tenant, reasonInvalid, 1)
		errs.add(reasonInvalid, &tenancy.Error{ID: tenancy.IDLabelInvalid, Status: 400, Msg: errors.Wrapf(err, "append sample of series %.200s", series).Error()})
	}
	return false
}

func (i *Ingester) discard(tenant, reason string, n int) {
	if i.discarded != nil {
		i.discarded.Add(tenant, reason, n)
	}
}

// pushError returns the first error of the push; a series-limit error names the metric that had the most
// series refused, so the user knows where their new series come from.
func (i *Ingester) pushError(tenant string, errs *appendErrors) error {
	if len(errs.order) == 0 {
		return nil
	}
	reason := errs.order[0]
	if reason == reasonPerUserSeriesLimit {
		top, topN := "", 0
		for m, n := range errs.limitedMetric {
			if n > topN || (n == topN && m < top) {
				top, topN = m, n
			}
		}
		return tenancy.NewMaxSeriesPerUserError(i.overrides.MaxGlobalSeriesPerUser(tenant), top)
	}
	return errs.first[reason]
}

// Ship ships every tenant's new blocks (it is called periodically, and on flush).
func (i *Ingester) Ship(ctx context.Context) error {
	var firstErr error
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil || u.shipper == nil {
			continue
		}
		if err := u.ship(ctx); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// Flush cuts every tenant's whole head into blocks (aligned to the block duration, ending at the data's last
// sample) and ships them. Appends to a tenant wait while its head is cut, so that none lands in a range being
// written to a block and is then truncated from the head unwritten.
func (i *Ingester) Flush(ctx context.Context) error {
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil {
			continue
		}
		if err := u.flush(i.cfg.BlockDuration.Milliseconds()); err != nil {
			return errors.Wrapf(err, "flush head of tenant %s", tenant)
		}
	}
	return i.Ship(ctx)
}

// flush cuts the head of the tenant's TSDB into blocks, unless it was closed as idle meanwhile.
func (u *userTSDB) flush(blockMs int64) error {
	u.closeMtx.RLock()
	defer u.closeMtx.RUnlock()
	if u.closed {
		return nil
	}
	u.appendMtx.Lock()
	defer u.appendMtx.Unlock()
	return compactHead(u.db, blockMs)
}

// compactHead writes the whole head into blocks, one per block-duration-aligned range, as Mimir's forced
// compaction does: the last block ends at the head's last sample, not at the end of its aligned range, so the
// head goes on accepting every sample newer than what it held (a block ending at the range's end would make the
// TSDB refuse everything older than that end as out of bounds). Each block starts at the first sample left in
// the head, so ranges without data are skipped rather than walked. Appends must not run meanwhile. Then the
// out-of-order head, if any, is cut too. A sample stamped math.MaxInt64 cannot be in a block (a block's max time
// is exclusive): it stays in the head, and the cut still ends.
func compactHead(db *tsdb.DB, blockMs int64) error {
	h := db.Head()
	for h.NumSeries() > 0 {
		dataMin, err := headDataMinTime(h)
		if err != nil {
			return err
		}
		minT, maxT, ok, last := nextHeadRange(max(h.MinTime(), dataMin), h.MaxTime(), blockMs)
		if !ok {
			break
		}
		if err := db.CompactHead(tsdb.NewRangeHeadWithIsolationDisabled(h, minT, maxT)); err != nil {
			return errors.Wrapf(err, "compact head range [%d, %d]", minT, maxT)
		}
		if last {
			break
		}
		if h.MinTime() <= maxT { // cutting a block truncates the head up to the block's end
			return errors.Newf("compact head range [%d, %d]: the head's min time %d did not move past it", minT, maxT, h.MinTime())
		}
	}
	if err := db.CompactOOOHead(context.Background()); err != nil {
		return errors.Wrap(err, "compact out-of-order head")
	}
	return nil
}

// headDataMinTime is the time of the first in-order sample in the head at or after its min time, or
// math.MaxInt64 when there is none.
func headDataMinTime(h *tsdb.Head) (int64, error) {
	ir, err := h.Index()
	if err != nil {
		return 0, errors.Wrap(err, "read head index")
	}
	defer ir.Close()
	name, value := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), name, value)
	if err != nil {
		return 0, errors.Wrap(err, "read head postings")
	}
	var (
		out  = int64(math.MaxInt64)
		b    labels.ScratchBuilder
		chks []chunks.Meta
	)
	for p.Next() {
		if err := ir.Series(p.At(), &b, &chks); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // garbage-collected meanwhile
			}
			return 0, errors.Wrap(err, "read head series")
		}
		for _, c := range chks {
			out = min(out, c.MinTime)
		}
	}
	return out, errors.Wrap(p.Err(), "iterate head postings")
}

// nextHeadRange is the next range [minT, maxT] of a head holding samples in [headMin, headMax] to cut into a
// block: from headMin to the end of its block-aligned range, or to headMax (then last) if that comes first.
// ok is false when there is nothing to cut. It does not overflow for any timestamps.
func nextHeadRange(headMin, headMax, blockMs int64) (minT, maxT int64, ok, last bool) {
	if headMin == math.MaxInt64 || headMax == math.MinInt64 {
		return 0, 0, false, true // empty head
	}
	headMax = min(headMax, math.MaxInt64-1) // a block covers [min, max+1): a sample at MaxInt64 never fits
	if headMin > headMax {
		return 0, 0, false, true
	}
	start := int64(math.MinInt64) // the start of headMin's aligned range, or MinInt64 when that is below it
	if m := mod(headMin, blockMs); headMin >= math.MinInt64+m {
		start = headMin - m
	}
	if d := headMax - start; d >= blockMs || d < 0 { // the range ends before headMax (d < 0: the difference overflowed)
		return headMin, start + blockMs - 1, true, false
	}
	return headMin, headMax, true, true
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// ApplyLimits applies to each open TSDB the limits that live in the TSDB itself — the out-of-order window — when a
// runtime override changed them, without reopening it.
func (i *Ingester) ApplyLimits() {
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil {
			continue
		}
		want := i.overrides.OutOfOrderTimeWindow(tenant).Milliseconds()
		if u.oooWindow.Load() == want {
			continue
		}
		conf := &config.Config{StorageConfig: config.StorageConfig{TSDBConfig: &config.TSDBConfig{OutOfOrderTimeWindow: want}}}
		if err := u.db.ApplyConfig(conf); err != nil {
			level.Warn(i.logger).Log("msg", "applying the out-of-order window", "tenant", tenant, "err", err)
			continue
		}
		u.oooWindow.Store(want)
		level.Info(i.logger).Log("msg", "out-of-order window changed", "tenant", tenant, "window", time.Duration(want)*time.Millisecond)
	}
}

// RunShipping ships every ShipInterval, and applies changed limits every 10s, until ctx is done.
func (i *Ingester) RunShipping(ctx context.Context) {
	t := time.NewTicker(i.cfg.ShipInterval)
	defer t.Stop()
	limits := time.NewTicker(10 * time.Second)
	defer limits.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-limits.C:
			i.ApplyLimits()
		case <-t.C:
			_ = i.Ship(ctx)
			i.CloseIdle()
			i.metadata.purge()
			for _, tenant := range i.Tenants() {
				if u := i.get(tenant); u != nil {
					i.metrics.activeSeries.WithLabelValues(tenant).Set(float64(u.db.Head().NumSeries()))
				}
			}
		}
	}
}

// CloseIdle closes the TSDBs idle for CloseIdleTSDBTimeout whose head is empty and whose blocks are all shipped,
// and removes their directories. It returns the tenants closed.
func (i *Ingester) CloseIdle() []string {
	if i.cfg.CloseIdleTSDBTimeout <= 0 || i.shippers == nil {
		return nil
	}
	var closed []string
	for _, tenant := range i.Tenants() {
		u := i.get(tenant)
		if u == nil || i.now().Sub(time.Unix(0, u.lastWrite.Load())) < i.cfg.CloseIdleTSDBTimeout {
			continue
		}
		if ok, err := i.closeIdle(u); !ok {
			continue
		} else if err != nil {
			level.Warn(i.logger).Log("msg", "closing idle TSDB", "tenant", tenant, "err", err)
			continue
		}
		level.Info(i.logger).Log("msg", "closed idle TSDB: everything is shipped", "tenant", tenant)
		closed = append(closed, tenant)
	}
	return closed
}

// closeIdle closes u if it is still idle-closable: empty head, every block shipped. ok reports whether it was
// closed (err then says whether its directory could not be removed). Everything the tenant had in this ingester
// goes with it: its collectors (the shipper's) and its series of the ingester's metrics.
func (i *Ingester) closeIdle(u *userTSDB) (ok bool, err error) {
	// Serialised with getOrOpen: a write arriving now opens the tenant again only once its metrics are gone, or
	// registering them again would fail.
	i.creating.Lock()
	defer i.creating.Unlock()
	u.closeMtx.Lock()
	defer u.closeMtx.Unlock()
	if u.closed || u.db.Head().NumSeries() > 0 || !allShipped(u.db) {
		return false, nil
	}
	i.mtx.Lock()
	delete(i.tsdbs, u.tenant)
	i.mtx.Unlock()
	u.closed = true
	dir := u.db.Dir()
	err = u.db.Close()
	if err == nil {
		err = os.RemoveAll(dir)
	}
	u.reg.unregisterAll()
	i.deleteTenantMetrics(u.tenant)
	// Counted as closed only now that everything of the tenant is gone (its metrics, its directory).
	i.mtx.RLock()
	i.metrics.tsdbs.Set(float64(len(i.tsdbs)))
	i.mtx.RUnlock()
	return true, err
}

// allShipped reports whether every block of db is recorded as shipped.
func allShipped(db *tsdb.DB) bool {
	shipped, err := block.ReadShipperMeta(db.Dir())
	if err != nil {
		return len(db.Blocks()) == 0
	}
	ids := map[ulid.ULID]bool{}
	for _, id := range shipped.Uploaded {
		ids[id] = true
	}
	for _, b := range db.Blocks() {
		if !ids[b.Meta().ULID] {
			return false
		}
	}
	return true
}

// Close closes every TSDB; no write is accepted afterwards.
func (i *Ingester) Close() error {
	i.creating.Lock()
	defer i.creating.Unlock()
	i.mtx.Lock()
	defer i.mtx.Unlock()
	i.closed = true
	var firstErr error
	for tenant, u := range i.tsdbs {
		if err := u.db.Close(); err != nil && firstErr == nil {
			firstErr = errors.Wrapf(err, "close TSDB of tenant %s", tenant)
		}
		u.reg.unregisterAll()
		delete(i.tsdbs, tenant)
	}
	return firstErr
}
