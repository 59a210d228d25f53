package compact

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errcapture"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/tsdb/tombstones"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// NormaliseConfig configures the normalising of migrated blocks (issue 14 item 6).
type NormaliseConfig struct {
	// Enabled rewrites, before planning, every block whose external labels go beyond tenant_id (sidecar and
	// imported blocks: cluster, replica, …) so that those labels are in its series instead; then such blocks
	// and pushed blocks of the same series share one compaction group. Default true. Flag:
	// --compactor.normalise-external-labels.
	Enabled bool `yaml:"normalise_external_labels"`
}

// DefaultNormaliseConfig returns the defaults: normalising on.
func DefaultNormaliseConfig() NormaliseConfig { return NormaliseConfig{Enabled: true} }

// extraExternalLabels returns the block's external labels other than tenant_id, sorted (empty when none).
func extraExternalLabels(m *block.Meta) labels.Labels {
	b := labels.NewScratchBuilder(len(m.Thanos.Labels))
	for k, v := range m.Thanos.Labels {
		if k != tenancy.TenantIDLabel {
			b.Add(k, v)
		}
	}
	b.Sort()
	return b.Labels()
}

// NeedsNormalising says whether the block has external labels other than tenant_id.
func NeedsNormalising(m *block.Meta) bool {
	for k := range m.Thanos.Labels {
		if k != tenancy.TenantIDLabel {
			return true
		}
	}
	return false
}

// ErrNotNormalisable is wrapped by the errors of blocks that cannot be normalised as they are: series that would
// merge with overlapping chunks, tombstones, a no-compact mark.
var ErrNotNormalisable = errors.New("block cannot be normalised")

// NormaliseStats counts what Normalise wrote.
type NormaliseStats struct {
	Series, Chunks int
	// MergedSeries are series that got the labels of another series of the block (one had the external label's
	// name with another value, which the external label replaces) and were written as one, their chunks
	// (which must not overlap) in time order.
	MergedSeries int
}

// withExternal returns lset with ext added, an external label replacing a series label of the same name. This is
// what Strata's store-gateway serves for the block (and Thanos's ExtendSortedLabels), so a normalised block is
// answered the same; note that Prometheus's own rule for external labels (remote write, federation) is the
// opposite, a series label wins, but a series label hidden by an external label was never visible through the
// gateway in the first place.
func withExternal(b *labels.Builder, lset, ext labels.Labels) labels.Labels {
	b.Reset(lset)
	ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
	return b.Labels()
}

// Normalise rewrites the block in srcDir as block id in dstDir/<id>: every external label other than tenant_id
// moves into each series' labels (replacing a series label of the same name, see withExternal), series are
// written in the order of their new label sets, chunks are copied byte for byte (raw XOR/histogram chunks and
// downsampled aggregate chunks, encoding 0xff, alike). The new meta.json is the source's with:
//   - thanos.labels = {tenant_id} only (empty when the source had no tenant_id);
//   - compaction: level and sources kept (the data is the same), parents = the source block; the normalised
//     block of a source is recognised by covering the source's sources at its resolution (see NormaliseTenant);
//   - thanos.source kept (where the data came from: sidecar, bucket.upload, …); the rewrite is recorded in
//     thanos.rewrites as Thanos's `tools bucket rewrite` does, as relabel configs (action replace, regex
//     "(.*)", target label ← the external value);
//   - files, index stats and upload time cleared (Upload fills them); stats: series recounted, the rest kept.
//
// Memory: chunks are streamed one series at a time, but ordering the series by their new label sets needs all
// label sets and series references of the block in memory (about the size of the block's index symbol and
// series sections), as Thanos's rewrite does. The block is written under a temporary name and renamed into place
// when complete. A block whose series would merge with overlapping chunks is refused (left as it is).
// Tombstones are not carried (bucket blocks have none; a source with tombstones is refused).
func Normalise(ctx context.Context, logger log.Logger, srcDir, dstDir string, id ulid.ULID) (_ *block.Meta, stats NormaliseStats, err error) {
	src, err := block.ReadMetaFromDir(srcDir)
	if err != nil {
		return nil, stats, errors.Wrap(err, "read source meta")
	}
	ext := extraExternalLabels(src)
	if ext.IsEmpty() {
		return nil, stats, errors.Newf("block %s has no external labels besides %s: nothing to normalise", src.ULID, tenancy.TenantIDLabel)
	}
	if ts, _, err := tombstones.ReadTombstones(srcDir); err != nil {
		return nil, stats, errors.Wrapf(err, "read tombstones of block %s", src.ULID)
	} else if ts.Total() > 0 {
		return nil, stats, errors.Wrapf(ErrNotNormalisable, "block %s has tombstones", src.ULID)
	}

	ir, err := index.NewFileReader(filepath.Join(srcDir, block.IndexFilename), index.DecodePostingsRaw)
	if err != nil {
		return nil, stats, errors.Wrapf(err, "open index of block %s", src.ULID)
	}
	defer errcapture.Do(&err, ir.Close, "close index reader")
	cr, err := chunks.NewDirReader(filepath.Join(srcDir, block.ChunksDirname), aggrPool{chunkenc.NewPool()})
	if err != nil {
		return nil, stats, errors.Wrapf(err, "open chunks of block %s", src.ULID)
	}
	defer errcapture.Do(&err, cr.Close, "close chunk reader")

	// Pass 1: every series' new label set, then their order.
	type entry struct {
		lset labels.Labels
		ref  storage.SeriesRef
	}
	var (
		entries []entry
		builder labels.ScratchBuilder
		lb      = labels.NewBuilder(labels.EmptyLabels())
	)
	key, val := index.AllPostingsKey()
	p, err := ir.Postings(ctx, key, val)
	if err != nil {
		return nil, stats, errors.Wrap(err, "read postings")
	}
	for n := 0; p.Next(); n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, stats, err
			}
		}
		if err := ir.Series(p.At(), &builder, nil); err != nil {
			return nil, stats, errors.Wrapf(err, "read series %d", p.At())
		}
		entries = append(entries, entry{lset: withExternal(lb, builder.Labels(), ext), ref: p.At()})
	}
	if err := p.Err(); err != nil {
		return nil, stats, errors.Wrap(err, "iterate postings")
	}
	sort.SliceStable(entries, func(i, j int) bool { return labels.Compare(entries[i].lset, entries[j].lset) < 0 })

	final := filepath.Join(dstDir, id.String())
	tmp := final + ".tmp-normalise"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, stats, errors.Wrap(err, "remove leftover temporary block")
	}
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, stats, errors.Wrap(err, "create temporary block dir")
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				level.Warn(logger).Log("msg", "remove temporary block", "dir", tmp, "err", rerr)
			}
		}
	}()
	w, err := newSeriesWriterSymbols(ctx, tmp, mergeSymbols(ir.Symbols(), ext))
	if err != nil {
		return nil, stats, err
	}
	defer func() {
		if cerr := w.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	// Pass 2: series in their new order, chunks copied.
	var metas, one []chunks.Meta
	for i := 0; i < len(entries); {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, stats, err
			}
		}
		j := i + 1
		for j < len(entries) && labels.Equal(entries[i].lset, entries[j].lset) {
			j++
		}
		metas = metas[:0]
		for _, e := range entries[i:j] {
			one = one[:0]
			if err := ir.Series(e.ref, &builder, &one); err != nil {
				return nil, stats, errors.Wrapf(err, "read series %d", e.ref)
			}
			for _, m := range one {
				chk, _, err := cr.ChunkOrIterable(m)
				if err != nil {
					return nil, stats, errors.Wrapf(err, "read chunk %d of series %s", m.Ref, builder.Labels())
				}
				metas = append(metas, chunks.Meta{Chunk: chk, MinTime: m.MinTime, MaxTime: m.MaxTime})
			}
		}
		if j-i > 1 {
			slices.SortStableFunc(metas, func(a, b chunks.Meta) int { return compareInt64(a.MinTime, b.MinTime) })
			for k := 1; k < len(metas); k++ {
				if metas[k-1].MaxTime >= metas[k].MinTime {
					return nil, stats, errors.Wrapf(ErrNotNormalisable, "series %s: %d series of block %s become it and their chunks overlap ([%d, %d] and [%d, %d])",
						entries[i].lset, j-i, src.ULID, metas[k-1].MinTime, metas[k-1].MaxTime, metas[k].MinTime, metas[k].MaxTime)
				}
			}
			stats.MergedSeries += j - i - 1
		}
		if err := w.write(entries[i].lset, metas); err != nil {
			return nil, stats, err
		}
		stats.Series++
		stats.Chunks += len(metas)
		i = j
	}
	if err := w.close(); err != nil {
		return nil, stats, err
	}

	m := *src
	m.ULID = id
	m.Version = block.TSDBVersion1
	m.Thanos.Labels = map[string]string{}
	if t, ok := src.Thanos.Labels[tenancy.TenantIDLabel]; ok {
		m.Thanos.Labels[tenancy.TenantIDLabel] = t
	}
	m.Compaction.Sources = slices.Clone(src.Compaction.Sources)
	m.Compaction.Parents = []tsdb.BlockDesc{{ULID: src.ULID, MinTime: src.MinTime, MaxTime: src.MaxTime}}
	m.Thanos.Files, m.Thanos.IndexStats, m.Thanos.UploadTime = nil, block.IndexStats{}, time.Time{}
	m.Thanos.SegmentFiles, err = segmentFiles(tmp)
	if err != nil {
		return nil, stats, err
	}
	m.Stats.NumSeries = uint64(stats.Series)
	m.Stats.NumChunks = uint64(stats.Chunks)
	relabels, err := relabelsApplied(ext)
	if err != nil {
		return nil, stats, err
	}
	m.Thanos.Rewrites = append(slices.Clone(src.Thanos.Rewrites), block.Rewrite{Sources: slices.Clone(src.Compaction.Sources), RelabelsApplied: relabels})
	if err := m.WriteToDir(logger, tmp); err != nil {
		return nil, stats, err
	}
	if err := fileutil.Replace(tmp, final); err != nil {
		return nil, stats, errors.Wrapf(err, "rename block %s into place", id)
	}
	level.Info(logger).Log("msg", "normalised block", "from", src.ULID, "to", id, "moved_labels", ext.String(),
		"series", stats.Series, "chunks", stats.Chunks, "merged_series", stats.MergedSeries)
	return &m, stats, nil
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// relabelsApplied encodes the rewrite as Prometheus relabel configs (thanos.rewrites[].relabels_applied).
func relabelsApplied(ext labels.Labels) (json.RawMessage, error) {
	type relabel struct {
		Action      string `json:"action"`
		Regex       string `json:"regex"`
		TargetLabel string `json:"target_label"`
		Replacement string `json:"replacement"`
	}
	var rs []relabel
	ext.Range(func(l labels.Label) {
		rs = append(rs, relabel{Action: "replace", Regex: "(.*)", TargetLabel: l.Name, Replacement: l.Value})
	})
	b, err := json.Marshal(rs)
	return b, errors.Wrap(err, "encode relabels applied")
}

// mergeSymbols returns the sorted, distinct union of the index's symbols and ext's names and values.
func mergeSymbols(syms index.StringIter, ext labels.Labels) func(add func(string) error) error {
	var extra []string
	ext.Range(func(l labels.Label) { extra = append(extra, l.Name, l.Value) })
	slices.Sort(extra)
	extra = slices.Compact(extra)
	return func(add func(string) error) error {
		last, started := "", false
		emit := func(s string) error {
			if started && s == last {
				return nil
			}
			last, started = s, true
			return add(s)
		}
		j := 0
		for syms.Next() {
			s := syms.At()
			for j < len(extra) && extra[j] < s {
				if err := emit(extra[j]); err != nil {
					return err
				}
				j++
			}
			if err := emit(s); err != nil {
				return err
			}
		}
		if err := syms.Err(); err != nil {
			return errors.Wrap(err, "read symbols")
		}
		for ; j < len(extra); j++ {
			if err := emit(extra[j]); err != nil {
				return err
			}
		}
		return nil
	}
}

// newSeriesWriterSymbols is newSeriesWriter with the symbols given by a function that adds them in order.
func newSeriesWriterSymbols(ctx context.Context, dir string, symbols func(add func(string) error) error) (*seriesWriter, error) {
	cw, err := chunks.NewWriter(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return nil, errors.Wrap(err, "create chunk writer")
	}
	iw, err := index.NewWriter(ctx, filepath.Join(dir, block.IndexFilename))
	if err != nil {
		_ = cw.Close()
		return nil, errors.Wrap(err, "create index writer")
	}
	w := &seriesWriter{cw: cw, iw: iw}
	if err := symbols(func(s string) error { return errors.Wrap(iw.AddSymbol(s), "add symbol") }); err != nil {
		_ = w.close()
		return nil, err
	}
	return w, nil
}

// NormaliseResult is what NormaliseTenant did.
type NormaliseResult struct {
	// New are the metas of the normalised blocks uploaded; Replaced the blocks they replace (now marked for
	// deletion), including those normalised by an earlier, interrupted run (found, not uploaded again).
	New      map[ulid.ULID]*block.Meta
	Replaced []ulid.ULID
	// Failed are blocks that could not be normalised this time (logged; left as they are, tried again next run).
	Failed map[ulid.ULID]error
	// Skipped are blocks left as they are for good (logged): marked no-compact, or refused by Normalise
	// (ErrNotNormalisable); tried again each run, since a no-compact mark can be removed by an operator.
	Skipped map[ulid.ULID]error
}

// NormaliseTenant normalises the blocks of one tenant: bkt is the tenant's bucket (already scoped to the
// tenant's prefix), metas its blocks as discovered (block.MetaFetcher: those marked for deletion included while
// still served) and marked the blocks among them marked for deletion. For each block with external labels
// beyond tenant_id, not marked for deletion and without a no-compact mark, in ULID order:
//   - when another block at the same resolution without such labels covers all its sources (its normalised
//     copy uploaded by an interrupted run, or a later compaction of that copy), the block is only marked for
//     deletion: a re-run never uploads a second copy;
//   - else it is downloaded to dir, rewritten by Normalise into a block with a new ULID (time of now()),
//     uploaded (meta.json last: a crash before leaves a partial block, which is never served and is cleaned
//     up), and then marked for deletion (a crash before that is the first case on the next run).
//
// A block that fails is logged and reported in Failed (or Skipped, see there); the others carry on. Only a cancelled ctx stops it.
// Local copies are removed as it goes.
func NormaliseTenant(ctx context.Context, logger log.Logger, bkt objstore.Bucket, metas map[ulid.ULID]*block.Meta, marked map[ulid.ULID]time.Time, dir string, now func() time.Time) (NormaliseResult, error) {
	if now == nil {
		now = time.Now
	}
	res := NormaliseResult{New: map[ulid.ULID]*block.Meta{}, Failed: map[ulid.ULID]error{}, Skipped: map[ulid.ULID]error{}}
	ids := make([]ulid.ULID, 0, len(metas))
	for id, m := range metas {
		if _, ok := marked[id]; !ok && NeedsNormalising(m) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b ulid.ULID) int { return a.Compare(b) })
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		m := metas[id]
		if done, ok := normalisedCopy(m, metas, res.New); ok {
			details := "normalised into " + done.String() + " (found after an interrupted run)"
			if err := block.MarkForDeletion(ctx, logger, bkt, id, details, now); err != nil {
				res.Failed[id] = err
				level.Warn(logger).Log("msg", "mark normalised block for deletion", "block", id, "err", err)
				continue
			}
			res.Replaced = append(res.Replaced, id)
			continue
		}
		nm, err := normaliseOne(ctx, logger, bkt, m, dir, now)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if errors.Is(err, ErrNotNormalisable) {
				res.Skipped[id] = err
				level.Warn(logger).Log("msg", "block cannot be normalised; left as it is", "block", id, "err", err)
				continue
			}
			res.Failed[id] = err
			level.Warn(logger).Log("msg", "block not normalised; left as it is, to be tried again", "block", id, "err", err)
			continue
		}
		res.New[nm.ULID] = nm
		if err := block.MarkForDeletion(ctx, logger, bkt, id, "normalised into "+nm.ULID.String(), now); err != nil {
			res.Failed[id] = err
			level.Warn(logger).Log("msg", "mark normalised block for deletion", "block", id, "err", err)
			continue
		}
		res.Replaced = append(res.Replaced, id)
	}
	return res, nil
}

// NormaliseStep returns NormaliseTenant as a per-tenant step of a compaction cycle: given the tenant's bucket
// (scoped to <tenant>/), it lists the tenant's blocks (those without meta.json, partial, left out) and their
// deletion marks (the markers/ mirror), reads their metas and normalises, working in dir. Blocks that fail are
// logged and tried again next cycle; the step then returns an error naming how many failed (after doing the
// others). Blocks that cannot be normalised (NormaliseResult.Skipped) are logged only.
func NormaliseStep(logger log.Logger, dir string, now func() time.Time) func(ctx context.Context, tenant string, tbkt objstore.Bucket) error {
	return func(ctx context.Context, tenant string, tbkt objstore.Bucket) error {
		metas, marked, err := listTenantBlocks(ctx, logger, tbkt)
		if err != nil {
			return errors.Wrapf(err, "list blocks of tenant %s", tenant)
		}
		res, err := NormaliseTenant(ctx, log.With(logger, "tenant", tenant), tbkt, metas, marked, dir, now)
		if err != nil {
			return err
		}
		if len(res.Failed) > 0 {
			return errors.Newf("tenant %s: %d blocks not normalised (see the log), %d normalised", tenant, len(res.Failed), len(res.Replaced))
		}
		return nil
	}
}

// listTenantBlocks reads the metas of the blocks of a tenant's bucket (blocks whose meta.json cannot be read left
// out) and lists those marked for deletion.
func listTenantBlocks(ctx context.Context, logger log.Logger, tbkt objstore.Bucket) (map[ulid.ULID]*block.Meta, map[ulid.ULID]time.Time, error) {
	var ids []ulid.ULID
	err := tbkt.Iter(ctx, "", func(name string) error {
		if id, err := ulid.Parse(strings.TrimSuffix(name, objstore.DirDelim)); err == nil && strings.HasSuffix(name, objstore.DirDelim) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, errors.Wrap(err, "list blocks")
	}
	metas := make(map[ulid.ULID]*block.Meta, len(ids))
	for _, id := range ids {
		m, err := block.ReadMetaFromBucket(ctx, tbkt, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if !errors.Is(err, block.ErrMetaNotFound) { // partial blocks are the cleaner's; others are logged
				level.Warn(logger).Log("msg", "block left out of normalising", "block", id, "err", err)
			}
			continue
		}
		metas[id] = m
	}
	marked := map[ulid.ULID]time.Time{}
	suffix := "-" + block.DeletionMarkFilename
	err = tbkt.Iter(ctx, block.MarkersDirname+objstore.DirDelim, func(name string) error {
		base := path.Base(name)
		if id, err := ulid.Parse(strings.TrimSuffix(base, suffix)); err == nil && strings.HasSuffix(base, suffix) {
			marked[id] = time.Time{}
		}
		return nil
	})
	return metas, marked, errors.Wrap(err, "list deletion marks")
}

// normalisedCopy finds a block at m's resolution, without labels beyond tenant_id and with m's tenant, whose
// sources include all of m's.
func normalisedCopy(m *block.Meta, sets ...map[ulid.ULID]*block.Meta) (ulid.ULID, bool) {
	for _, set := range sets {
		for id, o := range set {
			if id == m.ULID || NeedsNormalising(o) || o.Thanos.Downsample.Resolution != m.Thanos.Downsample.Resolution ||
				o.Thanos.Labels[tenancy.TenantIDLabel] != m.Thanos.Labels[tenancy.TenantIDLabel] || len(m.Compaction.Sources) == 0 {
				continue
			}
			covered := true
			for _, s := range m.Compaction.Sources {
				if !slices.Contains(o.Compaction.Sources, s) {
					covered = false
					break
				}
			}
			if covered {
				return id, true
			}
		}
	}
	return ulid.ULID{}, false
}

func normaliseOne(ctx context.Context, logger log.Logger, bkt objstore.Bucket, m *block.Meta, dir string, now func() time.Time) (_ *block.Meta, err error) {
	if _, err := block.ReadNoCompactMark(ctx, bkt, m.ULID); err == nil {
		return nil, errors.Wrapf(ErrNotNormalisable, "block %s is marked no-compact", m.ULID)
	} else if !errors.Is(err, block.ErrMarkerNotFound) {
		return nil, errors.Wrapf(err, "read no-compact mark of %s", m.ULID)
	}
	work := filepath.Join(dir, "normalise-"+m.ULID.String())
	if err := os.RemoveAll(work); err != nil {
		return nil, errors.Wrap(err, "remove leftover work dir")
	}
	defer func() {
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			err = errors.Wrap(rerr, "remove work dir")
		}
	}()
	srcDir := filepath.Join(work, m.ULID.String())
	if err := normDownload(ctx, bkt, m.ULID, srcDir); err != nil {
		return nil, err
	}
	id, err := ulid.New(ulid.Timestamp(now()), rand.Reader)
	if err != nil {
		return nil, errors.Wrap(err, "new ULID")
	}
	nm, _, err := Normalise(ctx, logger, srcDir, work, id)
	if err != nil {
		return nil, err
	}
	if err := block.Upload(ctx, logger, bkt, filepath.Join(work, id.String()), nm); err != nil {
		return nil, err
	}
	return nm, nil
}

// normDownload copies block id's files (markers left out) from bkt to dst.
func normDownload(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, dst string) error {
	prefix := id.String() + "/"
	return errors.Wrapf(bkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if rel == block.DeletionMarkFilename || rel == block.NoCompactMarkFilename {
			return nil
		}
		return downloadFile(ctx, bkt, name, filepath.Join(dst, filepath.FromSlash(path.Clean(rel))))
	}, objstore.WithRecursiveIter()), "download block %s", id)
}
