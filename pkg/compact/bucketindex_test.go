package compact

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// testNow is the injected clock of the maintenance tests.
var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

// fsBucket returns a filesystem bucket and its root directory.
func fsBucket(t *testing.T) (objstore.Bucket, string) {
	t.Helper()
	root := t.TempDir()
	bkt, err := filesystem.NewBucket(root)
	testutil.Ok(t, err)
	return bkt, root
}

// uploadTestBlock builds a raw block with Prometheus's TSDB holding two series sampled every step from mint to
// maxt-1 (so the block's time range is [mint, maxt)), gives it tenant's external labels, lets mutate change its
// meta, and uploads it to tbkt (a tenant's bucket).
func uploadTestBlock(t *testing.T, tbkt objstore.Bucket, tenant string, mint, maxt, step int64, mutate func(*block.Meta)) *block.Meta {
	t.Helper()
	var ss []storage.Series
	for i, name := range []string{"up", "requests_total"} {
		var smp []chunks.Sample
		for ts := mint; ts < maxt-1; ts += step {
			smp = append(smp, tsample{t: ts, f: float64(int64(i)*ts%1000) + 1})
		}
		smp = append(smp, tsample{t: maxt - 1, f: 1})
		ss = append(ss, storage.NewListSeries(labels.FromStrings("__name__", name, "job", "test"), smp))
	}
	dir, err := tsdb.CreateBlock(ss, t.TempDir(), 1000*Resolution1h, slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	m, err := block.ReadMetaFromDir(dir)
	testutil.Ok(t, err)
	testutil.Equals(t, mint, m.MinTime)
	testutil.Equals(t, maxt, m.MaxTime)
	m.Thanos.Labels = map[string]string{tenancy.TenantIDLabel: tenant}
	m.Thanos.Source = block.SidecarSource
	if mutate != nil {
		mutate(m)
	}
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), dir))
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), tbkt, dir, m))
	return m
}

// partialBlock uploads the objects of a block without meta.json, with a ULID of time created, and sets their
// modification time in the filesystem bucket at root to modified.
func partialBlock(t *testing.T, tbkt objstore.Bucket, root, tenant string, created, modified time.Time) ulid.ULID {
	t.Helper()
	id := ulid.MustNew(ulid.Timestamp(created), rand.Reader)
	for _, name := range []string{"chunks/000001", "index"} {
		testutil.Ok(t, tbkt.Upload(context.Background(), id.String()+"/"+name, bytes.NewReader([]byte("partial"))))
		testutil.Ok(t, os.Chtimes(filepath.Join(root, tenant, id.String(), filepath.FromSlash(name)), modified, modified))
	}
	return id
}

// objects lists every object of bkt.
func objects(t *testing.T, bkt objstore.Bucket) []string {
	t.Helper()
	var names []string
	testutil.Ok(t, bkt.Iter(context.Background(), "", func(name string) error {
		names = append(names, name)
		return nil
	}, objstore.WithRecursiveIter()))
	sort.Strings(names)
	return names
}

// objectsOf lists the objects of bkt that mention block id (its directory and its mirrored markers).
func objectsOf(t *testing.T, bkt objstore.Bucket, id ulid.ULID) []string {
	var out []string
	for _, n := range objects(t, bkt) {
		if strings.Contains(n, id.String()) {
			out = append(out, n)
		}
	}
	return out
}

func keys[V any](m map[ulid.ULID]V) []ulid.ULID { return sortedIDs(m) }

// TestBucketIndex_ReadBackThroughMetaFetcher writes the bucket index of a tenant holding live, freshly marked,
// long marked, partial and corrupted blocks, and checks that block.MetaFetcher (what the store-gateways and
// queriers use) discovers from it exactly what it discovers by listing the bucket, for several
// ignore-deletion-mark delays; and that after the cleaner deleted a block and the index was rewritten, the
// block is gone from the index's view too.
func TestBucketIndex_ReadBackThroughMetaFetcher(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	const tenant = "team-a"
	hour := int64(time.Hour / time.Millisecond)

	for _, tc := range []struct {
		name      string
		markDelay time.Duration
	}{
		{"no delay", 0},
		{"1h delay", time.Hour},
		{"2d delay", 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, root := fsBucket(t)
			tbkt := objstore.NewPrefixedBucket(bkt, tenant)
			base := testNow.Add(-72 * time.Hour).UnixMilli()
			live := uploadTestBlock(t, tbkt, tenant, base, base+2*hour, 15*60_000, nil)
			fresh := uploadTestBlock(t, tbkt, tenant, base+2*hour, base+4*hour, 15*60_000, nil)
			old := uploadTestBlock(t, tbkt, tenant, base+4*hour, base+6*hour, 15*60_000, nil)
			testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, fresh.ULID, "test", fixedNow(testNow.Add(-30*time.Minute))))
			testutil.Ok(t, block.MarkForDeletion(ctx, logger, tbkt, old.ULID, "test", fixedNow(testNow.Add(-24*time.Hour))))
			partial := partialBlock(t, tbkt, root, tenant, testNow.Add(-time.Hour), testNow.Add(-time.Hour))
			corrupted := ulid.MustNew(ulid.Timestamp(testNow.Add(-time.Hour)), rand.Reader)
			testutil.Ok(t, tbkt.Upload(ctx, corrupted.String()+"/meta.json", strings.NewReader("{not json")))

			listed, err := block.NewMetaFetcher(bkt, 2, tc.markDelay, fixedNow(testNow)).Fetch(ctx, tenant)
			testutil.Ok(t, err)
			testutil.Assert(t, !listed.FromIndex)

			tb, err := ScanTenant(ctx, logger, tbkt, 2)
			testutil.Ok(t, err)
			testutil.Equals(t, []ulid.ULID{partial}, keys(tb.Partial))
			testutil.Equals(t, []ulid.ULID{corrupted}, tb.Corrupted)
			idx, err := WriteTenantBucketIndex(ctx, tbkt, tb, fixedNow(testNow))
			testutil.Ok(t, err)
			testutil.Equals(t, 3, len(idx.Blocks))
			testutil.Equals(t, live.ULID, idx.Blocks[0].ID) // sorted by min time
			testutil.Equals(t, "1b6d", idx.Blocks[0].SegmentsFormat)
			testutil.Equals(t, 1, idx.Blocks[0].SegmentsNum)
			testutil.Equals(t, 2, len(idx.BlockDeletionMarks))

			fromIndex, err := block.NewMetaFetcher(bkt, 2, tc.markDelay, fixedNow(testNow)).Fetch(ctx, tenant)
			testutil.Ok(t, err)
			testutil.Assert(t, fromIndex.FromIndex)
			testutil.Equals(t, keys(listed.Metas), keys(fromIndex.Metas))
			testutil.Assert(t, len(listed.Metas) >= 1, "the live block is always served")
			testutil.Equals(t, listed.DeletionMarks, fromIndex.DeletionMarks)
			sortIDs(listed.Deleted)
			sortIDs(fromIndex.Deleted)
			testutil.Equals(t, listed.Deleted, fromIndex.Deleted)
			for id, m := range fromIndex.Metas {
				testutil.Equals(t, listed.Metas[id].MaxTime, m.MaxTime)
			}

			// The cleaner deletes the long-marked block (12h delay); the rewritten index no longer lists it.
			_, err = CleanTenant(ctx, logger, tbkt, tb, CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: 24 * time.Hour}, fixedNow(testNow))
			testutil.Ok(t, err)
			_, err = WriteTenantBucketIndex(ctx, tbkt, tb, fixedNow(testNow))
			testutil.Ok(t, err)
			after, err := block.NewMetaFetcher(bkt, 2, tc.markDelay, fixedNow(testNow)).Fetch(ctx, tenant)
			testutil.Ok(t, err)
			_, served := after.Metas[old.ULID]
			testutil.Assert(t, !served && !containsID(after.Deleted, old.ULID), "deleted block still in the index")
			testutil.Equals(t, []string(nil), objectsOf(t, bkt, old.ULID))
		})
	}
}

func sortIDs(ids []ulid.ULID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
}

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

// TestScanTenantCached checks that a scan given the previous scan's metas reads only new blocks' meta.json, and
// still sees a known block whose meta.json is gone (a deletion under way) as partial.
func TestScanTenantCached(t *testing.T) {
	ctx := context.Background()
	logger := log.NewNopLogger()
	hour := int64(time.Hour / time.Millisecond)
	bkt, _ := fsBucket(t)
	var gets atomic.Int64
	tbkt := countingBucket{Bucket: objstore.NewPrefixedBucket(bkt, "a"), metaGets: &gets}
	base := testNow.Add(-72 * time.Hour).UnixMilli()
	first := uploadTestBlock(t, tbkt, "a", base, base+2*hour, 30*60_000, nil)
	second := uploadTestBlock(t, tbkt, "a", base+2*hour, base+4*hour, 30*60_000, nil)

	var known map[ulid.ULID]*block.Meta
	for i, step := range []struct {
		change         func()
		reads          int64
		metas, partial []ulid.ULID
	}{
		{func() {}, 2, []ulid.ULID{first.ULID, second.ULID}, nil},
		{func() {}, 0, []ulid.ULID{first.ULID, second.ULID}, nil},
		{func() {
			testutil.Ok(t, tbkt.Delete(ctx, second.ULID.String()+"/"+block.MetaFilename))
		}, 0, []ulid.ULID{first.ULID}, []ulid.ULID{second.ULID}},
		{func() {
			uploadTestBlock(t, tbkt, "a", base+4*hour, base+6*hour, 30*60_000, nil)
		}, 2, nil, []ulid.ULID{second.ULID}}, // the new block's, and the partial block's attempt
	} {
		step.change()
		gets.Store(0)
		tb, err := ScanTenantCached(ctx, logger, tbkt, 2, known)
		testutil.Ok(t, err)
		testutil.Equals(t, step.reads, gets.Load(), "meta.json reads, scan %d", i)
		if step.metas != nil {
			sortIDs(step.metas)
			testutil.Equals(t, step.metas, keys(tb.Metas), "scan %d", i)
		} else {
			testutil.Equals(t, 2, len(tb.Metas), "scan %d", i)
		}
		testutil.Equals(t, len(step.partial), len(tb.Partial), "scan %d", i)
		for _, id := range step.partial {
			_, ok := tb.Partial[id]
			testutil.Assert(t, ok, "scan %d: %s not partial", i, id)
		}
		known = tb.Metas
	}
}
