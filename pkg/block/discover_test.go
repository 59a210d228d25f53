package block

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// discoverBucket wraps a bucket: it hides names from listings (a listing that lags behind, as on eventually
// consistent stores) and counts the reads of meta.json files.
type discoverBucket struct {
	objstore.Bucket

	mtx       sync.Mutex
	hidden    map[string]bool // names (as Iter returns them, relative to the bucket root) left out of listings
	metaReads int
}

func (b *discoverBucket) Iter(ctx context.Context, dir string, f func(string) error, opts ...objstore.IterOption) error {
	return b.Bucket.Iter(ctx, dir, func(name string) error {
		b.mtx.Lock()
		hide := b.hidden[name]
		b.mtx.Unlock()
		if hide {
			return nil
		}
		return f(name)
	}, opts...)
}

func (b *discoverBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if path.Base(name) == MetaFilename {
		b.mtx.Lock()
		b.metaReads++
		b.mtx.Unlock()
	}
	return b.Bucket.Get(ctx, name)
}

func (b *discoverBucket) hide(name string) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	if b.hidden == nil {
		b.hidden = map[string]bool{}
	}
	b.hidden[name] = true
}

func (b *discoverBucket) reads() int {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.metaReads
}

// uploadTestBlocks creates one block per [mint, maxt] range and uploads each into <tenant>/ of bkt.
func uploadTestBlocks(t testing.TB, bkt objstore.Bucket, tenant string, ranges ...[2]int64) []ulid.ULID {
	t.Helper()
	dir := t.TempDir()
	ids := createBlocks(t, dir, ranges...)
	tbkt := objstore.NewPrefixedBucket(bkt, tenant)
	for _, id := range ids {
		bdir := filepath.Join(dir, id.String())
		m, err := ReadMetaFromDir(bdir)
		testutil.Ok(t, err)
		m.Thanos.Labels = map[string]string{"tenant_id": tenant}
		m.Thanos.Source = ReceiveSource
		testutil.Ok(t, Upload(context.Background(), log.NewNopLogger(), tbkt, bdir, m))
	}
	return ids
}

func sortedIDs(ids []ulid.ULID) []ulid.ULID {
	out := append([]ulid.ULID(nil), ids...)
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	if out == nil {
		out = []ulid.ULID{}
	}
	return out
}

func metaIDs(d *Discovered) []ulid.ULID {
	var ids []ulid.ULID
	for id, m := range d.Metas {
		if m.ULID != id {
			panic("meta under the wrong ID")
		}
		ids = append(ids, id)
	}
	return sortedIDs(ids)
}

func TestListTenants(t *testing.T) {
	ctx := context.Background()
	bkt := newFilesystemBucket(t)
	for _, name := range []string{
		"tenant-a/x", "b/x", "a.b_c-d!*'()/x", // valid tenant IDs
		"__mimir_cluster/x", "with space/x", "a@b/x", "semi;colon/x", strings.Repeat("x", 151) + "/x", // invalid
		"top-level-file", // a file, not a directory
	} {
		testutil.Ok(t, bkt.Upload(ctx, name, strings.NewReader("x")))
	}
	tenants, err := ListTenants(ctx, bkt)
	testutil.Ok(t, err)
	sort.Strings(tenants)
	testutil.Equals(t, []string{"a.b_c-d!*'()", "b", "tenant-a"}, tenants)

	empty, err := ListTenants(ctx, newFilesystemBucket(t))
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(empty))
}

func TestMetaFetcher_Listing(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	bkt := &discoverBucket{Bucket: root}
	const tenant = "tenant-a"
	tbkt := objstore.NewPrefixedBucket(root, tenant)
	ids := uploadTestBlocks(t, root, tenant, [2]int64{0, 600_000}, [2]int64{7_200_000, 7_800_000}, [2]int64{14_400_000, 15_000_000}, [2]int64{21_600_000, 22_200_000}, [2]int64{28_800_000, 29_400_000})
	good, partial, markedBoth, markedLocal, markedMirror := ids[0], ids[1], ids[2], ids[3], ids[4]

	// A partial upload (or delete): no meta.json.
	testutil.Ok(t, tbkt.Delete(ctx, path.Join(partial.String(), MetaFilename)))
	// Marked for deletion the Strata way (both marks), by a Thanos compactor (the block's own mark only), and
	// with only the mirror under markers/.
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), tbkt, markedBoth, "test", nil))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(markedLocal.String(), DeletionMarkFilename), strings.NewReader(`{"id":"`+markedLocal.String()+`","version":1,"deletion_time":1}`)))
	testutil.Ok(t, tbkt.Upload(ctx, DeletionMarkFilepath(markedMirror), strings.NewReader(`{"id":"`+markedMirror.String()+`","version":1,"deletion_time":1}`)))
	// Objects that are not blocks.
	testutil.Ok(t, tbkt.Upload(ctx, "not-a-block/meta.json", strings.NewReader("{}")))
	testutil.Ok(t, tbkt.Upload(ctx, "stray-file", strings.NewReader("x")))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(MarkersDirname, "garbage-deletion-mark.json"), strings.NewReader("x")))

	f := NewMetaFetcher(bkt, 2, 0, nil)
	d, err := f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Assert(t, !d.FromIndex, "no bucket index: listing")
	testutil.Equals(t, []ulid.ULID{good}, metaIDs(d))
	testutil.Equals(t, []ulid.ULID{partial}, sortedIDs(d.Partial))
	testutil.Equals(t, sortedIDs([]ulid.ULID{markedBoth, markedLocal, markedMirror}), sortedIDs(d.Deleted))
	m := d.Metas[good]
	testutil.Equals(t, map[string]string{"tenant_id": tenant}, m.Thanos.Labels)
	testutil.Equals(t, int64(0), m.MinTime)

	// Metas are read once: a second fetch reads only those it does not know (the partial block's, and the one
	// whose deletion mark only its own directory holds, found after reading its meta).
	before := bkt.reads()
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, []ulid.ULID{good}, metaIDs(d))
	testutil.Equals(t, 2, bkt.reads()-before)

	// The partial block completes: it is found.
	meta := *d.Metas[good] // any valid meta, rewritten for the partial block
	meta.ULID = partial
	var buf bytes.Buffer
	testutil.Ok(t, meta.Write(&buf))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(partial.String(), MetaFilename), &buf))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, sortedIDs([]ulid.ULID{good, partial}), metaIDs(d))

	// A block removed from the bucket is no longer found.
	testutil.Ok(t, Delete(ctx, log.NewNopLogger(), tbkt, partial))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, []ulid.ULID{good}, metaIDs(d))

	// Unknown tenant: nothing. Invalid tenant: an error, without touching the bucket.
	d, err = f.Fetch(ctx, "tenant-b")
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(d.Metas))
	for _, bad := range []string{"", "..", ".", "a/b", "__mimir_cluster", "a b"} {
		_, err = f.Fetch(ctx, bad)
		testutil.NotOk(t, err, "tenant %q", bad)
	}
}

// A block the store already knows and that a Thanos compactor then marks for deletion (it writes only
// <block>/deletion-mark.json, no mirror under markers/) must stop being served, as one marked before the first
// fetch is.
func TestMetaFetcher_BlockMarkedAfterDiscovery(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	const tenant = "tenant-a"
	tbkt := objstore.NewPrefixedBucket(root, tenant)
	ids := uploadTestBlocks(t, root, tenant, [2]int64{0, 600_000}, [2]int64{7_200_000, 7_800_000})

	f := NewMetaFetcher(root, 4, 0, nil)
	d, err := f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, sortedIDs(ids), metaIDs(d))

	// Strata's own mark (with the mirror) is seen.
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), tbkt, ids[0], "test", nil))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, []ulid.ULID{ids[1]}, metaIDs(d))

	// A Thanos compactor's mark (the block's own file only) must be seen as well.
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(ids[1].String(), DeletionMarkFilename), strings.NewReader(`{"id":"`+ids[1].String()+`","version":1,"deletion_time":1}`)))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, []ulid.ULID{}, metaIDs(d), "a known block marked for deletion by its own deletion-mark.json only must not be served")
	testutil.Equals(t, []ulid.ULID{ids[0], ids[1]}, sortedIDs(d.Deleted))
}

func writeIndex(t testing.TB, tbkt objstore.Bucket, idx *BucketIndex) {
	t.Helper()
	testutil.Ok(t, WriteBucketIndex(context.Background(), tbkt, idx))
}

func TestMetaFetcher_BucketIndex(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	bkt := &discoverBucket{Bucket: root}
	const tenant = "tenant-a"
	tbkt := objstore.NewPrefixedBucket(root, tenant)
	ids := uploadTestBlocks(t, root, tenant, [2]int64{0, 600_000}, [2]int64{7_200_000, 7_800_000}, [2]int64{14_400_000, 15_000_000}, [2]int64{21_600_000, 22_200_000})
	inIndex, onlyInIndex, notInIndex, deletedInIndex := ids[0], ids[1], ids[2], ids[3]

	// onlyInIndex is not listed (a listing lagging behind); the index is the source, so it is found anyway.
	bkt.hide(tenant + "/" + onlyInIndex.String() + "/")
	// A block in the index whose meta.json is gone (being deleted).
	ghost := ulid.MustNew(1, nil)
	writeIndex(t, tbkt, &BucketIndex{
		Version: BucketIndexVersion2,
		Blocks: []BucketIndexBlock{
			{ID: inIndex, MinTime: 0, MaxTime: 600_001},
			{ID: onlyInIndex, MinTime: 7_200_000, MaxTime: 7_800_001},
			{ID: deletedInIndex, MinTime: 21_600_000, MaxTime: 22_200_001},
			{ID: ghost, MinTime: 1, MaxTime: 2},
		},
		BlockDeletionMarks: []BucketIndexBlockMark{{ID: deletedInIndex, DeletionTime: time.Now().Unix()}},
		UpdatedAt:          time.Now().Unix(),
	})

	f := NewMetaFetcher(bkt, 3, 0, nil)
	d, err := f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Assert(t, d.FromIndex, "bucket index present")
	// notInIndex was uploaded after the index was written (a sidecar, an import): it is served from the listing.
	testutil.Equals(t, sortedIDs([]ulid.ULID{inIndex, onlyInIndex, notInIndex}), metaIDs(d))
	testutil.Equals(t, []ulid.ULID{deletedInIndex}, d.Deleted)
	testutil.Equals(t, []ulid.ULID{ghost}, d.Partial)

	// A block not in the index is marked for deletion (its own file and the mirror, as the compactor does) and
	// loses its meta.json (being deleted): the listing path sees both, as without an index.
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), tbkt, notInIndex, "test", nil))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, sortedIDs([]ulid.ULID{inIndex, onlyInIndex}), metaIDs(d))
	testutil.Equals(t, sortedIDs([]ulid.ULID{deletedInIndex, notInIndex}), sortedIDs(d.Deleted))

	// The index changes: the next fetch follows it (blocks gone from it but listed are still found by listing;
	// deletedInIndex's mark was only in the index).
	writeIndex(t, tbkt, &BucketIndex{Version: BucketIndexVersion1, Blocks: []BucketIndexBlock{{ID: notInIndex}}})
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Equals(t, sortedIDs([]ulid.ULID{inIndex, notInIndex, deletedInIndex}), metaIDs(d))

	// Removing the index falls back to listing.
	testutil.Ok(t, tbkt.Delete(ctx, BucketIndexFilename))
	d, err = f.Fetch(ctx, tenant)
	testutil.Ok(t, err)
	testutil.Assert(t, !d.FromIndex, "no index: listing")
	testutil.Equals(t, sortedIDs([]ulid.ULID{inIndex, deletedInIndex}), metaIDs(d))
	testutil.Equals(t, []ulid.ULID{notInIndex}, d.Deleted)
}

func TestReadBucketIndex(t *testing.T) {
	ctx := context.Background()
	bkt := newFilesystemBucket(t)

	idx, err := ReadBucketIndex(ctx, bkt)
	testutil.Ok(t, err)
	testutil.Assert(t, idx == nil, "no index: nil, nil")

	id := ulid.MustNew(5, nil)
	want := &BucketIndex{
		Version:            BucketIndexVersion2,
		Blocks:             []BucketIndexBlock{{ID: id, MinTime: 1, MaxTime: 2, UploadedAt: 3, SegmentsFormat: "1b6d-index", SegmentsNum: 1, Source: "compactor"}},
		BlockDeletionMarks: []BucketIndexBlockMark{{ID: id, DeletionTime: 4}},
		UpdatedAt:          6,
	}
	testutil.Ok(t, WriteBucketIndex(ctx, bkt, want))
	got, err := ReadBucketIndex(ctx, bkt)
	testutil.Ok(t, err)
	testutil.Equals(t, want, got)

	// Mimir's own JSON field names.
	rc, err := bkt.Get(ctx, BucketIndexFilename)
	testutil.Ok(t, err)
	gz, err := gzip.NewReader(rc)
	testutil.Ok(t, err)
	raw, err := io.ReadAll(gz)
	testutil.Ok(t, err)
	_ = rc.Close()
	for _, field := range []string{`"version":2`, `"blocks":`, `"block_id":"` + id.String() + `"`, `"min_time":1`, `"max_time":2`, `"uploaded_at":3`, `"block_deletion_marks":`, `"deletion_time":4`, `"updated_at":6`, `"segments_format":"1b6d-index"`, `"segments_num":1`} {
		testutil.Assert(t, bytes.Contains(raw, []byte(field)), "index JSON %s lacks %s", raw, field)
	}

	gzipped := func(s string) io.Reader {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return &buf
	}
	for name, r := range map[string]io.Reader{
		"not gzip":            strings.NewReader(`{"version":1}`),
		"not json":            gzipped(`{`),
		"unsupported version": gzipped(`{"version":3}`),
	} {
		testutil.Ok(t, bkt.Upload(ctx, BucketIndexFilename, r))
		_, err := ReadBucketIndex(ctx, bkt)
		testutil.NotOk(t, err, name)
	}

	// A bad index fails the fetch rather than being silently ignored (listing could resurrect deleted blocks).
	tbkt := objstore.NewPrefixedBucket(bkt, "t")
	testutil.Ok(t, tbkt.Upload(ctx, BucketIndexFilename, gzipped(`{"version":99}`)))
	_, err = NewMetaFetcher(bkt, 1, 0, nil).Fetch(ctx, "t")
	testutil.NotOk(t, err)
}

// A tenant with one corrupted meta.json: Thanos's fetcher counts such a block as corrupted and skips it; the
// tenant's other blocks are still discovered.
func TestMetaFetcher_CorruptedMeta(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	const tenant = "tenant-a"
	tbkt := objstore.NewPrefixedBucket(root, tenant)
	ids := uploadTestBlocks(t, root, tenant, [2]int64{0, 600_000}, [2]int64{7_200_000, 7_800_000})
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(ids[1].String(), MetaFilename), strings.NewReader("{not json")))

	d, err := NewMetaFetcher(root, 2, 0, nil).Fetch(ctx, tenant)
	testutil.Ok(t, err, "one corrupted meta.json must not fail discovery of the whole tenant")
	testutil.Equals(t, []ulid.ULID{ids[0]}, metaIDs(d))
	testutil.Equals(t, []ulid.ULID{ids[1]}, d.Corrupted)

	// A meta.json naming another block (a botched copy) is left out the same way, rather than failing the
	// discovery of the tenant's every other block.
	var buf bytes.Buffer
	testutil.Ok(t, d.Metas[ids[0]].Write(&buf))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(ids[1].String(), MetaFilename), &buf))
	d, err = NewMetaFetcher(root, 2, 0, nil).Fetch(ctx, tenant)
	testutil.Ok(t, err, "BUG: a meta.json whose ULID is not its directory's fails the whole tenant's discovery (ReadMetaFromBucket's mismatch error does not wrap ErrMetaCorrupted)")
	testutil.Equals(t, []ulid.ULID{ids[0]}, metaIDs(d))
	testutil.Equals(t, []ulid.ULID{ids[1]}, d.Corrupted)
}

// A block marked for deletion is still discovered (and its mark reported) until the mark is older than the
// ignore-deletion-mark delay; past it, it is Deleted. The same whether the mark is Strata's (mirrored under
// markers/), a Thanos compactor's (the block's own file only), or the bucket index's, and whether the block
// was known before it was marked or not. A mark that cannot be decoded counts from when it was first seen.
func TestMetaFetcher_IgnoreDeletionMarkDelay(t *testing.T) {
	const (
		tenant = "tenant-a"
		delay  = time.Hour
	)
	markedAt := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name string
		mark func(t *testing.T, tbkt objstore.Bucket, id ulid.ULID)
		// index marks the block in a bucket index instead (mark is unused).
		index bool
		// knownFirst fetches before the mark is written.
		knownFirst bool
		// corrupt: the mark has no time; the block counts as marked from the first fetch that saw it.
		corrupt bool
	}{
		{name: "strata mark (mirrored)", mark: func(t *testing.T, tbkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, MarkForDeletion(context.Background(), log.NewNopLogger(), tbkt, id, "test", func() time.Time { return markedAt }))
		}},
		{name: "strata mark on a known block", knownFirst: true, mark: func(t *testing.T, tbkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, MarkForDeletion(context.Background(), log.NewNopLogger(), tbkt, id, "test", func() time.Time { return markedAt }))
		}},
		{name: "thanos mark (own file only) on a known block", knownFirst: true, mark: func(t *testing.T, tbkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, tbkt.Upload(context.Background(), path.Join(id.String(), DeletionMarkFilename), strings.NewReader(`{"id":"`+id.String()+`","version":1,"deletion_time":1700000000}`)))
		}},
		{name: "bucket index", index: true},
		{name: "bucket index, known block", index: true, knownFirst: true},
		{name: "undecodable mirrored mark", corrupt: true, mark: func(t *testing.T, tbkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, tbkt.Upload(context.Background(), DeletionMarkFilepath(id), strings.NewReader("{not json")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := newFilesystemBucket(t)
			tbkt := objstore.NewPrefixedBucket(root, tenant)
			ids := uploadTestBlocks(t, root, tenant, [2]int64{0, 600_000}, [2]int64{7_200_000, 7_800_000})
			kept, marked := ids[0], ids[1]
			now := markedAt
			f := NewMetaFetcher(root, 2, delay, func() time.Time { return now })
			writeIdx := func(marks []BucketIndexBlockMark) {
				writeIndex(t, tbkt, &BucketIndex{Version: BucketIndexVersion2, Blocks: []BucketIndexBlock{{ID: kept}, {ID: marked}}, BlockDeletionMarks: marks})
			}
			if tc.index {
				writeIdx(nil)
			}
			if tc.knownFirst {
				d, err := f.Fetch(ctx, tenant)
				testutil.Ok(t, err)
				testutil.Equals(t, sortedIDs(ids), metaIDs(d))
			}
			if tc.index {
				writeIdx([]BucketIndexBlockMark{{ID: marked, DeletionTime: markedAt.Unix()}})
			} else {
				tc.mark(t, tbkt, marked)
			}

			for _, step := range []struct {
				after time.Duration
				kept  bool
			}{{0, true}, {30 * time.Minute, true}, {delay, true}, {delay + time.Second, false}, {3 * delay, false}} {
				now = markedAt.Add(step.after)
				if tc.corrupt {
					now = now.Add(time.Minute) // first seen a minute after markedAt: counts from then
				}
				d, err := f.Fetch(ctx, tenant)
				testutil.Ok(t, err)
				if step.kept {
					testutil.Equals(t, sortedIDs(ids), metaIDs(d), "%v after the mark: still served", step.after)
					testutil.Equals(t, 0, len(d.Deleted))
					from := markedAt
					if tc.corrupt {
						from = markedAt.Add(time.Minute)
					}
					testutil.Equals(t, map[ulid.ULID]time.Time{marked: from}, d.DeletionMarks)
				} else {
					testutil.Equals(t, []ulid.ULID{kept}, metaIDs(d), "%v after the mark: no longer served", step.after)
					testutil.Equals(t, []ulid.ULID{marked}, d.Deleted)
					testutil.Equals(t, map[ulid.ULID]time.Time{}, d.DeletionMarks)
				}
			}
		})
	}
}
