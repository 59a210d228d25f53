package compact

import (
	"context"
	"log/slog"

	"github.com/efficientgo/core/errors"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/stratametrics/strata/pkg/block"
)

// CorruptedNoCompactReason is the no-compact reason of a block the compactor cannot read: an index or chunk that
// does not decode.
const CorruptedNoCompactReason block.NoCompactReason = "corrupted-block"

// chunkPool reads the chunks of a block of resolution res: raw ones with the TSDB's pool, downsampled ones
// with the aggregate chunks kept as they are (they are never re-encoded: downsampled blocks are compacted
// horizontally only).
func chunkPool(res int64) chunkenc.Pool {
	if res == ResolutionRaw {
		return chunkenc.NewPool()
	}
	return aggrPool{chunkenc.NewPool()}
}

// compactDirs compacts the blocks in dirs into one block in dest with Prometheus's LeveledCompactor, which
// streams series (bounded memory) and merges overlapping series with the compacting chunk merger: samples of
// the same timestamp are kept once. It returns the new block's ULID, zero when the result holds no samples.
func compactDirs(ctx context.Context, dest string, dirs []string, ranges []int64, res int64) (ulid.ULID, error) {
	comp, err := tsdb.NewLeveledCompactorWithOptions(ctx, nil, slog.New(slog.DiscardHandler), ranges, chunkPool(res), tsdb.LeveledCompactorOptions{
		MergeFunc:                   storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge),
		EnableOverlappingCompaction: true,
	})
	if err != nil {
		return ulid.ULID{}, errors.Wrap(err, "create TSDB compactor")
	}
	ids, err := comp.Compact(dest, dirs, nil)
	if err != nil {
		return ulid.ULID{}, err
	}
	if len(ids) == 0 {
		return ulid.ULID{}, nil
	}
	return ids[0], nil
}

// verifyBlock reads every series and chunk of the block in dir (resolution res) once, streaming, so that a
// block the compaction would fail on is found and named before: an index or chunk that does not decode,
// chunks out of order or outside the block's range. It returns the no-compact reason with the error.
func verifyBlock(dir string, res int64) (block.NoCompactReason, error) {
	b, err := tsdb.OpenBlock(slog.New(slog.DiscardHandler), dir, chunkPool(res), nil)
	if err != nil {
		return CorruptedNoCompactReason, errors.Wrap(err, "open block")
	}
	defer func() { _ = b.Close() }()
	meta := b.Meta()
	ir, err := b.Index()
	if err != nil {
		return CorruptedNoCompactReason, errors.Wrap(err, "open index")
	}
	defer func() { _ = ir.Close() }()
	cr, err := b.Chunks()
	if err != nil {
		return CorruptedNoCompactReason, errors.Wrap(err, "open chunks")
	}
	defer func() { _ = cr.Close() }()

	k, v := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), k, v)
	if err != nil {
		return CorruptedNoCompactReason, errors.Wrap(err, "read postings")
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		it      chunkenc.Iterator
	)
	for p.Next() {
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			return CorruptedNoCompactReason, errors.Wrapf(err, "read series %d", p.At())
		}
		for i, c := range chks {
			if i > 0 && c.MinTime < chks[i-1].MinTime {
				return block.OutOfOrderChunksNoCompactReason, errors.Newf("series %s: chunk %d starts at %d, before the previous one (%d)", builder.Labels(), i, c.MinTime, chks[i-1].MinTime)
			}
			if c.MinTime < meta.MinTime || c.MaxTime > meta.MaxTime {
				return CorruptedNoCompactReason, errors.Newf("series %s: chunk [%d, %d] outside the block's range [%d, %d)", builder.Labels(), c.MinTime, c.MaxTime, meta.MinTime, meta.MaxTime)
			}
			chk, iterable, err := cr.ChunkOrIterable(c)
			if err != nil {
				return CorruptedNoCompactReason, errors.Wrapf(err, "series %s: read chunk %d", builder.Labels(), i)
			}
			if iterable != nil || chk.Encoding() == ChunkEncAggr {
				continue
			}
			it = chk.Iterator(it)
			for it.Next() != chunkenc.ValNone {
			}
			if err := it.Err(); err != nil {
				return CorruptedNoCompactReason, errors.Wrapf(err, "series %s: decode chunk %d", builder.Labels(), i)
			}
		}
	}
	if err := p.Err(); err != nil {
		return CorruptedNoCompactReason, errors.Wrap(err, "read postings")
	}
	return "", nil
}
