package compact

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// TestDownsamplePass runs the pass twice over tenants holding blocks of several spans and states, and checks
// what each run wrote: raw blocks of 40h or more get a 5m block, 5m blocks of 10 days or more a 1h block (in the
// same run), shorter, deletion-marked and already covered blocks nothing; an unreadable block is marked
// no-compact and the others carry on; the second run writes nothing (crash-safe re-run); the work dir is left
// empty.
func TestDownsamplePass(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	const tenant = "a"
	hour := int64(time.Hour / time.Millisecond)
	base := testNow.Add(-30 * 24 * time.Hour).UnixMilli()
	step := int64(30 * 60_000)

	type setup func(t *testing.T, tbkt objstore.Bucket)
	raw := func(span int64, mutate func(*block.Meta)) setup {
		return func(t *testing.T, tbkt objstore.Bucket) {
			uploadTestBlock(t, tbkt, tenant, base, base+span, step, mutate)
		}
	}
	for _, tc := range []struct {
		name   string
		blocks []setup
		first  DownsampleResult
		// want5m and want1h are the complete blocks at 5m and 1h after the first run.
		want5m, want1h int
	}{
		{"raw 41h", []setup{raw(41*hour, nil)}, DownsampleResult{Downsampled5m: 1}, 1, 0},
		{"raw exactly 40h", []setup{raw(40*hour, nil)}, DownsampleResult{Downsampled5m: 1}, 1, 0},
		{"raw 39h", []setup{raw(39*hour, nil)}, DownsampleResult{}, 0, 0},
		{"raw 10d: 5m then 1h", []setup{raw(240*hour, nil)}, DownsampleResult{Downsampled5m: 1, Downsampled1h: 1}, 1, 1},
		{"raw 41h marked for deletion", []setup{func(t *testing.T, tbkt objstore.Bucket) {
			m := uploadTestBlock(t, tbkt, tenant, base, base+41*hour, step, nil)
			testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, m.ULID, "test", fixedNow(testNow)))
		}}, DownsampleResult{}, 0, 0},
		{"raw 41h covered by a 5m block of the same sources", []setup{func(t *testing.T, tbkt objstore.Bucket) {
			m := uploadTestBlock(t, tbkt, tenant, base, base+41*hour, step, nil)
			uploadTestBlock(t, tbkt, tenant, base, base+41*hour, step, func(d *block.Meta) {
				d.Thanos.Downsample.Resolution = Resolution5m
				d.Compaction.Sources = m.Compaction.Sources
			})
		}}, DownsampleResult{}, 1, 0},
		{"raw 41h of two sources, a 5m block holds one", []setup{func(t *testing.T, tbkt objstore.Bucket) {
			one := uploadTestBlock(t, tbkt, tenant, base, base+2*hour, step, nil)
			uploadTestBlock(t, tbkt, tenant, base, base+41*hour, step, func(d *block.Meta) {
				d.Compaction.Sources = append([]ulid.ULID{one.ULID}, d.ULID)
			})
			uploadTestBlock(t, tbkt, tenant, base, base+2*hour, step, func(d *block.Meta) {
				d.Thanos.Downsample.Resolution = Resolution5m
				d.Compaction.Sources = one.Compaction.Sources
			})
		}}, DownsampleResult{Downsampled5m: 1}, 2, 0},
		{"5m 10d gets 1h", []setup{raw(240*hour, func(m *block.Meta) { m.Thanos.Downsample.Resolution = Resolution5m })},
			DownsampleResult{Downsampled1h: 1}, 1, 1},
		{"5m 9d", []setup{raw(216*hour, func(m *block.Meta) { m.Thanos.Downsample.Resolution = Resolution5m })},
			DownsampleResult{}, 1, 0},
		{"corrupted block marked, the others carry on", []setup{
			func(t *testing.T, tbkt objstore.Bucket) {
				m := uploadTestBlock(t, tbkt, tenant, base, base+41*hour, step, nil)
				testutil.Ok(t, tbkt.Upload(ctx, m.ULID.String()+"/chunks/000001", strings.NewReader("garbage")))
			},
			raw(42*hour, nil),
		}, DownsampleResult{Downsampled5m: 1, Marked: 1}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, _ := fsBucket(t)
			tbkt := objstore.NewPrefixedBucket(bkt, tenant)
			other := objstore.NewPrefixedBucket(bkt, "b")
			otherBlock := uploadTestBlock(t, other, "b", base, base+41*hour, step, nil)
			for _, s := range tc.blocks {
				s(t, tbkt)
			}
			work := t.TempDir()

			tb, err := ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			res, err := DownsamplePass(ctx, logger, tbkt, tb, work, fixedNow(testNow))
			testutil.Equals(t, tc.first.Marked > 0, err != nil, "%v", err)
			testutil.Equals(t, tc.first, res)
			checkDownsampled(t, ctx, tbkt, tb, tc.want5m, tc.want1h)
			testutil.Equals(t, 0, len(tb.Partial))
			left, err := os.ReadDir(work)
			testutil.Ok(t, err)
			testutil.Equals(t, 0, len(left))

			// Re-run from a fresh scan: nothing more (the marked block is not tried again).
			tb, err = ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			res, err = DownsamplePass(ctx, logger, tbkt, tb, work, fixedNow(testNow.Add(time.Hour)))
			testutil.Ok(t, err)
			testutil.Equals(t, DownsampleResult{}, res)
			checkDownsampled(t, ctx, tbkt, tb, tc.want5m, tc.want1h)

			// The other tenant is untouched.
			otb, err := ScanTenant(ctx, logger, other, 2)
			testutil.Ok(t, err)
			testutil.Equals(t, []ulid.ULID{otherBlock.ULID}, keys(otb.Metas))
		})
	}
}

// checkDownsampled checks that tb agrees with a fresh scan and holds n5m and n1h blocks at 5m and 1h, each with
// the time range, labels and sources of a block of the resolution below that it was made from.
func checkDownsampled(t *testing.T, ctx context.Context, tbkt objstore.Bucket, tb *TenantBlocks, n5m, n1h int) {
	t.Helper()
	fresh, err := ScanTenant(ctx, log.NewNopLogger(), tbkt, 2)
	testutil.Ok(t, err)
	testutil.Equals(t, keys(fresh.Metas), keys(tb.Metas))
	count := map[int64]int{}
	for _, m := range fresh.Metas {
		count[m.Thanos.Downsample.Resolution]++
		if m.Thanos.Source != block.CompactorSource {
			continue
		}
		found := false
		for _, src := range fresh.Metas {
			if src.Thanos.Downsample.Resolution < m.Thanos.Downsample.Resolution && src.MinTime == m.MinTime &&
				src.MaxTime == m.MaxTime && len(src.Compaction.Sources) == len(m.Compaction.Sources) &&
				allCovered(src.Compaction.Sources, setOf(m.Compaction.Sources)) {
				found = true
				testutil.Equals(t, src.Thanos.Labels, m.Thanos.Labels)
			}
		}
		testutil.Assert(t, found, "downsampled block %s has no source block", m.ULID)
		testutil.Assert(t, m.Stats.NumSamples > 0, "downsampled block %s is empty", m.ULID)
	}
	testutil.Equals(t, n5m, count[Resolution5m], "5m blocks")
	testutil.Equals(t, n1h, count[Resolution1h], "1h blocks")
}

func setOf(ids []ulid.ULID) map[ulid.ULID]struct{} {
	s := map[ulid.ULID]struct{}{}
	for _, id := range ids {
		s[id] = struct{}{}
	}
	return s
}

// TestDownsamplePass_KilledMidUpload interrupts the upload of the downsampled block at each of its steps (a
// failure standing for a kill -9) and checks that the interrupted block is never visible to readers, that the
// next pass writes the block once, and that the cleaner later removes the leftover partial block.
func TestDownsamplePass_KilledMidUpload(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	hour := int64(time.Hour / time.Millisecond)
	base := testNow.Add(-30 * 24 * time.Hour).UnixMilli()
	for _, tc := range []struct {
		name   string
		killAt func(name string) bool
	}{
		{"at chunks", func(n string) bool { return strings.Contains(n, "/chunks/") }},
		{"at index", func(n string) bool { return strings.HasSuffix(n, "/"+block.IndexFilename) }},
		{"at meta.json", func(n string) bool { return strings.HasSuffix(n, "/"+block.MetaFilename) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, _ := fsBucket(t)
			tbkt := objstore.NewPrefixedBucket(bkt, "a")
			src := uploadTestBlock(t, tbkt, "a", base, base+41*hour, 30*60_000, nil)
			killed := failingBucket{Bucket: tbkt, fail: func(op, name string) bool {
				return op == "upload" && !strings.HasPrefix(name, src.ULID.String()) && tc.killAt(name)
			}}
			tb, err := ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			res, err := DownsamplePass(ctx, logger, killed, tb, t.TempDir(), fixedNow(testNow))
			testutil.NotOk(t, err)
			testutil.Equals(t, DownsampleResult{Failed: 1}, res)

			d, err := block.NewMetaFetcher(bkt, 1, time.Hour, fixedNow(testNow)).Fetch(ctx, "a")
			testutil.Ok(t, err)
			testutil.Equals(t, []ulid.ULID{src.ULID}, keys(d.Metas))
			partial := append([]ulid.ULID{}, d.Partial...)
			sortIDs(partial)
			// Killed at the first chunk nothing was uploaded; later, the block is partial.
			testutil.Equals(t, tc.name != "at chunks", len(partial) == 1)

			tb, err = ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			res, err = DownsamplePass(ctx, logger, tbkt, tb, t.TempDir(), fixedNow(testNow.Add(time.Minute)))
			testutil.Ok(t, err)
			testutil.Equals(t, DownsampleResult{Downsampled5m: 1}, res)
			tb, err = ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			checkDownsampled(t, ctx, tbkt, &TenantBlocks{Metas: tb.Metas}, 1, 0)
			testutil.Equals(t, partial, append([]ulid.ULID{}, keys(tb.Partial)...))

			// The leftover partial block: marked, then deleted, by the cleaner once older than its delay.
			cfg := CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: time.Nanosecond}
			later := fixedNow(time.Now().Add(time.Hour))
			for range 2 {
				tb, err = ScanTenant(ctx, logger, tbkt, 2)
				testutil.Ok(t, err)
				_, err = CleanTenant(ctx, logger, tbkt, tb, cfg, later)
				testutil.Ok(t, err)
			}
			tb, err = ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			testutil.Equals(t, 0, len(tb.Partial))
			testutil.Equals(t, 2, len(tb.Metas))
		})
	}
}
