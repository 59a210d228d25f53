package compact

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// TenantBlocks is one tenant's blocks as a listing of its bucket found them (never the bucket index, which is
// written from it). ApplyRetention, DownsamplePass, CleanTenant and WriteTenantBucketIndex work on it and keep
// it up to date with what they change in the bucket, so that one ScanTenant serves a whole cycle. Not safe for
// concurrent use.
type TenantBlocks struct {
	// Metas are the complete blocks (meta.json present and valid), marked for deletion or not.
	Metas map[ulid.ULID]*block.Meta
	// DeletionMarks are the deletion marks (<ULID>/deletion-mark.json) of listed blocks, complete or partial.
	DeletionMarks map[ulid.ULID]*block.DeletionMark
	// NoCompactMarks are the no-compact marks of complete blocks.
	NoCompactMarks map[ulid.ULID]*block.NoCompactMark
	// Partial are the block directories without meta.json: an upload under way or interrupted, or a deletion
	// interrupted (Delete removes meta.json first).
	Partial map[ulid.ULID]struct{}
	// Corrupted are blocks whose meta.json does not decode: left alone (not indexed, not deleted), as Thanos does.
	Corrupted []ulid.ULID
	// GlobalMarkers are the mirrored markers under markers/ (paths relative to the tenant's bucket), by block.
	GlobalMarkers map[ulid.ULID][]string
}

// Live returns the metas of the complete blocks not marked for deletion, sorted by min time then ULID.
func (tb *TenantBlocks) Live() []*block.Meta {
	var out []*block.Meta
	for id, m := range tb.Metas {
		if _, ok := tb.DeletionMarks[id]; !ok {
			out = append(out, m)
		}
	}
	sortMetas(out)
	return out
}

func sortMetas(ms []*block.Meta) {
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].MinTime != ms[j].MinTime {
			return ms[i].MinTime < ms[j].MinTime
		}
		return ms[i].ULID.Compare(ms[j].ULID) < 0
	})
}

// ScanTenant lists tbkt, a tenant-scoped bucket (objstore.NewPrefixedBucket(bkt, tenant)): every block
// directory's meta.json and markers, and the mirrored markers under markers/. It reads up to concurrency blocks
// at a time. An unreadable marker (bad JSON) is logged and treated as absent; a bucket error fails the scan.
func ScanTenant(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, concurrency int) (*TenantBlocks, error) {
	return ScanTenantCached(ctx, logger, tbkt, concurrency, nil)
}

// ScanTenantCached is ScanTenant reusing the metas of known, e.g. the Metas of the tenant's previous scan (metas
// are immutable): of a known block it only checks that its meta.json is still there (a deletion removes it
// first), so a cycle reads only new blocks' meta.json. known is only read.
func ScanTenantCached(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, concurrency int, known map[ulid.ULID]*block.Meta) (*TenantBlocks, error) {
	tb := &TenantBlocks{
		Metas:          map[ulid.ULID]*block.Meta{},
		DeletionMarks:  map[ulid.ULID]*block.DeletionMark{},
		NoCompactMarks: map[ulid.ULID]*block.NoCompactMark{},
		Partial:        map[ulid.ULID]struct{}{},
		GlobalMarkers:  map[ulid.ULID][]string{},
	}
	var ids []ulid.ULID
	err := tbkt.Iter(ctx, "", func(name string) error {
		if !strings.HasSuffix(name, objstore.DirDelim) {
			return nil
		}
		if id, err := ulid.Parse(strings.TrimSuffix(name, objstore.DirDelim)); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Wrap(err, "list blocks")
	}
	err = tbkt.Iter(ctx, block.MarkersDirname+objstore.DirDelim, func(name string) error {
		base := path.Base(name)
		for _, suffix := range []string{"-" + block.DeletionMarkFilename, "-" + block.NoCompactMarkFilename} {
			if id, err := ulid.Parse(strings.TrimSuffix(base, suffix)); err == nil && strings.HasSuffix(base, suffix) {
				tb.GlobalMarkers[id] = append(tb.GlobalMarkers[id], path.Join(block.MarkersDirname, base))
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.Wrap(err, "list markers")
	}

	var (
		mtx  sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, max(1, concurrency))
		errs []error
	)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := scanBlock(ctx, logger, tbkt, id, known[id], tb, &mtx)
			if err != nil {
				mtx.Lock()
				errs = append(errs, err)
				mtx.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Wrapf(errs[0], "scan blocks (%d errors)", len(errs))
	}
	return tb, nil
}

// scanBlock reads one block's meta.json (unless known, the meta read before) and markers into tb (under mtx).
func scanBlock(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, id ulid.ULID, known *block.Meta, tb *TenantBlocks, mtx *sync.Mutex) error {
	var (
		m                  = known
		err                error
		partial, corrupted bool
	)
	if m == nil {
		m, err = block.ReadMetaFromBucket(ctx, tbkt, id)
		partial, corrupted = errors.Is(err, block.ErrMetaNotFound), errors.Is(err, block.ErrMetaCorrupted)
		if err != nil && !partial && !corrupted {
			return err
		}
	} else {
		ok, err := tbkt.Exists(ctx, path.Join(id.String(), block.MetaFilename))
		if err != nil {
			return errors.Wrapf(err, "check meta.json of block %s", id)
		}
		if !ok { // a deletion under way: meta.json goes first
			m, partial = nil, true
		}
	}
	dm, err := block.ReadDeletionMark(ctx, tbkt, id)
	if err != nil && !errors.Is(err, block.ErrMarkerNotFound) {
		if ctx.Err() != nil || !isDecodeErr(err) {
			return errors.Wrapf(err, "block %s", id)
		}
		level.Warn(logger).Log("msg", "ignoring unreadable deletion mark", "block", id, "err", err)
		dm = nil
	}
	var nc *block.NoCompactMark
	if m != nil {
		nc, err = block.ReadNoCompactMark(ctx, tbkt, id)
		if err != nil && !errors.Is(err, block.ErrMarkerNotFound) {
			if ctx.Err() != nil || !isDecodeErr(err) {
				return errors.Wrapf(err, "block %s", id)
			}
			level.Warn(logger).Log("msg", "ignoring unreadable no-compact mark", "block", id, "err", err)
			nc = nil
		}
	}
	mtx.Lock()
	defer mtx.Unlock()
	switch {
	case partial:
		tb.Partial[id] = struct{}{}
	case corrupted:
		level.Warn(logger).Log("msg", "block with corrupted meta.json left alone", "block", id)
		tb.Corrupted = append(tb.Corrupted, id)
	default:
		tb.Metas[id] = m
	}
	if dm != nil {
		tb.DeletionMarks[id] = dm
	}
	if nc != nil {
		tb.NoCompactMarks[id] = nc
	}
	return nil
}

// isDecodeErr says whether a marker read failed on its content rather than on the bucket.
func isDecodeErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "decode ") || strings.Contains(s, "unexpected version")
}

// BuildBucketIndex returns the bucket index (Mimir's format, version 2) of tb: its complete blocks, marked for
// deletion or not, sorted by min time then ULID, and the deletion marks of those blocks. Partial and corrupted
// blocks are left out, as Mimir does. now gives updated_at.
func BuildBucketIndex(tb *TenantBlocks, now time.Time) *block.BucketIndex {
	metas := make([]*block.Meta, 0, len(tb.Metas))
	for _, m := range tb.Metas {
		metas = append(metas, m)
	}
	sortMetas(metas)
	idx := &block.BucketIndex{
		Version:            block.BucketIndexVersion2,
		Blocks:             make([]block.BucketIndexBlock, 0, len(metas)),
		BlockDeletionMarks: []block.BucketIndexBlockMark{},
		UpdatedAt:          now.Unix(),
	}
	for _, m := range metas {
		uploaded := m.Thanos.UploadTime
		if uploaded.IsZero() || uploaded.Unix() <= 0 {
			uploaded = ulid.Time(m.ULID.Time())
		}
		format, num := segmentsFormat(m)
		idx.Blocks = append(idx.Blocks, block.BucketIndexBlock{
			ID: m.ULID, MinTime: m.MinTime, MaxTime: m.MaxTime, UploadedAt: uploaded.Unix(),
			SegmentsFormat: format, SegmentsNum: num, Source: string(m.Thanos.Source),
		})
		if dm, ok := tb.DeletionMarks[m.ULID]; ok {
			idx.BlockDeletionMarks = append(idx.BlockDeletionMarks, block.BucketIndexBlockMark{ID: m.ULID, DeletionTime: dm.DeletionTime})
		}
	}
	return idx
}

// segmentsFormat returns Mimir's description of a block's chunk segments: "1b6d" and their number when they are
// chunks/000001 … chunks/00000N (as every TSDB block's are), else nothing.
func segmentsFormat(m *block.Meta) (string, int) {
	var segs []string
	for _, f := range m.Thanos.Files {
		if strings.HasPrefix(f.RelPath, block.ChunksDirname+"/") {
			segs = append(segs, strings.TrimPrefix(f.RelPath, block.ChunksDirname+"/"))
		}
	}
	if len(segs) == 0 {
		segs = m.Thanos.SegmentFiles
	}
	if len(segs) == 0 {
		return "", 0
	}
	sort.Strings(segs)
	for i, s := range segs {
		if s != fmt.Sprintf("%06d", i+1) {
			return "", 0
		}
	}
	return "1b6d", len(segs)
}

// WriteTenantBucketIndex writes <tenant>/bucket-index.json.gz built from tb (BuildBucketIndex) into tbkt, a
// tenant-scoped bucket, and returns it. The store-gateways and queriers (block.MetaFetcher) read it instead of
// listing the tenant.
func WriteTenantBucketIndex(ctx context.Context, tbkt objstore.Bucket, tb *TenantBlocks, now func() time.Time) (*block.BucketIndex, error) {
	idx := BuildBucketIndex(tb, now())
	if err := block.WriteBucketIndex(ctx, tbkt, idx); err != nil {
		return nil, err
	}
	return idx, nil
}
