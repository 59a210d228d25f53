package sidecar

import (
	"context"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// ErrNoExternalLabels is why a sidecar refuses to start next to a Prometheus without external labels: its blocks
// and series could not be told from another Prometheus's. The message is Thanos's.
var ErrNoExternalLabels = errors.New("no external labels configured on Prometheus server, uniquely identifying external labels must be configured; see https://thanos.io/tip/thanos/storage.md#external-labels for details.")

// Config is the sidecar's configuration (the sidecar section of the config file).
type Config struct {
	// PrometheusURL is the base URL of the Prometheus next to the sidecar.
	PrometheusURL string `yaml:"prometheus_url"`
	// PrometheusReadyTimeout bounds the wait for Prometheus (and its external labels) at start.
	PrometheusReadyTimeout time.Duration `yaml:"prometheus_ready_timeout"`
	// TSDBPath is Prometheus's data directory (--storage.tsdb.path), whose blocks are uploaded.
	TSDBPath string `yaml:"tsdb_path"`
	// Tenant owns the data: blocks go to <tenant>/ of the bucket, series carry tenant_id=<tenant>.
	Tenant string `yaml:"tenant"`
	// UploadCompacted uploads blocks Prometheus compacted (level > 1) too, e.g. the history of a Prometheus
	// that ran without a sidecar. Only level-1 blocks otherwise, as Thanos.
	UploadCompacted bool `yaml:"upload_compacted"`
	// ShipInterval is how often new blocks are looked for and uploaded (Thanos: 30s); they are also looked for
	// once at shutdown.
	ShipInterval time.Duration `yaml:"ship_interval"`
	// RefreshInterval is how often the external labels are read again (Thanos: 30s), a heartbeat too.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
}

// DefaultConfig returns Thanos's defaults; Tenant and TSDBPath must be set.
func DefaultConfig() Config {
	return Config{
		PrometheusURL:          "http://localhost:9090",
		PrometheusReadyTimeout: 10 * time.Minute,
		ShipInterval:           30 * time.Second,
		RefreshInterval:        30 * time.Second,
	}
}

// Validate checks the config of a sidecar about to run.
func (c Config) Validate() error {
	if c.Tenant == "" {
		return errors.New("sidecar: --tenant must be set: the tenant the Prometheus's data belongs to")
	}
	if err := tenancy.ValidateTenantID(c.Tenant); err != nil {
		return errors.Wrap(err, "sidecar: --tenant")
	}
	if c.TSDBPath == "" {
		return errors.New("sidecar: --tsdb.path must be set: Prometheus's data directory (--storage.tsdb.path)")
	}
	if c.PrometheusReadyTimeout <= 0 || c.ShipInterval <= 0 || c.RefreshInterval <= 0 {
		return errors.New("sidecar: prometheus ready timeout, ship interval and refresh interval must be positive")
	}
	if _, err := NewClient(c.PrometheusURL, nil); err != nil {
		return errors.Wrap(err, "sidecar: --prometheus.url")
	}
	return nil
}

type sidecarMetrics struct {
	prometheusUp  prometheus.Gauge
	lastHeartbeat prometheus.Gauge
}

func newSidecarMetrics(reg prometheus.Registerer) *sidecarMetrics {
	f := promauto.With(reg)
	return &sidecarMetrics{
		prometheusUp: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_sidecar_prometheus_up",
			Help: "1 when the sidecar's last read of Prometheus's configuration succeeded.",
		}),
		lastHeartbeat: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_sidecar_last_heartbeat_success_time_seconds",
			Help: "Unix time of the sidecar's last successful read of Prometheus's configuration.",
		}),
	}
}

// Option configures a Sidecar.
type Option func(*Sidecar)

// WithHTTPClient sets the HTTP client of the requests to Prometheus (default: one without a timeout; requests
// are bounded by their contexts).
func WithHTTPClient(hc *http.Client) Option { return func(s *Sidecar) { s.httpClient = hc } }

// WithOverrides bounds each read of the tenant's data by its max_fetched_series_per_query and
// max_fetched_chunk_bytes_per_query, as the store-gateway does (default: no bounds).
func WithOverrides(o *tenancy.Overrides) Option { return func(s *Sidecar) { s.overrides = o } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(s *Sidecar) { s.now = now } }

// Sidecar runs next to one Prometheus on behalf of one tenant. It owns three things: the external labels (read
// at start, where none is a refusal, then every RefreshInterval), the StoreAPI over Prometheus's data (Store),
// and the shipper of its blocks (every ShipInterval and at shutdown).
type Sidecar struct {
	cfg        Config
	logger     log.Logger
	metrics    *sidecarMetrics
	httpClient *http.Client
	overrides  *tenancy.Overrides
	now        func() time.Time
	// retryInterval is the wait between two reads of the external labels at start (Thanos: 2s).
	retryInterval time.Duration

	client  *Client
	store   *Store
	shipper *block.Shipper

	mtx       sync.Mutex
	extLabels labels.Labels // Prometheus's, without tenant_id; empty until read
	minTime   int64         // Prometheus's lowest timestamp (ms), when minTimeKnown; math.MaxInt64: it is empty
	// minTimeKnown: minTime was read at least once.
	minTimeKnown bool
	ready        atomic.Bool // the external labels were read: the StoreAPI answers
}

// New returns the sidecar of cfg (validated) shipping into <tenant>/ of bkt. Nothing runs until Run.
func New(cfg Config, bkt objstore.Bucket, logger log.Logger, reg prometheus.Registerer, opts ...Option) (*Sidecar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sidecar{cfg: cfg, logger: logger, metrics: newSidecarMetrics(reg), now: time.Now, minTime: math.MaxInt64, retryInterval: 2 * time.Second}
	for _, o := range opts {
		o(s)
	}
	c, err := NewClient(cfg.PrometheusURL, s.httpClient)
	if err != nil {
		return nil, err
	}
	s.client = c
	db := &promDB{client: c, startTime: s.startTime, limits: s.readLimits}
	s.store = &Store{TSDBStore: store.NewTSDBStore(store.SingleTenant(cfg.Tenant, db), logger,
		store.WithExternalLabelsFunc(s.ExternalLabels), store.WithComponentType(store.ComponentSidecar)), ready: s.ready.Load}
	var shipOpts []block.ShipperOption
	if cfg.UploadCompacted {
		shipOpts = append(shipOpts, block.WithUploadCompacted())
	}
	s.shipper = block.NewShipper(log.With(logger, "tenant", cfg.Tenant), reg, cfg.TSDBPath,
		objstore.NewPrefixedBucket(bkt, cfg.Tenant), s.blockLabels, block.SidecarSource, shipOpts...)
	return s, nil
}

// Store is the sidecar's StoreAPI (thanos.Store and thanos.info.Info): Prometheus's live data with its external
// labels and tenant_id=<tenant>, for requests of that tenant only (another tenant's request gets no series, as
// from every Strata store). External-label matchers are decided by the sidecar, never sent to Prometheus.
func (s *Sidecar) Store() *Store { return s.store }

// ExternalLabels returns Prometheus's external labels as last read (empty before Run has read them).
func (s *Sidecar) ExternalLabels() labels.Labels {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.extLabels
}

// readLimits are the tenant's per-query fetch limits, now (runtime overrides apply at once).
func (s *Sidecar) readLimits() ReadLimits {
	if s.overrides == nil {
		return ReadLimits{}
	}
	return ReadLimits{MaxSeries: s.overrides.MaxFetchedSeriesPerQuery(s.cfg.Tenant), MaxChunkBytes: s.overrides.MaxFetchedChunkBytesPerQuery(s.cfg.Tenant)}
}

// blockLabels are the thanos.labels of an uploaded block: the external labels and tenant_id.
func (s *Sidecar) blockLabels() labels.Labels {
	b := labels.NewBuilder(s.ExternalLabels())
	b.Set(tenancy.TenantIDLabel, s.cfg.Tenant)
	return b.Labels()
}

// startTime is the min time of the sidecar's Info: Prometheus's lowest timestamp, but never later than now (an
// empty TSDB reports a time far in the future, and a querier caching that would skip the sidecar until its next
// Info, while samples arrive); MinInt64 (no bound) while it could not be read. It is asked again while unknown
// or empty.
func (s *Sidecar) startTime() (int64, error) {
	s.mtx.Lock()
	minT, known := s.minTime, s.minTimeKnown
	s.mtx.Unlock()
	if !known || minT == math.MaxInt64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.refreshMinTime(ctx)
		s.mtx.Lock()
		minT, known = s.minTime, s.minTimeKnown
		s.mtx.Unlock()
	}
	if !known {
		return math.MinInt64, nil
	}
	return min(minT, s.now().UnixMilli()), nil
}

// refreshMinTime reads Prometheus's lowest timestamp; a failure keeps the last value.
func (s *Sidecar) refreshMinTime(ctx context.Context) {
	minT, err := s.client.LowestTimestamp(ctx)
	if err != nil {
		level.Warn(s.logger).Log("msg", "reading Prometheus's lowest timestamp", "err", err)
		return
	}
	s.mtx.Lock()
	s.minTime, s.minTimeKnown = minT, true
	s.mtx.Unlock()
}

// Run waits (at most PrometheusReadyTimeout, asking every 2s) for Prometheus to answer with its external labels,
// refuses to go on without any (ErrNoExternalLabels), calls ready, then re-reads them every RefreshInterval and
// ships new blocks every ShipInterval until ctx ends; it ships once more before returning.
func (s *Sidecar) Run(ctx context.Context, ready func()) error {
	if err := s.waitForPrometheus(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	s.checkBlockDurations(ctx)
	ready()

	refresh := time.NewTicker(s.cfg.RefreshInterval)
	defer refresh.Stop()
	ship := time.NewTicker(s.cfg.ShipInterval)
	defer ship.Stop()
	s.ship(ctx)
	for {
		select {
		case <-ctx.Done():
			// Blocks cut since the last sync are uploaded now; a bounded context, since ctx is done.
			shipCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			s.ship(shipCtx)
			cancel()
			return nil
		case <-refresh.C:
			s.refresh(ctx)
		case <-ship.C:
			s.ship(ctx)
		}
	}
}

// waitForPrometheus reads the external labels, retrying every retryInterval for at most PrometheusReadyTimeout.
func (s *Sidecar) waitForPrometheus(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PrometheusReadyTimeout)
	defer cancel()
	retry := time.NewTicker(s.retryInterval)
	defer retry.Stop()
	for {
		reqCtx, reqCancel := context.WithTimeout(ctx, 5*time.Second)
		lset, err := s.client.ExternalLabels(reqCtx)
		reqCancel()
		if err == nil {
			s.setHeartbeat(true)
			if lset.IsEmpty() {
				return ErrNoExternalLabels
			}
			if err := s.checkTenantLabel(lset); err != nil {
				return err
			}
			s.mtx.Lock()
			s.extLabels = lset
			s.mtx.Unlock()
			level.Info(s.logger).Log("msg", "read Prometheus's external labels", "external_labels", lset.String(), "tenant", s.cfg.Tenant)
			minCtx, minCancel := context.WithTimeout(ctx, 5*time.Second)
			s.refreshMinTime(minCtx)
			minCancel()
			s.ready.Store(true)
			return nil
		}
		s.setHeartbeat(false)
		level.Warn(s.logger).Log("msg", "failed to read Prometheus's external labels. Is Prometheus running? Retrying", "err", err)
		select {
		case <-ctx.Done():
			return errors.Wrapf(err, "Prometheus at %s did not answer with its external labels within %s", s.cfg.PrometheusURL, s.cfg.PrometheusReadyTimeout)
		case <-retry.C:
		}
	}
}

// refresh re-reads the external labels and the lowest timestamp. Labels Prometheus reports empty (a
// configuration being edited) keep the last ones: blocks are never uploaded without them.
func (s *Sidecar) refresh(ctx context.Context) {
	reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lset, err := s.client.ExternalLabels(reqCtx)
	if err != nil {
		s.setHeartbeat(false)
		level.Warn(s.logger).Log("msg", "heartbeat failed: reading Prometheus's external labels", "err", err)
		return
	}
	s.setHeartbeat(true)
	s.refreshMinTime(reqCtx)
	if lset.IsEmpty() {
		level.Error(s.logger).Log("msg", "Prometheus reports no external labels now; keeping the last ones", "err", ErrNoExternalLabels)
		return
	}
	if err := s.checkTenantLabel(lset); err != nil {
		level.Error(s.logger).Log("msg", "keeping the last external labels", "err", err)
		return
	}
	s.mtx.Lock()
	old := s.extLabels
	s.extLabels = lset
	s.mtx.Unlock()
	if !labels.Equal(old, lset) {
		level.Warn(s.logger).Log("msg", "Prometheus's external labels changed", "old", old.String(), "new", lset.String())
	}
}

// checkTenantLabel refuses external labels naming another tenant in tenant_id: the data would be served and
// uploaded as --tenant's, labelled as another's.
func (s *Sidecar) checkTenantLabel(lset labels.Labels) error {
	if v := lset.Get(tenancy.TenantIDLabel); v != "" && v != s.cfg.Tenant {
		return errors.Newf("Prometheus's external label %s=%q names another tenant than --tenant=%s", tenancy.TenantIDLabel, v, s.cfg.Tenant)
	}
	return nil
}

func (s *Sidecar) setHeartbeat(ok bool) {
	if !ok {
		s.metrics.prometheusUp.Set(0)
		return
	}
	s.metrics.prometheusUp.Set(1)
	s.metrics.lastHeartbeat.Set(float64(s.now().UnixNano()) / 1e9)
}

// ship uploads the blocks not uploaded yet; failures are logged and retried at the next sync. The external
// labels are read first, so that a block uploaded after Prometheus's labels changed (a reload) carries the new
// ones, as the StoreAPI does from then on, not those of up to RefreshInterval ago; when Prometheus cannot be
// asked, the last ones read are used.
func (s *Sidecar) ship(ctx context.Context) {
	s.refresh(ctx)
	uploaded, err := s.shipper.Sync(ctx)
	if err != nil {
		level.Warn(s.logger).Log("msg", "shipping blocks", "uploaded", uploaded, "err", err)
		return
	}
	if uploaded > 0 {
		level.Info(s.logger).Log("msg", "shipped blocks", "uploaded", uploaded)
	}
}

// checkBlockDurations warns when Prometheus may compact blocks before they are shipped (Thanos refuses to start
// then): min and max block durations must be equal unless compacted blocks are uploaded too.
func (s *Sidecar) checkBlockDurations(ctx context.Context) {
	if s.cfg.UploadCompacted {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var flags map[string]string
	if _, err := s.client.getAPI(ctx, "/api/v1/status/flags", nil, &flags); err != nil {
		level.Warn(s.logger).Log("msg", "could not read Prometheus's flags; block durations not checked", "err", err)
		return
	}
	minD, maxD := flags["storage.tsdb.min-block-duration"], flags["storage.tsdb.max-block-duration"]
	if minD != maxD {
		level.Warn(s.logger).Log("msg", "Prometheus compacts its blocks (storage.tsdb.min-block-duration ≠ max-block-duration): a block compacted before it is shipped is not uploaded; set them equal, or use --shipper.upload-compacted",
			"min_block_duration", minD, "max_block_duration", maxD)
	}
}
