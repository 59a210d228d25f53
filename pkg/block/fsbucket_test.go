package block

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
)

// TestFilesystemBucketAcceptance runs objstore's own acceptance test over the filesystem bucket NewBucket builds.
func TestFilesystemBucketAcceptance(t *testing.T) {
	bkt, err := NewBucket(BucketConfig{}, t.TempDir(), log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	objstore.AcceptanceTest(t, bkt)
}

// failingReader gives n bytes of a, then fails (a client gone mid-upload, or a process killed mid-copy).
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	r.n -= k
	return k, nil
}

// TestFilesystemBucketUploadIsAtomic: every way of configuring a filesystem bucket gives uploads that readers see
// whole or not at all: an upload that fails mid-copy leaves no object (or the previous one), and an upload under
// way is invisible until it completes. objstore's filesystem bucket wrote in place: a truncated meta.json after a
// kill -9 of the compactor (CI's TestCompactorLocalCluster read one).
func TestFilesystemBucketUploadIsAtomic(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  func(dir string) BucketConfig
		// onDisk is where object "t/01/meta.json" lands under dir.
		onDisk string
	}{
		{name: "default under the data dir", cfg: func(string) BucketConfig { return BucketConfig{} },
			onDisk: "bucket/t/01/meta.json"},
		{name: "inline with a prefix", cfg: func(dir string) BucketConfig {
			return BucketConfig{Type: "filesystem", Config: map[string]any{"directory": filepath.Join(dir, "b")}, Prefix: "pre"}
		}, onDisk: "b/pre/t/01/meta.json"},
		{name: "config file", cfg: func(dir string) BucketConfig {
			f := filepath.Join(dir, "objstore.yaml")
			testutil.Ok(t, os.WriteFile(f, []byte("type: FILESYSTEM\nconfig:\n  directory: "+filepath.Join(dir, "c")+"\n"), 0o600))
			return BucketConfig{ConfigFile: f}
		}, onDisk: "c/t/01/meta.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bkt, err := NewBucket(tc.cfg(dir), dir, log.NewNopLogger(), prometheus.NewRegistry())
			testutil.Ok(t, err)
			const name = "t/01/meta.json"

			// A first upload that fails mid-copy: no object.
			err = bkt.Upload(ctx, name, &failingReader{n: 100})
			testutil.NotOk(t, err)
			ok, err := bkt.Exists(ctx, name)
			testutil.Ok(t, err)
			testutil.Assert(t, !ok, "a failed upload left an object")

			testutil.Ok(t, bkt.Upload(ctx, name, strings.NewReader(`{"version":1}`)))
			raw, err := os.ReadFile(filepath.Join(dir, tc.onDisk))
			testutil.Ok(t, err)
			testutil.Equals(t, `{"version":1}`, string(raw))

			// An overwrite that fails mid-copy leaves the previous object whole.
			testutil.NotOk(t, bkt.Upload(ctx, name, &failingReader{n: 1 << 20}))
			testutil.Equals(t, `{"version":1}`, readObject(t, bkt, name))

			// An upload under way is not seen: readers get the previous object until it is renamed into place.
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- bkt.Upload(ctx, name, pr) }()
			_, err = pw.Write([]byte(`{"version":`))
			testutil.Ok(t, err)
			testutil.Equals(t, `{"version":1}`, readObject(t, bkt, name))
			_, err = pw.Write([]byte(`2}`))
			testutil.Ok(t, err)
			testutil.Ok(t, pw.Close())
			select {
			case err := <-done:
				testutil.Ok(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("upload did not finish")
			}
			testutil.Equals(t, `{"version":2}`, readObject(t, bkt, name))

			// Nothing but the object is left in its directory.
			var names []string
			testutil.Ok(t, bkt.Iter(ctx, "t/01/", func(n string) error { names = append(names, n); return nil }))
			testutil.Equals(t, []string{name}, names)
		})
	}
}
