package receive

import (
	"context"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
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
	// ActiveSeriesIdleTimeout is how long after its last sample a series counts as active for the cardinality
	// API's count_method=active (Mimir's active_series_metrics_idle_timeout; 0: DefaultActiveSeriesIdleTimeout).
	ActiveSeriesIdleTimeout time.Duration `yaml:"active_series_metrics_idle_timeout"`
	// Instance is this ingester's membership in the ingester ring (ID, zone, address, tokens file).
	Instance ring.InstanceConfig `yaml:"ring"`
	// IsolationEnabled turns on the TSDB's isolation: a query never sees part of a write being committed. Off by
	// default, as in Mimir and Cortex (blocks_storage.tsdb.isolation_enabled): it costs every append and commit
	// bookkeeping, and every series a ring of pending appends (5.5 MB of an ingester's heap at 100k series under
	// load), for a guarantee remote write cannot use anyway: its writes are retried and split into requests, so
	// a query may always see some of a scrape's samples and not others.
	IsolationEnabled bool `yaml:"isolation_enabled"`
	// MaxConcurrentPushes is how many forwarded writes (RemoteWrite from distributors) the ingester decodes and
	// appends at once; the others wait, holding only the bytes received, until a slot frees or their caller gives
	// up (the distributor's remote_timeout). The work is CPU-bound: more at once only holds more decoded requests
	// in memory and contends on the same locks. An ingester that falls behind (a slow replica, while the
	// distributor's quorum does not wait for it) so stays within its memory instead of decoding every request it
	// is sent. 0: 2 × GOMAXPROCS (at least 4).
	MaxConcurrentPushes int `yaml:"max_concurrent_pushes"`
	// InstanceLimits bound what this ingester takes, over all tenants (Mimir's ingester.instance_limits):
	// max_inflight_push_requests counts the forwarded writes waiting for a push slot and those running,
	// max_inflight_push_requests_bytes the bytes they were received as (what a waiting one holds); and
	// max_ingestion_rate, max_tenants, max_series (IngesterInstanceLimits). A write beyond them is answered
	// Unavailable at once: the distributor counts it against that replica, the quorum of the others still
	// acknowledges the write, and an overloaded ingester stays within its memory however many distributors send
	// to it. 0 means no limit.
	InstanceLimits IngesterInstanceLimits `yaml:"instance_limits"`
	// StripeSize is how many stripes (each a lock and two hash maps) a tenant's TSDB head splits its series
	// index into (Mimir's blocks_storage.tsdb.stripe_size; a power of two). Every tenant's head has them, however
	// few series it has. 0: DefaultStripeSize.
	StripeSize int `yaml:"stripe_size"`
}

// DefaultStripeSize is the ingester's stripe_size default: smaller than Prometheus's and Mimir's 16384.
const DefaultStripeSize = 1024

// DefaultIngesterConfig is Mimir's: 2h blocks, kept 13h locally, shipped every minute.
func DefaultIngesterConfig() IngesterConfig {
	return IngesterConfig{BlockDuration: 2 * time.Hour, Retention: 13 * time.Hour, ShipInterval: time.Minute, CloseIdleTSDBTimeout: 13 * time.Hour,
		MetadataRetainPeriod: DefaultMetadataRetainPeriod, ActiveSeriesIdleTimeout: DefaultActiveSeriesIdleTimeout, Instance: ring.InstanceConfig{ID: ring.DefaultInstanceID()},
		StripeSize: DefaultStripeSize, InstanceLimits: DefaultIngesterInstanceLimits()}
}

// DefaultIngesterInstanceLimits are Mimir's ingester default of 30,000 requests at once, and at most 1 GiB of
// them (Mimir: no limit), hundreds of ordinary forwarded writes (a MiB or so each); no limit on the ingestion
// rate, tenants and series (Mimir's defaults).
func DefaultIngesterInstanceLimits() IngesterInstanceLimits {
	return IngesterInstanceLimits{InstanceLimits: InstanceLimits{MaxInflightPushRequests: 30_000, MaxInflightPushRequestsBytes: 1 << 30}}
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
	if c.MaxConcurrentPushes < 0 {
		return errors.Newf("ingester: max_concurrent_pushes must be 0 (2 × GOMAXPROCS) or positive, got %d", c.MaxConcurrentPushes)
	}
	if err := c.InstanceLimits.Validate(); err != nil {
		return err
	}
	if c.StripeSize < 0 || c.StripeSize&(c.StripeSize-1) != 0 {
		return errors.Newf("ingester: stripe_size must be a power of two (or 0: %d), got %d", DefaultStripeSize, c.StripeSize)
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
	pushes    *prometheus.GaugeVec
	pushBytes prometheus.GaugeFunc
	// Writes refused by instance_limits, by limit.
	rejectedInflight, rejectedInflightBytes                      prometheus.Counter
	rejectedIngestionRate, rejectedMaxTenants, rejectedMaxSeries prometheus.Counter
	appendedSamples                                              *prometheus.CounterVec
	activeSeries                                                 *prometheus.GaugeVec
	walReplay                                                    *prometheus.GaugeVec
	shippedBlocks                                                *prometheus.CounterVec
	shipFailures                                                 *prometheus.CounterVec
	tsdbs                                                        prometheus.Gauge
}

func newIngesterMetrics(reg prometheus.Registerer, l *inflight) *ingesterMetrics {
	rejected := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "strata_ingester_instance_rejected_requests_total",
		Help: "Writes refused by the ingester's instance_limits, by limit (Mimir's cortex_ingester_instance_rejected_requests_total).",
	}, []string{"reason"})
	return &ingesterMetrics{
		pushBytes: promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strata_ingester_inflight_push_requests_bytes",
			Help: "Bytes of the forwarded writes waiting or running (at most ingester.instance_limits.max_inflight_push_requests_bytes).",
		}, func() float64 { return float64(l.bytes.Load()) }),
		rejectedInflight:      rejected.WithLabelValues("ingester_max_inflight_push_requests"),
		rejectedInflightBytes: rejected.WithLabelValues("ingester_max_inflight_push_requests_bytes"),
		rejectedIngestionRate: rejected.WithLabelValues(reasonInstanceMaxIngestionRate),
		rejectedMaxTenants:    rejected.WithLabelValues(reasonInstanceMaxTenants),
		rejectedMaxSeries:     rejected.WithLabelValues(reasonInstanceMaxSeries),
		pushes: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_ingester_inflight_push_requests",
			Help: "Forwarded writes being handled, by state: waiting for a slot, or running (at most ingester.max_concurrent_pushes).",
		}, []string{"state"}),
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
	// limitShare is this ingester's share of a tenant's global series limits (GlobalLimitShare).
	limitShare func(tenant string) float64
	now        func() time.Time
	logger     log.Logger
	reg        prometheus.Registerer
	metrics    *ingesterMetrics
	metadata   *ingesterMetadata         // metric metadata (ingester_metadata.go)
	lateWrites *lateWrites               // pushes older than the tenant's cache boundary (late_writes.go)
	forwards   *freeList[forwardedWrite] // decoded forward requests (ingester_forward.go)
	// pushSlots bounds the forwarded writes decoded and appended at once (MaxConcurrentPushes).
	pushSlots chan struct{}
	// inflight counts the forwarded writes held (waiting or running) against InstanceLimits.
	inflight *inflight
	// ingestionRate averages the samples appended per second (InstanceLimits.MaxIngestionRate; nil without).
	ingestionRate *ingestionRate
	// appendScratch pools appendRequest's per-series lookups.
	appendScratch appendScratchPool
	// received pools the series of forwarded writes as received (seriesRefs).
	received receivedPool

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

// WithLimitShare sets the function giving this ingester's share of a tenant's global series limits (default 1).
func WithLimitShare(f func(tenant string) float64) IngesterOption {
	return func(i *Ingester) { i.limitShare = f }
}

// WithIngesterClock sets the clock idle TSDBs and samples too far in the future are judged by (tests).
func WithIngesterClock(now func() time.Time) IngesterOption { return func(i *Ingester) { i.now = now } }

// WithShippers sets how blocks are shipped; without it blocks stay local.
func WithShippers(f ShipperFactory) IngesterOption { return func(i *Ingester) { i.shippers = f } }

// NewIngester returns an ingester keeping its TSDBs under dir. Call Open before use.
func NewIngester(cfg IngesterConfig, dir string, overrides *tenancy.Overrides, discarded *DiscardedSamples, logger log.Logger, reg prometheus.Registerer, opts ...IngesterOption) *Ingester {
	slots := cfg.MaxConcurrentPushes
	if slots == 0 {
		slots = max(4, 2*runtime.GOMAXPROCS(0))
	}
	l := &inflight{maxRequests: int64(cfg.InstanceLimits.MaxInflightPushRequests), maxBytes: int64(cfg.InstanceLimits.MaxInflightPushRequestsBytes),
		who: "ingester", key: "ingester.instance_limits"}
	i := &Ingester{
		forwards:  newForwardedPool(slots),
		pushSlots: make(chan struct{}, slots),
		inflight:  l,
		cfg:       cfg, dir: dir, overrides: overrides, discarded: discarded, logger: logger, reg: reg,
		limitShare: func(string) float64 { return 1 },
		now:        time.Now,
		metrics:    newIngesterMetrics(reg, l),
		tsdbs:      map[string]*userTSDB{},
	}
	if cfg.InstanceLimits.MaxIngestionRate > 0 {
		i.ingestionRate = &ingestionRate{}
	}
	for _, o := range opts {
		o(i)
	}
	i.metadata = newIngesterMetadata(i, NewDiscardedMetadata(reg), reg)
	i.lateWrites = newLateWrites(overrides, i.now)
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
		if _, err := i.getOrOpen(e.Name(), 0); err != nil {
			return err
		}
	}
	return nil
}

// tenantLabels are the labels of every series served and block shipped for a tenant.
func (i *Ingester) tenantLabels(tenant string) labels.Labels {
	b := labels.NewBuilder(labels.FromMap(i.cfg.ExternalLabels))
	b.Set(tenancy.TenantIDLabel, tenant)
	return b.Labels()
}

// ExternalLabels returns the configured external labels (without tenant_id).
func (i *Ingester) ExternalLabels() labels.Labels { return labels.FromMap(i.cfg.ExternalLabels) }

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

// RingLifecycler is an ingester's membership of the ingester ring, as Stop leaves it (dskit's BasicLifecycler).
type RingLifecycler interface {
	services.Service
	ChangeState(ctx context.Context, state dskitring.InstanceState) error
}

// shutdownFlushTimeout bounds the flush on shutdown; what it does not flush stays in the WAL for the next start.
const shutdownFlushTimeout = 5 * time.Minute

// Stop shuts the ingester down (SIGTERM), after RunShipping has returned: LEAVING in the ring, so distributors
// write to the other replicas; no new writes (StopWrites); heads flushed into blocks and shipped; the ring left;
// TSDBs closed. A failed flush or ring step is logged and does not stop the sequence (the WAL keeps the data);
// the error is Close's. lc may be nil (no ring).
func (i *Ingester) Stop(lc RingLifecycler) error {
	level.Info(i.logger).Log("msg", "ingester shutting down: leaving the ring, flushing and shipping")
	if lc != nil {
		if err := lc.ChangeState(context.Background(), dskitring.LEAVING); err != nil {
			level.Warn(i.logger).Log("msg", "could not mark the ingester LEAVING", "err", err)
		}
	}
	i.StopWrites()
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), shutdownFlushTimeout)
	defer cancelFlush()
	if err := i.Flush(flushCtx); err != nil {
		level.Error(i.logger).Log("msg", "flush on shutdown failed; the WAL keeps the data for the next start", "err", err)
	}
	if lc != nil {
		if err := services.StopAndAwaitTerminated(context.Background(), lc); err != nil {
			level.Warn(i.logger).Log("msg", "leaving the ring", "err", err)
		}
	}
	return i.Close()
}
