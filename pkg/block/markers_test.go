package block

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// readObject returns the content of an object.
func readObject(t testing.TB, bkt objstore.BucketReader, name string) string {
	t.Helper()
	rc, err := bkt.Get(context.Background(), name)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, rc.Close()) }()
	b, err := io.ReadAll(rc)
	testutil.Ok(t, err)
	return string(b)
}

func TestMarkers(t *testing.T) {
	id := ulid.MustParse("01DQYXMK8G108CEBQ79Y84DYVY")
	t1 := func() time.Time { return time.Unix(1700000000, 0) }
	t2 := func() time.Time { return time.Unix(1800000000, 0) }

	for _, tc := range []struct {
		name   string
		local  string // the marker in the block's directory
		global string // its mirror
		mark   func(ctx context.Context, bkt objstore.Bucket, now func() time.Time) error
		// golden is the JSON Thanos writes for this mark at t1 (json.Marshal of Thanos' struct).
		golden string
		read   func(ctx context.Context, bkt objstore.Bucket) (any, error)
		want   any
	}{
		{
			name:   "deletion",
			local:  id.String() + "/deletion-mark.json",
			global: "markers/" + id.String() + "-deletion-mark.json",
			mark: func(ctx context.Context, bkt objstore.Bucket, now func() time.Time) error {
				return MarkForDeletion(ctx, log.NewNopLogger(), bkt, id, "retention", now)
			},
			golden: `{"id":"01DQYXMK8G108CEBQ79Y84DYVY","version":1,"details":"retention","deletion_time":1700000000}`,
			read: func(ctx context.Context, bkt objstore.Bucket) (any, error) {
				return ReadDeletionMark(ctx, bkt, id)
			},
			want: &DeletionMark{ID: id, Version: 1, Details: "retention", DeletionTime: 1700000000},
		},
		{
			name:   "no compaction",
			local:  id.String() + "/no-compact-mark.json",
			global: "markers/" + id.String() + "-no-compact-mark.json",
			mark: func(ctx context.Context, bkt objstore.Bucket, now func() time.Time) error {
				return MarkForNoCompaction(ctx, log.NewNopLogger(), bkt, id, OutOfOrderChunksNoCompactReason, "chunk 3", now)
			},
			golden: `{"id":"01DQYXMK8G108CEBQ79Y84DYVY","version":1,"details":"chunk 3","no_compact_time":1700000000,"reason":"block-index-out-of-order-chunk"}`,
			read: func(ctx context.Context, bkt objstore.Bucket) (any, error) {
				return ReadNoCompactMark(ctx, bkt, id)
			},
			want: &NoCompactMark{ID: id, Version: 1, Details: "chunk 3", NoCompactTime: 1700000000, Reason: OutOfOrderChunksNoCompactReason},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := newFilesystemBucket(t)
			bkt := objstore.NewPrefixedBucket(root, "tenant-a")

			_, err := tc.read(ctx, bkt)
			testutil.Assert(t, errors.Is(err, ErrMarkerNotFound), "no marker yet: %v", err)

			testutil.Ok(t, tc.mark(ctx, bkt, t1))
			testutil.Equals(t, []string{"tenant-a/" + tc.local, "tenant-a/" + tc.global}, objects(t, root, ""))
			testutil.Equals(t, tc.golden, readObject(t, bkt, tc.local))
			testutil.Equals(t, tc.golden, readObject(t, bkt, tc.global))
			got, err := tc.read(ctx, bkt)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, got)

			// Marking again keeps the first mark.
			testutil.Ok(t, tc.mark(ctx, bkt, t2))
			testutil.Equals(t, tc.golden, readObject(t, bkt, tc.local))
			testutil.Equals(t, tc.golden, readObject(t, bkt, tc.global))

			// A mark interrupted before its mirror was written is completed with the same content.
			testutil.Ok(t, bkt.Delete(ctx, tc.global))
			testutil.Ok(t, tc.mark(ctx, bkt, t2))
			testutil.Equals(t, tc.golden, readObject(t, bkt, tc.global))

			// A stale mirror without a mark in the block's directory is replaced by the new mark.
			testutil.Ok(t, bkt.Delete(ctx, tc.local))
			testutil.Ok(t, tc.mark(ctx, bkt, t2))
			testutil.Equals(t, strings.ReplaceAll(tc.golden, "1700000000", "1800000000"), readObject(t, bkt, tc.local))
		})
	}
}

func TestMarkers_UploadError(t *testing.T) {
	ctx := context.Background()
	id := ulid.MustNew(1, nil)
	bkt := &recordingBucket{Bucket: newFilesystemBucket(t), failUpload: func(name string) error {
		if strings.HasPrefix(name, "markers/") {
			return errors.New("injected upload failure")
		}
		return nil
	}}
	err := MarkForDeletion(ctx, log.NewNopLogger(), bkt, id, "", nil)
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "mark block "+id.String()+" for deletion"), "%v", err)

	// The retry writes the missing mirror.
	bkt.failUpload = nil
	testutil.Ok(t, MarkForDeletion(ctx, log.NewNopLogger(), bkt, id, "", nil))
	testutil.Equals(t, readObject(t, bkt, id.String()+"/deletion-mark.json"), readObject(t, bkt, DeletionMarkFilepath(id)))
	testutil.Assert(t, bytes.Contains([]byte(readObject(t, bkt, DeletionMarkFilepath(id))), []byte(`"version":1`)), "a Thanos deletion mark")
}
