package compact

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// Config is the compactor's configuration (the compactor section of the config file).
type Config struct {
	// CompactionInterval is the time between the starts of two cycles.
	CompactionInterval time.Duration `yaml:"compaction_interval"`
	// BlockRanges are the compaction levels (DefaultBlockRanges).
	BlockRanges []time.Duration `yaml:"block_ranges"`
	// ConsistencyDelay: a block uploaded (by its ULID's time) less than this ago is not compacted yet, except
	// the compactor's own (Thanos's consistency delay): a block that just appeared may be followed by its
	// replicas, and on an eventually consistent bucket its files may not all be visible yet.
	ConsistencyDelay time.Duration `yaml:"consistency_delay"`
	// DownsamplingEnabled runs DownsamplePass after compaction.
	DownsamplingEnabled bool `yaml:"downsampling_enabled"`

	Normalise NormaliseConfig `yaml:",inline"`
	Cleaner   CleanerConfig   `yaml:",inline"`
	Retention RetentionConfig `yaml:",inline"`
}

// DefaultConfig returns the defaults: a cycle every hour, 2h/12h/24h ranges, 30m consistency delay,
// downsampling and normalising on, the cleaner's defaults (deletion after 12h), no per-resolution retention.
func DefaultConfig() Config {
	return Config{
		CompactionInterval:  time.Hour,
		BlockRanges:         append([]time.Duration(nil), DefaultBlockRanges...),
		ConsistencyDelay:    30 * time.Minute,
		DownsamplingEnabled: true,
		Normalise:           DefaultNormaliseConfig(),
		Cleaner:             DefaultCleanerConfig(),
	}
}

// Validate checks the configuration; ignoreDeletionMarkDelay is the readers' (store-gateway's and querier's)
// delay, which the deletion delay must exceed.
func (c Config) Validate(ignoreDeletionMarkDelay time.Duration) error {
	if c.CompactionInterval <= 0 {
		return errors.New("compactor: compaction_interval must be positive")
	}
	if _, err := RangesMillis(c.BlockRanges); err != nil {
		return errors.Wrap(err, "compactor: block_ranges")
	}
	if c.ConsistencyDelay < 0 {
		return errors.New("compactor: consistency_delay must not be negative")
	}
	if err := c.Cleaner.Validate(ignoreDeletionMarkDelay); err != nil {
		return err
	}
	return c.Retention.Validate()
}

// Compactor runs the compactor's cycle over every tenant of a bucket: per tenant, normalise (when enabled) →
// compact → downsample (when enabled) → retention → clean → bucket index. Compaction works per group (external
// labels and resolution): overlapping blocks are merged vertically (one copy of each sample) and adjacent ones
// leveled into the configured ranges. It never halts: a block that cannot be read is marked no-compact and its
// group goes on without it; a group or step that fails otherwise is retried next cycle while the others go on.
type Compactor struct {
	cfg       Config
	ranges    []int64
	bkt       objstore.Bucket
	workDir   string
	retention func(tenant string) time.Duration
	logger    log.Logger
	metrics   *compactorMetrics
	now       func() time.Time

	metas  map[string]map[ulid.ULID]*block.Meta // tenant → block → meta (immutable, read once)
	status *statusBoard
	// owns says whether this compactor owns a tenant (a compactor ring); nil: every tenant.
	owns func(tenant string) (bool, error)
	// progress is the cycle's progress (blocks, bytes, elapsed, ETA).
	progress *progress
}

// SetTenantOwner makes the compactor work only on the tenants owns gives it (checked at each cycle's start and
// again before each tenant, so ownership moved by a ring change takes effect at once). A tenant whose ownership
// cannot be told is skipped this cycle. Without it (a single compactor, --once) the compactor owns every tenant.
// Call before Run.
func (c *Compactor) SetTenantOwner(owns func(tenant string) (bool, error)) { c.owns = owns }

// ownsTenant applies the owner check (true without one); an error counts as not owned, with a warning.
func (c *Compactor) ownsTenant(tenant string) bool {
	if c.owns == nil {
		return true
	}
	ok, err := c.owns(tenant)
	if err != nil {
		level.Warn(c.logger).Log("msg", "cannot tell whether this compactor owns the tenant; skipping it this cycle", "tenant", tenant, "err", err)
		return false
	}
	return ok
}

// ownedTenants keeps the tenants this compactor owns and drops the others from the status page and metrics.
func (c *Compactor) ownedTenants(tenants []string) []string {
	var out []string
	for _, tenant := range tenants {
		if c.ownsTenant(tenant) {
			out = append(out, tenant)
			continue
		}
		c.forgetTenant(tenant)
	}
	return out
}

// forgetTenant drops a tenant this compactor no longer owns from its page, metrics and meta cache.
func (c *Compactor) forgetTenant(tenant string) {
	delete(c.metas, tenant)
	c.metrics.oldestUncompacted.DeleteLabelValues(tenant)
	c.status.remove(tenant)
}

// New returns a compactor of bkt (the whole bucket, tenants as top-level prefixes) working in workDir, which it
// owns: its content is removed at each cycle's start. retention gives a tenant's
// compactor_blocks_retention_period (0: forever; nil: no per-tenant retention). cfg must have been validated.
func New(cfg Config, bkt objstore.Bucket, workDir string, retention func(tenant string) time.Duration, logger log.Logger, reg prometheus.Registerer, now func() time.Time) (*Compactor, error) {
	ranges, err := RangesMillis(cfg.BlockRanges)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if retention == nil {
		retention = func(string) time.Duration { return 0 }
	}
	return &Compactor{
		cfg: cfg, ranges: ranges, bkt: bkt, workDir: workDir, retention: retention, logger: logger,
		metrics: newCompactorMetrics(reg), now: now, metas: map[string]map[ulid.ULID]*block.Meta{}, status: newStatusBoard(),
		progress: &progress{metrics: newProgressMetrics(reg)},
	}, nil
}

// Run runs a cycle after firstDelay (at once when 0), then every CompactionInterval, until ctx is done. Failed
// cycles are logged and counted; Run never stops for them.
func (c *Compactor) Run(ctx context.Context, firstDelay time.Duration) error {
	if firstDelay > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(firstDelay):
		}
	}
	t := time.NewTicker(c.cfg.CompactionInterval)
	defer t.Stop()
	for {
		if err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			level.Error(c.logger).Log("msg", "compaction cycle had failures; retrying next cycle", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce runs one cycle over every tenant. A failure of a tenant, group or step does not stop the others; the
// error returned (after all of them) says how many failed.
func (c *Compactor) RunOnce(ctx context.Context) error {
	c.metrics.runs.Inc()
	start := c.now()
	if err := c.cleanWorkDir(); err != nil {
		c.metrics.runsFailed.Inc()
		return err
	}
	tenants, err := block.ListTenants(ctx, c.bkt)
	if err != nil {
		c.metrics.runsFailed.Inc()
		return err
	}
	c.metrics.tenants.Set(float64(len(tenants)))
	all := len(tenants)
	tenants = c.ownedTenants(tenants)
	c.metrics.tenantsOwned.Set(float64(len(tenants)))
	c.progress.start(start)
	defer func() { c.progress.end(c.now()) }()
	c.planCycle(ctx, tenants)
	if p := c.progress.get(); p.PlannedGroups > 0 {
		level.Info(c.logger).Log("msg", "compaction cycle planned", "tenants", len(tenants), "groups", p.PlannedGroups, "blocks", p.PlannedBlocks, "bytes", p.PlannedBytes)
	}
	var failed []string
	for _, tenant := range tenants {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !c.ownsTenant(tenant) {
			level.Info(c.logger).Log("msg", "tenant moved to another compactor during the cycle; skipping it", "tenant", tenant)
			c.forgetTenant(tenant)
			continue
		}
		if err := c.runTenant(ctx, tenant); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			level.Error(c.logger).Log("msg", "tenant had failures; retrying next cycle", "tenant", tenant, "err", err)
			failed = append(failed, tenant)
		}
	}
	if err := c.cleanWorkDir(); err != nil {
		level.Warn(c.logger).Log("msg", "clean work dir", "err", err)
	}
	if len(failed) > 0 {
		c.metrics.runsFailed.Inc()
		return errors.Newf("compaction cycle: %d of %d tenants had failures: %s", len(failed), len(tenants), strings.Join(failed, ", "))
	}
	c.metrics.lastSuccess.Set(float64(c.now().UnixNano()) / 1e9)
	level.Info(c.logger).Log("msg", "compaction cycle done", "tenants", all, "owned", len(tenants), "elapsed", c.now().Sub(start))
	return nil
}

// tenantBucket is the bucket scoped to a tenant.
func (c *Compactor) tenantBucket(tenant string) objstore.Bucket {
	return objstore.NewPrefixedBucket(c.bkt, tenant)
}

func (c *Compactor) cleanWorkDir() error {
	if err := os.RemoveAll(c.workDir); err != nil {
		return errors.Wrapf(err, "clean work dir %s", c.workDir)
	}
	return errors.Wrapf(os.MkdirAll(c.workDir, 0o750), "create work dir %s", c.workDir)
}

// runTenant runs the steps of one tenant's cycle in order; each goes on when an earlier one failed, and the
// first error is returned.
func (c *Compactor) runTenant(ctx context.Context, tenant string) error {
	tbkt := c.tenantBucket(tenant)
	var errs []error
	failedSteps := map[string]string{}
	start := c.now()
	defer func() {
		c.status.update(tenant, func(s *TenantStatus) { s.LastRun, s.FailedSteps, s.Running = start.UTC(), failedSteps, "" })
	}()
	step := func(name string, f func() error) {
		if ctx.Err() != nil {
			return
		}
		c.status.update(tenant, func(s *TenantStatus) { s.Running = name })
		if err := f(); err != nil {
			failedSteps[name] = err.Error()
			c.metrics.stepsFailed.WithLabelValues(name).Inc()
			level.Error(c.logger).Log("msg", "tenant step failed; retrying next cycle", "tenant", tenant, "step", name, "err", err)
			errs = append(errs, errors.Wrapf(err, "%s", name))
		}
	}
	if c.cfg.Normalise.Enabled {
		step("normalise", func() error { return c.normaliseTenant(ctx, tenant, tbkt) })
	}
	step("compact", func() error { return c.compactTenant(ctx, tenant, tbkt) })

	var tb *TenantBlocks
	step("scan", func() (err error) {
		tb, err = ScanTenantCached(ctx, c.logger, tbkt, 8, c.metas[tenant])
		return err
	})
	if tb != nil {
		if c.cfg.DownsamplingEnabled {
			step("downsample", func() error { return c.downsampleTenant(ctx, tenant, tbkt, tb) })
		}
		step("retention", func() error {
			n, err := ApplyRetention(ctx, c.logger, tbkt, tb, c.retention(tenant), c.cfg.Retention, c.now)
			c.metrics.blocksMarkedDel.Add(float64(n))
			logIf(c.logger, n > 0, "msg", "marked blocks past retention for deletion", "tenant", tenant, "blocks", n)
			return err
		})
		step("clean", func() error {
			res, err := CleanTenant(ctx, c.logger, tbkt, tb, c.cfg.Cleaner, c.now)
			c.metrics.blocksDeleted.Add(float64(res.Deleted))
			logIf(c.logger, res.Deleted+res.PartialMarked+res.OrphanMarkers+res.Failed > 0, "msg", "cleaned", "tenant", tenant,
				"deleted", res.Deleted, "partial_deleted", res.PartialDeleted, "partial_marked", res.PartialMarked,
				"orphan_markers", res.OrphanMarkers, "failed", res.Failed)
			return err
		})
		step("bucket-index", func() error {
			_, err := WriteTenantBucketIndex(ctx, tbkt, tb, c.now)
			return err
		})
	}
	if len(errs) > 0 {
		return errors.Wrapf(errs[0], "tenant %s (%d failed steps)", tenant, len(errs))
	}
	return nil
}

// logIf logs kv at info level when cond holds.
func logIf(logger log.Logger, cond bool, kv ...any) {
	if cond {
		level.Info(logger).Log(kv...)
	}
}

// downsampleTenant runs DownsamplePass over the tenant's scan tb.
func (c *Compactor) downsampleTenant(ctx context.Context, tenant string, tbkt objstore.Bucket, tb *TenantBlocks) error {
	dir := filepath.Join(c.workDir, tenant+"-downsample")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return errors.Wrapf(err, "create %s", dir)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	res, err := DownsamplePass(ctx, c.logger, tbkt, tb, dir, c.now)
	c.metrics.blocksNoCompact.WithLabelValues(string(DownsampleFailedNoCompactReason)).Add(float64(res.Marked))
	logIf(c.logger, res.Downsampled5m+res.Downsampled1h+res.Marked+res.Failed > 0, "msg", "downsampled", "tenant", tenant,
		"to_5m", res.Downsampled5m, "to_1h", res.Downsampled1h, "marked_no_compact", res.Marked, "failed", res.Failed)
	return err
}

// normaliseTenant rewrites the tenant's blocks with external labels beyond tenant_id (NormaliseTenant).
func (c *Compactor) normaliseTenant(ctx context.Context, tenant string, tbkt objstore.Bucket) error {
	tb, err := ScanTenantCached(ctx, c.logger, tbkt, 8, c.metas[tenant])
	if err != nil {
		return err
	}
	marked := map[ulid.ULID]time.Time{}
	for id, m := range tb.DeletionMarks {
		marked[id] = time.Unix(m.DeletionTime, 0)
	}
	dir := filepath.Join(c.workDir, tenant+"-normalise")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return errors.Wrapf(err, "create %s", dir)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	res, err := NormaliseTenant(ctx, c.logger, tbkt, tb.Metas, marked, dir, c.now)
	c.metrics.blocksMarkedDel.Add(float64(len(res.Replaced)))
	logIf(c.logger, len(res.New)+len(res.Replaced)+len(res.Failed)+len(res.Skipped) > 0, "msg", "normalised blocks", "tenant", tenant,
		"new", len(res.New), "replaced", len(res.Replaced), "failed", len(res.Failed), "skipped", len(res.Skipped))
	if err == nil {
		for id, ferr := range res.Failed {
			return errors.Wrapf(ferr, "normalise block %s (%d failed)", id, len(res.Failed))
		}
	}
	return err
}

// tenantState is what a sync found of a tenant's blocks.
type tenantState struct {
	// live are the blocks with a meta.json and no deletion mark.
	live map[ulid.ULID]*block.Meta
	// noCompact are the blocks with a no-compact mark.
	noCompact map[ulid.ULID]*block.NoCompactMark
}

// sync scans a tenant (tbkt scoped to it; ScanTenantCached, reading only new blocks' meta.json). Blocks without
// meta.json (partial uploads or deletions) and with a corrupted meta.json are left out; marks are read from the
// block's own directory, so those written by Thanos's tools (without the markers/ mirror) count too.
func (c *Compactor) sync(ctx context.Context, tenant string, tbkt objstore.Bucket) (*tenantState, error) {
	tb, err := ScanTenantCached(ctx, c.logger, tbkt, 8, c.metas[tenant])
	if err != nil {
		return nil, errors.Wrapf(err, "scan tenant %s", tenant)
	}
	c.metas[tenant] = tb.Metas
	st := &tenantState{live: map[ulid.ULID]*block.Meta{}, noCompact: map[ulid.ULID]*block.NoCompactMark{}}
	for _, m := range tb.Live() {
		st.live[m.ULID] = m
	}
	for id, m := range tb.NoCompactMarks {
		st.noCompact[id] = m
	}
	return st, nil
}

// eligible says whether a live block may be planned now.
func (c *Compactor) eligible(st *tenantState, m *block.Meta) bool {
	if _, ok := st.noCompact[m.ULID]; ok {
		return false
	}
	if m.Thanos.Source == block.CompactorSource {
		return true
	}
	return c.now().Sub(ulid.Time(m.ULID.Time())) >= c.cfg.ConsistencyDelay
}

// compactTenant compacts every group of a tenant (tbkt scoped to it). A failed group does not stop the others.
func (c *Compactor) compactTenant(ctx context.Context, tenant string, tbkt objstore.Bucket) error {
	st, err := c.sync(ctx, tenant, tbkt)
	if err != nil {
		return err
	}
	c.setBacklog(tenant, st)
	var (
		errs   []error
		failed = map[string]string{}
	)
	for _, g := range Groups(mapValues(st.live)) {
		c.status.update(tenant, func(s *TenantStatus) { s.Running = g.Key })
		if err := c.compactGroup(ctx, tenant, tbkt, st, g); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.metrics.groupsFailed.Inc()
			level.Error(c.logger).Log("msg", "group compaction failed; retrying next cycle", "tenant", tenant, "group", g.Key, "err", err)
			errs = append(errs, err)
			failed[g.Key] = err.Error()
		}
	}
	c.status.update(tenant, func(s *TenantStatus) { s.Running, s.FailedGroups = "", failed })
	c.setBacklog(tenant, st)
	if len(errs) > 0 {
		return errors.Wrapf(errs[0], "%d groups failed", len(errs))
	}
	return nil
}

// setBacklog sets how far behind the compactor is with a tenant (the age of the oldest block in a plan), and the
// tenant's planned groups and no-compact blocks on the status page.
func (c *Compactor) setBacklog(tenant string, st *tenantState) {
	var oldest time.Time
	planned := map[string]int{}
	for _, g := range Groups(mapValues(st.live)) {
		plan := Plan(c.eligibleOf(st, g.Metas), c.ranges)
		if len(plan) > 0 {
			planned[g.Key] = len(plan)
		}
		for _, m := range plan {
			if t := ulid.Time(m.ULID.Time()); oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
	}
	age := 0.0
	if !oldest.IsZero() {
		age = c.now().Sub(oldest).Seconds()
	}
	c.metrics.oldestUncompacted.WithLabelValues(tenant).Set(age)
	var marks []NoCompactRow
	for id, m := range st.noCompact {
		if _, live := st.live[id]; live {
			marks = append(marks, NoCompactRow{Block: id.String(), Reason: string(m.Reason), Details: m.Details, Time: time.Unix(m.NoCompactTime, 0).UTC()})
		}
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].Block < marks[j].Block })
	c.status.update(tenant, func(s *TenantStatus) {
		s.LiveBlocks, s.PlannedGroups, s.NoCompact, s.OldestUncompacted = len(st.live), planned, marks, time.Time{}
		if !oldest.IsZero() {
			s.OldestUncompacted = oldest.UTC()
		}
	})
}

func (c *Compactor) eligibleOf(st *tenantState, metas []*block.Meta) []*block.Meta {
	var out []*block.Meta
	for _, m := range metas {
		if c.eligible(st, m) {
			out = append(out, m)
		}
	}
	return out
}

func mapValues(m map[ulid.ULID]*block.Meta) []*block.Meta {
	out := make([]*block.Meta, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// errBlockMarked says that a block of the plan was marked no-compact: the group goes on without it.
var errBlockMarked = errors.New("block marked no-compact")

// compactGroup compacts a group until its plan is empty: first the blocks made redundant by another (an
// interrupted earlier compaction) are marked for deletion, then the plan is compacted, and again.
func (c *Compactor) compactGroup(ctx context.Context, tenant string, tbkt objstore.Bucket, st *tenantState, g *Group) error {
	live := append([]*block.Meta(nil), g.Metas...)
	for range len(g.Metas) + 1 { // each round removes at least one block from live
		live = liveOf(st, live)
		for _, m := range Redundant(live) {
			if err := c.markDeleted(ctx, tbkt, st, m.ULID, "made redundant by a compacted block holding all its sources"); err != nil {
				return err
			}
			level.Info(c.logger).Log("msg", "marked redundant block for deletion", "tenant", tenant, "group", g.Key, "block", m.ULID)
		}
		live = liveOf(st, live)
		plan := Plan(c.eligibleOf(st, live), c.ranges)
		if len(plan) == 0 {
			return nil
		}
		if g.Resolution != ResolutionRaw && len(overlapping(plan)) > 0 {
			for _, m := range plan {
				if err := c.markNoCompact(ctx, tbkt, st, tenant, m.ULID, block.DownsampleVerticalCompactionNoCompactReason, "overlapping downsampled blocks cannot be merged"); err != nil {
					return err
				}
			}
			continue
		}
		res, err := c.compactPlan(ctx, tenant, tbkt, st, g, plan)
		if errors.Is(err, errBlockMarked) {
			continue
		}
		if err != nil {
			return err
		}
		if res != nil {
			st.live[res.ULID] = res
			c.metas[tenant][res.ULID] = res
			live = append(live, res)
		}
	}
	return nil
}

// liveOf keeps the metas not marked for deletion since.
func liveOf(st *tenantState, metas []*block.Meta) []*block.Meta {
	var out []*block.Meta
	for _, m := range metas {
		if _, ok := st.live[m.ULID]; ok {
			out = append(out, m)
		}
	}
	return out
}

func (c *Compactor) markDeleted(ctx context.Context, tbkt objstore.Bucket, st *tenantState, id ulid.ULID, details string) error {
	if err := block.MarkForDeletion(ctx, c.logger, tbkt, id, details, c.now); err != nil {
		return err
	}
	delete(st.live, id)
	c.metrics.blocksMarkedDel.Inc()
	return nil
}

func (c *Compactor) markNoCompact(ctx context.Context, tbkt objstore.Bucket, st *tenantState, tenant string, id ulid.ULID, reason block.NoCompactReason, details string) error {
	if err := block.MarkForNoCompaction(ctx, c.logger, tbkt, id, reason, details, c.now); err != nil {
		return err
	}
	st.noCompact[id] = &block.NoCompactMark{ID: id, Version: block.NoCompactMarkVersion1, Reason: reason, Details: details, NoCompactTime: c.now().Unix()}
	c.metrics.blocksNoCompact.WithLabelValues(string(reason)).Inc()
	level.Warn(c.logger).Log("msg", "marked block no-compact; its group goes on without it", "tenant", tenant, "block", id, "reason", reason, "details", details)
	return nil
}

// compactPlan downloads the planned blocks, checks them, compacts them into one block, uploads it (meta.json
// last) and marks the sources for deletion. It returns the new block's meta, nil when the result was empty. A
// block that cannot be read is marked no-compact and errBlockMarked returned.
func (c *Compactor) compactPlan(ctx context.Context, tenant string, tbkt objstore.Bucket, st *tenantState, g *Group, plan []*block.Meta) (*block.Meta, error) {
	start := c.now()
	dir := filepath.Join(c.workDir, tenant+"-"+strings.ReplaceAll(g.Key, "@", "-"))
	if err := os.RemoveAll(dir); err != nil {
		return nil, errors.Wrapf(err, "clean %s", dir)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			level.Warn(c.logger).Log("msg", "clean group work dir", "dir", dir, "err", err)
		}
	}()
	var (
		dirs  []string
		bytes int64
	)
	for _, m := range plan {
		bd := filepath.Join(dir, m.ULID.String())
		n, err := fetchBlock(ctx, tbkt, m.ULID, bd)
		c.metrics.bytesDownloaded.Add(float64(n))
		if err != nil {
			return nil, errors.Wrapf(err, "download block %s", m.ULID)
		}
		bytes += n
		if reason, err := verifyBlock(bd, g.Resolution); err != nil {
			if merr := c.markNoCompact(ctx, tbkt, st, tenant, m.ULID, reason, err.Error()); merr != nil {
				return nil, merr
			}
			return nil, errBlockMarked
		}
		dirs = append(dirs, bd)
	}
	id, err := compactDirs(ctx, dir, dirs, c.ranges, g.Resolution)
	if err != nil {
		return nil, errors.Wrapf(err, "compact %d blocks", len(plan))
	}
	var res *block.Meta
	if id != (ulid.ULID{}) {
		res, err = block.ReadMetaFromDir(filepath.Join(dir, id.String()))
		if err != nil {
			return nil, err
		}
		res.Thanos = block.ThanosMeta{
			Labels: g.Labels, Downsample: block.ThanosDownsample{Resolution: g.Resolution}, Source: block.CompactorSource,
		}
		if err := block.Upload(ctx, c.logger, tbkt, filepath.Join(dir, id.String()), res); err != nil {
			return nil, err
		}
	}
	details := "compacted into " + id.String()
	if res == nil {
		details = "compacted into an empty block (nothing left)"
	}
	for _, m := range plan {
		if err := c.markDeleted(ctx, tbkt, st, m.ULID, details); err != nil {
			return nil, err
		}
	}
	c.metrics.groupsCompacted.Inc()
	c.metrics.blocksCompacted.Add(float64(len(plan)))
	c.metrics.groupDuration.Observe(c.now().Sub(start).Seconds())
	ids := make([]string, len(plan))
	for i, m := range plan {
		ids[i] = m.ULID.String()
	}
	p := c.progress.done(len(plan), bytes, c.now())
	kv := []any{"msg", "compacted group", "tenant", tenant, "group", g.Key, "blocks", len(plan), "bytes", bytes,
		"elapsed", c.now().Sub(start), "sources", strings.Join(ids, ","), "result", id,
		"cycle_blocks_done", p.DoneBlocks, "cycle_blocks_planned", p.PlannedBlocks, "cycle_bytes_done", p.DoneBytes,
		"cycle_bytes_planned", p.PlannedBytes, "cycle_elapsed", p.Elapsed.Round(time.Millisecond), "eta", p.ETA.Round(time.Second)}
	if res != nil {
		kv = append(kv, "mint", res.MinTime, "maxt", res.MaxTime, "samples", res.Stats.NumSamples)
	}
	level.Info(c.logger).Log(kv...)
	return res, nil
}

// fetchBlock downloads the files of block id of tbkt (a tenant's bucket), markers excluded, into dir and
// returns the bytes downloaded.
func fetchBlock(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID, dir string) (int64, error) {
	var total int64
	prefix := id.String() + objstore.DirDelim
	err := tbkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if rel == block.DeletionMarkFilename || rel == block.NoCompactMarkFilename {
			return nil
		}
		n, err := fetchFile(ctx, tbkt, name, filepath.Join(dir, filepath.FromSlash(rel)))
		total += n
		return err
	}, objstore.WithRecursiveIter())
	return total, err
}

func fetchFile(ctx context.Context, bkt objstore.Bucket, name, dst string) (_ int64, err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return 0, errors.Wrapf(err, "create dir of %s", dst)
	}
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return 0, errors.Wrapf(err, "get %s", name)
	}
	defer errcapture.ExhaustClose(&err, rc, "close %s", name)
	f, err := os.Create(dst)
	if err != nil {
		return 0, errors.Wrapf(err, "create %s", dst)
	}
	defer errcapture.Do(&err, f.Close, "close %s", dst)
	n, err := io.Copy(f, rc)
	return n, errors.Wrapf(err, "download %s", name)
}
