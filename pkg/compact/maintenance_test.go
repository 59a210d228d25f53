package compact

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// countingBucket counts the reads of meta.json.
type countingBucket struct {
	objstore.Bucket
	metaGets *atomic.Int64
}

func (b countingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if strings.HasSuffix(name, "/"+block.MetaFilename) {
		b.metaGets.Add(1)
	}
	return b.Bucket.Get(ctx, name)
}

// TestMaintenance_RunTenant runs the maintenance of two tenants over three cycles and checks each cycle's
// counts, the blocks the bucket index lists (read back through block.MetaFetcher, as the store-gateways do) and
// that a cycle reads only new blocks' meta.json: a raw block past the raw retention is downsampled before it is
// marked, then deleted after the deletion delay; a tenant's own retention marks its blocks only.
func TestMaintenance_RunTenant(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	hour := int64(time.Hour / time.Millisecond)
	day := 24 * time.Hour
	bkt, _ := fsBucket(t)

	oldMax := testNow.Add(-10 * day).UnixMilli()
	a := objstore.NewPrefixedBucket(bkt, "a")
	oldRaw := uploadTestBlock(t, a, "a", oldMax-41*hour, oldMax, 30*60_000, nil)
	recent := uploadTestBlock(t, a, "a", testNow.Add(-3*time.Hour).UnixMilli(), testNow.Add(-time.Hour).UnixMilli(), 30*60_000, nil)
	b := objstore.NewPrefixedBucket(bkt, "b")
	bOld := uploadTestBlock(t, b, "b", testNow.Add(-4*day).UnixMilli(), testNow.Add(-3*day).UnixMilli(), 30*60_000, nil)
	bNew := uploadTestBlock(t, b, "b", testNow.Add(-3*time.Hour).UnixMilli(), testNow.Add(-time.Hour).UnixMilli(), 30*60_000, nil)

	clock := testNow
	cfg := MaintenanceConfig{
		Retention:   RetentionConfig{Raw: 5 * day},
		Cleaner:     CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: day},
		Concurrency: 2,
	}
	testutil.Ok(t, cfg.Validate(time.Hour))
	tenantRetention := map[string]time.Duration{"b": 2 * day}
	mt := NewMaintenance(cfg, func(tenant string) time.Duration { return tenantRetention[tenant] }, t.TempDir(), logger, func() time.Time { return clock })

	type tenantWant struct {
		res      MaintenanceResult
		served   func(ds ulid.ULID) []ulid.ULID // blocks the index-reading fetcher serves, given the 5m block's ULID
		metaGets int64
	}
	var ds ulid.ULID // the 5m block of oldRaw
	for i, cycle := range []struct {
		at   time.Time
		want map[string]tenantWant
	}{
		{testNow, map[string]tenantWant{
			"a": {MaintenanceResult{Downsample: DownsampleResult{Downsampled5m: 1}, RetentionMarked: 1, IndexWritten: true, IndexBlocks: 3, IndexDeletionMarks: 1},
				// Two metas read by the scan, one downloaded with the block to downsample.
				func(ds ulid.ULID) []ulid.ULID { return []ulid.ULID{oldRaw.ULID, recent.ULID, ds} }, 3},
			"b": {MaintenanceResult{RetentionMarked: 1, IndexWritten: true, IndexBlocks: 2, IndexDeletionMarks: 1},
				func(ulid.ULID) []ulid.ULID { return []ulid.ULID{bOld.ULID, bNew.ULID} }, 2},
		}},
		{testNow.Add(6 * time.Hour), map[string]tenantWant{
			"a": {MaintenanceResult{IndexWritten: true, IndexBlocks: 3, IndexDeletionMarks: 1},
				func(ds ulid.ULID) []ulid.ULID { return []ulid.ULID{recent.ULID, ds} }, 0},
			"b": {MaintenanceResult{IndexWritten: true, IndexBlocks: 2, IndexDeletionMarks: 1},
				func(ulid.ULID) []ulid.ULID { return []ulid.ULID{bNew.ULID} }, 0},
		}},
		{testNow.Add(13 * time.Hour), map[string]tenantWant{
			"a": {MaintenanceResult{Clean: CleanResult{Deleted: 1}, IndexWritten: true, IndexBlocks: 2},
				func(ds ulid.ULID) []ulid.ULID { return []ulid.ULID{recent.ULID, ds} }, 0},
			"b": {MaintenanceResult{Clean: CleanResult{Deleted: 1}, IndexWritten: true, IndexBlocks: 1},
				func(ulid.ULID) []ulid.ULID { return []ulid.ULID{bNew.ULID} }, 0},
		}},
	} {
		clock = cycle.at
		for _, tenant := range []string{"a", "b"} {
			var gets atomic.Int64
			tbkt := countingBucket{Bucket: objstore.NewPrefixedBucket(bkt, tenant), metaGets: &gets}
			res, err := mt.RunTenant(ctx, tenant, tbkt)
			testutil.Ok(t, err)
			want := cycle.want[tenant]
			testutil.Equals(t, want.res, res, "cycle %d tenant %s", i, tenant)
			testutil.Equals(t, want.metaGets, gets.Load(), "meta.json reads, cycle %d tenant %s", i, tenant)

			if tenant == "a" && i == 0 {
				tb, err := ScanTenant(ctx, logger, tbkt, 1)
				testutil.Ok(t, err)
				for id, m := range tb.Metas {
					if m.Thanos.Downsample.Resolution == Resolution5m {
						ds = id
					}
				}
				testutil.Assert(t, ds != ulid.ULID{}, "no 5m block")
			}
			d, err := block.NewMetaFetcher(bkt, 2, time.Hour, func() time.Time { return clock }).Fetch(ctx, tenant)
			testutil.Ok(t, err)
			testutil.Assert(t, d.FromIndex)
			wantServed := want.served(ds)
			sortIDs(wantServed)
			testutil.Equals(t, wantServed, keys(d.Metas), "served, cycle %d tenant %s", i, tenant)
		}
	}
}

// TestMaintenance_Step runs the maintenance as a cycle step and checks that its counts reach the metrics.
func TestMaintenance_Step(t *testing.T) {
	ctx := context.Background()
	hour := int64(time.Hour / time.Millisecond)
	bkt, _ := fsBucket(t)
	tbkt := objstore.NewPrefixedBucket(bkt, "a")
	maxt := testNow.Add(-10 * 24 * time.Hour).UnixMilli()
	uploadTestBlock(t, tbkt, "a", maxt-41*hour, maxt, 30*60_000, nil)

	reg := prometheus.NewRegistry()
	cfg := MaintenanceConfig{Retention: RetentionConfig{Raw: 24 * time.Hour}, Cleaner: DefaultCleanerConfig()}
	step := NewMaintenance(cfg, nil, t.TempDir(), log.NewNopLogger(), fixedNow(testNow)).Step(reg)
	testutil.Ok(t, step.Run(ctx, "a", tbkt))

	for name, want := range map[string]float64{
		"strata_compactor_blocks_downsampled_total":          1, // the 5m block
		"strata_compactor_blocks_marked_for_retention_total": 1, // the raw block
		"strata_compactor_bucket_index_blocks":               2,
		"strata_compactor_bucket_index_deletion_marks":       1,
		"strata_compactor_blocks_cleaned_total":              0,
	} {
		testutil.Equals(t, want, gatheredSum(t, reg, name), name)
	}
}

// gatheredSum sums the samples of the metric family name gathered from reg.
func gatheredSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
