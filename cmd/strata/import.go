package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// importThanosFlags are the flags of `strata tools import-thanos` (the destination bucket is the common
// --objstore.config-file).
type importThanosFlags struct {
	fromConfigFile   *string
	tenant           *string
	matchLabels      *[]string
	resolution       *string
	dryRun           *bool
	concurrency      *int
	progressInterval *time.Duration
}

// registerImportThanos registers `strata tools import-thanos` under tools and returns its component.
func registerImportThanos(tools *kingpin.CmdClause) (string, component) {
	cmd := tools.Command("import-thanos", "Copy the blocks of a Thanos bucket (blocks at its root) into a tenant of Strata's bucket (--objstore.config-file), adding tenant_id to their external labels. Verified, resumable.")
	f := &importThanosFlags{
		fromConfigFile:   cmd.Flag("from.objstore.config-file", "Thanos objstore config file of the source bucket (the Thanos bucket).").Required().String(),
		tenant:           cmd.Flag("tenant", "Tenant the blocks are imported into (tenant_id label added).").Required().String(),
		matchLabels:      cmd.Flag("match-label", "Import only blocks whose external labels (thanos.labels) include name=value (repeatable: all must match).").Strings(),
		resolution:       cmd.Flag("resolution", "Import only blocks of this resolution: raw, 5m, 1h or all.").Default("all").Enum("raw", "5m", "1h", "all"),
		dryRun:           cmd.Flag("dry-run", "Print the plan (blocks, bytes, time range) and copy nothing.").Bool(),
		concurrency:      cmd.Flag("concurrency", "Blocks copied at a time.").Default("4").Int(),
		progressInterval: cmd.Flag("progress-interval", "When stderr is not a terminal, how often a progress line (blocks, bytes, ETA) is logged, besides one per block copied; 0: never. On a terminal a progress bar is drawn instead.").Default("10s").Duration(),
	}
	return cmd.FullCommand(), func(p *process) error { return runImportThanos(p, f) }
}

// parseMatchLabels parses the --match-label values (name=value).
func parseMatchLabels(vals []string) (map[string]string, error) {
	m := map[string]string{}
	for _, v := range vals {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return nil, errors.Newf("--match-label must be name=value; got %q", v)
		}
		m[name] = value
	}
	return m, nil
}

// runImportThanos runs `strata tools import-thanos`: one run of the importer, then the process exits.
func runImportThanos(p *process, f *importThanosFlags) error {
	match, err := parseMatchLabels(*f.matchLabels)
	if err != nil {
		return err
	}
	src, err := block.NewBucket(block.BucketConfig{ConfigFile: *f.fromConfigFile}, p.cfg.DataDir, p.logger, nil)
	if err != nil {
		return errSetup(err, "source bucket (--from.objstore.config-file)")
	}
	dst, err := block.NewBucket(p.cfg.Objstore, p.cfg.DataDir, p.logger, p.reg)
	if err != nil {
		return errSetup(err, "destination bucket (--objstore.config-file)")
	}
	im, err := block.NewImporter(p.logger, src, dst, block.ImportConfig{
		Tenant: *f.tenant, MatchLabels: match, Resolution: *f.resolution, DryRun: *f.dryRun,
		Concurrency: *f.concurrency, Progress: block.NewImportProgressFor(p.logger, os.Stderr, *f.progressInterval),
	}, nil)
	if err != nil {
		return errors.Wrap(err, "invalid import-thanos flags")
	}
	p.oneShot = true // Ctrl-C mid-copy exits non-zero: the import is not complete (a re-run resumes it)
	addContextActor(p.g, func(ctx context.Context) error {
		defer closeBuckets(p, src, dst)
		plan, err := im.Plan(ctx)
		if err != nil {
			return err
		}
		printPlan(os.Stdout, plan, *f.tenant)
		if *f.dryRun {
			return nil
		}
		return im.Run(ctx, plan)
	})
	return nil
}

func closeBuckets(p *process, bkts ...objstore.Bucket) {
	for _, b := range bkts {
		if err := b.Close(); err != nil {
			level.Warn(p.logger).Log("msg", "closing a bucket client", "err", err)
		}
	}
}

// printPlan writes the import plan: one line per selected block, then the totals.
func printPlan(w io.Writer, plan *block.ImportPlan, tenant string) {
	fmtTime := func(ms int64) string { return timestamp.Time(ms).UTC().Format(time.RFC3339) }
	for _, b := range plan.Blocks {
		state := "copy"
		if b.Present {
			state = "present"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\tresolution=%dms\tbytes=%d\t%s .. %s\t%v\n", state, b.Meta.ULID, tenant,
			b.Meta.Thanos.Downsample.Resolution, b.Bytes, fmtTime(b.Meta.MinTime), fmtTime(b.Meta.MaxTime), b.Meta.Thanos.Labels)
	}
	span := "none"
	if len(plan.Blocks) > 0 {
		span = fmtTime(plan.MinTime) + " .. " + fmtTime(plan.MaxTime)
	}
	fmt.Fprintf(w, "plan: %d blocks to copy (%d bytes), %d present, time range %s; skipped: %d partial, %d marked for deletion, %d corrupted, %d not selected\n",
		plan.ToCopy(), plan.Bytes, len(plan.Blocks)-plan.ToCopy(), span, len(plan.Partial), len(plan.Deleted), len(plan.Corrupted), len(plan.Unselected))
}
