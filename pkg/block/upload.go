package block

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// Upload uploads the TSDB block in blockDir to bkt under <ULID>/, bkt being the tenant's bucket (the caller wraps
// the bucket with objstore.NewPrefixedBucket(bkt, tenant)).
//
// Order: chunks/*, then index, then every other regular file of the directory (e.g. tombstones), and meta.json
// last, so a block whose meta.json is in the bucket is complete; after a failure there is no meta.json and the
// block is a partial upload, which a retry overwrites (objects already uploaded are left for it). The meta.json
// uploaded is meta, not the file in blockDir: Upload sets meta.Thanos.Version to ThanosVersion1,
// meta.Thanos.Files to the files uploaded (sorted, slash-separated relative paths, with sizes; meta.json without)
// and meta.Thanos.UploadTime to the current time, so after a successful call meta is what the bucket holds.
//
// Upload refuses a directory whose name is not meta's ULID, a meta that does not pass Validate, a meta without
// Thanos labels (Thanos and Strata group, compact and isolate blocks by them), and a block without an index.
// Upload does not check whether the block is already in the bucket; it overwrites it.
func Upload(ctx context.Context, logger log.Logger, bkt objstore.Bucket, blockDir string, meta *Meta) error {
	if meta == nil {
		return errors.Newf("upload block dir %s: no meta", blockDir)
	}
	if err := upload(ctx, logger, bkt, blockDir, meta); err != nil {
		return errors.Wrapf(err, "upload block %s", meta.ULID)
	}
	return nil
}

func upload(ctx context.Context, logger log.Logger, bkt objstore.Bucket, blockDir string, meta *Meta) error {
	if err := meta.Validate(); err != nil {
		return err
	}
	id := meta.ULID
	if base := filepath.Base(filepath.Clean(blockDir)); base != id.String() {
		return errors.Newf("block dir %s is not named after the block's ULID %s", blockDir, id)
	}
	if len(meta.Thanos.Labels) == 0 {
		return errors.New("meta.json has no thanos.labels; a block in the bucket needs its external labels")
	}
	files, err := blockFiles(blockDir)
	if err != nil {
		return err
	}

	stats := make([]File, 0, len(files)+1)
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		size, err := uploadFile(ctx, bkt, filepath.Join(blockDir, filepath.FromSlash(f)), path.Join(id.String(), f))
		if err != nil {
			return err
		}
		stats = append(stats, File{RelPath: f, SizeBytes: size})
	}
	stats = append(stats, File{RelPath: MetaFilename})
	sort.Slice(stats, func(i, j int) bool { return stats[i].RelPath < stats[j].RelPath })

	meta.Thanos.Version = ThanosVersion1
	meta.Thanos.Files = stats
	meta.Thanos.UploadTime = time.Now().UTC()
	var buf bytes.Buffer
	if err := meta.Write(&buf); err != nil {
		return errors.Wrap(err, "encode meta.json")
	}
	// meta.json last: its presence is what makes the block visible and complete.
	if err := bkt.Upload(ctx, path.Join(id.String(), MetaFilename), &buf); err != nil {
		return errors.Wrap(err, "upload meta.json")
	}
	level.Debug(logger).Log("msg", "uploaded block", "block", id, "files", len(stats))
	return nil
}

// uploadFile uploads the local file src as the object dst and returns the file's size.
func uploadFile(ctx context.Context, bkt objstore.Bucket, src, dst string) (_ int64, err error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, errors.Wrapf(err, "open %s", src)
	}
	defer errcapture.Do(&err, f.Close, "close %s", src)
	fi, err := f.Stat()
	if err != nil {
		return 0, errors.Wrapf(err, "stat %s", src)
	}
	if err := bkt.Upload(ctx, dst, f); err != nil {
		return 0, errors.Wrapf(err, "upload %s", dst)
	}
	return fi.Size(), nil
}

// blockFiles returns the slash-separated paths, relative to dir, of the regular files of a block directory in
// upload order: chunks/* sorted, index, then the others sorted. meta.json (and a leftover meta.json.tmp) are
// left out: Upload writes meta.json itself. It fails when there is no index.
func blockFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == MetaFilename || rel == MetaFilename+".tmp" {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, errors.Wrapf(err, "list files of block dir %s", dir)
	}
	rank := func(f string) int {
		switch {
		case strings.HasPrefix(f, ChunksDirname+"/"):
			return 0
		case f == IndexFilename:
			return 1
		default:
			return 2
		}
	}
	sort.Slice(files, func(i, j int) bool {
		if ri, rj := rank(files[i]), rank(files[j]); ri != rj {
			return ri < rj
		}
		return files[i] < files[j]
	})
	hasIndex := false
	for _, f := range files {
		hasIndex = hasIndex || f == IndexFilename
	}
	if !hasIndex {
		return nil, errors.Newf("block dir %s has no %s file", dir, IndexFilename)
	}
	return files, nil
}

// Delete deletes block id from bkt (a tenant's bucket): meta.json first, so that from the first deletion on the
// block is a partial one that no reader loads; then its other objects; then its deletion mark; then the block's
// mirrored markers under markers/. Objects already gone are not an error, so Delete can be retried after a
// failure, and deleting a block that is not there succeeds.
func Delete(ctx context.Context, logger log.Logger, bkt objstore.Bucket, id ulid.ULID) error {
	if err := deleteBlock(ctx, logger, bkt, id); err != nil {
		return errors.Wrapf(err, "delete block %s", id)
	}
	return nil
}

func deleteBlock(ctx context.Context, logger log.Logger, bkt objstore.Bucket, id ulid.ULID) error {
	metaFile := path.Join(id.String(), MetaFilename)
	deletionMark := path.Join(id.String(), DeletionMarkFilename)
	if err := deleteObject(ctx, bkt, metaFile); err != nil {
		return err
	}

	var names []string
	err := bkt.Iter(ctx, id.String()+objstore.DirDelim, func(name string) error {
		// Directory marker objects (some stores have them) are removed at the end; meta.json is gone already and
		// the deletion mark goes last.
		if strings.HasSuffix(name, objstore.DirDelim) || name == metaFile || name == deletionMark {
			return nil
		}
		names = append(names, name)
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return errors.Wrapf(err, "list objects of block %s", id)
	}
	for _, name := range names {
		if err := deleteObject(ctx, bkt, name); err != nil {
			return err
		}
	}
	for _, name := range []string{deletionMark, DeletionMarkFilepath(id), NoCompactMarkFilepath(id)} {
		if err := deleteObject(ctx, bkt, name); err != nil {
			return err
		}
	}
	// Best effort, as Thanos does: stores that represent directories as empty objects keep them otherwise.
	for _, dir := range []string{path.Join(id.String(), ChunksDirname) + objstore.DirDelim, id.String() + objstore.DirDelim} {
		if err := bkt.Delete(ctx, dir); err != nil && !bkt.IsObjNotFoundErr(err) {
			level.Debug(logger).Log("msg", "delete directory marker object", "object", dir, "err", err)
		}
	}
	level.Debug(logger).Log("msg", "deleted block", "block", id, "objects", len(names)+1)
	return nil
}

// deleteObject deletes one object; an object that does not exist is not an error.
func deleteObject(ctx context.Context, bkt objstore.Bucket, name string) error {
	if err := bkt.Delete(ctx, name); err != nil && !bkt.IsObjNotFoundErr(err) {
		return errors.Wrapf(err, "delete %s", name)
	}
	return nil
}
