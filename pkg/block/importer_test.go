package block

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// thanosSource is a Thanos-layout bucket (blocks at its root) built for the import tests.
type thanosSource struct {
	bkt objstore.Bucket
	// raw holds the raw blocks of replicas a and b, down5m and down1h the downsampled ones (replica a); deleted
	// (its own mark and the mirror), deletedGlobal (only markers/) and partial (no meta.json) are never imported.
	rawA, rawB, down5m, down1h, deleted, deletedGlobal, partial ulid.ULID
	metas                                                       map[ulid.ULID]*Meta
}

// newThanosSource builds the source bucket with Prometheus's TSDB blocks and Thanos metas.
func newThanosSource(t *testing.T) *thanosSource {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	const h = int64(time.Hour / time.Millisecond)
	ids := createBlocks(t, dir, [2]int64{0, h - 1}, [2]int64{h, 2*h - 1}, [2]int64{2 * h, 3*h - 1}, [2]int64{3 * h, 4*h - 1},
		[2]int64{4 * h, 5*h - 1}, [2]int64{5 * h, 6*h - 1}, [2]int64{6 * h, 7*h - 1})
	s := &thanosSource{bkt: newFilesystemBucket(t), metas: map[ulid.ULID]*Meta{}}
	s.rawA, s.rawB, s.down5m, s.down1h, s.deleted, s.deletedGlobal, s.partial = ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]
	for _, id := range ids {
		m, err := ReadMetaFromDir(filepath.Join(dir, id.String()))
		testutil.Ok(t, err)
		m.Thanos.Labels = map[string]string{"cluster": "eu1", "replica": "a"}
		m.Thanos.Source = SidecarSource
		switch id {
		case s.rawB:
			m.Thanos.Labels["replica"] = "b"
		case s.down5m:
			m.Thanos.Downsample.Resolution = Resolution5m
			m.Thanos.Source = CompactorSource
		case s.down1h:
			m.Thanos.Downsample.Resolution = Resolution1h
			m.Thanos.Source = CompactorSource
		}
		testutil.Ok(t, Upload(ctx, log.NewNopLogger(), s.bkt, filepath.Join(dir, id.String()), m))
		s.metas[id] = m
	}
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), s.bkt, s.deleted, "test", nil))
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), s.bkt, s.deletedGlobal, "test", nil))
	testutil.Ok(t, s.bkt.Delete(ctx, path.Join(s.deletedGlobal.String(), DeletionMarkFilename)))
	testutil.Ok(t, s.bkt.Delete(ctx, path.Join(s.partial.String(), MetaFilename)))
	return s
}

func runImport(t *testing.T, src, dst objstore.Bucket, cfg ImportConfig) (*ImportPlan, error) {
	t.Helper()
	im, err := NewImporter(log.NewNopLogger(), src, dst, cfg, func() time.Time { return time.Unix(1000, 0) })
	testutil.Ok(t, err)
	plan, err := im.Plan(context.Background())
	testutil.Ok(t, err)
	if cfg.DryRun {
		return plan, nil
	}
	return plan, im.Run(context.Background(), plan)
}

// checkImported checks that the tenant of dst holds exactly the blocks want, complete, with tenant_id added to
// the source's labels and files byte-identical to the source's.
func checkImported(t *testing.T, s *thanosSource, dst objstore.Bucket, tenant string, want ...ulid.ULID) {
	t.Helper()
	ctx := context.Background()
	tdst := objstore.NewPrefixedBucket(dst, tenant)
	var got []string
	testutil.Ok(t, tdst.Iter(ctx, "", func(name string) error { got = append(got, strings.TrimSuffix(name, "/")); return nil }))
	var wantS []string
	for _, id := range want {
		wantS = append(wantS, id.String())
	}
	sort.Strings(got)
	sort.Strings(wantS)
	testutil.Equals(t, wantS, got)
	for _, id := range want {
		m, err := ReadMetaFromBucket(ctx, tdst, id)
		testutil.Ok(t, err)
		wantLabels := maps.Clone(s.metas[id].Thanos.Labels)
		wantLabels["tenant_id"] = tenant
		testutil.Equals(t, wantLabels, m.Thanos.Labels)
		testutil.Equals(t, s.metas[id].Thanos.Downsample, m.Thanos.Downsample)
		testutil.Equals(t, s.metas[id].MinTime, m.MinTime)
		srcObjs := objects(t, s.bkt, id.String())
		testutil.Equals(t, srcObjs, objects(t, tdst, id.String()))
		for _, f := range m.Thanos.Files {
			if f.RelPath == MetaFilename {
				continue
			}
			name := path.Join(id.String(), f.RelPath)
			testutil.Equals(t, readAll(t, s.bkt, name), readAll(t, tdst, name), "content of %s", name)
			testutil.Assert(t, f.Hash != nil && f.Hash.Func == "SHA256", "no hash for %s", name)
		}
	}
}

func readAll(t *testing.T, bkt objstore.BucketReader, name string) []byte {
	t.Helper()
	rc, err := bkt.Get(context.Background(), name)
	testutil.Ok(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	testutil.Ok(t, err)
	return b
}

func TestImport_Selection(t *testing.T) {
	s := newThanosSource(t)
	for _, tc := range []struct {
		name  string
		cfg   ImportConfig
		want  []ulid.ULID
		bytes bool
	}{
		{name: "all", cfg: ImportConfig{}, want: []ulid.ULID{s.rawA, s.rawB, s.down5m, s.down1h}},
		{name: "raw", cfg: ImportConfig{Resolution: "raw"}, want: []ulid.ULID{s.rawA, s.rawB}},
		{name: "5m", cfg: ImportConfig{Resolution: "5m"}, want: []ulid.ULID{s.down5m}},
		{name: "1h", cfg: ImportConfig{Resolution: "1h"}, want: []ulid.ULID{s.down1h}},
		{name: "replica b", cfg: ImportConfig{MatchLabels: map[string]string{"replica": "b"}}, want: []ulid.ULID{s.rawB}},
		{name: "replica a raw", cfg: ImportConfig{Resolution: "raw", MatchLabels: map[string]string{"replica": "a", "cluster": "eu1"}}, want: []ulid.ULID{s.rawA}},
		{name: "no match", cfg: ImportConfig{MatchLabels: map[string]string{"cluster": "us1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newFilesystemBucket(t)
			tc.cfg.Tenant, tc.cfg.Concurrency = "team-a", 2
			plan, err := runImport(t, s.bkt, dst, tc.cfg)
			testutil.Ok(t, err)
			testutil.Equals(t, len(tc.want), plan.ToCopy())
			checkImported(t, s, dst, "team-a", tc.want...)
			sort.Slice(plan.Partial, func(i, j int) bool { return plan.Partial[i].Compare(plan.Partial[j]) < 0 })
			testutil.Equals(t, []ulid.ULID{s.partial}, plan.Partial)
			testutil.Equals(t, 2, len(plan.Deleted))
		})
	}
}

func TestImport_DryRunAndRerun(t *testing.T) {
	s := newThanosSource(t)
	dst := newFilesystemBucket(t)
	cfg := ImportConfig{Tenant: "team-a", DryRun: true}
	plan, err := runImport(t, s.bkt, dst, cfg)
	testutil.Ok(t, err)
	testutil.Equals(t, 4, plan.ToCopy())
	var wantBytes int64
	for _, id := range []ulid.ULID{s.rawA, s.rawB, s.down5m, s.down1h} {
		for _, f := range s.metas[id].Thanos.Files {
			wantBytes += f.SizeBytes
		}
	}
	testutil.Equals(t, wantBytes, plan.Bytes)
	testutil.Equals(t, s.metas[s.rawA].MinTime, plan.MinTime)
	testutil.Equals(t, s.metas[s.down1h].MaxTime, plan.MaxTime)
	testutil.Equals(t, []string(nil), objects(t, dst, ""), "dry run copied something")

	cfg.DryRun = false
	_, err = runImport(t, s.bkt, dst, cfg)
	testutil.Ok(t, err)
	checkImported(t, s, dst, "team-a", s.rawA, s.rawB, s.down5m, s.down1h)

	// A second run finds every block present and uploads nothing.
	rec := &recordingBucket{Bucket: dst}
	plan, err = runImport(t, s.bkt, rec, cfg)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, plan.ToCopy())
	testutil.Equals(t, []string(nil), rec.names("upload"))
}

func TestImport_KilledAndResumed(t *testing.T) {
	s := newThanosSource(t)
	dst := newFilesystemBucket(t)
	for _, failAt := range []int64{1, 3, 7} {
		var (
			n      atomic.Int64
			failed string
		)
		rec := &recordingBucket{Bucket: dst, failUpload: func(name string) error {
			if n.Add(1) == failAt {
				failed = strings.Split(name, "/")[1]
				return errors.New("killed")
			}
			return nil
		}}
		_, err := runImport(t, s.bkt, rec, ImportConfig{Tenant: "team-a", Concurrency: 1})
		testutil.NotOk(t, err)
		// The block that failed has no meta.json; those with meta.json are complete.
		ok, err := dst.Exists(context.Background(), path.Join("team-a", failed, MetaFilename))
		testutil.Ok(t, err)
		testutil.Assert(t, !ok, "failed block %s has a meta.json", failed)
	}
	complete := map[string]bool{}
	for _, o := range objects(t, dst, "team-a") {
		if strings.HasSuffix(o, "/"+MetaFilename) {
			complete[strings.Split(o, "/")[1]] = true
		}
	}
	testutil.Assert(t, len(complete) > 0 && len(complete) < 4, "the killed runs should have completed some blocks, not all: %v", complete)

	rec := &recordingBucket{Bucket: dst}
	_, err := runImport(t, s.bkt, rec, ImportConfig{Tenant: "team-a", Concurrency: 3})
	testutil.Ok(t, err)
	checkImported(t, s, dst, "team-a", s.rawA, s.rawB, s.down5m, s.down1h)
	// The re-run copies each block left incomplete once, and nothing of the blocks completed before.
	metas := 0
	for _, u := range rec.names("upload") {
		id := strings.Split(u, "/")[1]
		testutil.Assert(t, !complete[id], "re-run uploaded %s of a block complete already", u)
		if strings.HasSuffix(u, "/"+MetaFilename) {
			metas++
		}
	}
	testutil.Equals(t, 4-len(complete), metas)
}

// flippingBucket flips a byte of every uploaded object whose name ends with suffix.
type flippingBucket struct {
	objstore.Bucket
	suffix string
}

func (b *flippingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if !strings.HasSuffix(name, b.suffix) {
		return b.Bucket.Upload(ctx, name, r, opts...)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	data[len(data)/2] ^= 0xff
	return b.Bucket.Upload(ctx, name, bytes.NewReader(data), opts...)
}

func TestImport_CorruptedCopy(t *testing.T) {
	s := newThanosSource(t)
	dst := newFilesystemBucket(t)
	_, err := runImport(t, s.bkt, &flippingBucket{Bucket: dst, suffix: "/" + IndexFilename}, ImportConfig{Tenant: "team-a", Concurrency: 1})
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "does not match the source"), "unexpected error %v", err)
	for _, o := range objects(t, dst, "") {
		testutil.Assert(t, !strings.HasSuffix(o, MetaFilename), "meta.json %s written after a corrupted copy", o)
	}
}

func TestNewImporter_BadConfig(t *testing.T) {
	bkt := newFilesystemBucket(t)
	for _, cfg := range []ImportConfig{
		{Tenant: ""},
		{Tenant: "a/b"},
		{Tenant: "t", Resolution: "10m"},
		{Tenant: "t", MatchLabels: map[string]string{"tenant_id": "x"}},
	} {
		_, err := NewImporter(log.NewNopLogger(), bkt, bkt, cfg, nil)
		testutil.NotOk(t, err, "config %+v", cfg)
	}
}

// A destination block whose files differ in size from the source's is copied again; the final progress line
// counts every block and byte.
func TestImport_RecopiesDifferentAndLogsProgress(t *testing.T) {
	s := newThanosSource(t)
	dst := newFilesystemBucket(t)
	cfg := ImportConfig{Tenant: "team-a", Resolution: "raw"}
	_, err := runImport(t, s.bkt, dst, cfg)
	testutil.Ok(t, err)
	index := path.Join("team-a", s.rawB.String(), IndexFilename)
	testutil.Ok(t, dst.Upload(context.Background(), index, strings.NewReader("truncated")))

	var buf bytes.Buffer
	im, err := NewImporter(log.NewLogfmtLogger(&buf), s.bkt, dst, cfg, func() time.Time { return time.Unix(1000, 0) })
	testutil.Ok(t, err)
	plan, err := im.Plan(context.Background())
	testutil.Ok(t, err)
	testutil.Equals(t, 1, plan.ToCopy())
	testutil.Ok(t, im.Run(context.Background(), plan))
	checkImported(t, s, dst, "team-a", s.rawA, s.rawB)
	want := fmt.Sprintf("msg=\"import done\" blocks_done=1 blocks_total=1 bytes_done=%d bytes_total=%d", plan.Bytes, plan.Bytes)
	testutil.Assert(t, strings.Contains(buf.String(), want), "log %q lacks %q", buf.String(), want)
}

// sizeRecordingBucket records the size each upload's reader tells (objstore.TryToGetSize), -1 when none.
type sizeRecordingBucket struct {
	objstore.Bucket
	mtx   sync.Mutex
	sizes map[string]int64
}

func (b *sizeRecordingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	size, err := objstore.TryToGetSize(r)
	if err != nil {
		size = -1
	}
	b.mtx.Lock()
	b.sizes[name] = size
	b.mtx.Unlock()
	return b.Bucket.Upload(ctx, name, r, opts...)
}

// Every block file is uploaded with its size told (an S3 client buffers a whole part of a reader of unknown
// size, and gofakes3 answered BadDigest to such an upload), and that size is the file's.
func TestImport_TellsUploadSizes(t *testing.T) {
	s := newThanosSource(t)
	dst := &sizeRecordingBucket{Bucket: newFilesystemBucket(t), sizes: map[string]int64{}}
	plan, err := runImport(t, s.bkt, dst, ImportConfig{Tenant: "team-a", Resolution: "raw"})
	testutil.Ok(t, err)
	n := 0
	for _, b := range plan.Blocks {
		for _, f := range b.Files {
			name := path.Join("team-a", b.Meta.ULID.String(), f.RelPath)
			testutil.Equals(t, f.SizeBytes, dst.sizes[name], "size told for %s", name)
			n++
		}
	}
	testutil.Assert(t, n >= 4, "only %d files checked", n)
}

func TestImport_DamagedSourceBlock(t *testing.T) {
	// A damaged source block is skipped as corrupted (never copied into the tenant, where it would break its
	// readers); the other blocks are imported.
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, bkt objstore.Bucket, id ulid.ULID)
	}{
		{name: "meta.json not JSON", damage: func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, bkt.Upload(ctx, path.Join(id.String(), MetaFilename), strings.NewReader("{not json")))
		}},
		{name: "chunk file listed but missing", damage: func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, bkt.Delete(ctx, path.Join(id.String(), "chunks", "000001")))
		}},
		{name: "index missing", damage: func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, bkt.Delete(ctx, path.Join(id.String(), IndexFilename)))
		}},
		{name: "zero-byte chunk file", damage: func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			testutil.Ok(t, bkt.Upload(ctx, path.Join(id.String(), "chunks", "000001"), strings.NewReader("")))
		}},
		{name: "chunk file cut", damage: func(t *testing.T, bkt objstore.Bucket, id ulid.ULID) {
			name := path.Join(id.String(), "chunks", "000001")
			b := readAll(t, bkt, name)
			testutil.Ok(t, bkt.Upload(ctx, name, bytes.NewReader(b[:len(b)/2])))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newThanosSource(t)
			tc.damage(t, s.bkt, s.rawB)
			dst := newFilesystemBucket(t)
			plan, err := runImport(t, s.bkt, dst, ImportConfig{Tenant: "team-a", Concurrency: 8})
			testutil.Ok(t, err)
			testutil.Equals(t, []ulid.ULID{s.rawB}, plan.Corrupted)
			checkImported(t, s, dst, "team-a", s.rawA, s.down5m, s.down1h)
		})
	}
}
