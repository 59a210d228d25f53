package block

import (
	"context"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
)

// newFilesystemBucket returns objstore's filesystem bucket in a temp dir.
func newFilesystemBucket(t testing.TB) *filesystem.Bucket {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	return bkt
}

// createBlocks writes one level-1 block per [mint, maxt] range (inclusive, in milliseconds, ascending) into the
// TSDB directory dir with Prometheus' own TSDB: a few series with a sample every 15s, cut with CompactHead. It
// closes the TSDB and returns the blocks' ULIDs in the order of ranges.
func createBlocks(t testing.TB, dir string, ranges ...[2]int64) []ulid.ULID {
	t.Helper()
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, db.Close()) }()
	db.DisableCompactions()

	series := []labels.Labels{
		labels.FromStrings("__name__", "up", "job", "node"),
		labels.FromStrings("__name__", "up", "job", "prometheus"),
		labels.FromStrings("__name__", "http_requests_total", "code", "200", "job", "api"),
	}
	var ids []ulid.ULID
	for _, r := range ranges {
		app := db.Appender(context.Background())
		for i, s := range series {
			for ts := r[0]; ts <= r[1]; ts += 15_000 {
				_, err := app.Append(0, s, ts, float64(ts/1000+int64(i)))
				testutil.Ok(t, err)
			}
		}
		testutil.Ok(t, app.Commit())
		testutil.Ok(t, db.CompactHead(tsdb.NewRangeHead(db.Head(), r[0], r[1])))

		var found bool
		for _, b := range db.Blocks() {
			if b.Meta().MinTime == r[0] {
				ids, found = append(ids, b.Meta().ULID), true
			}
		}
		testutil.Assert(t, found, "no block for range %v", r)
	}
	return ids
}

// op is one write operation seen by a recordingBucket.
type op struct{ kind, name string }

// recordingBucket records the uploads and deletes done through it, in order, and can fail or hook them.
type recordingBucket struct {
	objstore.Bucket

	mtx sync.Mutex
	ops []op
	// failUpload, when set, is asked before each upload; an error fails it.
	failUpload func(name string) error
	// beforeExists, when set, is called before each Exists and Get (the shipper's look for a block in the bucket).
	beforeExists func(name string)
}

func (b *recordingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	b.mtx.Lock()
	fail := b.failUpload
	b.mtx.Unlock()
	if fail != nil {
		if err := fail(name); err != nil {
			return err
		}
	}
	b.record("upload", name)
	return b.Bucket.Upload(ctx, name, r, opts...)
}

func (b *recordingBucket) Delete(ctx context.Context, name string) error {
	b.record("delete", name)
	return b.Bucket.Delete(ctx, name)
}

func (b *recordingBucket) Exists(ctx context.Context, name string) (bool, error) {
	if b.beforeExists != nil {
		b.beforeExists(name)
	}
	return b.Bucket.Exists(ctx, name)
}

func (b *recordingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if b.beforeExists != nil {
		b.beforeExists(name)
	}
	return b.Bucket.Get(ctx, name)
}

func (b *recordingBucket) record(kind, name string) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	b.ops = append(b.ops, op{kind: kind, name: name})
}

// names returns the names of the recorded operations of a kind, in order.
func (b *recordingBucket) names(kind string) []string {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	var out []string
	for _, o := range b.ops {
		if o.kind == kind {
			out = append(out, o.name)
		}
	}
	return out
}

// objects lists every object of bkt under dir, sorted.
func objects(t testing.TB, bkt objstore.BucketReader, dir string) []string {
	t.Helper()
	var out []string
	testutil.Ok(t, bkt.Iter(context.Background(), dir, func(name string) error {
		out = append(out, name)
		return nil
	}, objstore.WithRecursiveIter()))
	sort.Strings(out)
	return out
}

// blockWithMeta creates one real block in a TSDB directory and returns its directory and meta with Thanos
// labels set, ready for Upload.
func blockWithMeta(t testing.TB) (string, *Meta) {
	t.Helper()
	dir := t.TempDir()
	id := createBlocks(t, dir, [2]int64{0, 3_600_000})[0]
	bdir := filepath.Join(dir, id.String())
	m, err := ReadMetaFromDir(bdir)
	testutil.Ok(t, err)
	m.Thanos.Labels = map[string]string{"tenant_id": "tenant-a", "cluster": "eu"}
	m.Thanos.Source = ReceiveSource
	return bdir, m
}

func TestUpload(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	bkt := &recordingBucket{Bucket: objstore.NewPrefixedBucket(root, "tenant-a")}
	bdir, m := blockWithMeta(t)
	id := m.ULID.String()

	testutil.Ok(t, Upload(ctx, log.NewNopLogger(), bkt, bdir, m))

	// chunks first, then index, then the rest, meta.json last.
	testutil.Equals(t, []string{id + "/chunks/000001", id + "/index", id + "/tombstones", id + "/meta.json"}, bkt.names("upload"))
	// Under the tenant's prefix of the bucket.
	testutil.Equals(t, []string{
		"tenant-a/" + id + "/chunks/000001", "tenant-a/" + id + "/index", "tenant-a/" + id + "/meta.json", "tenant-a/" + id + "/tombstones",
	}, objects(t, root, ""))

	got, err := ReadMetaFromBucket(ctx, bkt, m.ULID)
	testutil.Ok(t, err)
	testutil.Equals(t, m, got) // Upload updated m to what the bucket holds.
	testutil.Equals(t, ThanosVersion1, got.Thanos.Version)
	testutil.Equals(t, map[string]string{"tenant_id": "tenant-a", "cluster": "eu"}, got.Thanos.Labels)
	testutil.Equals(t, ReceiveSource, got.Thanos.Source)
	testutil.Assert(t, !got.Thanos.UploadTime.IsZero(), "upload time set")
	var rels []string
	for _, f := range got.Thanos.Files {
		rels = append(rels, f.RelPath)
		if f.RelPath == MetaFilename {
			testutil.Equals(t, int64(0), f.SizeBytes)
			continue
		}
		fi, err := os.Stat(filepath.Join(bdir, filepath.FromSlash(f.RelPath)))
		testutil.Ok(t, err)
		testutil.Equals(t, fi.Size(), f.SizeBytes, f.RelPath)
		attrs, err := bkt.Attributes(ctx, path.Join(id, f.RelPath))
		testutil.Ok(t, err)
		testutil.Equals(t, fi.Size(), attrs.Size, f.RelPath)
	}
	testutil.Equals(t, []string{"chunks/000001", "index", "meta.json", "tombstones"}, rels)
}

func TestUpload_Refuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, bdir string, m *Meta) string // returns the dir to upload
		wantErr string
	}{
		{
			name: "dir not named after the ULID",
			prepare: func(t *testing.T, bdir string, _ *Meta) string {
				other := filepath.Join(filepath.Dir(bdir), "not-a-block")
				testutil.Ok(t, os.Rename(bdir, other))
				return other
			},
			wantErr: "is not named after the block's ULID",
		},
		{
			name: "dir of another block",
			prepare: func(t *testing.T, bdir string, _ *Meta) string {
				other := filepath.Join(filepath.Dir(bdir), ulid.MustNew(1, nil).String())
				testutil.Ok(t, os.Rename(bdir, other))
				return other
			},
			wantErr: "is not named after the block's ULID",
		},
		{
			name:    "no thanos.labels",
			prepare: func(_ *testing.T, bdir string, m *Meta) string { m.Thanos.Labels = map[string]string{}; return bdir },
			wantErr: "no thanos.labels",
		},
		{
			name:    "invalid meta",
			prepare: func(_ *testing.T, bdir string, m *Meta) string { m.MaxTime = m.MinTime; return bdir },
			wantErr: "not before max time",
		},
		{
			name: "no index",
			prepare: func(t *testing.T, bdir string, _ *Meta) string {
				testutil.Ok(t, os.Remove(filepath.Join(bdir, IndexFilename)))
				return bdir
			},
			wantErr: "has no index file",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt := &recordingBucket{Bucket: objstore.NewPrefixedBucket(newFilesystemBucket(t), "tenant-a")}
			bdir, m := blockWithMeta(t)
			dir := tc.prepare(t, bdir, m)
			err := Upload(context.Background(), log.NewNopLogger(), bkt, dir, m)
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), "upload block "+m.ULID.String()), "error says what was done: %v", err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
			testutil.Equals(t, 0, len(bkt.names("upload")))
		})
	}
}

func TestUpload_FailureLeavesNoMeta(t *testing.T) {
	for _, failOn := range []string{"/chunks/000001", "/index", "/tombstones", "/meta.json"} {
		t.Run(failOn, func(t *testing.T) {
			ctx := context.Background()
			bkt := &recordingBucket{Bucket: objstore.NewPrefixedBucket(newFilesystemBucket(t), "tenant-a")}
			bdir, m := blockWithMeta(t)
			bkt.failUpload = func(name string) error {
				if strings.HasSuffix(name, failOn) {
					return errors.New("injected upload failure")
				}
				return nil
			}
			err := Upload(ctx, log.NewNopLogger(), bkt, bdir, m)
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), "injected upload failure"), "%v", err)
			ok, err := bkt.Exists(ctx, path.Join(m.ULID.String(), MetaFilename))
			testutil.Ok(t, err)
			testutil.Assert(t, !ok, "a failed upload must leave no meta.json")

			// A retry completes the block.
			bkt.failUpload = nil
			testutil.Ok(t, Upload(ctx, log.NewNopLogger(), bkt, bdir, m))
			_, err = ReadMetaFromBucket(ctx, bkt, m.ULID)
			testutil.Ok(t, err)
		})
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	root := newFilesystemBucket(t)
	bkt := &recordingBucket{Bucket: objstore.NewPrefixedBucket(root, "tenant-a")}
	bdir, m := blockWithMeta(t)
	id := m.ULID
	testutil.Ok(t, Upload(ctx, log.NewNopLogger(), bkt, bdir, m))
	testutil.Ok(t, MarkForNoCompaction(ctx, log.NewNopLogger(), bkt, id, ManualNoCompactReason, "", nil))
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), bkt, id, "", nil))

	// Another block of the tenant and another tenant's copy of the block stay.
	other := objstore.NewPrefixedBucket(root, "tenant-b")
	testutil.Ok(t, Upload(ctx, log.NewNopLogger(), other, bdir, m))
	bdir2, m2 := blockWithMeta(t)
	testutil.Ok(t, Upload(ctx, log.NewNopLogger(), bkt, bdir2, m2))
	before := objects(t, root, "")

	bkt.ops = nil
	testutil.Ok(t, Delete(ctx, log.NewNopLogger(), bkt, id))

	deleted := bkt.names("delete")
	testutil.Equals(t, id.String()+"/meta.json", deleted[0])
	pos := map[string]int{}
	for i, n := range deleted {
		pos[n] = i
	}
	for _, n := range []string{"/chunks/000001", "/index", "/tombstones", "/no-compact-mark.json"} {
		testutil.Assert(t, pos[id.String()+n] < pos[id.String()+"/deletion-mark.json"], "%s deleted before the deletion mark", n)
	}
	testutil.Assert(t, pos[id.String()+"/deletion-mark.json"] < pos[DeletionMarkFilepath(id)], "the mirrored deletion mark goes last")
	_, ok := pos[NoCompactMarkFilepath(id)]
	testutil.Assert(t, ok, "mirrored no-compact mark deleted")

	var want []string
	for _, o := range before {
		if !strings.HasPrefix(o, "tenant-a/"+id.String()) && !strings.HasPrefix(o, "tenant-a/markers/"+id.String()) {
			want = append(want, o)
		}
	}
	testutil.Equals(t, want, objects(t, root, ""))

	// Deleting again (a retry, or a block that is gone) succeeds.
	testutil.Ok(t, Delete(ctx, log.NewNopLogger(), bkt, id))
	testutil.Equals(t, want, objects(t, root, ""))
}
