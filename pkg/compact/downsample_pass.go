package compact

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// DownsampleFailedNoCompactReason is the reason of the no-compact mark DownsamplePass gives a block it could read
// from the bucket but not downsample (a corrupted index or chunk): such a block is not tried again, by the
// downsampling nor by the compaction. Thanos writes a separate no-downsample-mark.json instead.
const DownsampleFailedNoCompactReason block.NoCompactReason = "downsample-failed"

// DownsampleResult counts what DownsamplePass did.
type DownsampleResult struct {
	// Downsampled5m and Downsampled1h are the blocks written at 5m and at 1h.
	Downsampled5m, Downsampled1h int
	// Marked are blocks that could not be downsampled and were marked no-compact (DownsampleFailedNoCompactReason).
	Marked int
	// Failed are blocks whose download or upload failed (logged; tried again by the next pass).
	Failed int
}

// DownsamplePass downsamples the blocks of tbkt, a tenant-scoped bucket, by Thanos's rules (downsampleBucket):
// every live block of tb (complete, not marked for deletion, not marked no-compact with
// DownsampleFailedNoCompactReason) at raw resolution spanning at least 40h (max-min >= Downsample5mMinSpan) gets
// a 5m version, then every such 5m block (those just written included) spanning at least 10 days
// (Downsample1hMinSpan) a 1h version, unless a live block of the target resolution already holds all of the
// block's compaction sources. That check makes the pass idempotent: run again, or after a crash, it downsamples
// nothing twice (a crash before meta.json was uploaded leaves a partial block, which readers ignore and
// CleanTenant removes; the next pass writes the block again).
//
// Each block is downloaded into workDir, downsampled (Downsample; the new ULID from now()) and uploaded with
// block.Upload (meta.json last); workDir's copies are removed afterwards. A block that fails to downsample is
// marked no-compact, logged and counted; a download or upload failure is logged and counted; either way the
// other blocks carry on, and the first error is returned with the counts. New blocks are added to tb.
func DownsamplePass(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, tb *TenantBlocks, workDir string, now func() time.Time) (DownsampleResult, error) {
	var (
		res      DownsampleResult
		firstErr error
	)
	for _, step := range []struct {
		from, to, minSpan int64
		count             *int
	}{
		{ResolutionRaw, Resolution5m, Downsample5mMinSpan, &res.Downsampled5m},
		{Resolution5m, Resolution1h, Downsample1hMinSpan, &res.Downsampled1h},
	} {
		live := tb.Live()
		covered := map[ulid.ULID]struct{}{} // sources of the live blocks at the target resolution
		for _, m := range live {
			if m.Thanos.Downsample.Resolution == step.to {
				for _, s := range m.Compaction.Sources {
					covered[s] = struct{}{}
				}
			}
		}
		for _, m := range live {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if m.Thanos.Downsample.Resolution != step.from || m.MaxTime-m.MinTime < step.minSpan {
				continue
			}
			if nc, ok := tb.NoCompactMarks[m.ULID]; ok && nc.Reason == DownsampleFailedNoCompactReason {
				continue
			}
			if allCovered(m.Compaction.Sources, covered) {
				continue
			}
			out, marked, err := downsampleBlock(ctx, logger, tbkt, m, workDir, step.to, now)
			if err != nil {
				level.Warn(logger).Log("msg", "block not downsampled", "block", m.ULID, "resolution", step.to, "marked_no_compact", marked, "err", err)
				if marked {
					res.Marked++
					if nc, rerr := block.ReadNoCompactMark(ctx, tbkt, m.ULID); rerr == nil {
						tb.NoCompactMarks[m.ULID] = nc
					}
				} else {
					res.Failed++
				}
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			tb.Metas[out.ULID] = out
			for _, s := range out.Compaction.Sources {
				covered[s] = struct{}{}
			}
			*step.count++
		}
	}
	return res, firstErr
}

// allCovered says whether every one of sources is in covered (false for no sources: such a block's coverage
// cannot be told, so Thanos, too, downsamples it).
func allCovered(sources []ulid.ULID, covered map[ulid.ULID]struct{}) bool {
	for _, s := range sources {
		if _, ok := covered[s]; !ok {
			return false
		}
	}
	return len(sources) > 0
}

// downsampleBlock downloads m, downsamples it to res and uploads the result; marked says that the block could
// not be downsampled and was marked no-compact.
func downsampleBlock(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, m *block.Meta, workDir string, res int64, now func() time.Time) (_ *block.Meta, marked bool, err error) {
	dir := filepath.Join(workDir, "downsample-"+m.ULID.String())
	if err := os.RemoveAll(dir); err != nil {
		return nil, false, errors.Wrap(err, "remove leftover work dir")
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			level.Warn(logger).Log("msg", "remove downsampling work dir", "dir", dir, "err", rerr)
		}
	}()
	src := filepath.Join(dir, m.ULID.String())
	if err := downloadBlock(ctx, tbkt, m.ULID, src); err != nil {
		return nil, false, err
	}
	id, err := ulid.New(ulid.Timestamp(now()), rand.Reader)
	if err != nil {
		return nil, false, errors.Wrap(err, "new ULID")
	}
	out, stats, err := Downsample(ctx, logger, src, dir, res, id)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, err
		}
		err = errors.Wrapf(err, "downsample block %s to resolution %d", m.ULID, res)
		if merr := block.MarkForNoCompaction(ctx, logger, tbkt, m.ULID, DownsampleFailedNoCompactReason, err.Error(), now); merr != nil {
			return nil, false, errors.Wrapf(merr, "after %v", err)
		}
		return nil, true, err
	}
	if err := os.RemoveAll(src); err != nil { // free the disk before the upload
		return nil, false, errors.Wrap(err, "remove downloaded block")
	}
	if err := block.Upload(ctx, logger, tbkt, filepath.Join(dir, id.String()), out); err != nil {
		return nil, false, err
	}
	level.Info(logger).Log("msg", "uploaded downsampled block", "from", m.ULID, "to", id, "resolution", res, "series", stats.Series)
	return out, false, nil
}

// downloadBlock copies block id's objects (its markers left out) from tbkt into dir.
func downloadBlock(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID, dir string) error {
	prefix := id.String() + objstore.DirDelim
	var names []string
	err := tbkt.Iter(ctx, prefix, func(name string) error {
		if !strings.HasSuffix(name, objstore.DirDelim) {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return errors.Wrapf(err, "list block %s", id)
	}
	for _, name := range names {
		rel := strings.TrimPrefix(name, prefix)
		if base := path.Base(rel); base == block.DeletionMarkFilename || base == block.NoCompactMarkFilename {
			continue
		}
		if err := downloadFile(ctx, tbkt, name, filepath.Join(dir, filepath.FromSlash(rel))); err != nil {
			return err
		}
	}
	return nil
}

func downloadFile(ctx context.Context, tbkt objstore.Bucket, name, dst string) (err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return errors.Wrapf(err, "create dir of %s", dst)
	}
	rc, err := tbkt.Get(ctx, name)
	if err != nil {
		return errors.Wrapf(err, "get %s", name)
	}
	defer errcapture.Do(&err, rc.Close, "close %s", name)
	f, err := os.Create(dst)
	if err != nil {
		return errors.Wrapf(err, "create %s", dst)
	}
	defer errcapture.Do(&err, f.Close, "close %s", dst)
	if _, err := io.Copy(f, rc); err != nil {
		return errors.Wrapf(err, "download %s", name)
	}
	return nil
}
