package indexheader

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
)

// writeBlock writes a real TSDB block holding series (one sample each) with Prometheus's block writer and returns
// the path of its index file.
func writeBlock(t testing.TB, dir string, series []labels.Labels) string {
	t.Helper()
	w, err := tsdb.NewBlockWriter(slog.New(slog.DiscardHandler), dir, tsdb.DefaultBlockDuration)
	testutil.Ok(t, err)
	ctx := context.Background()
	app := w.Appender(ctx)
	for i, lset := range series {
		_, err := app.Append(0, lset, int64(i%1000), float64(i))
		testutil.Ok(t, err)
	}
	testutil.Ok(t, app.Commit())
	id, err := w.Flush(ctx)
	testutil.Ok(t, err)
	testutil.Ok(t, w.Close())
	return filepath.Join(dir, id.String(), "index")
}

// writeIndex writes an index file holding series directly with Prometheus's index writer (which, unlike the block
// writer, accepts no series at all) and returns its path.
func writeIndex(t testing.TB, dir string, series []labels.Labels) string {
	t.Helper()
	series = slices.Clone(series)
	slices.SortFunc(series, labels.Compare)
	symbols := map[string]struct{}{}
	for _, lset := range series {
		lset.Range(func(l labels.Label) {
			symbols[l.Name] = struct{}{}
			symbols[l.Value] = struct{}{}
		})
	}
	sorted := make([]string, 0, len(symbols))
	for s := range symbols {
		sorted = append(sorted, s)
	}
	slices.Sort(sorted)

	path := filepath.Join(dir, "index")
	w, err := index.NewWriter(context.Background(), path)
	testutil.Ok(t, err)
	for _, s := range sorted {
		testutil.Ok(t, w.AddSymbol(s))
	}
	for i, lset := range series {
		chk := chunks.Meta{Ref: chunks.ChunkRef(i * 100), MinTime: int64(i), MaxTime: int64(i) + 10}
		testutil.Ok(t, w.AddSeries(storage.SeriesRef(i), lset, chk))
	}
	testutil.Ok(t, w.Close())
	return path
}

// newBucket returns a filesystem bucket holding the local index file at the given bucket path.
func newBucket(t testing.TB, localIndex, indexPath string) *filesystem.Bucket {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	f, err := os.Open(localIndex)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, f.Close()) }()
	testutil.Ok(t, bkt.Upload(context.Background(), indexPath, f))
	return bkt
}

// countingBucket counts calls and bytes read through it.
type countingBucket struct {
	objstore.BucketReader
	attributesDelay time.Duration

	mtx        sync.Mutex
	attributes int
	gets       int
	getRanges  int
	bytesRead  int64
}

func (b *countingBucket) Attributes(ctx context.Context, name string) (objstore.ObjectAttributes, error) {
	b.mtx.Lock()
	b.attributes++
	b.mtx.Unlock()
	time.Sleep(b.attributesDelay)
	return b.BucketReader.Attributes(ctx, name)
}

func (b *countingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	b.mtx.Lock()
	b.gets++
	b.mtx.Unlock()
	rc, err := b.BucketReader.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, b: b}, nil
}

func (b *countingBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	b.mtx.Lock()
	b.getRanges++
	b.mtx.Unlock()
	rc, err := b.BucketReader.GetRange(ctx, name, off, length)
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, b: b}, nil
}

func (b *countingBucket) counts() (attributes, gets, getRanges int, bytesRead int64) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.attributes, b.gets, b.getRanges, b.bytesRead
}

type countingReader struct {
	io.ReadCloser
	b *countingBucket
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.b.mtx.Lock()
	r.b.bytesRead += int64(n)
	r.b.mtx.Unlock()
	return n, err
}

// readRange reads [rng.Start, rng.End) of name from bkt.
func readRange(t testing.TB, bkt objstore.BucketReader, name string, rng index.Range) []byte {
	t.Helper()
	rc, err := bkt.GetRange(context.Background(), name, rng.Start, rng.End-rng.Start)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, rc.Close()) }()
	b, err := io.ReadAll(rc)
	testutil.Ok(t, err)
	testutil.Equals(t, int(rng.End-rng.Start), len(b))
	return b
}
