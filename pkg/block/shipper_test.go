package block

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"
)

// promtool is the path of a promtool binary built by TestMain from the Prometheus version in go.mod, or
// promtoolErr says why there is none.
var (
	promtool    string
	promtoolErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-block-test")
	if err != nil {
		promtoolErr = err
	} else {
		promtool = filepath.Join(dir, "promtool")
		if out, err := exec.Command("go", "build", "-o", promtool, "github.com/prometheus/prometheus/cmd/promtool").CombinedOutput(); err != nil {
			promtoolErr = errors.Wrapf(err, "build promtool: %s", out)
		}
	}
	code := m.Run()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// Two hours apart, so blocks never overlap; 10 minutes of samples each.
var blockRanges = [][2]int64{{0, 600_000}, {7_200_000, 7_800_000}, {14_400_000, 15_000_000}}

func tenantLabels() labels.Labels {
	return labels.FromStrings("tenant_id", "tenant-a", "cluster", "eu")
}

// shipperSetup is a TSDB directory, a bucket with a tenant prefix over a filesystem bucket, and a registry.
type shipperSetup struct {
	dir  string
	root objstore.Bucket  // The whole bucket.
	bkt  *recordingBucket // The tenant's prefix, recorded.
	reg  *prometheus.Registry
}

func newShipperSetup(t *testing.T) *shipperSetup {
	root := newFilesystemBucket(t)
	return &shipperSetup{
		dir:  t.TempDir(),
		root: root,
		bkt:  &recordingBucket{Bucket: objstore.NewPrefixedBucket(root, "tenant-a")},
		reg:  prometheus.NewRegistry(),
	}
}

func (s *shipperSetup) shipper(opts ...ShipperOption) *Shipper {
	s.reg = prometheus.NewRegistry()
	return NewShipper(log.NewNopLogger(), s.reg, s.dir, s.bkt, tenantLabels, ReceiveSource, opts...)
}

// shippedRecord returns the blocks recorded in thanos.shipper.json.
func (s *shipperSetup) shippedRecord(t *testing.T) []ulid.ULID {
	t.Helper()
	m, err := ReadShipperMeta(s.dir)
	testutil.Ok(t, err)
	return m.Uploaded
}

// metaUploads returns the blocks whose meta.json was uploaded, in order.
func (s *shipperSetup) metaUploads() []string {
	var out []string
	for _, n := range s.bkt.names("upload") {
		if strings.HasSuffix(n, "/"+MetaFilename) {
			out = append(out, strings.TrimSuffix(n, "/"+MetaFilename))
		}
	}
	return out
}

func metric(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return promtestutil.ToFloat64(c)
}

func TestShipper_Sync(t *testing.T) {
	ctx := context.Background()
	s := newShipperSetup(t)
	ids := createBlocks(t, s.dir, blockRanges[:2]...)

	sh := s.shipper()
	n, err := sh.Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 2, n)
	testutil.Equals(t, []string{ids[0].String(), ids[1].String()}, s.metaUploads()) // Oldest first.
	testutil.Equals(t, ids, s.shippedRecord(t))
	shipperFile, err := os.ReadFile(filepath.Join(s.dir, ShipperMetaFilename))
	testutil.Ok(t, err)
	testutil.Equals(t, "{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\""+ids[0].String()+"\",\n\t\t\""+ids[1].String()+"\"\n\t]\n}\n", string(shipperFile))

	for _, id := range ids {
		// Under <tenant>/<ULID>/ of the bucket, complete.
		testutil.Equals(t, []string{
			"tenant-a/" + id.String() + "/chunks/000001",
			"tenant-a/" + id.String() + "/index",
			"tenant-a/" + id.String() + "/meta.json",
			"tenant-a/" + id.String() + "/tombstones",
		}, objects(t, s.root, "tenant-a/"+id.String()))
		m, err := ReadMetaFromBucket(ctx, s.bkt, id)
		testutil.Ok(t, err)
		local, err := ReadMetaFromDir(filepath.Join(s.dir, id.String()))
		testutil.Ok(t, err)
		testutil.Equals(t, local.BlockMeta, m.BlockMeta)
		testutil.Equals(t, ThanosVersion1, m.Thanos.Version)
		testutil.Equals(t, map[string]string{"tenant_id": "tenant-a", "cluster": "eu"}, m.Thanos.Labels)
		testutil.Equals(t, ReceiveSource, m.Thanos.Source)
		testutil.Equals(t, int64(0), m.Thanos.Downsample.Resolution)
		testutil.Equals(t, 4, len(m.Thanos.Files))
		// The local block is untouched: its meta.json keeps no Thanos section.
		testutil.Equals(t, 0, len(local.Thanos.Labels))
	}
	noUploadLeftovers(t, s.dir)

	testutil.Equals(t, 2.0, metric(t, sh.metrics.uploads))
	testutil.Equals(t, 1.0, metric(t, sh.metrics.dirSyncs))
	testutil.Assert(t, metric(t, sh.metrics.lastSuccessfulUpload) > 0, "last upload time set")

	// A second Sync uploads nothing.
	s.bkt.ops = nil
	n, err = sh.Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, n)
	testutil.Equals(t, 0, len(s.bkt.names("upload")))
	testutil.Equals(t, 2.0, metric(t, sh.metrics.dirSyncs))

	// Neither does a new shipper over the same directory (a restart).
	n, err = s.shipper().Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, n)
	testutil.Equals(t, 0, len(s.bkt.names("upload")))

	// A new block is shipped, alone.
	ids = append(ids, createBlocks(t, s.dir, blockRanges[2])...)
	sh = s.shipper()
	n, err = sh.Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, n)
	testutil.Equals(t, []string{ids[2].String()}, s.metaUploads())
	testutil.Equals(t, ids, s.shippedRecord(t))

	// A block deleted locally (retention) leaves the record.
	testutil.Ok(t, os.RemoveAll(filepath.Join(s.dir, ids[0].String())))
	n, err = sh.Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, n)
	testutil.Equals(t, ids[1:], s.shippedRecord(t))
}

func TestShipper_BlockAlreadyInBucket(t *testing.T) {
	// The process uploaded the block, then died before recording it: the next Sync records it without uploading.
	ctx := context.Background()
	s := newShipperSetup(t)
	ids := createBlocks(t, s.dir, blockRanges[:2]...)
	m, err := ReadMetaFromDir(filepath.Join(s.dir, ids[0].String()))
	testutil.Ok(t, err)
	m.Thanos.Labels = tenantLabels().Map()
	testutil.Ok(t, Upload(ctx, log.NewNopLogger(), s.bkt, filepath.Join(s.dir, ids[0].String()), m))
	s.bkt.ops = nil

	n, err := s.shipper().Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, n)
	testutil.Equals(t, []string{ids[1].String()}, s.metaUploads())
	testutil.Equals(t, ids, s.shippedRecord(t))
}

func TestShipper_WhichBlocks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []ShipperOption
		prepare func(t *testing.T, dir string, ids []ulid.ULID)
		// shipped are the indexes of the blocks expected in the bucket and the record.
		shipped []int
		wantErr string
	}{
		{
			name: "compacted block skipped by default",
			prepare: func(t *testing.T, dir string, ids []ulid.ULID) {
				setLevel(t, filepath.Join(dir, ids[1].String()), 2)
			},
			shipped: []int{0, 2},
		},
		{
			name: "compacted block shipped with WithUploadCompacted",
			opts: []ShipperOption{WithUploadCompacted()},
			prepare: func(t *testing.T, dir string, ids []ulid.ULID) {
				setLevel(t, filepath.Join(dir, ids[1].String()), 3)
			},
			shipped: []int{0, 1, 2},
		},
		{
			name: "block being written (no meta.json yet) skipped",
			prepare: func(t *testing.T, dir string, ids []ulid.ULID) {
				testutil.Ok(t, os.Remove(filepath.Join(dir, ids[0].String(), MetaFilename)))
			},
			shipped: []int{1, 2},
		},
		{
			name: "block with a corrupt meta.json skipped, the others shipped, the error reported",
			prepare: func(t *testing.T, dir string, ids []ulid.ULID) {
				testutil.Ok(t, os.WriteFile(filepath.Join(dir, ids[1].String(), MetaFilename), []byte("{"), 0o600))
			},
			shipped: []int{0, 2},
			wantErr: "read meta.json of blocks [",
		},
		{
			name: "leftovers of a crashed upload removed",
			prepare: func(t *testing.T, dir string, _ []ulid.ULID) {
				stale := filepath.Join(dir, "thanos", "upload", ulid.MustNew(1, nil).String(), ChunksDirname)
				testutil.Ok(t, os.MkdirAll(stale, 0o750))
				testutil.Ok(t, os.WriteFile(filepath.Join(stale, "000001"), []byte("x"), 0o600))
			},
			shipped: []int{0, 1, 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newShipperSetup(t)
			ids := createBlocks(t, s.dir, blockRanges...)
			tc.prepare(t, s.dir, ids)

			n, err := s.shipper(tc.opts...).Sync(ctx)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
			} else {
				testutil.Ok(t, err)
			}
			testutil.Equals(t, len(tc.shipped), n)
			var want []ulid.ULID
			var wantDirs []string
			for _, i := range tc.shipped {
				want = append(want, ids[i])
				wantDirs = append(wantDirs, "tenant-a/"+ids[i].String()+"/")
			}
			testutil.Equals(t, want, s.shippedRecord(t))
			var dirs []string
			testutil.Ok(t, s.root.Iter(ctx, "tenant-a/", func(name string) error {
				dirs = append(dirs, name)
				return nil
			}))
			testutil.Equals(t, wantDirs, dirs)
			noUploadLeftovers(t, s.dir)
		})
	}
}

// noUploadLeftovers checks that no hard-linked block is left in the shipper's upload directory.
func noUploadLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "thanos", "upload"))
	if !errors.Is(err, os.ErrNotExist) {
		testutil.Ok(t, err)
	}
	testutil.Equals(t, 0, len(entries), "leftovers in the upload dir")
}

// setLevel rewrites the compaction level in a block's meta.json.
func setLevel(t *testing.T, bdir string, level int) {
	t.Helper()
	m, err := ReadMetaFromDir(bdir)
	testutil.Ok(t, err)
	m.Compaction.Level = level
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), bdir))
}

func TestShipper_UploadFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  func() labels.Labels
		fail    func(name string) error
		wantErr string
	}{
		{
			name: "bucket error",
			fail: func(name string) error {
				if strings.HasSuffix(name, "/"+IndexFilename) {
					return errors.New("injected upload failure")
				}
				return nil
			},
			wantErr: "injected upload failure",
		},
		{
			name:    "no labels",
			labels:  labels.EmptyLabels,
			wantErr: "no thanos.labels",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newShipperSetup(t)
			ids := createBlocks(t, s.dir, blockRanges[:2]...)
			s.bkt.failUpload = tc.fail
			lset := tenantLabels
			if tc.labels != nil {
				lset = tc.labels
			}
			sh := NewShipper(log.NewNopLogger(), s.reg, s.dir, s.bkt, func() labels.Labels { return lset() }, ReceiveSource)

			n, err := sh.Sync(ctx)
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), "upload block "+ids[0].String()), "error names the block: %v", err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
			testutil.Equals(t, 0, n)
			testutil.Equals(t, 0, len(s.metaUploads())) // Stopped at the oldest block; no meta.json anywhere.
			testutil.Equals(t, 0, len(s.shippedRecord(t)))
			testutil.Equals(t, 1.0, metric(t, sh.metrics.uploadFailures))
			testutil.Equals(t, 1.0, metric(t, sh.metrics.dirSyncFailures))
			testutil.Equals(t, 0.0, metric(t, sh.metrics.dirSyncs))
			testutil.Equals(t, 0.0, metric(t, sh.metrics.lastSuccessfulUpload))

			// Fixed, the next Sync ships both blocks.
			s.bkt.failUpload = nil
			lset = tenantLabels
			n, err = sh.Sync(ctx)
			testutil.Ok(t, err)
			testutil.Equals(t, 2, n)
			testutil.Equals(t, ids, s.shippedRecord(t))
			testutil.Equals(t, 2.0, metric(t, sh.metrics.uploads))
			testutil.Equals(t, 1.0, metric(t, sh.metrics.uploadFailures))
			testutil.Equals(t, 1.0, metric(t, sh.metrics.dirSyncs))
		})
	}
}

func TestShipper_BlockDeletedDuringSync(t *testing.T) {
	t.Run("before its upload starts", func(t *testing.T) {
		ctx := context.Background()
		s := newShipperSetup(t)
		ids := createBlocks(t, s.dir, blockRanges[:2]...)
		s.bkt.beforeExists = func(name string) {
			if strings.HasPrefix(name, ids[0].String()) {
				testutil.Ok(t, os.RemoveAll(filepath.Join(s.dir, ids[0].String())))
			}
		}
		sh := s.shipper()
		n, err := sh.Sync(ctx)
		testutil.Ok(t, err)
		testutil.Equals(t, 1, n)
		testutil.Equals(t, []string{ids[1].String()}, s.metaUploads())
		testutil.Equals(t, 0.0, metric(t, sh.metrics.uploadFailures))
	})

	t.Run("during its upload", func(t *testing.T) {
		// TSDB retention deletes the block while its chunks are being uploaded: the hard links keep the upload whole.
		ctx := context.Background()
		s := newShipperSetup(t)
		id := createBlocks(t, s.dir, blockRanges[0])[0]
		s.bkt.failUpload = func(name string) error {
			if strings.HasSuffix(name, "/chunks/000001") {
				testutil.Ok(t, os.RemoveAll(filepath.Join(s.dir, id.String())))
			}
			return nil
		}
		n, err := s.shipper().Sync(ctx)
		testutil.Ok(t, err)
		testutil.Equals(t, 1, n)
		m, err := ReadMetaFromBucket(ctx, s.bkt, id)
		testutil.Ok(t, err)
		for _, f := range m.Thanos.Files {
			if f.RelPath == MetaFilename {
				continue
			}
			attrs, err := s.bkt.Attributes(ctx, path.Join(id.String(), f.RelPath))
			testutil.Ok(t, err)
			testutil.Equals(t, f.SizeBytes, attrs.Size, f.RelPath)
		}
		analyze(t, s.bkt, id)
	})
}

func TestShipper_ShippedBlockReadableByPromtool(t *testing.T) {
	ctx := context.Background()
	s := newShipperSetup(t)
	ids := createBlocks(t, s.dir, blockRanges[:2]...)
	n, err := s.shipper().Sync(ctx)
	testutil.Ok(t, err)
	testutil.Equals(t, 2, n)
	for _, id := range ids {
		out := analyze(t, s.bkt, id)
		testutil.Assert(t, strings.Contains(out, "Block ID: "+id.String()), "promtool analyzed the block:\n%s", out)
		testutil.Assert(t, strings.Contains(out, "Total Series: 3"), "promtool saw the block's 3 series:\n%s", out)
	}
}

// analyze downloads block id from bkt into a fresh directory, runs `promtool tsdb analyze --extended` on it
// (which reads the index and every chunk) and returns its output; the test fails when promtool fails.
func analyze(t *testing.T, bkt objstore.BucketReader, id ulid.ULID) string {
	t.Helper()
	if promtoolErr != nil {
		t.Fatalf("promtool: %v", promtoolErr)
	}
	dir := t.TempDir()
	testutil.Ok(t, objstore.DownloadDir(context.Background(), log.NewNopLogger(), bkt, id.String(), id.String(), filepath.Join(dir, id.String())))
	out, err := exec.Command(promtool, "tsdb", "analyze", "--extended", dir, id.String()).CombinedOutput()
	testutil.Ok(t, err, "promtool tsdb analyze:\n%s", out)
	return string(out)
}

func TestShipper_TornMetaInBucket(t *testing.T) {
	// The process was killed while writing meta.json to a bucket without atomic writes (the filesystem one):
	// the bucket holds the block's files and an empty or cut meta.json. The block is uploaded again, not
	// recorded as shipped.
	for _, tc := range []struct {
		name string
		meta string
	}{
		{name: "empty", meta: ""},
		{name: "cut", meta: `{"ulid": "`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newShipperSetup(t)
			ids := createBlocks(t, s.dir, blockRanges[:1]...)
			m, err := ReadMetaFromDir(filepath.Join(s.dir, ids[0].String()))
			testutil.Ok(t, err)
			m.Thanos.Labels = tenantLabels().Map()
			testutil.Ok(t, Upload(ctx, log.NewNopLogger(), s.bkt, filepath.Join(s.dir, ids[0].String()), m))
			testutil.Ok(t, s.bkt.Upload(ctx, path.Join(ids[0].String(), MetaFilename), strings.NewReader(tc.meta)))
			s.bkt.ops = nil

			n, err := s.shipper().Sync(ctx)
			testutil.Ok(t, err)
			testutil.Equals(t, 1, n)
			testutil.Equals(t, []string{ids[0].String()}, s.metaUploads())
			testutil.Equals(t, ids, s.shippedRecord(t))
			got, err := ReadMetaFromBucket(ctx, s.bkt, ids[0])
			testutil.Ok(t, err)
			testutil.Equals(t, ids[0], got.ULID)
		})
	}
}
