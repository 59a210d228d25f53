package compact

import (
	"context"
	"crypto/rand"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// failingBucket fails the uploads and deletions of the objects fail names: a compactor killed at that point.
type failingBucket struct {
	objstore.Bucket
	fail func(op, name string) bool
}

var errInjected = errors.New("injected failure")

func (b failingBucket) Delete(ctx context.Context, name string) error {
	if b.fail("delete", name) {
		return errInjected
	}
	return b.Bucket.Delete(ctx, name)
}

func (b failingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if b.fail("upload", name) {
		return errInjected
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// blockState is what the bucket holds of a block: "live" (meta.json, no mark), "marked", "partial" (no
// meta.json, no mark), "partial-marked", or "gone" (no object mentions it).
func blockState(t *testing.T, bkt, tbkt objstore.Bucket, id ulid.ULID) string {
	t.Helper()
	if len(objectsOf(t, bkt, id)) == 0 {
		return "gone"
	}
	hasMeta, err := tbkt.Exists(context.Background(), path.Join(id.String(), block.MetaFilename))
	testutil.Ok(t, err)
	_, err = block.ReadDeletionMark(context.Background(), tbkt, id)
	marked := err == nil
	switch {
	case hasMeta && marked:
		return "marked"
	case hasMeta:
		return "live"
	case marked:
		return "partial-marked"
	}
	return "partial"
}

// TestCleanTenant runs the cleaner twice over a tenant holding blocks in every state and checks each block's
// state after each run: marked blocks go after the deletion delay, abandoned partial blocks are marked then
// deleted, partial blocks that may still be uploading and blocks with a corrupted meta.json are left alone,
// orphan mirrored markers are removed; the other tenant is untouched.
func TestCleanTenant(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	const tenant = "a"
	cfg := CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: 24 * time.Hour}
	hour := int64(time.Hour / time.Millisecond)

	bkt, root := fsBucket(t)
	tbkt := objstore.NewPrefixedBucket(bkt, tenant)
	other := objstore.NewPrefixedBucket(bkt, "b")
	base := testNow.Add(-72 * time.Hour).UnixMilli()
	mk := func(tb objstore.Bucket, tn string, i int64) ulid.ULID {
		return uploadTestBlock(t, tb, tn, base+i*2*hour, base+(i+1)*2*hour, 30*60_000, nil).ULID
	}
	ids := map[string]ulid.ULID{
		"live":            mk(tbkt, tenant, 0),
		"marked-13h":      mk(tbkt, tenant, 1),
		"marked-1h":       mk(tbkt, tenant, 2),
		"other-tenant":    mk(other, "b", 0),
		"partial-2d":      partialBlock(t, tbkt, root, tenant, testNow.Add(-48*time.Hour), testNow.Add(-48*time.Hour)),
		"partial-slow":    partialBlock(t, tbkt, root, tenant, testNow.Add(-48*time.Hour), testNow.Add(-time.Hour)),
		"partial-new":     partialBlock(t, tbkt, root, tenant, testNow.Add(-time.Hour), testNow.Add(-time.Hour)),
		"partial-marked":  partialBlock(t, tbkt, root, tenant, testNow.Add(-time.Hour), testNow.Add(-time.Hour)),
		"corrupted":       ulid.MustNew(ulid.Timestamp(testNow.Add(-48*time.Hour)), rand.Reader),
		"orphan-marker":   ulid.MustNew(ulid.Timestamp(testNow.Add(-48*time.Hour)), rand.Reader),
		"other-marked-2d": mk(other, "b", 1),
	}
	testutil.Ok(t, block.MarkForDeletion(ctx, logger, other, ids["other-marked-2d"], "test", fixedNow(testNow.Add(-48*time.Hour))))
	testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, ids["marked-13h"], "test", fixedNow(testNow.Add(-13*time.Hour))))
	testutil.Ok(t, block.MarkForNoCompaction(ctx, logger, tbkt, ids["marked-13h"], block.ManualNoCompactReason, "test", fixedNow(testNow)))
	testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, ids["marked-1h"], "test", fixedNow(testNow.Add(-time.Hour))))
	testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, ids["partial-marked"], "test", fixedNow(testNow.Add(-time.Hour))))
	testutil.Ok(t, tbkt.Upload(ctx, ids["corrupted"].String()+"/meta.json", strings.NewReader("{")))
	testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, ids["corrupted"], "test", fixedNow(testNow.Add(-48*time.Hour))))
	testutil.Ok(t, tbkt.Upload(ctx, block.DeletionMarkFilepath(ids["orphan-marker"]), strings.NewReader("{}")))
	testutil.Ok(t, tbkt.Upload(ctx, block.NoCompactMarkFilepath(ids["orphan-marker"]), strings.NewReader("{}")))

	for _, run := range []struct {
		want map[string]string
		res  CleanResult
	}{
		{
			want: map[string]string{
				"live": "live", "marked-13h": "gone", "marked-1h": "marked", "partial-2d": "partial-marked",
				"partial-slow": "partial", "partial-new": "partial", "partial-marked": "gone", "corrupted": "marked",
				"orphan-marker": "gone", "other-tenant": "live", "other-marked-2d": "marked",
			},
			res: CleanResult{Deleted: 2, PartialDeleted: 1, PartialMarked: 1, OrphanMarkers: 2},
		},
		{
			want: map[string]string{
				"live": "live", "marked-13h": "gone", "marked-1h": "marked", "partial-2d": "gone",
				"partial-slow": "partial", "partial-new": "partial", "partial-marked": "gone", "corrupted": "marked",
				"orphan-marker": "gone", "other-tenant": "live", "other-marked-2d": "marked",
			},
			res: CleanResult{Deleted: 1, PartialDeleted: 1},
		},
	} {
		tb, err := ScanTenant(ctx, logger, tbkt, 2)
		testutil.Ok(t, err)
		res, err := CleanTenant(ctx, logger, tbkt, tb, cfg, fixedNow(testNow))
		testutil.Ok(t, err)
		testutil.Equals(t, run.res, res)
		for name, want := range run.want {
			sub := tbkt
			if strings.HasPrefix(name, "other") {
				sub = other
			}
			testutil.Equals(t, want, blockState(t, bkt, sub, ids[name]), name)
		}
		// tb was kept up to date: a fresh scan agrees.
		fresh, err := ScanTenant(ctx, logger, tbkt, 2)
		testutil.Ok(t, err)
		testutil.Equals(t, keys(fresh.Metas), keys(tb.Metas))
		testutil.Equals(t, keys(fresh.Partial), keys(tb.Partial))
		testutil.Equals(t, keys(fresh.DeletionMarks), keys(tb.DeletionMarks))
		testutil.Equals(t, keys(fresh.GlobalMarkers), keys(tb.GlobalMarkers))
	}
}

// TestCleanTenant_KilledMidDeletion interrupts the deletion of a marked block at each of its steps (a failure
// stands for a kill -9 there) and checks that no step leaves a block that readers would load (meta.json is
// always gone first), and that the next clean, from a fresh scan, finishes the deletion: nothing of the block
// is left, markers included.
func TestCleanTenant_KilledMidDeletion(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	cfg := CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: 24 * time.Hour}
	hour := int64(time.Hour / time.Millisecond)
	for _, tc := range []struct {
		name   string
		killAt func(name string) bool
		state  string // after the kill
	}{
		{"at meta.json", func(n string) bool { return strings.HasSuffix(n, "/"+block.MetaFilename) }, "marked"},
		{"at chunks", func(n string) bool { return strings.Contains(n, "/chunks/") }, "partial-marked"},
		{"at index", func(n string) bool { return strings.HasSuffix(n, "/"+block.IndexFilename) }, "partial-marked"},
		{"at the block's deletion mark", func(n string) bool {
			return strings.HasSuffix(n, "/"+block.DeletionMarkFilename) && !strings.Contains(n, block.MarkersDirname)
		}, "partial-marked"},
		{"at the mirrored deletion mark", func(n string) bool { return strings.HasPrefix(n, block.MarkersDirname+"/") }, "orphan-marker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, _ := fsBucket(t)
			tbkt := objstore.NewPrefixedBucket(bkt, "a")
			id := uploadTestBlock(t, tbkt, "a", testNow.Add(-72*time.Hour).UnixMilli(), testNow.Add(-72*time.Hour).UnixMilli()+2*hour, 30*60_000, nil).ULID
			keep := uploadTestBlock(t, tbkt, "a", testNow.Add(-70*time.Hour).UnixMilli(), testNow.Add(-70*time.Hour).UnixMilli()+2*hour, 30*60_000, nil).ULID
			testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, id, "test", fixedNow(testNow.Add(-13*time.Hour))))

			killed := failingBucket{Bucket: tbkt, fail: func(op, name string) bool { return op == "delete" && tc.killAt(name) }}
			tb, err := ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			res, err := CleanTenant(ctx, logger, killed, tb, cfg, fixedNow(testNow))
			testutil.NotOk(t, err)
			testutil.Equals(t, 1, res.Failed)
			state := blockState(t, bkt, tbkt, id)
			if tc.state == "orphan-marker" {
				testutil.Equals(t, "gone", blockStateDirOnly(t, tbkt, id))
				testutil.Assert(t, len(objectsOf(t, bkt, id)) > 0, "the mirrored mark is left")
			} else {
				testutil.Equals(t, tc.state, state)
			}
			d, err := block.NewMetaFetcher(bkt, 1, time.Hour, fixedNow(testNow)).Fetch(ctx, "a")
			testutil.Ok(t, err)
			_, served := d.Metas[id]
			testutil.Assert(t, !served, "a half-deleted block is served")

			tb, err = ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			_, err = CleanTenant(ctx, logger, tbkt, tb, cfg, fixedNow(testNow))
			testutil.Ok(t, err)
			testutil.Equals(t, []string(nil), objectsOf(t, bkt, id))
			testutil.Equals(t, "live", blockState(t, bkt, tbkt, keep))
		})
	}
}

// blockStateDirOnly is "gone" when the block's directory holds no object.
func blockStateDirOnly(t *testing.T, tbkt objstore.Bucket, id ulid.ULID) string {
	ok, err := blockExists(context.Background(), tbkt, id)
	testutil.Ok(t, err)
	if ok {
		return "present"
	}
	return "gone"
}

func TestCleanerConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     CleanerConfig
		ignore  time.Duration
		wantErr bool
	}{
		{"defaults vs Mimir's 1h", DefaultCleanerConfig(), time.Hour, false},
		{"deletion delay equal to the readers' delay", CleanerConfig{DeletionDelay: time.Hour, PartialBlockDeletionDelay: time.Hour}, time.Hour, true},
		{"deletion delay below the readers' delay", CleanerConfig{DeletionDelay: time.Hour, PartialBlockDeletionDelay: time.Hour}, 2 * time.Hour, true},
		{"no partial delay", CleanerConfig{DeletionDelay: 12 * time.Hour}, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate(tc.ignore)
			testutil.Equals(t, tc.wantErr, err != nil, "%v", err)
		})
	}
}
