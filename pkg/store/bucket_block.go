package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/indexheader"
)

// Cache is the byte cache a BucketStore keeps postings, series and chunks in (pkg/cache implements it).
type Cache interface {
	// Fetch returns the values found for keys; missing keys are absent.
	Fetch(ctx context.Context, keys []string) map[string][]byte
	// Store adds items, best effort.
	Store(items map[string][]byte, ttl time.Duration)
}

const (
	// maxGap is the largest gap between two wanted byte ranges of an object that is read rather than split
	// into two requests (Thanos reads across gaps up to 512 KiB; objects stores charge per request).
	maxGap = 64 << 10
	// seriesSizeGuess and chunkSizeGuess are how many bytes are read for a series entry or a chunk whose end is
	// not known; a longer one is read again, exactly.
	seriesSizeGuess = 4 << 10
	chunkSizeGuess  = 16 << 10
	// chunkEncAggr is the encoding byte of Thanos's downsampled aggregate chunks.
	chunkEncAggr = chunkenc.Encoding(0xff)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bucketBlock is one block of the bucket, served without downloading it: its index-header is local and loaded
// on demand, and postings, series entries and chunks are read with range requests, through the caches.
type bucketBlock struct {
	tenant  string
	meta    *block.Meta
	dir     string // <tenant>/<ULID>
	ext     labels.Labels
	header  *indexheader.LazyReader
	bkt     objstore.BucketReader
	index   Cache
	chunks  Cache
	metrics *bucketStoreMetrics
	// deletionMark is when the block was marked for deletion, in Unix seconds (0: not marked); set by each sync.
	deletionMark atomic.Int64
	// readers counts the requests reading the block: a block dropped by a sync is closed when the last ends.
	refMtx  sync.Mutex
	readers int
	dropped func() // set by the sync that dropped the block; run once there are no readers
}

// acquire registers a reader of the block.
func (b *bucketBlock) acquire() {
	b.refMtx.Lock()
	defer b.refMtx.Unlock()
	b.readers++
}

// release ends a reader; the last one closes a dropped block.
func (b *bucketBlock) release() {
	b.refMtx.Lock()
	b.readers--
	var closeNow func()
	if b.readers == 0 && b.dropped != nil {
		closeNow, b.dropped = b.dropped, nil
	}
	b.refMtx.Unlock()
	if closeNow != nil {
		closeNow()
	}
}

// drop closes the block with closeFn now if nobody reads it, else when its last reader ends.
func (b *bucketBlock) drop(closeFn func()) {
	b.refMtx.Lock()
	if b.readers > 0 {
		b.dropped = closeFn
		b.refMtx.Unlock()
		return
	}
	b.refMtx.Unlock()
	closeFn()
}

func (b *bucketBlock) id() ulid.ULID     { return b.meta.ULID }
func (b *bucketBlock) resolution() int64 { return b.meta.Thanos.Downsample.Resolution }
func (b *bucketBlock) cacheKey(kind string) string {
	return kind + ":" + b.dir + ":"
}

// fetchRanges reads the byte ranges [starts[i], ends[i]) of an object, merging ranges closer than maxGap into
// one request; the result holds each range's bytes (shorter when the object ends first).
func (b *bucketBlock) fetchRanges(ctx context.Context, name string, starts, ends []int64) ([][]byte, error) {
	out := make([][]byte, len(starts))
	order := make([]int, len(starts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return int(starts[x] - starts[y]) })

	type part struct {
		start, end int64
		members    []int
	}
	var parts []part
	for _, i := range order {
		if n := len(parts); n > 0 && starts[i]-parts[n-1].end <= maxGap {
			parts[n-1].end = max(parts[n-1].end, ends[i])
			parts[n-1].members = append(parts[n-1].members, i)
			continue
		}
		parts = append(parts, part{start: starts[i], end: ends[i], members: []int{i}})
	}
	var (
		wg   sync.WaitGroup
		mtx  sync.Mutex
		ferr error
	)
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf, err := b.getRange(ctx, name, p.start, p.end-p.start)
			mtx.Lock()
			defer mtx.Unlock()
			if err != nil {
				ferr = err
				return
			}
			for _, i := range p.members {
				lo := min(starts[i]-p.start, int64(len(buf)))
				hi := min(ends[i]-p.start, int64(len(buf)))
				out[i] = buf[lo:hi:hi]
			}
		}()
	}
	wg.Wait()
	return out, ferr
}

func (b *bucketBlock) getRange(ctx context.Context, name string, off, length int64) ([]byte, error) {
	rc, err := b.bkt.GetRange(ctx, name, off, length)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s [%d, %d)", name, off, off+length)
	}
	defer func() { _ = rc.Close() }()
	buf, err := io.ReadAll(rc)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s [%d, %d)", name, off, off+length)
	}
	kind := "chunks"
	if path.Base(name) == block.IndexFilename {
		kind = "index"
	}
	b.metrics.bytesFetched.WithLabelValues(kind).Add(float64(len(buf)))
	b.metrics.rangeRequests.WithLabelValues(kind).Inc()
	return buf, nil
}

// postingsReader answers tsdb.PostingsForMatchers from the block's index-header and postings lists read from
// the bucket (one request per matcher: a label's values are adjacent in the index). PostingsForMatchers calls
// only the three methods implemented here.
type postingsReader struct {
	tsdb.IndexReader
	ctx   context.Context
	b     *bucketBlock
	hdr   *indexheader.Reader
	stats *queryStats
}

func (r *postingsReader) Postings(ctx context.Context, name string, values ...string) (index.Postings, error) {
	var vals []string
	var rngs []index.Range
	for _, v := range values {
		if rng, ok := r.hdr.PostingsRange(name, v); ok {
			vals = append(vals, v)
			rngs = append(rngs, rng)
		}
	}
	return r.fetch(ctx, name, vals, rngs)
}

func (r *postingsReader) PostingsForLabelMatching(ctx context.Context, name string, match func(string) bool) index.Postings {
	vals, rngs := r.hdr.PostingsRanges(name, match)
	p, err := r.fetch(ctx, name, vals, rngs)
	if err != nil {
		return index.ErrPostings(err)
	}
	return p
}

func (r *postingsReader) PostingsForAllLabelValues(ctx context.Context, name string) index.Postings {
	return r.PostingsForLabelMatching(ctx, name, func(string) bool { return true })
}

// fetch returns the union of the postings lists of name=vals[i], from the cache or the bucket.
func (r *postingsReader) fetch(ctx context.Context, name string, vals []string, rngs []index.Range) (index.Postings, error) {
	if len(vals) == 0 {
		return index.EmptyPostings(), nil
	}
	prefix := r.b.cacheKey("P") + name + "="
	keys := make([]string, len(vals))
	for i, v := range vals {
		keys[i] = prefix + v
	}
	found := r.b.index.Fetch(ctx, keys)
	r.b.metrics.cacheHits("postings", len(found), len(keys))

	lists := make([]index.Postings, 0, len(vals))
	var starts, ends []int64
	var missing []int
	for i, k := range keys {
		if raw, ok := found[k]; ok {
			p, _, err := indexheader.DecodePostings(raw)
			if err == nil {
				lists = append(lists, p)
				continue
			}
		}
		missing = append(missing, i)
		starts = append(starts, rngs[i].Start)
		ends = append(ends, rngs[i].End)
	}
	if len(missing) > 0 {
		bufs, err := r.b.fetchRanges(ctx, path.Join(r.b.dir, block.IndexFilename), starts, ends)
		if err != nil {
			return nil, errors.Wrapf(err, "read postings of %s in block %s", name, r.b.id())
		}
		toStore := make(map[string][]byte, len(missing))
		for j, i := range missing {
			p, n, err := indexheader.DecodePostings(bufs[j])
			if err != nil {
				return nil, errors.Wrapf(err, "decode postings of %s=%q in block %s", name, vals[i], r.b.id())
			}
			toStore[keys[i]] = bufs[j][:n]
			lists = append(lists, p)
		}
		r.b.index.Store(toStore, 0)
	}
	r.stats.postings += len(vals)
	return index.Merge(ctx, lists...), nil
}

// expandedPostings returns the sorted references of the block's series that match ms.
func (b *bucketBlock) expandedPostings(ctx context.Context, hdr *indexheader.Reader, ms []*labels.Matcher, stats *queryStats) ([]storage.SeriesRef, error) {
	p, err := tsdb.PostingsForMatchers(ctx, &postingsReader{ctx: ctx, b: b, hdr: hdr, stats: stats}, ms...)
	if err != nil {
		return nil, errors.Wrapf(err, "postings of block %s", b.id())
	}
	refs, err := index.ExpandPostings(p)
	if err != nil {
		return nil, errors.Wrapf(err, "postings of block %s", b.id())
	}
	return refs, nil
}

// seriesEntries returns the index entries (without length prefix and CRC) of the series refs, from the cache
// or the bucket.
func (b *bucketBlock) seriesEntries(ctx context.Context, hdr *indexheader.Reader, refs []storage.SeriesRef, stats *queryStats) ([][]byte, error) {
	out := make([][]byte, len(refs))
	prefix := b.cacheKey("S")
	keys := make([]string, len(refs))
	for i, ref := range refs {
		keys[i] = prefix + strconv.FormatUint(uint64(ref), 36)
	}
	found := b.index.Fetch(ctx, keys)
	b.metrics.cacheHits("series", len(found), len(keys))
	var (
		missing      []int
		starts, ends []int64
	)
	for i, k := range keys {
		if v, ok := checkedCacheValue(found[k]); ok {
			out[i] = v
			continue
		}
		off := seriesOffset(hdr, refs[i])
		end := off + seriesSizeGuess
		if i+1 < len(refs) {
			end = min(end, seriesOffset(hdr, refs[i+1]))
		}
		missing = append(missing, i)
		starts = append(starts, off)
		ends = append(ends, end)
	}
	if len(missing) == 0 {
		return out, nil
	}
	name := path.Join(b.dir, block.IndexFilename)
	bufs, err := b.fetchRanges(ctx, name, starts, ends)
	if err != nil {
		return nil, errors.Wrapf(err, "read series of block %s", b.id())
	}
	toStore := make(map[string][]byte, len(missing))
	for j, i := range missing {
		entry, err := seriesEntry(bufs[j])
		if errors.Is(err, errShort) {
			// Longer than guessed: read exactly what the length prefix says.
			n, _ := binary.Uvarint(bufs[j])
			full, ferr := b.getRange(ctx, name, starts[j], int64(n)+binary.MaxVarintLen64+crc32.Size)
			if ferr != nil {
				return nil, errors.Wrapf(ferr, "read series of block %s", b.id())
			}
			entry, err = seriesEntry(full)
		}
		if err != nil {
			return nil, errors.Wrapf(err, "series %d of block %s", refs[i], b.id())
		}
		out[i] = entry
		toStore[keys[i]] = withCRC(entry)
	}
	b.index.Store(toStore, 0)
	stats.seriesFetched += len(missing)
	return out, nil
}

// seriesOffset is where a series entry starts: index v2 addresses series by offset/16, v1 by offset.
func seriesOffset(hdr *indexheader.Reader, ref storage.SeriesRef) int64 {
	if hdr.IndexVersion() == index.FormatV1 {
		return int64(ref)
	}
	return int64(ref) * 16
}

var errShort = errors.New("entry longer than the bytes read")

// maxEntrySize bounds the length prefix of a series entry or chunk: a corrupted one must be an error, not an
// overflowing slice bound or a huge read.
const maxEntrySize = 1 << 28

// withCRC appends the CRC32 of b: cached series entries and chunks carry it, so that a corrupted cache entry
// (a bad memcached node, a bit flip) is a miss rather than a wrong answer. Postings carry their own.
func withCRC(b []byte) []byte {
	out := make([]byte, len(b)+crc32.Size)
	copy(out, b)
	binary.BigEndian.PutUint32(out[len(b):], crc32.Checksum(b, castagnoli))
	return out
}

// checkedCacheValue returns a cached value without its CRC, or false when it is missing or corrupted.
func checkedCacheValue(v []byte) ([]byte, bool) {
	if len(v) < crc32.Size {
		return nil, false
	}
	b := v[:len(v)-crc32.Size]
	if crc32.Checksum(b, castagnoli) != binary.BigEndian.Uint32(v[len(b):]) {
		return nil, false
	}
	return b, true
}

// seriesEntry checks and strips the length prefix and CRC of a series entry at the start of buf.
func seriesEntry(buf []byte) ([]byte, error) {
	l, n := binary.Uvarint(buf)
	if n <= 0 {
		if len(buf) < binary.MaxVarintLen64 {
			return nil, errShort
		}
		return nil, errors.New("invalid length prefix")
	}
	if l > maxEntrySize {
		return nil, errors.Newf("series entry length %d is not plausible (corrupted index?)", l)
	}
	end := n + int(l)
	if len(buf) < end+crc32.Size {
		return nil, errShort
	}
	data := buf[n:end]
	if crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(buf[end:]) {
		return nil, errors.New("checksum mismatch")
	}
	return data, nil
}

// chunkRef locates a chunk: its segment file and offset.
type chunkRef struct {
	seq uint64
	off int64
}

func unpackChunkRef(ref chunks.ChunkRef) chunkRef {
	return chunkRef{seq: uint64(ref) >> 32, off: int64(uint32(ref))}
}

func segmentName(dir string, seq uint64) string {
	return path.Join(dir, block.ChunksDirname, fmt.Sprintf("%06d", seq+1))
}

// rawChunks returns the encoding byte followed by the data of each chunk, from the cache or the bucket.
func (b *bucketBlock) rawChunks(ctx context.Context, refs []chunks.ChunkRef, stats *queryStats) ([][]byte, error) {
	out := make([][]byte, len(refs))
	prefix := b.cacheKey("C")
	keys := make([]string, len(refs))
	for i, ref := range refs {
		keys[i] = prefix + strconv.FormatUint(uint64(ref), 36)
	}
	found := b.chunks.Fetch(ctx, keys)
	b.metrics.cacheHits("chunks", len(found), len(keys))

	bySeg := map[uint64][]int{}
	for i, k := range keys {
		if v, ok := checkedCacheValue(found[k]); ok && len(v) > 0 {
			out[i] = v
			continue
		}
		cr := unpackChunkRef(refs[i])
		bySeg[cr.seq] = append(bySeg[cr.seq], i)
	}
	if len(bySeg) == 0 {
		return out, nil
	}
	var (
		wg   sync.WaitGroup
		mtx  sync.Mutex
		ferr error
	)
	toStore := map[string][]byte{}
	for seq, idxs := range bySeg {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := b.segmentChunks(ctx, seq, refs, idxs)
			mtx.Lock()
			defer mtx.Unlock()
			if err != nil {
				ferr = err
				return
			}
			for j, i := range idxs {
				out[i] = got[j]
				toStore[keys[i]] = withCRC(got[j])
			}
		}()
	}
	wg.Wait()
	if ferr != nil {
		return nil, ferr
	}
	b.chunks.Store(toStore, 0)
	stats.chunksFetched += len(toStore)
	return out, nil
}

// segmentChunks reads the chunks refs[idxs[j]] of one segment file.
func (b *bucketBlock) segmentChunks(ctx context.Context, seq uint64, refs []chunks.ChunkRef, idxs []int) ([][]byte, error) {
	name := segmentName(b.dir, seq)
	slices.SortFunc(idxs, func(x, y int) int { return int(unpackChunkRef(refs[x]).off - unpackChunkRef(refs[y]).off) })
	starts := make([]int64, len(idxs))
	ends := make([]int64, len(idxs))
	for j, i := range idxs {
		starts[j] = unpackChunkRef(refs[i]).off
		ends[j] = starts[j] + chunkSizeGuess
		if j > 0 && starts[j-1] < starts[j] {
			ends[j-1] = min(ends[j-1], starts[j])
		}
	}
	bufs, err := b.fetchRanges(ctx, name, starts, ends)
	if err != nil {
		return nil, errors.Wrapf(err, "read chunks of block %s", b.id())
	}
	out := make([][]byte, len(idxs))
	for j := range idxs {
		c, err := chunkEntry(bufs[j])
		if errors.Is(err, errShort) {
			n, _ := binary.Uvarint(bufs[j])
			full, ferr := b.getRange(ctx, name, starts[j], int64(n)+binary.MaxVarintLen64+1+crc32.Size)
			if ferr != nil {
				return nil, errors.Wrapf(ferr, "read chunks of block %s", b.id())
			}
			c, err = chunkEntry(full)
		}
		if err != nil {
			return nil, errors.Wrapf(err, "chunk at %d of %s", starts[j], name)
		}
		out[j] = c
	}
	return out, nil
}

// chunkEntry checks a chunk at the start of buf (length, encoding, data, CRC of encoding and data) and returns
// its encoding byte and data.
func chunkEntry(buf []byte) ([]byte, error) {
	l, n := binary.Uvarint(buf)
	if n <= 0 {
		if len(buf) < binary.MaxVarintLen64 {
			return nil, errShort
		}
		return nil, errors.New("invalid chunk length")
	}
	if l > maxEntrySize {
		return nil, errors.Newf("chunk length %d is not plausible (corrupted segment?)", l)
	}
	end := n + 1 + int(l)
	if len(buf) < end+crc32.Size {
		return nil, errShort
	}
	c := buf[n:end]
	if crc32.Checksum(c, castagnoli) != binary.BigEndian.Uint32(buf[end:]) {
		return nil, errors.New("chunk checksum mismatch")
	}
	return c, nil
}
