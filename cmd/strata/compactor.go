package main

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/prometheus/common/model"

	"github.com/stratametrics/strata/pkg/compact"
	"github.com/stratametrics/strata/pkg/server"
)

// compactorConfig is the compactor section of the config file.
type compactorConfig struct {
	compact.Config `yaml:",inline"`
	// WorkDir is where blocks are downloaded and compacted (default <data-dir>/compactor); emptied each cycle.
	WorkDir string `yaml:"work_dir"`
	// Once runs one cycle and exits (the flag --once; not in the file).
	Once bool `yaml:"-"`
}

func defaultCompactorConfig() compactorConfig {
	return compactorConfig{Config: compact.DefaultConfig()}
}

// registerCompactorFlags registers the flags of the compactor (strata compactor, strata all).
func registerCompactorFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config, standalone bool) {
	c := &cfg.Compactor
	b.Duration(cmd.Flag("compactor.compaction-interval", "Time between two compaction cycles."), &c.CompactionInterval)
	b.durations(cmd.Flag("compactor.block-ranges", "Compaction levels, comma-separated and increasing: blocks are compacted into aligned blocks of these ranges (the first is the shipped blocks')."), &c.BlockRanges)
	b.Duration(cmd.Flag("compactor.deletion-delay", "Blocks marked for deletion are deleted after this; must exceed --store-gateway.ignore-deletion-marks-delay."), &c.Cleaner.DeletionDelay)
	b.Duration(cmd.Flag("compactor.consistency-delay", "Blocks uploaded less than this ago (by their ULID) wait for the next cycle, leaving time for their replicas."), &c.ConsistencyDelay)
	b.Duration(cmd.Flag("compactor.partial-block-deletion-delay", "A block without meta.json older than this is taken for an abandoned upload and deleted."), &c.Cleaner.PartialBlockDeletionDelay)
	b.Bool(cmd.Flag("compactor.normalise-external-labels", "Rewrite blocks with external labels beyond tenant_id (sidecar, imported) so those labels are in their series, before compacting."), &c.Normalise.Enabled)
	b.Bool(cmd.Flag("compactor.downsampling-enabled", "Downsample compacted blocks to 5m (spans ≥ 40h) and 1h (≥ 10d), in Thanos's format."), &c.DownsamplingEnabled)
	b.Duration(cmd.Flag("compactor.retention-resolution-raw", "Delete raw blocks older than this (0: keep; the tenant's compactor_blocks_retention_period applies too)."), &c.Retention.Raw)
	b.Duration(cmd.Flag("compactor.retention-resolution-5m", "Delete 5m-downsampled blocks older than this (0: keep)."), &c.Retention.FiveMin)
	b.Duration(cmd.Flag("compactor.retention-resolution-1h", "Delete 1h-downsampled blocks older than this (0: keep)."), &c.Retention.OneHour)
	b.String(cmd.Flag("compactor.work-dir", "Directory blocks are downloaded to and compacted in; emptied each cycle (default: <data-dir>/compactor)."), &c.WorkDir)
	if standalone {
		b.Bool(cmd.Flag("once", "Run one compaction cycle and exit (status 1 when a tenant, group or step failed)."), &c.Once)
	}
}

// durations binds a flag of comma-separated durations.
func (b *binder) durations(f *kingpin.FlagClause, dst *[]time.Duration) {
	bindFlag(b, f, dst, formatDurations(*dst), func(f *kingpin.FlagClause) *[]time.Duration {
		v := &parsedValue[[]time.Duration]{flag: f.Model().Name, parse: parseDurations, format: formatDurations}
		f.SetValue(v)
		return &v.v
	})
}

// formatDurations formats durations as Prometheus does (2h, not 2h0m0s), comma-separated.
func formatDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = model.Duration(d).String()
	}
	return strings.Join(s, ",")
}

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		d, err := model.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		out = append(out, time.Duration(d))
	}
	return out, nil
}

// validateCompactor checks the compactor section against the readers' ignore-deletion-marks delay.
func (c *Config) validateCompactor() error {
	return c.Compactor.Validate(c.StoreGateway.IgnoreDeletionMarkDelay)
}

// runCompactor runs `strata compactor`: the compaction cycle over the bucket, every interval or --once.
func runCompactor(p *process) error {
	return setupAll(p, (*process).mkDataDir, setupServers, setupBucket, setupCompactor)
}

// setupCompactor adds the compactor (compact.Compactor) to the process. With --once its actor ends after one
// cycle, ending the process (status 1 when the cycle had failures). In `strata all` (p.storeAPI set) the first
// cycle starts one interval after the process: the cycle writes the bucket index, which the process's own
// store-gateway and querier then read instead of listing the bucket (blocks shipped since are seen at the next
// cycle; the ingester keeps them meanwhile), and a short-lived `all` should see its bucket as it is.
func setupCompactor(p *process) error {
	cfg := p.cfg.Compactor
	logger := log.With(p.logger, "component", "compactor")
	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = filepath.Join(p.cfg.DataDir, "compactor")
	}
	c, err := compact.New(cfg.Config, p.bkt, workDir, p.overrides.CompactorBlocksRetentionPeriod, logger, p.reg, nil)
	if err != nil {
		return errSetup(err, "compactor")
	}
	p.srv.Handle("GET /compactor/tenants", c.TenantsHandler())
	p.srv.AddLinks("Compactor", server.Link{Path: "/compactor/tenants", Desc: "Per tenant: planned, running and failed groups, oldest uncompacted block, no-compact blocks"},
		server.Link{Path: "/metrics", Desc: "strata_compactor_* metrics"})
	ready := p.srv.Ready.Register("compactor")
	if cfg.Once {
		addContextActor(p.g, func(ctx context.Context) error {
			ready()
			return c.RunOnce(ctx)
		})
		return nil
	}
	var firstDelay time.Duration
	if p.storeAPI != nil {
		firstDelay = cfg.CompactionInterval
	}
	addContextActor(p.g, func(ctx context.Context) error {
		ready()
		return c.Run(ctx, firstDelay)
	})
	return nil
}
