package compact

import (
	"context"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// MaintenanceConfig configures the per-tenant maintenance that follows compaction.
type MaintenanceConfig struct {
	Retention RetentionConfig
	Cleaner   CleanerConfig
	// DownsamplingDisabled turns the downsampling pass off (Thanos's --downsampling.disable).
	DownsamplingDisabled bool
	// Concurrency is how many blocks are read at a time when the tenant is scanned.
	Concurrency int
}

// Validate checks the configuration against the readers' ignore-deletion-mark delay.
func (c MaintenanceConfig) Validate(ignoreDeletionMarkDelay time.Duration) error {
	if err := c.Retention.Validate(); err != nil {
		return err
	}
	return c.Cleaner.Validate(ignoreDeletionMarkDelay)
}

// MaintenanceResult counts what one run of Maintenance.RunTenant did.
type MaintenanceResult struct {
	Downsample DownsampleResult
	// RetentionMarked are the blocks marked for deletion for being past retention.
	RetentionMarked int
	Clean           CleanResult
	// IndexWritten says whether the bucket index was written; IndexBlocks and IndexDeletionMarks are its blocks
	// and deletion marks.
	IndexWritten                    bool
	IndexBlocks, IndexDeletionMarks int
}

// Maintenance runs, for one tenant at a time, the steps of a compaction cycle that follow the compaction: the
// downsampling pass, retention, the cleaner and the bucket index, from one scan of the tenant. It remembers the
// metas it read (they are immutable), so a cycle reads only new blocks' meta.json. Safe for concurrent use on
// distinct tenants.
type Maintenance struct {
	cfg             MaintenanceConfig
	tenantRetention func(tenant string) time.Duration
	workDir         string
	logger          log.Logger
	now             func() time.Time

	mtx   sync.Mutex
	metas map[string]map[ulid.ULID]*block.Meta
}

// NewMaintenance returns a Maintenance downsampling in workDir (which it cleans up after each block), with the
// tenants' retention from tenantRetention (e.g. tenancy.Overrides.CompactorBlocksRetentionPeriod; nil: forever)
// and the clock now (time.Now when nil).
func NewMaintenance(cfg MaintenanceConfig, tenantRetention func(tenant string) time.Duration, workDir string, logger log.Logger, now func() time.Time) *Maintenance {
	if now == nil {
		now = time.Now
	}
	if tenantRetention == nil {
		tenantRetention = func(string) time.Duration { return 0 }
	}
	return &Maintenance{
		cfg: cfg, tenantRetention: tenantRetention, workDir: workDir, logger: logger, now: now,
		metas: map[string]map[ulid.ULID]*block.Meta{},
	}
}

// RunTenant maintains tenant, whose bucket is tbkt (scoped to <tenant>/), in Thanos's order: downsampling first
// (so that a raw block past its retention is downsampled before it goes), then retention, the cleaner, and last
// the bucket index, written from what the steps left (blocks deleted are gone from it, new marks in it). A
// failing step is logged and the others still run (the index is written whenever the scan succeeded); the first
// error is returned with the counts.
func (mt *Maintenance) RunTenant(ctx context.Context, tenant string, tbkt objstore.Bucket) (MaintenanceResult, error) {
	var (
		res      MaintenanceResult
		firstErr error
	)
	logger := log.With(mt.logger, "tenant", tenant)
	step := func(name string, err error) {
		if err != nil {
			level.Warn(logger).Log("msg", "maintenance step had failures", "step", name, "err", err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	mt.mtx.Lock()
	known := mt.metas[tenant]
	mt.mtx.Unlock()
	tb, err := scanTenant(ctx, logger, tbkt, mt.cfg.Concurrency, known)
	if err != nil {
		return res, err
	}

	if !mt.cfg.DownsamplingDisabled {
		res.Downsample, err = DownsamplePass(ctx, logger, tbkt, tb, mt.workDir, mt.now)
		step("downsample", err)
	}
	res.RetentionMarked, err = ApplyRetention(ctx, logger, tbkt, tb, mt.tenantRetention(tenant), mt.cfg.Retention, mt.now)
	step("retention", err)
	res.Clean, err = CleanTenant(ctx, logger, tbkt, tb, mt.cfg.Cleaner, mt.now)
	step("clean", err)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	idx, err := WriteTenantBucketIndex(ctx, tbkt, tb, mt.now)
	step("bucket index", err)
	if idx != nil {
		res.IndexWritten, res.IndexBlocks, res.IndexDeletionMarks = true, len(idx.Blocks), len(idx.BlockDeletionMarks)
	}

	mt.mtx.Lock()
	mt.metas[tenant] = tb.Metas
	mt.mtx.Unlock()
	return res, firstErr
}

// Step returns RunTenant as a step of the compaction cycle (Compactor's after steps), recording each run's counts
// in the strata_compactor_* metrics of maintenanceMetrics, registered with reg.
func (mt *Maintenance) Step(reg prometheus.Registerer) TenantStep {
	m := newMaintenanceMetrics(reg)
	return TenantStep{Name: "maintenance", Run: func(ctx context.Context, tenant string, tbkt objstore.Bucket) error {
		res, err := mt.RunTenant(ctx, tenant, tbkt)
		m.record(tenant, res)
		return err
	}}
}

// maintenanceMetrics are the metrics of Maintenance.
type maintenanceMetrics struct {
	downsampled        *prometheus.CounterVec
	downsampleFailed   *prometheus.CounterVec
	retentionMarked    prometheus.Counter
	deleted            *prometheus.CounterVec
	partialMarked      prometheus.Counter
	orphanMarkers      prometheus.Counter
	cleanFailed        prometheus.Counter
	indexBlocks        *prometheus.GaugeVec
	indexDeletionMarks *prometheus.GaugeVec
}

func newMaintenanceMetrics(reg prometheus.Registerer) *maintenanceMetrics {
	f := promauto.With(reg)
	m := &maintenanceMetrics{
		downsampled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_downsampled_total", Help: "Downsampled blocks written, by resolution.",
		}, []string{"resolution"}),
		downsampleFailed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_compactor_downsample_failures_total",
			Help: "Blocks not downsampled: marked (unreadable, marked no-compact, not tried again) or retried (download or upload failed).",
		}, []string{"outcome"}),
		retentionMarked: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_marked_for_retention_total", Help: "Blocks marked for deletion for being past their retention.",
		}),
		deleted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_cleaned_total", Help: "Blocks deleted from the bucket by the cleaner, by kind (complete or partial).",
		}, []string{"kind"}),
		partialMarked: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_partial_blocks_marked_total", Help: "Abandoned partial blocks marked for deletion.",
		}),
		orphanMarkers: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_orphan_markers_deleted_total", Help: "Mirrored markers deleted because their block was gone.",
		}),
		cleanFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_block_cleanup_failures_total", Help: "Deletions or markings of blocks by the cleaner that failed (retried next cycle).",
		}),
		indexBlocks: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_compactor_bucket_index_blocks", Help: "Blocks in the tenant's bucket index last written.",
		}, []string{"tenant"}),
		indexDeletionMarks: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_compactor_bucket_index_deletion_marks", Help: "Deletion marks in the tenant's bucket index last written.",
		}, []string{"tenant"}),
	}
	for _, r := range []string{"5m", "1h"} {
		m.downsampled.WithLabelValues(r)
	}
	for _, o := range []string{"marked", "retried"} {
		m.downsampleFailed.WithLabelValues(o)
	}
	for _, k := range []string{"complete", "partial"} {
		m.deleted.WithLabelValues(k)
	}
	return m
}

func (m *maintenanceMetrics) record(tenant string, res MaintenanceResult) {
	m.downsampled.WithLabelValues("5m").Add(float64(res.Downsample.Downsampled5m))
	m.downsampled.WithLabelValues("1h").Add(float64(res.Downsample.Downsampled1h))
	m.downsampleFailed.WithLabelValues("marked").Add(float64(res.Downsample.Marked))
	m.downsampleFailed.WithLabelValues("retried").Add(float64(res.Downsample.Failed))
	m.retentionMarked.Add(float64(res.RetentionMarked))
	m.deleted.WithLabelValues("complete").Add(float64(res.Clean.Deleted - res.Clean.PartialDeleted))
	m.deleted.WithLabelValues("partial").Add(float64(res.Clean.PartialDeleted))
	m.partialMarked.Add(float64(res.Clean.PartialMarked))
	m.orphanMarkers.Add(float64(res.Clean.OrphanMarkers))
	m.cleanFailed.Add(float64(res.Clean.Failed))
	if res.IndexWritten {
		m.indexBlocks.WithLabelValues(tenant).Set(float64(res.IndexBlocks))
		m.indexDeletionMarks.WithLabelValues(tenant).Set(float64(res.IndexDeletionMarks))
	}
}
