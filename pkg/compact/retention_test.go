package compact

import (
	"context"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// TestApplyRetention checks which blocks the tenant's retention and the per-resolution retentions mark for
// deletion (by max time), that another tenant's blocks are untouched, and that a re-run marks nothing more and
// keeps the first marks' time.
func TestApplyRetention(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	day := 24 * time.Hour
	step := int64(time.Hour / time.Millisecond)
	// Blocks by name: resolution and how long before now their max time is.
	blocks := []struct {
		name string
		res  int64
		age  time.Duration
	}{
		{"raw-40d", ResolutionRaw, 40 * day},
		{"raw-10d", ResolutionRaw, 10 * day},
		{"raw-1d", ResolutionRaw, day},
		{"5m-40d", Resolution5m, 40 * day},
		{"5m-10d", Resolution5m, 10 * day},
		{"1h-40d", Resolution1h, 40 * day},
	}
	for _, tc := range []struct {
		name            string
		tenantRetention time.Duration
		cfg             RetentionConfig
		marked          []string
	}{
		{"forever", 0, RetentionConfig{}, nil},
		{"tenant 30d", 30 * day, RetentionConfig{}, []string{"raw-40d", "5m-40d", "1h-40d"}},
		{"tenant 5d", 5 * day, RetentionConfig{}, []string{"raw-40d", "raw-10d", "5m-40d", "5m-10d", "1h-40d"}},
		{"raw 5d, downsampled forever", 0, RetentionConfig{Raw: 5 * day}, []string{"raw-40d", "raw-10d"}},
		{"raw 5d, 5m 30d, 1h forever", 0, RetentionConfig{Raw: 5 * day, FiveMin: 30 * day}, []string{"raw-40d", "raw-10d", "5m-40d"}},
		{"tenant shorter than resolution", 30 * day, RetentionConfig{Raw: 60 * day, OneHour: 100 * day}, []string{"raw-40d", "5m-40d", "1h-40d"}},
		{"resolution shorter than tenant", 100 * day, RetentionConfig{Raw: 5 * day}, []string{"raw-40d", "raw-10d"}},
		{"exactly at the edge is kept", 10 * day, RetentionConfig{}, []string{"raw-40d", "5m-40d", "1h-40d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, _ := fsBucket(t)
			ids := map[string]map[string]ulid.ULID{}
			for _, tenant := range []string{"a", "b"} {
				tbkt := objstore.NewPrefixedBucket(bkt, tenant)
				ids[tenant] = map[string]ulid.ULID{}
				for _, b := range blocks {
					maxt := testNow.Add(-b.age).UnixMilli()
					m := uploadTestBlock(t, tbkt, tenant, maxt-2*step, maxt, step, func(m *block.Meta) {
						m.Thanos.Downsample.Resolution = b.res
					})
					ids[tenant][b.name] = m.ULID
				}
			}
			tbkt := objstore.NewPrefixedBucket(bkt, "a")
			tb, err := ScanTenant(ctx, logger, tbkt, 4)
			testutil.Ok(t, err)
			n, err := ApplyRetention(ctx, logger, tbkt, tb, tc.tenantRetention, tc.cfg, fixedNow(testNow))
			testutil.Ok(t, err)
			testutil.Equals(t, len(tc.marked), n)

			want := map[string]bool{}
			for _, name := range tc.marked {
				want[name] = true
			}
			for tenant, byName := range ids {
				tenantBkt := objstore.NewPrefixedBucket(bkt, tenant)
				for name, id := range byName {
					dm, err := block.ReadDeletionMark(ctx, tenantBkt, id)
					marked := err == nil
					testutil.Equals(t, tenant == "a" && want[name], marked, "tenant %s block %s", tenant, name)
					if marked {
						testutil.Equals(t, testNow.Unix(), dm.DeletionTime)
						testutil.Equals(t, dm, tb.DeletionMarks[id])
						ok, err := tenantBkt.Exists(ctx, block.DeletionMarkFilepath(id))
						testutil.Ok(t, err)
						testutil.Assert(t, ok, "mirrored mark of %s", name)
					}
				}
			}

			// A re-run from a fresh scan: nothing more to mark.
			tb, err = ScanTenant(ctx, logger, tbkt, 4)
			testutil.Ok(t, err)
			n, err = ApplyRetention(ctx, logger, tbkt, tb, tc.tenantRetention, tc.cfg, fixedNow(testNow))
			testutil.Ok(t, err)
			testutil.Equals(t, 0, n)
			testutil.Equals(t, len(tc.marked), len(tb.DeletionMarks))
		})
	}
}

func TestRetentionConfig_Validate(t *testing.T) {
	testutil.Ok(t, RetentionConfig{}.Validate())
	testutil.Ok(t, RetentionConfig{Raw: time.Hour, FiveMin: 2 * time.Hour}.Validate())
	testutil.NotOk(t, RetentionConfig{OneHour: -time.Hour}.Validate())
}
