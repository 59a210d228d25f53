package block

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// Block markers: small JSON objects next to a block (<ULID>/<marker>) saying something about it, in Thanos'
// format; each is mirrored as markers/<ULID>-<marker> (Mimir's global markers), so a reader learns about every
// marked block of a tenant with one listing instead of one request per block.
const (
	// DeletionMarkFilename marks a block for deletion: the compactor deletes it once the mark is older than its
	// deletion delay, leaving readers time to stop using it.
	DeletionMarkFilename = "deletion-mark.json"
	// NoCompactMarkFilename excludes a block from compaction (horizontal and vertical) and rewrites.
	NoCompactMarkFilename = "no-compact-mark.json"
	// MarkersDirname is the directory of mirrored markers in a tenant's bucket.
	MarkersDirname = "markers"

	// DeletionMarkVersion1 is the only version of deletion-mark.json.
	DeletionMarkVersion1 = 1
	// NoCompactMarkVersion1 is the only version of no-compact-mark.json.
	NoCompactMarkVersion1 = 1
)

// DeletionMark is the content of deletion-mark.json (Thanos' metadata.DeletionMark).
type DeletionMark struct {
	// ID of the block.
	ID ulid.ULID `json:"id"`
	// Version of the file: DeletionMarkVersion1.
	Version int `json:"version"`
	// Details is a human-readable reason.
	Details string `json:"details,omitempty"`
	// DeletionTime is when the block was marked, in Unix seconds.
	DeletionTime int64 `json:"deletion_time"`
}

// NoCompactReason says why a block is excluded from compaction.
type NoCompactReason string

// Reasons for excluding a block from compaction, as Thanos names them.
const (
	// ManualNoCompactReason is for a mark added by an operator.
	ManualNoCompactReason NoCompactReason = "manual"
	// IndexSizeExceedingNoCompactReason is for a block whose compacted index would be too big.
	IndexSizeExceedingNoCompactReason NoCompactReason = "index-size-exceeding"
	// OutOfOrderChunksNoCompactReason is for a block whose index has out-of-order chunks.
	OutOfOrderChunksNoCompactReason NoCompactReason = "block-index-out-of-order-chunk"
	// DownsampleVerticalCompactionNoCompactReason is for overlapping downsampled blocks, which cannot be merged.
	DownsampleVerticalCompactionNoCompactReason NoCompactReason = "downsample-vertical-compaction"
)

// NoCompactMark is the content of no-compact-mark.json (Thanos' metadata.NoCompactMark).
type NoCompactMark struct {
	// ID of the block.
	ID ulid.ULID `json:"id"`
	// Version of the file: NoCompactMarkVersion1.
	Version int `json:"version"`
	// Details is a human-readable explanation.
	Details string `json:"details,omitempty"`
	// NoCompactTime is when the block was marked, in Unix seconds.
	NoCompactTime int64           `json:"no_compact_time"`
	Reason        NoCompactReason `json:"reason"`
}

// DeletionMarkFilepath returns the path, relative to a tenant's bucket, of block id's mirrored deletion mark:
// markers/<id>-deletion-mark.json.
func DeletionMarkFilepath(id ulid.ULID) string {
	return path.Join(MarkersDirname, id.String()+"-"+DeletionMarkFilename)
}

// NoCompactMarkFilepath returns the path, relative to a tenant's bucket, of block id's mirrored no-compact mark:
// markers/<id>-no-compact-mark.json.
func NoCompactMarkFilepath(id ulid.ULID) string {
	return path.Join(MarkersDirname, id.String()+"-"+NoCompactMarkFilename)
}

// MarkForDeletion marks block id of bkt (a tenant's bucket) for deletion: it writes <id>/deletion-mark.json with
// details and the time now() (time.Now when nil), then its mirror markers/<id>-deletion-mark.json.
//
// It is idempotent: when the block is marked already, the existing mark is kept (its time is not moved) and
// only a missing mirror is written, with the same content, repairing a mark interrupted between its two writes.
// It does not check that the block exists.
func MarkForDeletion(ctx context.Context, logger log.Logger, bkt objstore.Bucket, id ulid.ULID, details string, now func() time.Time) error {
	if now == nil {
		now = time.Now
	}
	err := mark(ctx, logger, bkt, path.Join(id.String(), DeletionMarkFilename), DeletionMarkFilepath(id), func() ([]byte, error) {
		return json.Marshal(DeletionMark{ID: id, Version: DeletionMarkVersion1, Details: details, DeletionTime: now().Unix()})
	})
	if err != nil {
		return errors.Wrapf(err, "mark block %s for deletion", id)
	}
	return nil
}

// MarkForNoCompaction excludes block id of bkt (a tenant's bucket) from compaction: it writes
// <id>/no-compact-mark.json with reason, details and the time now() (time.Now when nil), then its mirror
// markers/<id>-no-compact-mark.json. Idempotent like MarkForDeletion.
func MarkForNoCompaction(ctx context.Context, logger log.Logger, bkt objstore.Bucket, id ulid.ULID, reason NoCompactReason, details string, now func() time.Time) error {
	if now == nil {
		now = time.Now
	}
	err := mark(ctx, logger, bkt, path.Join(id.String(), NoCompactMarkFilename), NoCompactMarkFilepath(id), func() ([]byte, error) {
		return json.Marshal(NoCompactMark{ID: id, Version: NoCompactMarkVersion1, Details: details, NoCompactTime: now().Unix(), Reason: reason})
	})
	if err != nil {
		return errors.Wrapf(err, "mark block %s for no compaction", id)
	}
	return nil
}

// mark writes a marker at local (in the block's directory) and then at global (its mirror). An existing local
// marker wins: its content is copied to global when global is missing.
func mark(ctx context.Context, logger log.Logger, bkt objstore.Bucket, local, global string, encode func() ([]byte, error)) error {
	content, err := getObject(ctx, bkt, local)
	if err != nil {
		return err
	}
	if content == nil {
		if content, err = encode(); err != nil {
			return errors.Wrapf(err, "encode %s", local)
		}
		if err := bkt.Upload(ctx, local, bytes.NewReader(content)); err != nil {
			return errors.Wrapf(err, "upload %s", local)
		}
		level.Info(logger).Log("msg", "marked block", "marker", local)
	}
	ok, err := bkt.Exists(ctx, global)
	if err != nil {
		return errors.Wrapf(err, "check %s", global)
	}
	if ok {
		return nil
	}
	if err := bkt.Upload(ctx, global, bytes.NewReader(content)); err != nil {
		return errors.Wrapf(err, "upload %s", global)
	}
	return nil
}

// ErrMarkerNotFound is returned (wrapped) by ReadDeletionMark and ReadNoCompactMark when the block has no such
// marker.
var ErrMarkerNotFound = errors.New("marker not found")

// ReadDeletionMark reads <id>/deletion-mark.json from bkt (a tenant's bucket). The error wraps ErrMarkerNotFound
// when there is none.
func ReadDeletionMark(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (*DeletionMark, error) {
	var m DeletionMark
	if err := readMarker(ctx, bkt, path.Join(id.String(), DeletionMarkFilename), &m); err != nil {
		return nil, err
	}
	if m.Version != DeletionMarkVersion1 {
		return nil, errors.Newf("deletion mark of block %s: unexpected version %d", id, m.Version)
	}
	return &m, nil
}

// ReadNoCompactMark reads <id>/no-compact-mark.json from bkt (a tenant's bucket). The error wraps
// ErrMarkerNotFound when there is none.
func ReadNoCompactMark(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (*NoCompactMark, error) {
	var m NoCompactMark
	if err := readMarker(ctx, bkt, path.Join(id.String(), NoCompactMarkFilename), &m); err != nil {
		return nil, err
	}
	if m.Version != NoCompactMarkVersion1 {
		return nil, errors.Newf("no-compact mark of block %s: unexpected version %d", id, m.Version)
	}
	return &m, nil
}

func readMarker(ctx context.Context, bkt objstore.BucketReader, name string, v any) error {
	content, err := getObject(ctx, bkt, name)
	if err != nil {
		return err
	}
	if content == nil {
		return errors.Wrapf(ErrMarkerNotFound, "read %s", name)
	}
	if err := json.Unmarshal(content, v); err != nil {
		return errors.Wrapf(err, "decode %s", name)
	}
	return nil
}

// getObject returns the content of an object, or nil (and no error) when it does not exist.
func getObject(ctx context.Context, bkt objstore.BucketReader, name string) (_ []byte, err error) {
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		if bkt.IsObjNotFoundErr(err) {
			return nil, nil
		}
		return nil, errors.Wrapf(err, "get %s", name)
	}
	defer errcapture.Do(&err, rc.Close, "close %s", name)
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", name)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}
