package main

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/model"

	"github.com/stratametrics/strata/pkg/compact"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
)

// compactorConfig is the compactor section of the config file.
type compactorConfig struct {
	compact.Config `yaml:",inline"`
	// WorkDir is where blocks are downloaded and compacted (default <data-dir>/compactor); emptied each cycle.
	WorkDir string `yaml:"work_dir"`
	// Instance is this compactor in the compactor ring (used with memberlist, and in strata all).
	Instance ring.InstanceConfig `yaml:"ring"`
	// Once runs one cycle and exits (the flag --once; not in the file).
	Once bool `yaml:"-"`
}

func defaultCompactorConfig() compactorConfig {
	return compactorConfig{Config: compact.DefaultConfig(), Instance: ring.InstanceConfig{ID: ring.DefaultInstanceID()}}
}

// defaultCompactorRingConfig is the ingester ring's defaults with replication factor 1: one owner per tenant.
func defaultCompactorRingConfig() ring.Config {
	c := ring.DefaultConfig()
	c.ReplicationFactor = 1
	return c
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
	b.String(cmd.Flag("compactor.id", "This compactor's ID in the compactor ring (default: the hostname)."), &c.Instance.ID)
	b.String(cmd.Flag("compactor.instance-addr", "This compactor's address in the compactor ring (default: the gRPC address, 0.0.0.0 replaced by this host's address)."), &c.Instance.Addr)
	b.Duration(cmd.Flag("compactor.ring.heartbeat-period", "How often a compactor heartbeats into the compactor ring."), &cfg.CompactorRing.HeartbeatPeriod)
	b.Duration(cmd.Flag("compactor.ring.heartbeat-timeout", "After this long without a heartbeat a compactor is unhealthy and its tenants move to the others."), &cfg.CompactorRing.HeartbeatTimeout)
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
	if c.CompactorRing.ReplicationFactor != 1 {
		return errors.Newf("compactor_ring: replication_factor must be 1 (each tenant has one compactor), got %d", c.CompactorRing.ReplicationFactor)
	}
	return c.Compactor.Validate(c.StoreGateway.IgnoreDeletionMarkDelay)
}

// runCompactor runs `strata compactor`: the compaction cycle over the bucket, every interval or --once. With
// memberlist (and without --once) the compactors split the tenants through the compactor ring.
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
	p.srv.Handle("GET /compactor/tenants", p.admin(c.TenantsHandler()))
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
	if p.ingesterRing == nil && !p.cfg.Memberlist.Enabled() {
		// A single compactor: it owns every tenant.
		addContextActor(p.g, func(ctx context.Context) error {
			ready()
			return c.Run(ctx, firstDelay)
		})
		return nil
	}
	return setupCompactorRing(p, c, logger, func(ctx context.Context) error {
		ready()
		return c.Run(ctx, firstDelay)
	})
}

// setupCompactorRing makes c one of the compactors of the compactor ring (in the process's KV store: memberlist,
// or in memory in strata all), owning the tenants the ring gives it, with the ring's page at /compactor/ring.
// run runs once this compactor is in the ring; it leaves the ring when run ends.
func setupCompactorRing(p *process, c *compact.Compactor, logger log.Logger, run func(context.Context) error) error {
	r, err := setupKV(p)
	if err != nil {
		return err
	}
	inst, err := ringInstance(p, p.cfg.Compactor.Instance, "compactor")
	if err != nil {
		return err
	}
	client, err := ring.NewCompactorClient(p.cfg.CompactorRing, r.kv, logger, p.reg)
	if err != nil {
		return errSetup(err, "compactor ring client")
	}
	watchRing(p, client, "compactor", "Compactors")
	lc, err := ring.NewLifecycler(p.cfg.CompactorRing, inst, r.kv, "compactor", ring.CompactorRingKey, logger, p.reg)
	if err != nil {
		return errSetup(err, "compactor ring membership")
	}
	c.SetTenantOwner(ring.OwnsTenant(client, inst.Addr))
	r.users.Add(1) // leaving the ring needs gossip
	ctx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error {
		defer r.users.Done()
		if err := ring.StartService(ctx, lc); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return errors.Wrap(err, "join the compactor ring")
		}
		defer func() {
			if err := ring.Leave(lc, logger); err != nil {
				level.Warn(logger).Log("msg", "leaving the compactor ring", "err", err)
			}
		}()
		ring.WaitForInstance(ctx, client, inst.Addr, 10*time.Second)
		return run(ctx)
	}, func(error) { cancel() })
	return nil
}
