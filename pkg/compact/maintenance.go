package compact

import (
	"context"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
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
	// IndexBlocks and IndexDeletionMarks are the blocks and deletion marks of the bucket index written.
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
		res.IndexBlocks, res.IndexDeletionMarks = len(idx.Blocks), len(idx.BlockDeletionMarks)
	}

	mt.mtx.Lock()
	mt.metas[tenant] = tb.Metas
	mt.mtx.Unlock()
	return res, firstErr
}
