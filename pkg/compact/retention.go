package compact

import (
	"context"
	"fmt"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// RetentionConfig is the per-resolution retention of the compactor (Thanos's --retention.resolution-raw, -5m,
// -1h): a block of that resolution whose max time is older than now minus it is marked for deletion. 0 keeps
// blocks of that resolution forever. It applies to every tenant, on top of the tenant's
// compactor_blocks_retention_period; whichever is shorter wins.
type RetentionConfig struct {
	Raw     time.Duration `yaml:"retention_resolution_raw"`
	FiveMin time.Duration `yaml:"retention_resolution_5m"`
	OneHour time.Duration `yaml:"retention_resolution_1h"`
}

// Validate rejects negative retentions.
func (c RetentionConfig) Validate() error {
	if c.Raw < 0 || c.FiveMin < 0 || c.OneHour < 0 {
		return errors.New("compactor: retention_resolution_raw, retention_resolution_5m and retention_resolution_1h must not be negative")
	}
	return nil
}

// forResolution returns the retention of blocks of resolution res (0 for an unknown resolution: kept).
func (c RetentionConfig) forResolution(res int64) time.Duration {
	switch res {
	case ResolutionRaw:
		return c.Raw
	case Resolution5m:
		return c.FiveMin
	case Resolution1h:
		return c.OneHour
	}
	return 0
}

// ApplyRetention marks for deletion (block.MarkForDeletion, reason in the mark's details) every complete block of
// tb not yet marked whose max time is older than now() minus its retention: the shorter of tenantRetention (the
// tenant's compactor_blocks_retention_period; 0 = forever) and cfg's retention for the block's resolution (0 =
// forever). tbkt is the tenant-scoped bucket tb was scanned from. The marks are added to tb. It returns how many
// blocks it marked; on a bucket error it stops and returns the blocks marked so far with the error (a re-run
// marks the rest; marks already written are kept with their time).
func ApplyRetention(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, tb *TenantBlocks, tenantRetention time.Duration, cfg RetentionConfig, now func() time.Time) (int, error) {
	t := now()
	marked := 0
	for _, m := range tb.Live() {
		ret := shorter(tenantRetention, cfg.forResolution(m.Thanos.Downsample.Resolution))
		if ret <= 0 || m.MaxTime >= t.Add(-ret).UnixMilli() {
			continue
		}
		details := fmt.Sprintf("retention: max time %s older than %s (resolution %d)",
			time.UnixMilli(m.MaxTime).UTC().Format(time.RFC3339), ret, m.Thanos.Downsample.Resolution)
		if err := block.MarkForDeletion(ctx, logger, tbkt, m.ULID, details, now); err != nil {
			return marked, err
		}
		dm, err := block.ReadDeletionMark(ctx, tbkt, m.ULID)
		if err != nil {
			return marked, errors.Wrapf(err, "read back deletion mark of block %s", m.ULID)
		}
		tb.DeletionMarks[m.ULID] = dm
		marked++
		level.Info(logger).Log("msg", "block past retention marked for deletion", "block", m.ULID, "retention", ret,
			"resolution", m.Thanos.Downsample.Resolution)
	}
	return marked, nil
}

// shorter returns the shorter of two retentions, 0 meaning forever.
func shorter(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
