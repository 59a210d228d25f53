package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const hour = int64(time.Hour / time.Millisecond)

// ---------------------------------------------------------------------------------------------------------------
// Blocks.

// bsample is a chunks.Sample for tsdb.CreateBlock.
type bsample struct {
	t int64
	f float64
	h *histogram.Histogram
}

func (s bsample) T() int64                      { return s.t }
func (s bsample) ST() int64                     { return 0 }
func (s bsample) F() float64                    { return s.f }
func (s bsample) H() *histogram.Histogram       { return s.h }
func (s bsample) FH() *histogram.FloatHistogram { return nil }
func (s bsample) Type() chunkenc.ValueType {
	if s.h != nil {
		return chunkenc.ValHistogram
	}
	return chunkenc.ValFloat
}

func (s bsample) Copy() chunks.Sample {
	c := s
	if s.h != nil {
		c.h = s.h.Copy()
	}
	return c
}

// createTestBlock writes one block holding the series (PromQL notation → samples, ascending) into dir with
// Prometheus's own TSDB, and returns its directory.
func createTestBlock(t testing.TB, dir string, series map[string][]sample) string {
	t.Helper()
	var ss []storage.Series
	for ls, samples := range series {
		lset, err := parseLabels(ls)
		testutil.Ok(t, err)
		cs := make([]chunks.Sample, len(samples))
		for i, s := range samples {
			cs[i] = bsample{t: s.t, f: s.v, h: s.h}
		}
		ss = append(ss, storage.NewListSeries(lset, cs))
	}
	// A chunk range far beyond the data, so that the block writer's head accepts every sample.
	tmp, err := tsdb.CreateBlock(ss, t.TempDir(), 1000*hour, slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	return withBlockID(t, tmp, dir, newTestBlockID())
}

// testBlockMS is the time part of the next test block's ULID. Explicit, increasing timestamps give the blocks of
// a test distinct IDs that sort in the order the blocks were made, without waiting for the clock to move.
var testBlockMS atomic.Uint64

func newTestBlockID() ulid.ULID { return ulid.MustNew(1_000_000_000+testBlockMS.Add(1), nil) }

// withBlockID copies the block in bdir to dir/<id> with id as its ULID, and returns the copy's directory.
func withBlockID(t testing.TB, bdir, dir string, id ulid.ULID) string {
	t.Helper()
	out := filepath.Join(dir, id.String())
	testutil.Ok(t, os.CopyFS(out, os.DirFS(bdir)))
	m, err := block.ReadMetaFromDir(out)
	testutil.Ok(t, err)
	m.ULID = id
	m.Compaction.Sources = []ulid.ULID{id}
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), out))
	return out
}

// uploadTestBlock uploads the block in bdir into <tenant>/ of bkt with thanos.labels = ext + tenant_id (unless ext
// sets tenant_id itself) and the given resolution.
func uploadTestBlock(t testing.TB, bkt objstore.Bucket, tenant, bdir string, ext map[string]string, res int64) *block.Meta {
	t.Helper()
	m, err := block.ReadMetaFromDir(bdir)
	testutil.Ok(t, err)
	m.Thanos.Labels = map[string]string{tenancy.TenantIDLabel: tenant}
	for k, v := range ext {
		m.Thanos.Labels[k] = v
	}
	m.Thanos.Downsample.Resolution = res
	m.Thanos.Source = block.ReceiveSource
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, tenant), bdir, m))
	return m
}

func newTestBucket(t testing.TB) objstore.Bucket {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	testutil.Ok(t, err)
	return bkt
}

// floats returns samples every step in [from, to] with a value identifying the series and the time.
func floats(id int, from, to, step int64) []sample {
	var out []sample
	for ts := from; ts <= to; ts += step {
		out = append(out, sample{t: ts, v: float64(id)*1e6 + float64(ts)/1000})
	}
	return out
}

func hists(from, to, step int64) []sample {
	var out []sample
	for ts := from; ts <= to; ts += step {
		out = append(out, sample{t: ts, h: tsdbutil.GenerateTestHistogram(ts / step)})
	}
	return out
}

// customChunk is a chunk of any encoding and bytes, for writing blocks the TSDB cannot (Thanos's aggregate
// chunks, oversized chunks).
type customChunk struct {
	enc  chunkenc.Encoding
	data []byte
}

func (c customChunk) Bytes() []byte                                { return c.data }
func (c customChunk) Encoding() chunkenc.Encoding                  { return c.enc }
func (c customChunk) Appender() (chunkenc.Appender, error)         { return nil, errors.New("read only") }
func (c customChunk) Iterator(chunkenc.Iterator) chunkenc.Iterator { return chunkenc.NewNopIterator() }
func (c customChunk) NumSamples() int                              { return 0 }
func (c customChunk) Compact()                                     {}
func (c customChunk) Reset([]byte)                                 {}

type customSeries struct {
	lset   labels.Labels
	chunks []chunks.Meta // MinTime, MaxTime, Chunk
}

// writeCustomBlock writes a block from explicit chunks with the TSDB's index and chunk writers, and its
// meta.json; segmentSize > 0 forces small chunk segment files.
func writeCustomBlock(t testing.TB, dir string, mint, maxt int64, series []customSeries, segmentSize int64) string {
	t.Helper()
	id := newTestBlockID()
	bdir := filepath.Join(dir, id.String())
	testutil.Ok(t, os.MkdirAll(bdir, 0o755))
	var opts []chunks.WriterOption
	if segmentSize > 0 {
		opts = append(opts, chunks.WithSegmentSize(segmentSize))
	}
	cw, err := chunks.NewWriter(filepath.Join(bdir, block.ChunksDirname), opts...)
	testutil.Ok(t, err)
	sort.Slice(series, func(i, j int) bool { return labels.Compare(series[i].lset, series[j].lset) < 0 })
	symbols := map[string]struct{}{}
	var numChunks uint64
	for i := range series {
		series[i].lset.Range(func(l labels.Label) { symbols[l.Name], symbols[l.Value] = struct{}{}, struct{}{} })
		testutil.Ok(t, cw.WriteChunks(series[i].chunks...))
		numChunks += uint64(len(series[i].chunks))
	}
	testutil.Ok(t, cw.Close())
	iw, err := index.NewWriter(context.Background(), filepath.Join(bdir, block.IndexFilename))
	testutil.Ok(t, err)
	syms := make([]string, 0, len(symbols))
	for s := range symbols {
		syms = append(syms, s)
	}
	sort.Strings(syms)
	for _, s := range syms {
		testutil.Ok(t, iw.AddSymbol(s))
	}
	for i, s := range series {
		testutil.Ok(t, iw.AddSeries(storage.SeriesRef(i+1), s.lset, s.chunks...))
	}
	testutil.Ok(t, iw.Close())
	m := &block.Meta{BlockMeta: tsdb.BlockMeta{
		ULID: id, MinTime: mint, MaxTime: maxt, Version: 1,
		Stats:      tsdb.BlockStats{NumSeries: uint64(len(series)), NumChunks: numChunks},
		Compaction: tsdb.BlockMetaCompaction{Level: 1, Sources: []ulid.ULID{id}},
	}}
	testutil.Ok(t, m.WriteToDir(log.NewNopLogger(), bdir))
	return bdir
}

// xorChunk encodes float samples into one XOR chunk.
func xorChunk(t testing.TB, ss []sample) chunks.Meta {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	testutil.Ok(t, err)
	for _, s := range ss {
		app.Append(0, s.t, s.v)
	}
	return chunks.Meta{MinTime: ss[0].t, MaxTime: ss[len(ss)-1].t, Chunk: c}
}

// aggrChunkBytes encodes Thanos's aggregate chunk: count, sum, min, max, counter, each a uvarint length of the
// chunk's data (0 when absent) then its encoding byte and data.
func aggrChunkBytes(parts [5]chunkenc.Chunk) []byte {
	var b []byte
	for _, p := range parts {
		if p == nil {
			b = binary.AppendUvarint(b, 0)
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(p.Bytes())))
		b = append(b, byte(p.Encoding()))
		b = append(b, p.Bytes()...)
	}
	return b
}

// ---------------------------------------------------------------------------------------------------------------
// Stores and requests.

type bucketStoreOpts struct {
	indexCache, chunksCache Cache
	overrides               *tenancy.Overrides
	owns                    BlockOwnership
	now                     func() time.Time
	idle                    time.Duration
	dir                     string
	concurrency             int
	// markDelay is the ignore-deletion-mark delay (0: a marked block is dropped at the next sync).
	markDelay time.Duration
}

func newTestBucketStore(t testing.TB, bkt objstore.Bucket, o bucketStoreOpts) *BucketStore {
	t.Helper()
	cfg := DefaultBucketStoreConfig()
	cfg.Dir = o.dir
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.IndexHeaderIdleTimeout = o.idle
	cfg.IgnoreDeletionMarkDelay = o.markDelay
	if o.concurrency > 0 {
		cfg.BlockQueryConcurrency = o.concurrency
	}
	st := NewBucketStore(bkt, cfg, o.indexCache, o.chunksCache, o.owns, o.overrides, log.NewNopLogger(), prometheus.NewRegistry(), o.now)
	testutil.Ok(t, st.SyncBlocks(context.Background()))
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// roDB is a read-only TSDB over block directories, as a TenantDB.
type roDB struct{ *tsdb.DBReadOnly }

func (roDB) StartTime() (int64, error) { return math.MinInt64, nil }

func openRO(t testing.TB, dir string) roDB {
	t.Helper()
	// The read-only DB replays a WAL when a query reaches past its blocks; give it an empty one.
	testutil.Ok(t, os.MkdirAll(filepath.Join(dir, "wal"), 0o755))
	db, err := tsdb.OpenDBReadOnly(dir, t.TempDir(), slog.New(slog.DiscardHandler))
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return roDB{db}
}

type roDBs map[string]TenantDB

func (m roDBs) DB(t string) TenantDB { return m[t] }
func (m roDBs) Tenants() []string {
	var out []string
	for t := range m {
		out = append(out, t)
	}
	return out
}

// seriesWithHints runs a Series call and returns its series and response hints.
func seriesWithHints(ctx context.Context, c storepb.StoreClient, r *storepb.SeriesRequest) ([]*storepb.Series, *hintspb.SeriesResponseHints, error) {
	got, err := storetest.Series(ctx, c, r)
	if err != nil || len(got.Hints) == 0 {
		return got.Series, nil, err
	}
	if len(got.Hints) > 1 {
		return nil, nil, errors.New("two hints responses")
	}
	hints := &hintspb.SeriesResponseHints{}
	if err := got.Hints[0].UnmarshalTo(hints); err != nil {
		return nil, nil, err
	}
	return got.Series, hints, nil
}

// flatSeries is a series as compared between stores: its labels and its samples in range, decoded and merged
// as a querier does (sorted by time, one sample per timestamp).
type flatSeries struct {
	Labels  string
	Samples []string
}

func decodeRaw(t testing.TB, c *storepb.AggrChunk) chunkenc.Chunk {
	t.Helper()
	testutil.Assert(t, c.GetRaw() != nil, "chunk [%d, %d] without raw data", c.GetMinTime(), c.GetMaxTime())
	return decodePB(t, c.GetRaw())
}

func decodePB(t testing.TB, c *storepb.Chunk) chunkenc.Chunk {
	t.Helper()
	chk, err := storetest.RawChunkFromPB(c)
	testutil.Ok(t, err)
	return chk
}

type tsample struct {
	t int64
	s string
}

func chunkSamples(t testing.TB, chk chunkenc.Chunk) []tsample {
	t.Helper()
	var out []tsample
	it := chk.Iterator(nil)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		switch vt {
		case chunkenc.ValFloat:
			ts, v := it.At()
			out = append(out, tsample{ts, strconv.FormatFloat(v, 'g', -1, 64)})
		case chunkenc.ValHistogram:
			ts, h := it.AtHistogram(nil)
			out = append(out, tsample{ts, "h" + h.String()})
		case chunkenc.ValFloatHistogram:
			ts, fh := it.AtFloatHistogram(nil)
			out = append(out, tsample{ts, "fh" + fh.String()})
		}
	}
	testutil.Ok(t, it.Err())
	return out
}

func flatten(t testing.TB, series []*storepb.Series, minT, maxT int64) []flatSeries {
	t.Helper()
	out := make([]flatSeries, 0, len(series))
	for _, s := range series {
		var all []tsample
		for _, c := range s.GetChunks() {
			for _, smp := range chunkSamples(t, decodeRaw(t, c)) {
				if smp.t >= minT && smp.t <= maxT {
					all = append(all, smp)
				}
			}
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].t < all[j].t })
		fs := flatSeries{Labels: LabelsFromPB(s.GetLabels()).String()}
		for i, smp := range all {
			if i > 0 && all[i-1].t == smp.t {
				continue
			}
			fs.Samples = append(fs.Samples, fmt.Sprintf("%d:%s", smp.t, smp.s))
		}
		out = append(out, fs)
	}
	return out
}

// checkWellFormed checks what a Series answer must be whatever its content: series sorted by labels and unique,
// their wire labels sorted, chunks ordered by time, none entirely outside [minT, maxT].
func checkWellFormed(t testing.TB, series []*storepb.Series, minT, maxT int64) {
	t.Helper()
	for i, s := range series {
		ls := s.GetLabels()
		for j := 1; j < len(ls); j++ {
			testutil.Assert(t, ls[j-1].GetName() < ls[j].GetName(), "labels of %v not sorted", ls)
		}
		if i > 0 {
			testutil.Assert(t, compareLabelsPB(series[i-1].GetLabels(), ls) < 0, "series %s after %s", LabelsFromPB(ls), LabelsFromPB(series[i-1].GetLabels()))
		}
		for j, c := range s.GetChunks() {
			testutil.Assert(t, c.GetMaxTime() >= minT && c.GetMinTime() <= maxT, "series %s: chunk [%d, %d] outside [%d, %d]", LabelsFromPB(ls), c.GetMinTime(), c.GetMaxTime(), minT, maxT)
			if j > 0 {
				testutil.Assert(t, s.Chunks[j-1].GetMinTime() <= c.GetMinTime(), "series %s: chunks not by time", LabelsFromPB(ls))
			}
		}
	}
}

func lm(t storepb.LabelMatcher_Type, name, value string) *storepb.LabelMatcher {
	return &storepb.LabelMatcher{Type: t, Name: name, Value: value}
}

const (
	EQ  = storepb.LabelMatcher_EQ
	NEQ = storepb.LabelMatcher_NEQ
	RE  = storepb.LabelMatcher_RE
	NRE = storepb.LabelMatcher_NRE
)

func matchersString(ms []*storepb.LabelMatcher) string {
	var parts []string
	for _, m := range ms {
		op := map[storepb.LabelMatcher_Type]string{EQ: "=", NEQ: "!=", RE: "=~", NRE: "!~"}[m.GetType()]
		parts = append(parts, fmt.Sprintf("%s%s%q", m.GetName(), op, m.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func blockHints(t testing.TB, ms ...*storepb.LabelMatcher) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&hintspb.SeriesRequestHints{BlockMatchers: ms})
	testutil.Ok(t, err)
	return a
}

func blockIDsRegex(ids ...ulid.ULID) string {
	var s []string
	for _, id := range ids {
		s = append(s, id.String())
	}
	return strings.Join(s, "|")
}

func queriedIDs(bs []*hintspb.Block) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, b.GetId())
	}
	sort.Strings(out)
	return out
}

func idStrings(ids ...ulid.ULID) []string {
	out := []string{}
	for _, id := range ids {
		out = append(out, id.String())
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------------------------------------------
// The shared raw fixture: tenant "a" with three consecutive 2h blocks and one overlapping them, cluster="eu".

var eqSeries = []string{
	`m{a="1", b="x"}`, `m{a="2", b="x"}`, `m{a="10", c="z"}`, `m{b="y"}`, `m`,
	`other{a="1"}`, `other{a="3", b="y"}`, `up{job="j", instance="i-1"}`, `up{job="j", instance="i-2"}`,
}

type rawFixture struct {
	bkt    objstore.Bucket
	dir    string        // the local block directories of tenant a
	ids    []ulid.ULID   // b1, b2, b3 (consecutive), b4 (overlapping b1 and b2)
	metas  []*block.Meta // as uploaded
	tsdbSt *TSDBStore    // the same blocks through TSDBStore
}

func newRawFixture(t testing.TB) *rawFixture {
	t.Helper()
	f := &rawFixture{bkt: newTestBucket(t), dir: t.TempDir()}
	blockSeries := func(from, to int64, skip string) map[string][]sample {
		s := map[string][]sample{}
		for i, ls := range eqSeries {
			if ls == skip {
				continue
			}
			s[ls] = floats(i, from, to, 15_000)
		}
		s[`hist{a="1"}`] = hists(from, to, 60_000)
		return s
	}
	b4 := map[string][]sample{
		`m{a="1", b="x"}`: floats(0, hour+5_000, 3*hour, 15_000), // interleaved with b1 and b2's samples
		`m`:               floats(4, hour+5_000, 3*hour, 60_000),
		`only4{a="4"}`:    floats(99, hour, 3*hour, 30_000),
		`hist{a="1"}`:     hists(hour+30_000, 3*hour, 60_000),
	}
	for _, s := range []map[string][]sample{
		blockSeries(0, 2*hour-1, ""),
		blockSeries(2*hour, 4*hour-1, ""),
		blockSeries(4*hour, 6*hour-1, `other{a="3", b="y"}`),
		b4,
	} {
		bdir := createTestBlock(t, f.dir, s)
		m := uploadTestBlock(t, f.bkt, "a", bdir, map[string]string{"cluster": "eu"}, 0)
		f.ids = append(f.ids, m.ULID)
		f.metas = append(f.metas, m)
	}
	f.tsdbSt = NewTSDBStore(roDBs{"a": openRO(t, f.dir)}, log.NewNopLogger(), WithExternalLabels(labels.FromStrings("cluster", "eu")))
	return f
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Equality with TSDBStore.

func TestBucketStore_SeriesEqualsTSDB(t *testing.T) {
	f := newRawFixture(t)
	bc := serve(t, newTestBucketStore(t, f.bkt, bucketStoreOpts{}))
	tc := serve(t, f.tsdbSt)
	ctx := tenantCtx("a")

	matcherSets := [][]*storepb.LabelMatcher{
		{lm(EQ, "__name__", "m")},
		{lm(EQ, "__name__", "m"), lm(EQ, "a", "1")},
		{lm(EQ, "__name__", "m"), lm(NEQ, "a", "1")},
		{lm(EQ, "__name__", "m"), lm(EQ, "a", "")},
		{lm(EQ, "__name__", "m"), lm(NEQ, "a", "")},
		{lm(EQ, "__name__", "m"), lm(RE, "a", "1|2")},
		{lm(EQ, "__name__", "m"), lm(RE, "a", "1.*")},
		{lm(EQ, "__name__", "m"), lm(NRE, "a", "1.*")},
		{lm(EQ, "__name__", "m"), lm(RE, "a", "|1")},
		{lm(EQ, "__name__", "m"), lm(RE, "a", "")},
		{lm(EQ, "__name__", "m"), lm(NRE, "a", "")},
		{lm(EQ, "__name__", "m"), lm(EQ, "b", "x"), lm(NEQ, "a", "2")},
		{lm(EQ, "__name__", "m"), lm(EQ, "c", "")},
		{lm(RE, "__name__", ".+")},
		{lm(RE, "__name__", ".*"), lm(EQ, "a", "1")},
		{lm(RE, "__name__", "m|other")},
		{lm(RE, "__name__", "m|other"), lm(RE, "a", "1|3|nope")},
		{lm(NEQ, "__name__", "m")},
		{lm(NRE, "__name__", "m|up")},
		{lm(EQ, "a", "")},
		{lm(NEQ, "a", "")},
		{lm(EQ, "b", "y")},
		{lm(RE, "instance", "i-.*"), lm(EQ, "job", "j")},
		{lm(EQ, "__name__", "hist")},
		{lm(EQ, "__name__", "only4")},
		{lm(EQ, "__name__", "nope")},
		{lm(EQ, "nope", "x")},
		{lm(EQ, "__name__", "m"), lm(EQ, "a", "1"), lm(EQ, "a", "2")},
		// External labels.
		{lm(EQ, "__name__", "m"), lm(EQ, "cluster", "eu")},
		{lm(EQ, "__name__", "m"), lm(EQ, "cluster", "us")},
		{lm(EQ, "__name__", "m"), lm(RE, "cluster", "e.*"), lm(EQ, "tenant_id", "a")},
		{lm(EQ, "__name__", "m"), lm(EQ, "tenant_id", "b")},
		{lm(EQ, "__name__", "m"), lm(NEQ, "cluster", "")},
		{lm(EQ, "__name__", "m"), lm(EQ, "cluster", "")},
	}
	ranges := [][2]int64{
		{0, 6 * hour},
		{math.MinInt64, math.MaxInt64},
		{90 * 60_000, 3*hour + 30*60_000}, // across block boundaries and the overlap: chunks are trimmed
		{2 * hour, 2 * hour},              // one instant, on a block boundary
		{4*hour + 1, 4*hour + 20*60_000},  // inside one block
		{7 * hour, 10 * hour},             // after the data
		{-10 * hour, -1},                  // before the data
	}
	nonEmpty, overlapping := 0, 0
	for _, ms := range matcherSets {
		for _, r := range ranges {
			t.Run(fmt.Sprintf("%s[%d,%d]", matchersString(ms), r[0], r[1]), func(t *testing.T) {
				req := &storepb.SeriesRequest{MinTime: r[0], MaxTime: r[1], Matchers: ms}
				got, hints, err := seriesWithHints(ctx, bc, req)
				testutil.Ok(t, err)
				want, _, err := collect(ctx, tc, req)
				testutil.Ok(t, err)
				if len(want) > 0 {
					nonEmpty++
				}
				for _, s := range got {
					for j := 1; j < len(s.GetChunks()); j++ {
						if s.Chunks[j].GetMinTime() <= s.Chunks[j-1].GetMaxTime() {
							overlapping++ // the overlapping block's chunks, merged by the client
						}
					}
				}
				checkWellFormed(t, got, r[0], r[1])
				testutil.Equals(t, flatten(t, want, r[0], r[1]), flatten(t, got, r[0], r[1]))
				testutil.Assert(t, hints != nil, "no hints response")

				// SkipChunks: the same series, no chunks.
				skip := proto.Clone(req).(*storepb.SeriesRequest)
				skip.SkipChunks = true
				gotSkip, _, err := seriesWithHints(ctx, bc, skip)
				testutil.Ok(t, err)
				wantSkip, _, err := collect(ctx, tc, skip)
				testutil.Ok(t, err)
				testutil.Equals(t, lsetsOf(wantSkip), lsetsOf(gotSkip))
				for _, s := range gotSkip {
					testutil.Equals(t, 0, len(s.GetChunks()))
				}

				// Batched responses carry the same.
				batched := proto.Clone(req).(*storepb.SeriesRequest)
				batched.ResponseBatchSize = 3
				gotBatched, _, err := seriesWithHints(ctx, bc, batched)
				testutil.Ok(t, err)
				testutil.Equals(t, flatten(t, got, r[0], r[1]), flatten(t, gotBatched, r[0], r[1]))
			})
		}
	}

	testutil.Assert(t, nonEmpty > 100, "the fixture answers most requests: %d", nonEmpty)
	testutil.Assert(t, overlapping > 0, "overlapping chunks were served")

	t.Run("limit", func(t *testing.T) {
		all, _, err := seriesWithHints(ctx, bc, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}})
		testutil.Ok(t, err)
		testutil.Assert(t, len(all) > 5, "fixture has series")
		for _, limit := range []int64{1, 3, int64(len(all)), int64(len(all)) + 5} {
			got, _, err := seriesWithHints(ctx, bc, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Limit: limit, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}})
			testutil.Ok(t, err)
			testutil.Equals(t, flatten(t, all[:min(int(limit), len(all))], 0, 6*hour), flatten(t, got, 0, 6*hour), "limit %d", limit)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for name, tc := range map[string]struct {
			ms   []*storepb.LabelMatcher
			code codes.Code
		}{
			"bad regex":                {ms: []*storepb.LabelMatcher{lm(RE, "__name__", "(")}, code: codes.InvalidArgument},
			"only external labels":     {ms: []*storepb.LabelMatcher{lm(EQ, "cluster", "eu")}, code: codes.InvalidArgument},
			"no matchers":              {code: codes.InvalidArgument},
			"unknown matcher type":     {ms: []*storepb.LabelMatcher{lm(storepb.LabelMatcher_Type(9), "a", "b")}, code: codes.InvalidArgument},
			"external mismatch is not": {ms: []*storepb.LabelMatcher{lm(EQ, "cluster", "us")}, code: codes.OK},
		} {
			t.Run(name, func(t *testing.T) {
				_, _, err := seriesWithHints(ctx, bc, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: tc.ms})
				testutil.Equals(t, tc.code, status.Code(err), "%v", err)
			})
		}
	})
}

// Several series share each chunk segment and the index's series section with wanted and unwanted ones; chunks
// longer than the store's read guess, series entries longer than its guess, several segment files.
func TestBucketStore_LargeEntriesAndSegments(t *testing.T) {
	dir := t.TempDir()
	var series []customSeries
	// A chunk of 5000 samples (far beyond 16 KiB with random-ish values).
	var big []sample
	for i := 0; i < 5000; i++ {
		big = append(big, sample{t: int64(i) * 1000, v: math.Sin(float64(i)) * 1e9})
	}
	series = append(series, customSeries{lset: labels.FromStrings("__name__", "big"), chunks: []chunks.Meta{xorChunk(t, big[:2500]), xorChunk(t, big[2500:])}})
	// A series with 1500 chunks of 2 samples each: its index entry exceeds 4 KiB.
	var many []chunks.Meta
	var manySamples []sample
	for i := 0; i < 1500; i++ {
		ss := []sample{{t: int64(i) * 2000, v: float64(i)}, {t: int64(i)*2000 + 1000, v: float64(-i)}}
		manySamples = append(manySamples, ss...)
		many = append(many, xorChunk(t, ss))
	}
	series = append(series, customSeries{lset: labels.FromStrings("__name__", "many"), chunks: many})
	for i := 0; i < 50; i++ {
		series = append(series, customSeries{lset: labels.FromStrings("__name__", "small", "i", strconv.Itoa(i)), chunks: []chunks.Meta{xorChunk(t, floats(i, 0, 600_000, 15_000))}})
	}
	bdir := writeCustomBlock(t, dir, 0, 5_000_000, series, 64<<10)
	segs, err := os.ReadDir(filepath.Join(bdir, block.ChunksDirname))
	testutil.Ok(t, err)
	testutil.Assert(t, len(segs) > 1, "want several segments, got %d", len(segs))

	bkt := newTestBucket(t)
	uploadTestBlock(t, bkt, "a", bdir, nil, 0)
	bc := serve(t, newTestBucketStore(t, bkt, bucketStoreOpts{}))
	tc := serve(t, NewTSDBStore(roDBs{"a": openRO(t, dir)}, log.NewNopLogger()))
	ctx := tenantCtx("a")
	for _, ms := range [][]*storepb.LabelMatcher{
		{lm(EQ, "__name__", "big")},
		{lm(EQ, "__name__", "many")},
		{lm(RE, "__name__", "big|many")},
		{lm(RE, "__name__", ".+")},
		{lm(EQ, "__name__", "small"), lm(RE, "i", "1.|3")},
	} {
		req := &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: ms}
		got, _, err := seriesWithHints(ctx, bc, req)
		testutil.Ok(t, err, matchersString(ms))
		want, _, err := collect(ctx, tc, req)
		testutil.Ok(t, err)
		testutil.Equals(t, flatten(t, want, math.MinInt64, math.MaxInt64), flatten(t, got, math.MinInt64, math.MaxInt64), matchersString(ms))
	}
	got, _, err := seriesWithHints(ctx, bc, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "many")}})
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(got))
	testutil.Equals(t, 1500, len(got[0].GetChunks()))
	testutil.Equals(t, len(manySamples), len(flatten(t, got, math.MinInt64, math.MaxInt64)[0].Samples))
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Tenancy.

func TestBucketStore_Tenancy(t *testing.T) {
	bkt := newTestBucket(t)
	dir := t.TempDir()
	uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{s="a"}`: floats(1, 0, hour, 15_000)}), nil, 0)
	uploadTestBlock(t, bkt, "b", createTestBlock(t, dir, map[string][]sample{`m{s="b"}`: floats(2, 0, hour, 15_000)}), nil, 0)
	// A block of tenant c whose meta claims tenant_id="a": it is served as c's, never as a's.
	uploadTestBlock(t, bkt, "c", createTestBlock(t, dir, map[string][]sample{`m{s="c"}`: floats(3, 0, hour, 15_000)}), map[string]string{"tenant_id": "a"}, 0)
	st := newTestBucketStore(t, bkt, bucketStoreOpts{})
	c := serve(t, st)
	all := []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}

	for _, tc := range []struct {
		tenants []string
		ms      []*storepb.LabelMatcher
		want    []string
	}{
		{tenants: []string{"a"}, ms: all, want: []string{`{__name__="m", s="a", tenant_id="a"}`}},
		{tenants: []string{"b"}, ms: all, want: []string{`{__name__="m", s="b", tenant_id="b"}`}},
		{tenants: []string{"c"}, ms: all, want: []string{`{__name__="m", s="c", tenant_id="c"}`}},
		{tenants: []string{"b"}, ms: []*storepb.LabelMatcher{lm(EQ, "s", "a")}, want: []string{}},
		{tenants: []string{"b"}, ms: append(all, lm(EQ, "tenant_id", "a")), want: []string{}},
		{tenants: []string{"b"}, ms: append(all, lm(RE, "tenant_id", ".+")), want: []string{`{__name__="m", s="b", tenant_id="b"}`}},
		{tenants: []string{"d"}, ms: all, want: []string{}},
		{tenants: []string{"a", "b"}, ms: all, want: []string{`{__name__="m", s="a", tenant_id="a"}`, `{__name__="m", s="b", tenant_id="b"}`}},
	} {
		got, _, err := seriesWithHints(tenantCtx(tc.tenants...), c, &storepb.SeriesRequest{MinTime: 0, MaxTime: hour, Matchers: tc.ms})
		testutil.Ok(t, err)
		testutil.Equals(t, tc.want, lsetsOf(got), "tenants %v %s", tc.tenants, matchersString(tc.ms))

		names, err := c.LabelNames(tenantCtx(tc.tenants...), &storepb.LabelNamesRequest{Start: 0, End: hour, Matchers: tc.ms})
		testutil.Ok(t, err)
		if len(tc.want) == 0 {
			testutil.Equals(t, 0, len(names.GetNames()))
		}
		vals, err := c.LabelValues(tenantCtx(tc.tenants...), &storepb.LabelValuesRequest{Label: "s", Start: 0, End: hour, Matchers: tc.ms})
		testutil.Ok(t, err)
		var wantVals []string
		for _, w := range tc.want {
			wantVals = append(wantVals, w[len(`{__name__="m", s="`):len(`{__name__="m", s="`)+1])
		}
		testutil.Equals(t, fmt.Sprint(wantVals), fmt.Sprint(vals.GetValues()), "tenants %v", tc.tenants)
	}

	// No tenant: Unauthenticated, over gRPC (the interceptor) and in process (the store itself).
	_, _, err := seriesWithHints(context.Background(), c, &storepb.SeriesRequest{MaxTime: hour, Matchers: all})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
	_, err = c.LabelNames(context.Background(), &storepb.LabelNamesRequest{End: hour})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
	_, err = st.LabelNames(context.Background(), &storepb.LabelNamesRequest{End: hour})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
	_, err = st.LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: "s", End: hour})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
	err = st.Series(&storepb.SeriesRequest{MaxTime: hour, Matchers: all}, storetest.NewSeriesServer(context.Background()))
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))

	// Info names only the caller's tenants; all of them when it names none.
	info, err := st.Info(tenancy.WithTenants(context.Background(), []string{"b"}), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(info.GetLabelSets()))
	testutil.Equals(t, `{tenant_id="b"}`, LabelsFromPB(info.GetLabelSets()[0].GetLabels()).String())
	info, err = st.Info(context.Background(), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, 3, len(info.GetLabelSets()))
	testutil.Equals(t, []string{"a", "b", "c"}, st.Tenants())
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Discovery.

func servedIDs(st *BucketStore, tenant string) []string {
	out := []string{}
	for _, b := range st.Blocks(tenant) {
		out = append(out, b.ID.String())
	}
	sort.Strings(out)
	return out
}

func TestBucketStore_Discovery(t *testing.T) {
	ctx := context.Background()
	bkt := newTestBucket(t)
	dir := t.TempDir()
	tbkt := objstore.NewPrefixedBucket(bkt, "a")
	var ids []ulid.ULID
	for i := 0; i < 5; i++ {
		bdir := createTestBlock(t, dir, map[string][]sample{fmt.Sprintf(`m{blk="%d"}`, i): floats(i, int64(i)*2*hour, int64(i)*2*hour+hour, 15_000)})
		ids = append(ids, uploadTestBlock(t, bkt, "a", bdir, nil, 0).ULID)
	}
	// Partial: no meta.json. Deleted: marked both ways; marked by its own file only.
	testutil.Ok(t, tbkt.Delete(ctx, path.Join(ids[1].String(), block.MetaFilename)))
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), tbkt, ids[2], "test", nil))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(ids[3].String(), block.DeletionMarkFilename), strings.NewReader(`{"id":"`+ids[3].String()+`","version":1,"deletion_time":1}`)))
	// Invalid tenant directories with a valid block layout are ignored.
	for _, bad := range []string{"__mimir_cluster", "bad tenant", "a@b"} {
		uploadTestBlock(t, bkt, bad, createTestBlock(t, dir, map[string][]sample{`m{blk="bad"}`: floats(9, 0, hour, 15_000)}), nil, 0)
	}
	testutil.Ok(t, bkt.Upload(ctx, "top-level-file", strings.NewReader("x")))

	hdrDir := t.TempDir()
	st := newTestBucketStore(t, bkt, bucketStoreOpts{dir: hdrDir})
	c := serve(t, st)
	testutil.Equals(t, []string{"a"}, st.Tenants())
	testutil.Equals(t, idStrings(ids[0], ids[4]), servedIDs(st, "a"))
	testutil.Assert(t, st.Synced(), "synced")

	query := func() []string {
		got, hints, err := seriesWithHints(tenantCtx("a"), c, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}})
		testutil.Ok(t, err)
		_ = hints
		return lsetsOf(got)
	}
	testutil.Equals(t, []string{`{__name__="m", blk="0", tenant_id="a"}`, `{__name__="m", blk="4", tenant_id="a"}`}, query())

	// The index-header of a served block is on disk after a query; it goes when the block goes.
	_, err := os.Stat(filepath.Join(hdrDir, "a", ids[4].String()+".index-header"))
	testutil.Ok(t, err)

	// A block removed from the bucket stops being served after the next sync.
	testutil.Ok(t, block.Delete(ctx, log.NewNopLogger(), tbkt, ids[4]))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, idStrings(ids[0]), servedIDs(st, "a"))
	testutil.Equals(t, []string{`{__name__="m", blk="0", tenant_id="a"}`}, query())
	_, err = os.Stat(filepath.Join(hdrDir, "a", ids[4].String()+".index-header"))
	testutil.Assert(t, os.IsNotExist(err), "index-header of a dropped block removed: %v", err)

	// A served block then marked for deletion stops being served.
	bdir5 := createTestBlock(t, dir, map[string][]sample{`m{blk="5"}`: floats(5, 10*hour, 11*hour, 15_000)})
	id5 := uploadTestBlock(t, bkt, "a", bdir5, nil, 0).ULID
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, idStrings(ids[0], id5), servedIDs(st, "a"))
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), tbkt, id5, "test", nil))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, idStrings(ids[0]), servedIDs(st, "a"))

	// The bucket index, when present, is the source of the blocks it lists and of their deletion marks; a block
	// in the bucket but not (yet) in the index is found by listing (uploaded since the index was written).
	bdir6 := createTestBlock(t, dir, map[string][]sample{`m{blk="6"}`: floats(6, 12*hour, 13*hour, 15_000)})
	id6 := uploadTestBlock(t, bkt, "a", bdir6, nil, 0).ULID
	testutil.Ok(t, block.WriteBucketIndex(ctx, tbkt, &block.BucketIndex{
		Version:            block.BucketIndexVersion2,
		Blocks:             []block.BucketIndexBlock{{ID: ids[0]}, {ID: id5}, {ID: id6}},
		BlockDeletionMarks: []block.BucketIndexBlockMark{{ID: id6}},
	}))
	testutil.Ok(t, st.SyncBlocks(ctx))
	// id5 is marked in the bucket (not in the index): the index is trusted, as in Mimir.
	testutil.Equals(t, idStrings(ids[0], id5), servedIDs(st, "a"))
	// id6's mark is gone from the index: served. ids[0] is not in the index but listed: served. id5 is not in the
	// index either: listed, its own deletion mark read, not served.
	testutil.Ok(t, block.WriteBucketIndex(ctx, tbkt, &block.BucketIndex{Version: block.BucketIndexVersion1, Blocks: []block.BucketIndexBlock{{ID: id6}}}))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, idStrings(ids[0], id6), servedIDs(st, "a"))
	testutil.Equals(t, []string{`{__name__="m", blk="0", tenant_id="a"}`, `{__name__="m", blk="6", tenant_id="a"}`}, query())

	// Every block of the tenant gone: the tenant is no longer served.
	for _, id := range []ulid.ULID{ids[0], id6} {
		testutil.Ok(t, block.Delete(ctx, log.NewNopLogger(), tbkt, id))
	}
	testutil.Ok(t, block.WriteBucketIndex(ctx, tbkt, &block.BucketIndex{Version: block.BucketIndexVersion1}))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, []string{}, servedIDs(st, "a"))
	testutil.Equals(t, 0, len(st.Tenants()))
	testutil.Equals(t, []string{}, query())
}

// A block marked for deletion is served, and answers queries, until its mark is older than the
// ignore-deletion-mark delay; the first sync past the delay drops it.
func TestBucketStore_IgnoreDeletionMarkDelay(t *testing.T) {
	ctx := context.Background()
	bkt := newTestBucket(t)
	tbkt := objstore.NewPrefixedBucket(bkt, "a")
	dir := t.TempDir()
	kept := uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{blk="0"}`: floats(1, 0, hour, 15_000)}), nil, 0).ULID
	marked := uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{blk="1"}`: floats(2, 2*hour, 3*hour, 15_000)}), nil, 0).ULID
	markedAt := time.Unix(1_800_000_000, 0)
	var (
		mtx sync.Mutex
		now = markedAt
	)
	clock := func() time.Time { mtx.Lock(); defer mtx.Unlock(); return now }
	st := newTestBucketStore(t, bkt, bucketStoreOpts{now: clock, markDelay: time.Hour})
	c := serve(t, st)
	query := func() []string {
		got, _, err := seriesWithHints(tenantCtx("a"), c, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}})
		testutil.Ok(t, err)
		return lsetsOf(got)
	}
	both := []string{`{__name__="m", blk="0", tenant_id="a"}`, `{__name__="m", blk="1", tenant_id="a"}`}
	testutil.Equals(t, idStrings(kept, marked), servedIDs(st, "a"))
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), tbkt, marked, "test", clock))

	for _, step := range []struct {
		after  time.Duration
		served []string
		series []string
	}{
		{0, idStrings(kept, marked), both},
		{59 * time.Minute, idStrings(kept, marked), both},
		{time.Hour + time.Second, idStrings(kept), both[:1]},
	} {
		mtx.Lock()
		now = markedAt.Add(step.after)
		mtx.Unlock()
		testutil.Ok(t, st.SyncBlocks(ctx))
		testutil.Equals(t, step.served, servedIDs(st, "a"), "%v after the mark", step.after)
		testutil.Equals(t, step.series, query(), "%v after the mark", step.after)
		// The blocks page says which served block is marked, and since when.
		marks := map[string]string{}
		for _, b := range st.Blocks("a") {
			if !b.DeletionMarkedAt.IsZero() {
				marks[b.ID.String()] = b.DeletionMarkedAt.UTC().Format(time.RFC3339)
			}
		}
		want := map[string]string{}
		if len(step.served) == 2 {
			want[marked.String()] = markedAt.UTC().Format(time.RFC3339)
		}
		testutil.Equals(t, want, marks, "%v after the mark", step.after)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/store-gateway/tenant/a/blocks", nil)
		req.SetPathValue("tenant", "a")
		req.Header.Set("Accept", "application/json")
		st.BlocksHandler().ServeHTTP(rec, req)
		testutil.Equals(t, http.StatusOK, rec.Code)
		for id, at := range want {
			testutil.Assert(t, strings.Contains(rec.Body.String(), `"deletion_marked_at":"`+at+`"`), "page of %s: %s", id, rec.Body.String())
		}
	}
}

// A block the store serves and that a Thanos compactor marks for deletion (its own deletion-mark.json only)
// must stop being served, as it would had it been marked before the store first saw it.
func TestBucketStore_DiscoveryThanosMarkAfterServing(t *testing.T) {
	ctx := context.Background()
	bkt := newTestBucket(t)
	tbkt := objstore.NewPrefixedBucket(bkt, "a")
	id := uploadTestBlock(t, bkt, "a", createTestBlock(t, t.TempDir(), map[string][]sample{`m`: floats(1, 0, hour, 15_000)}), nil, 0).ULID
	st := newTestBucketStore(t, bkt, bucketStoreOpts{})
	testutil.Equals(t, idStrings(id), servedIDs(st, "a"))
	testutil.Ok(t, tbkt.Upload(ctx, path.Join(id.String(), block.DeletionMarkFilename), strings.NewReader(`{"id":"`+id.String()+`","version":1,"deletion_time":1}`)))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, []string{}, servedIDs(st, "a"), "block marked for deletion by <block>/deletion-mark.json after discovery must not be served")
}

func TestBucketStore_Ownership(t *testing.T) {
	bkt := newTestBucket(t)
	dir := t.TempDir()
	id1 := uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{x="1"}`: floats(1, 0, hour, 15_000)}), nil, 0).ULID
	id2 := uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{x="2"}`: floats(2, 0, hour, 15_000)}), nil, 0).ULID
	var (
		mtx   sync.Mutex
		owned = map[ulid.ULID]bool{id1: true}
		fail  bool
	)
	owns := func(_ string, id ulid.ULID) (bool, error) {
		mtx.Lock()
		defer mtx.Unlock()
		if fail {
			return false, errors.New("ring unavailable")
		}
		return owned[id], nil
	}
	st := newTestBucketStore(t, bkt, bucketStoreOpts{owns: owns})
	testutil.Equals(t, idStrings(id1), servedIDs(st, "a"))
	mtx.Lock()
	owned = map[ulid.ULID]bool{id2: true}
	mtx.Unlock()
	testutil.Ok(t, st.SyncBlocks(context.Background()))
	testutil.Equals(t, idStrings(id2), servedIDs(st, "a"))
	// The ring failing keeps what is served.
	mtx.Lock()
	fail = true
	mtx.Unlock()
	testutil.NotOk(t, st.SyncBlocks(context.Background()))
	testutil.Equals(t, idStrings(id2), servedIDs(st, "a"))
}

// One tenant's discovery failing (here: an unreadable bucket index) does not stop the others' being synced; a
// corrupted meta.json only leaves its block out.
func TestBucketStore_DiscoveryErrorIsolated(t *testing.T) {
	ctx := context.Background()
	bkt := newTestBucket(t)
	dir := t.TempDir()
	ida := uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m`: floats(1, 0, hour, 15_000)}), nil, 0).ULID
	st := newTestBucketStore(t, bkt, bucketStoreOpts{})
	idb := uploadTestBlock(t, bkt, "b", createTestBlock(t, dir, map[string][]sample{`m`: floats(1, 0, hour, 15_000)}), nil, 0).ULID
	testutil.Ok(t, bkt.Upload(ctx, path.Join("b", ulid.MustNew(7, nil).String(), block.MetaFilename), strings.NewReader("{corrupt")))
	testutil.Ok(t, bkt.Upload(ctx, path.Join("a", block.BucketIndexFilename), strings.NewReader("not gzip")))
	uploadTestBlock(t, bkt, "a", createTestBlock(t, dir, map[string][]sample{`m{new="1"}`: floats(1, 0, hour, 15_000)}), nil, 0)
	testutil.NotOk(t, st.SyncBlocks(ctx))
	testutil.Equals(t, idStrings(ida), servedIDs(st, "a"), "a keeps what it had")
	testutil.Equals(t, idStrings(idb), servedIDs(st, "b"), "b is synced, its corrupted block left out")
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Hints.

func TestBucketStore_Hints(t *testing.T) {
	f := newRawFixture(t)
	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{})
	c := serve(t, st)
	ctx := tenantCtx("a")
	b1, b2, b3, b4 := f.ids[0], f.ids[1], f.ids[2], f.ids[3]
	ms := []*storepb.LabelMatcher{lm(RE, "__name__", "m|only4")}

	// No hints: every block.
	_, hints, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: ms})
	testutil.Ok(t, err)
	testutil.Equals(t, idStrings(b1, b2, b3, b4), queriedIDs(hints.GetQueriedBlocks()))

	// Block matchers restrict the blocks read.
	for _, tc := range []struct {
		bm       *storepb.LabelMatcher
		blocks   []ulid.ULID
		minT     int64
		maxT     int64
		lastT    int64 // the newest sample of m{a="1",b="x"} expected
		hasOnly4 bool
	}{
		{bm: lm(RE, BlockIDLabel, blockIDsRegex(b1, b2)), blocks: []ulid.ULID{b1, b2}, maxT: 6 * hour, lastT: 4*hour - 15_000},
		{bm: lm(EQ, BlockIDLabel, b3.String()), blocks: []ulid.ULID{b3}, maxT: 6 * hour, lastT: 6*hour - 15_000},
		{bm: lm(NEQ, BlockIDLabel, b3.String()), blocks: []ulid.ULID{b1, b2, b4}, maxT: 6 * hour, lastT: 4*hour - 15_000, hasOnly4: true},
		{bm: lm(RE, BlockIDLabel, blockIDsRegex(b4)), blocks: []ulid.ULID{b4}, maxT: 6 * hour, lastT: 3*hour - 10_000, hasOnly4: true},
		{bm: lm(RE, BlockIDLabel, "nope"), blocks: nil, maxT: 6 * hour},
	} {
		got, hints, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: tc.minT, MaxTime: tc.maxT, Matchers: ms, Hints: blockHints(t, tc.bm)})
		testutil.Ok(t, err)
		testutil.Equals(t, idStrings(tc.blocks...), queriedIDs(hints.GetQueriedBlocks()), matchersString([]*storepb.LabelMatcher{tc.bm}))
		fl := flatten(t, got, tc.minT, tc.maxT)
		var sawOnly4 bool
		for _, s := range fl {
			if strings.Contains(s.Labels, "only4") {
				sawOnly4 = true
			}
			if s.Labels == `{__name__="m", a="1", b="x", cluster="eu", tenant_id="a"}` {
				last := s.Samples[len(s.Samples)-1]
				testutil.Equals(t, strconv.FormatInt(tc.lastT, 10), last[:strings.Index(last, ":")])
			}
		}
		testutil.Equals(t, tc.hasOnly4, sawOnly4)
		if tc.blocks == nil {
			testutil.Equals(t, 0, len(got))
		}
	}

	// Label requests: hints restrict, responses list the blocks.
	lnHints, err := anypb.New(&hintspb.LabelNamesRequestHints{BlockMatchers: []*storepb.LabelMatcher{lm(EQ, BlockIDLabel, b4.String())}})
	testutil.Ok(t, err)
	names, err := c.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 6 * hour, Hints: lnHints})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "a", "b", "cluster", "tenant_id"}, names.GetNames())
	var lnResp hintspb.LabelNamesResponseHints
	testutil.Ok(t, names.GetHints().UnmarshalTo(&lnResp))
	testutil.Equals(t, idStrings(b4), queriedIDs(lnResp.GetQueriedBlocks()))

	lvHints, err := anypb.New(&hintspb.LabelValuesRequestHints{BlockMatchers: []*storepb.LabelMatcher{lm(RE, BlockIDLabel, blockIDsRegex(b3, b4))}})
	testutil.Ok(t, err)
	vals, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "__name__", Start: 0, End: 6 * hour, Hints: lvHints})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"hist", "m", "only4", "other", "up"}, vals.GetValues())
	var lvResp hintspb.LabelValuesResponseHints
	testutil.Ok(t, vals.GetHints().UnmarshalTo(&lvResp))
	testutil.Equals(t, idStrings(b3, b4), queriedIDs(lvResp.GetQueriedBlocks()))
	vals, err = c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "b", Start: 0, End: 6 * hour, Hints: lvHints})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"x", "y"}, vals.GetValues())

	// Undecodable hints: InvalidArgument.
	wrong, err := anypb.New(&hintspb.Block{Id: "x"})
	testutil.Ok(t, err)
	_, _, err = seriesWithHints(ctx, c, &storepb.SeriesRequest{MaxTime: 6 * hour, Matchers: ms, Hints: wrong})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
	_, _, err = seriesWithHints(ctx, c, &storepb.SeriesRequest{MaxTime: 6 * hour, Matchers: ms, Hints: blockHints(t, lm(RE, BlockIDLabel, "("))})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Downsampled blocks.

type aggrSamples struct {
	count, sum, min, max, counter []sample
}

// aggrFixture writes, for tenant a (cluster=eu), raw blocks [0, 2h), [2h, 4h), [4h, 6h) of m{a="1"} and a 5m
// block [0, 4h) of the same series with two aggregate chunks; it returns the IDs and the aggregates written.
type aggrFixture struct {
	bkt     objstore.Bucket
	raw     []ulid.ULID
	ds      ulid.ULID
	written [2]aggrSamples // the two aggregate chunks; the second has no counter
}

func newAggrFixture(t testing.TB) *aggrFixture {
	t.Helper()
	f := &aggrFixture{bkt: newTestBucket(t)}
	dir := t.TempDir()
	for i := int64(0); i < 3; i++ {
		bdir := createTestBlock(t, dir, map[string][]sample{`m{a="1"}`: floats(1, i*2*hour, (i+1)*2*hour-1, 15_000)})
		f.raw = append(f.raw, uploadTestBlock(t, f.bkt, "a", bdir, map[string]string{"cluster": "eu"}, 0).ULID)
	}
	var metas []chunks.Meta
	for c := 0; c < 2; c++ {
		var a aggrSamples
		for i := int64(0); i < 24; i++ {
			ts := int64(c)*2*hour + (i+1)*300_000 - 1
			a.count = append(a.count, sample{t: ts, v: 20})
			a.sum = append(a.sum, sample{t: ts, v: float64(100*c) + float64(i)})
			a.min = append(a.min, sample{t: ts, v: -float64(i)})
			a.max = append(a.max, sample{t: ts, v: 1000 + float64(i)})
			a.counter = append(a.counter, sample{t: ts, v: float64(i * 7)})
		}
		parts := [5]chunkenc.Chunk{xorChunk(t, a.count).Chunk, xorChunk(t, a.sum).Chunk, xorChunk(t, a.min).Chunk, xorChunk(t, a.max).Chunk, xorChunk(t, a.counter).Chunk}
		if c == 1 {
			parts[4] = nil
			a.counter = nil
		}
		f.written[c] = a
		metas = append(metas, chunks.Meta{MinTime: a.count[0].t, MaxTime: a.count[len(a.count)-1].t, Chunk: customChunk{enc: chunkEncAggr, data: aggrChunkBytes(parts)}})
	}
	bdir := writeCustomBlock(t, dir, 0, 4*hour, []customSeries{{lset: labels.FromStrings("__name__", "m", "a", "1"), chunks: metas}}, 0)
	m := uploadTestBlock(t, f.bkt, "a", bdir, map[string]string{"cluster": "eu"}, 300_000)
	f.ds = m.ULID
	return f
}

func pbSamples(t testing.TB, c *storepb.Chunk) []sample {
	t.Helper()
	if c == nil {
		return nil
	}
	var out []sample
	for _, s := range chunkSamples(t, decodePB(t, c)) {
		v, err := strconv.ParseFloat(s.s, 64)
		testutil.Ok(t, err)
		out = append(out, sample{t: s.t, v: v})
	}
	return out
}

func TestBucketStore_Downsampled(t *testing.T) {
	f := newAggrFixture(t)
	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{})
	c := serve(t, st)
	ctx := tenantCtx("a")
	ms := []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}

	t.Run("raw only at resolution 0", func(t *testing.T) {
		got, hints, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: ms})
		testutil.Ok(t, err)
		testutil.Equals(t, 1, len(got))
		for _, ch := range got[0].GetChunks() {
			testutil.Assert(t, ch.GetRaw() != nil && ch.GetCount() == nil, "raw chunks only")
		}
		testutil.Equals(t, 6*60*4, len(flatten(t, got, 0, 6*hour)[0].Samples))
		_ = hints
	})

	for _, res := range []int64{300_000, 3_600_000} {
		t.Run(fmt.Sprintf("5m where available at max resolution %d", res), func(t *testing.T) {
			got, _, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: ms, MaxResolutionWindow: res})
			testutil.Ok(t, err)
			testutil.Equals(t, 1, len(got))
			testutil.Equals(t, `{__name__="m", a="1", cluster="eu", tenant_id="a"}`, LabelsFromPB(got[0].GetLabels()).String())
			var aggr, raw []*storepb.AggrChunk
			for _, ch := range got[0].GetChunks() {
				if ch.GetRaw() != nil {
					raw = append(raw, ch)
				} else {
					aggr = append(aggr, ch)
				}
			}
			testutil.Equals(t, 2, len(aggr))
			for i, ch := range aggr {
				w := f.written[i]
				testutil.Equals(t, w.count, pbSamples(t, ch.GetCount()))
				testutil.Equals(t, w.sum, pbSamples(t, ch.GetSum()))
				testutil.Equals(t, w.min, pbSamples(t, ch.GetMin()))
				testutil.Equals(t, w.max, pbSamples(t, ch.GetMax()))
				testutil.Equals(t, w.counter, pbSamples(t, ch.GetCounter()))
				testutil.Equals(t, w.count[0].t, ch.GetMinTime())
			}
			// Raw data fills [4h, 6h), the gap the 5m block leaves; the raw blocks under the 5m block are not read.
			testutil.Assert(t, len(raw) > 0, "raw chunks for [4h, 6h)")
			for _, ch := range raw {
				testutil.Assert(t, ch.GetMinTime() >= 4*hour, "raw chunk [%d, %d] where the 5m block has data", ch.GetMinTime(), ch.GetMaxTime())
			}
		})
	}

	t.Run("aggregates asked for", func(t *testing.T) {
		got, _, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 4*hour - 1, Matchers: ms, MaxResolutionWindow: 300_000, Aggregates: []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}})
		testutil.Ok(t, err)
		testutil.Equals(t, 1, len(got))
		testutil.Equals(t, 2, len(got[0].GetChunks()))
		for i, ch := range got[0].GetChunks() {
			testutil.Equals(t, f.written[i].count, pbSamples(t, ch.GetCount()))
			testutil.Equals(t, f.written[i].sum, pbSamples(t, ch.GetSum()))
			testutil.Assert(t, ch.GetMin() == nil && ch.GetMax() == nil && ch.GetCounter() == nil && ch.GetRaw() == nil, "only count and sum: %v", ch)
		}
		got, _, err = seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 4*hour - 1, Matchers: ms, MaxResolutionWindow: 300_000, Aggregates: []storepb.Aggr{storepb.Aggr_COUNTER}})
		testutil.Ok(t, err)
		testutil.Equals(t, f.written[0].counter, pbSamples(t, got[0].GetChunks()[0].GetCounter()))
		testutil.Assert(t, got[0].GetChunks()[0].GetCount() == nil, "counter only")
	})

	t.Run("time range inside the 5m block", func(t *testing.T) {
		got, hints, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 2*hour + 1, MaxTime: 3 * hour, Matchers: ms, MaxResolutionWindow: 300_000})
		testutil.Ok(t, err)
		testutil.Equals(t, 1, len(got))
		testutil.Equals(t, 1, len(got[0].GetChunks()))
		testutil.Equals(t, f.written[1].sum, pbSamples(t, got[0].GetChunks()[0].GetSum()))
		testutil.Assert(t, len(hints.GetQueriedBlocks()) >= 1, "hints")
	})

	t.Run("block selection", func(t *testing.T) {
		r0, r1, r2, ds := f.raw[0], f.raw[1], f.raw[2], f.ds
		for _, tc := range []struct {
			minT, maxT, res int64
			want            []ulid.ULID
		}{
			{0, 6 * hour, 0, []ulid.ULID{r0, r1, r2}},
			{0, 6 * hour, 299_999, []ulid.ULID{r0, r1, r2}},
			{0, 6 * hour, 300_000, []ulid.ULID{ds, r2}},
			{0, 6 * hour, math.MaxInt64, []ulid.ULID{ds, r2}},
			{0, 2 * hour, 300_000, []ulid.ULID{ds}},
			{4 * hour, 6 * hour, 300_000, []ulid.ULID{r2}},
			{4*hour - 1, 6 * hour, 300_000, []ulid.ULID{ds, r2}},
			{-hour, -1, 300_000, nil},
		} {
			st.mtx.RLock()
			var set []*bucketBlock
			for _, b := range st.tenants["a"] {
				set = append(set, b)
			}
			st.mtx.RUnlock()
			var got []string
			for _, b := range blocksAtResolution(set, tc.minT, tc.maxT, tc.res) {
				got = append(got, b.id().String())
			}
			sort.Strings(got)
			if got == nil {
				got = []string{}
			}
			testutil.Equals(t, idStrings(tc.want...), got, "[%d, %d] at %d", tc.minT, tc.maxT, tc.res)
		}
	})

	// Label requests over a time range only downsampled blocks cover must see its series (Thanos reads the
	// labels of every block in range, whatever its resolution).
	t.Run("labels of downsampled-only ranges", func(t *testing.T) {
		bkt := newTestBucket(t)
		dir := t.TempDir()
		a := f.written[0]
		bdir := writeCustomBlock(t, dir, 0, 2*hour, []customSeries{{lset: labels.FromStrings("__name__", "old", "x", "y"), chunks: []chunks.Meta{{
			MinTime: a.count[0].t, MaxTime: a.count[len(a.count)-1].t,
			Chunk: customChunk{enc: chunkEncAggr, data: aggrChunkBytes([5]chunkenc.Chunk{xorChunk(t, a.count).Chunk, xorChunk(t, a.sum).Chunk, nil, nil, nil})},
		}}}}, 0)
		uploadTestBlock(t, bkt, "a", bdir, nil, 300_000)
		c := serve(t, newTestBucketStore(t, bkt, bucketStoreOpts{}))
		got, _, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 2 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "old")}, MaxResolutionWindow: 300_000})
		testutil.Ok(t, err)
		testutil.Equals(t, 1, len(got))
		names, err := c.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 2 * hour})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"__name__", "tenant_id", "x"}, names.GetNames(), "BUG: labelBlocks selects blocks at max resolution 0, so only-downsampled ranges have no labels")
		vals, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "x", Start: 0, End: 2 * hour})
		testutil.Ok(t, err)
		testutil.Equals(t, []string{"y"}, vals.GetValues())
	})
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Limits.

type testTenantLimits map[string]*tenancy.Limits

func (m testTenantLimits) ByTenant(t string) *tenancy.Limits       { return m[t] }
func (m testTenantLimits) AllByTenant() map[string]*tenancy.Limits { return m }

func TestBucketStore_Limits(t *testing.T) {
	f := newRawFixture(t)
	limited := func(series, chunkBytes int) *tenancy.Limits {
		l := tenancy.DefaultLimits()
		l.MaxFetchedSeriesPerQuery = series
		l.MaxFetchedChunkBytesPerQuery = chunkBytes
		return &l
	}
	ctx := tenantCtx("a")
	all := []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}
	unlimited := serve(t, newTestBucketStore(t, f.bkt, bucketStoreOpts{}))
	everything, _, err := seriesWithHints(ctx, unlimited, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: all})
	testutil.Ok(t, err)
	var chunkBytes int
	for _, s := range everything {
		for _, c := range s.GetChunks() {
			chunkBytes += len(c.GetRaw().GetData()) + 1
		}
	}

	for _, tc := range []struct {
		name   string
		limits *tenancy.Limits
		ms     []*storepb.LabelMatcher
		skip   bool
		err    string
	}{
		{name: "series over", limits: limited(3, 0), ms: all, err: tenancy.NewMaxSeriesPerQueryError(3).Error()},
		{name: "series over, skip chunks", limits: limited(3, 0), ms: all, skip: true, err: tenancy.NewMaxSeriesPerQueryError(3).Error()},
		{name: "series under", limits: limited(3, 0), ms: []*storepb.LabelMatcher{lm(EQ, "__name__", "other"), lm(EQ, "a", "1")}},
		{name: "chunk bytes over", limits: limited(0, 1000), ms: all, err: tenancy.NewMaxChunkBytesPerQueryError(1000).Error()},
		{name: "chunk bytes over, skip chunks is free", limits: limited(0, 1000), ms: all, skip: true},
		{name: "chunk bytes under", limits: limited(0, chunkBytes*2), ms: all},
		// The limit is on distinct series: a series in three consecutive blocks is one series.
		{name: "distinct series across blocks", limits: limited(len(everything), 0), ms: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tenancy.NewOverrides(tenancy.DefaultLimits(), testTenantLimits{"a": tc.limits})
			c := serve(t, newTestBucketStore(t, f.bkt, bucketStoreOpts{overrides: o}))
			_, _, err := seriesWithHints(ctx, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: tc.ms, SkipChunks: tc.skip})
			if tc.err == "" {
				testutil.Ok(t, err, "%s (BUG for the distinct-series case: queryLimiter counts each block's series, so a series in 3 blocks counts 3 times)", tc.name)
				return
			}
			testutil.Equals(t, codes.ResourceExhausted, status.Code(err), "%v", err)
			st, _ := status.FromError(err)
			testutil.Equals(t, tc.err, st.Message())
			// Another tenant is not limited by a's override.
			_, _, err = seriesWithHints(tenantCtx("b"), c, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: tc.ms})
			testutil.Ok(t, err)
		})
	}
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Caches.

// mapCache is a Cache over a map; it records what it holds.
type mapCache struct {
	mtx   sync.Mutex
	items map[string][]byte
}

func newMapCache() *mapCache { return &mapCache{items: map[string][]byte{}} }

func (c *mapCache) Fetch(_ context.Context, keys []string) map[string][]byte {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	out := map[string][]byte{}
	for _, k := range keys {
		if v, ok := c.items[k]; ok {
			out[k] = slices.Clone(v)
		}
	}
	return out
}

func (c *mapCache) Store(items map[string][]byte, _ time.Duration) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	for k, v := range items {
		c.items[k] = slices.Clone(v)
	}
}

func (c *mapCache) mutate(prefix string, f func([]byte) []byte) int {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	n := 0
	for k, v := range c.items {
		if strings.HasPrefix(k, prefix) {
			c.items[k] = f(v)
			n++
		}
	}
	return n
}

// countingBucket counts the range reads and reads of a bucket.
type countingBucket struct {
	objstore.Bucket
	getRange, get atomic.Int64
}

func (b *countingBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	b.getRange.Add(1)
	return b.Bucket.GetRange(ctx, name, off, length)
}

func (b *countingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	b.get.Add(1)
	return b.Bucket.Get(ctx, name)
}

func TestBucketStore_Caches(t *testing.T) {
	f := newRawFixture(t)
	cb := &countingBucket{Bucket: f.bkt}
	ic, cc := newMapCache(), newMapCache()
	c := serve(t, newTestBucketStore(t, cb, bucketStoreOpts{indexCache: ic, chunksCache: cc}))
	ctx := tenantCtx("a")
	reqs := []*storepb.SeriesRequest{
		{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}},
		{MinTime: hour, MaxTime: 3 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m"), lm(NRE, "a", "1.*")}},
		{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "b", "")}},
	}
	var first [][]flatSeries
	for _, r := range reqs {
		got, _, err := seriesWithHints(ctx, c, r)
		testutil.Ok(t, err)
		first = append(first, flatten(t, got, r.MinTime, r.MaxTime))
	}
	testutil.Assert(t, len(ic.items) > 0 && len(cc.items) > 0, "caches filled")

	before := cb.getRange.Load()
	for i, r := range reqs {
		got, _, err := seriesWithHints(ctx, c, r)
		testutil.Ok(t, err)
		testutil.Equals(t, first[i], flatten(t, got, r.MinTime, r.MaxTime))
	}
	testutil.Equals(t, int64(0), cb.getRange.Load()-before, "second queries read nothing from the bucket")

	// Label requests with matchers read postings and series from the index cache too.
	lreq := &storepb.LabelValuesRequest{Label: "a", Start: 0, End: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}}
	v1, err := c.LabelValues(ctx, lreq)
	testutil.Ok(t, err)
	before = cb.getRange.Load()
	v2, err := c.LabelValues(ctx, lreq)
	testutil.Ok(t, err)
	testutil.Equals(t, v1.GetValues(), v2.GetValues())
	testutil.Equals(t, int64(0), cb.getRange.Load()-before)

	// Corrupted cache entries must not change answers: either they are detected (and read again from the
	// bucket) or the request fails; wrong data is never returned.
	for _, tc := range []struct {
		name   string
		cache  *mapCache
		prefix string
		mutate func([]byte) []byte
	}{
		{name: "postings flipped", cache: ic, prefix: "P:", mutate: flipLast},
		{name: "postings truncated", cache: ic, prefix: "P:", mutate: truncate},
		{name: "series flipped", cache: ic, prefix: "S:", mutate: flipLast},
		{name: "series truncated", cache: ic, prefix: "S:", mutate: truncate},
		{name: "series label symbol changed", cache: ic, prefix: "S:", mutate: flipByte(2, 1)},
		{name: "chunks flipped", cache: cc, prefix: "C:", mutate: flipLast},
		{name: "chunks truncated", cache: cc, prefix: "C:", mutate: truncate},
		{name: "chunks value bit flipped", cache: cc, prefix: "C:", mutate: flipByte(12, 0x01)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := snapshot(tc.cache)
			defer restore(tc.cache, saved)
			n := tc.cache.mutate(tc.prefix, tc.mutate)
			testutil.Assert(t, n > 0, "cache has %s entries", tc.prefix)
			for i, r := range reqs {
				got, _, err := seriesWithHints(ctx, c, r)
				if err != nil {
					continue // detected and refused: acceptable
				}
				fl, err := tryFlatten(got, r.MinTime, r.MaxTime)
				testutil.Ok(t, err, "BUG: corrupted %s cache entries are served as they are (no checksum): the client cannot decode the chunks", tc.prefix)
				if d := diffSummary(first[i], fl); d != "" {
					t.Errorf("BUG: corrupted %s cache entries are trusted (no checksum) and change the answer silently: %s", tc.prefix, d)
				}
			}
		})
	}
}

// diffSummary describes briefly how two answers differ ("" if they do not).
func diffSummary(want, got []flatSeries) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d series instead of %d", len(got), len(want))
	}
	for i := range want {
		if want[i].Labels != got[i].Labels {
			return fmt.Sprintf("series %d is %s instead of %s", i, got[i].Labels, want[i].Labels)
		}
		if len(want[i].Samples) != len(got[i].Samples) {
			return fmt.Sprintf("series %s has %d samples instead of %d", want[i].Labels, len(got[i].Samples), len(want[i].Samples))
		}
		for j := range want[i].Samples {
			if want[i].Samples[j] != got[i].Samples[j] {
				return fmt.Sprintf("series %s: sample %q instead of %q", want[i].Labels, got[i].Samples[j], want[i].Samples[j])
			}
		}
	}
	return ""
}

func flipLast(v []byte) []byte {
	v = slices.Clone(v)
	if len(v) > 0 {
		v[len(v)-1] ^= 0xff
	}
	return v
}

func truncate(v []byte) []byte { return slices.Clone(v[:len(v)/2]) }

func flipByte(i int, mask byte) func([]byte) []byte {
	return func(v []byte) []byte {
		v = slices.Clone(v)
		if i < len(v) {
			v[i] ^= mask
		}
		return v
	}
}

// tryFlatten is flatten that reports undecodable chunks as an error.
func tryFlatten(series []*storepb.Series, minT, maxT int64) (out []flatSeries, err error) {
	rec := &recordingTB{}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errFailNow { //nolint:errorlint // a panic value, not a returned error
				panic(r)
			}
		}()
		out = flatten(rec, series, minT, maxT)
	}()
	if rec.failed {
		return nil, errors.New(rec.msg)
	}
	return out, nil
}

var errFailNow = errors.New("FailNow")

// recordingTB records a failure instead of failing the test.
type recordingTB struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	panic(errFailNow)
}
func (r *recordingTB) Errorf(format string, args ...any) { r.Fatalf(format, args...) }
func (r *recordingTB) FailNow()                          { r.Fatalf("failed") }
func (r *recordingTB) Fatal(args ...any)                 { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recordingTB) Error(args ...any)                 { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recordingTB) Log(args ...any)                   {}
func (r *recordingTB) Logf(string, ...any)               {}

func snapshot(c *mapCache) map[string][]byte {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	out := map[string][]byte{}
	for k, v := range c.items {
		out[k] = slices.Clone(v)
	}
	return out
}

func restore(c *mapCache, items map[string][]byte) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.items = items
}

// ---------------------------------------------------------------------------------------------------------------
// 8. LabelNames and LabelValues.

func TestBucketStore_LabelsEqualTSDB(t *testing.T) {
	f := newRawFixture(t)
	bc := serve(t, newTestBucketStore(t, f.bkt, bucketStoreOpts{}))
	tc := serve(t, f.tsdbSt)
	ctx := tenantCtx("a")
	matcherSets := [][]*storepb.LabelMatcher{
		nil,
		{lm(EQ, "__name__", "m")},
		{lm(EQ, "__name__", "m"), lm(NEQ, "a", "1")},
		{lm(EQ, "__name__", "m"), lm(EQ, "a", "")},
		{lm(RE, "__name__", "other|up")},
		{lm(EQ, "b", "y")},
		{lm(NEQ, "b", "")},
		{lm(EQ, "__name__", "only4")},
		{lm(EQ, "__name__", "nope")},
		{lm(EQ, "cluster", "eu")},
		{lm(EQ, "cluster", "us")},
		{lm(EQ, "cluster", "eu"), lm(EQ, "__name__", "up")},
		{lm(EQ, "tenant_id", "a"), lm(RE, "a", "1|3")},
	}
	ranges := [][2]int64{{0, 6 * hour}, {0, 0}, {4 * hour, 6 * hour}, {hour + 1, hour + 2}, {7 * hour, 8 * hour}}
	for _, ms := range matcherSets {
		for _, r := range ranges {
			name := fmt.Sprintf("%s[%d,%d]", matchersString(ms), r[0], r[1])
			got, err := bc.LabelNames(ctx, &storepb.LabelNamesRequest{Start: r[0], End: r[1], Matchers: ms})
			testutil.Ok(t, err, name)
			want, err := tc.LabelNames(ctx, &storepb.LabelNamesRequest{Start: r[0], End: r[1], Matchers: ms})
			testutil.Ok(t, err, name)
			testutil.Equals(t, want.GetNames(), got.GetNames(), "label names %s", name)

			for _, label := range []string{"__name__", "a", "b", "instance", "cluster", "tenant_id", "nope"} {
				got, err := bc.LabelValues(ctx, &storepb.LabelValuesRequest{Label: label, Start: r[0], End: r[1], Matchers: ms})
				testutil.Ok(t, err, name)
				want, err := tc.LabelValues(ctx, &storepb.LabelValuesRequest{Label: label, Start: r[0], End: r[1], Matchers: ms})
				testutil.Ok(t, err, name)
				testutil.Equals(t, want.GetValues(), got.GetValues(), "label values of %s %s", label, name)
			}
		}
	}
	// Limits cut the sorted answer.
	got, err := bc.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 6 * hour, Limit: 2})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"__name__", "a"}, got.GetNames())
	vals, err := bc.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "__name__", Start: 0, End: 6 * hour, Limit: 2})
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"hist", "m"}, vals.GetValues())
	_, err = bc.LabelValues(ctx, &storepb.LabelValuesRequest{Start: 0, End: 6 * hour})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
	_, err = bc.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "a", "(")}})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err))
}

// ---------------------------------------------------------------------------------------------------------------
// 9. Index-headers, Info, status.

func TestBucketStore_IndexHeaderLazyLoading(t *testing.T) {
	f := newRawFixture(t)
	clock := storetest.NewClock(time.Unix(1_700_000_000, 0))
	hdrDir := t.TempDir()
	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{now: clock.Now, idle: time.Minute, dir: hdrDir})
	c := serve(t, st)
	ctx := tenantCtx("a")
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", "m|hist")}}

	loaded := func() int {
		n := 0
		for _, b := range st.Blocks("a") {
			if b.IndexHeaderInMemory {
				n++
			}
		}
		return n
	}
	testutil.Equals(t, 0, loaded(), "nothing loaded before the first request")
	got1, _, err := seriesWithHints(ctx, c, req)
	testutil.Ok(t, err)
	testutil.Equals(t, 4, loaded())

	testutil.Equals(t, 0, st.UnloadIdle(), "not idle yet")
	clock.Add(30 * time.Second)
	testutil.Equals(t, 0, st.UnloadIdle())
	clock.Add(31 * time.Second)
	testutil.Equals(t, 4, st.UnloadIdle())
	testutil.Equals(t, 0, loaded())

	got2, _, err := seriesWithHints(ctx, c, req)
	testutil.Ok(t, err)
	testutil.Equals(t, flatten(t, got1, 0, 6*hour), flatten(t, got2, 0, 6*hour))
	testutil.Equals(t, 4, loaded())

	// Index-headers deleted from disk (a cache) are rebuilt.
	clock.Add(2 * time.Minute)
	testutil.Equals(t, 4, st.UnloadIdle())
	testutil.Ok(t, os.RemoveAll(filepath.Join(hdrDir, "a")))
	got3, _, err := seriesWithHints(ctx, c, req)
	testutil.Ok(t, err)
	testutil.Equals(t, flatten(t, got1, 0, 6*hour), flatten(t, got3, 0, 6*hour))

	// A corrupted index-header file is rebuilt too.
	clock.Add(2 * time.Minute)
	testutil.Equals(t, 4, st.UnloadIdle())
	for _, id := range f.ids {
		testutil.Ok(t, os.WriteFile(filepath.Join(hdrDir, "a", id.String()+".index-header"), []byte("garbage"), 0o644))
	}
	got4, _, err := seriesWithHints(ctx, c, req)
	testutil.Ok(t, err)
	testutil.Equals(t, flatten(t, got1, 0, 6*hour), flatten(t, got4, 0, 6*hour))

	// A timeout of 0 never unloads.
	st0 := newTestBucketStore(t, f.bkt, bucketStoreOpts{now: clock.Now})
	_, err = st0.LabelNames(tenancy.WithTenants(context.Background(), []string{"a"}), &storepb.LabelNamesRequest{End: 6 * hour})
	testutil.Ok(t, err)
	clock.Add(24 * time.Hour)
	testutil.Equals(t, 0, st0.UnloadIdle())
}

func TestBucketStore_InfoAndBlocks(t *testing.T) {
	f := newRawFixture(t)
	// Another label set for tenant a and another tenant.
	dir := t.TempDir()
	uploadTestBlock(t, f.bkt, "a", createTestBlock(t, dir, map[string][]sample{`x`: floats(1, 10*hour, 11*hour, 15_000)}), map[string]string{"cluster": "us"}, 0)
	uploadTestBlock(t, f.bkt, "b", createTestBlock(t, dir, map[string][]sample{`x`: floats(1, -hour, 0, 15_000)}), nil, 0)

	empty := NewBucketStore(newTestBucket(t), DefaultBucketStoreConfig(), nil, nil, nil, nil, log.NewNopLogger(), nil, nil)
	info, err := empty.Info(context.Background(), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, ComponentStore, info.GetComponentType())
	testutil.Equals(t, int64(math.MinInt64), info.GetStore().GetMinTime(), "unsynced store: whole range")
	testutil.Equals(t, int64(math.MaxInt64), info.GetStore().GetMaxTime())
	testutil.Assert(t, !empty.Synced(), "not synced")

	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{})
	info, err = st.Info(tenancy.WithTenants(context.Background(), []string{"a"}), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	var sets []string
	for _, ls := range info.GetLabelSets() {
		sets = append(sets, LabelsFromPB(ls.GetLabels()).String())
	}
	testutil.Equals(t, []string{`{cluster="eu", tenant_id="a"}`, `{cluster="us", tenant_id="a"}`}, sets)
	testutil.Equals(t, int64(0), info.GetStore().GetMinTime())
	testutil.Equals(t, 11*hour, info.GetStore().GetMaxTime())

	info, err = st.Info(context.Background(), &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, 3, len(info.GetLabelSets()))
	testutil.Equals(t, -hour, info.GetStore().GetMinTime())

	blocks := st.Blocks("a")
	testutil.Equals(t, 5, len(blocks))
	for i, b := range blocks {
		if i > 0 {
			testutil.Assert(t, blocks[i-1].MinTime <= b.MinTime, "blocks by time")
		}
		testutil.Assert(t, b.SizeBytes > 0, "size from thanos.files")
		testutil.Equals(t, string(block.ReceiveSource), b.Source)
	}
	testutil.Equals(t, f.ids[0], blocks[0].ID)
	testutil.Equals(t, `{cluster="eu", tenant_id="a"}`, blocks[0].Labels.String())
	testutil.Equals(t, 0, len(st.Blocks("nope")))
}

// Concurrent queries, syncs and unloads (run with -race).
func TestBucketStore_Concurrency(t *testing.T) {
	f := newRawFixture(t)
	clock := storetest.NewClock(time.Unix(1_700_000_000, 0))
	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{now: clock.Now, idle: time.Nanosecond, indexCache: newMapCache(), chunksCache: newMapCache()})
	c := serve(t, st)
	ctx := tenantCtx("a")
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}}
	want, _, err := seriesWithHints(ctx, c, req)
	testutil.Ok(t, err)
	wantFlat := flatten(t, want, 0, 6*hour)

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			clock.Add(time.Second)
			st.UnloadIdle()
			if err := st.SyncBlocks(context.Background()); err != nil {
				errs <- err
				return
			}
			_ = st.Blocks("a")
		}
	}()
	var qwg sync.WaitGroup
	for i := 0; i < 8; i++ {
		qwg.Add(1)
		go func() {
			defer qwg.Done()
			for j := 0; j < 5; j++ {
				got, _, err := seriesWithHints(ctx, c, req)
				if err != nil {
					errs <- err
					return
				}
				if fmt.Sprint(flatten(t, got, 0, 6*hour)) != fmt.Sprint(wantFlat) {
					errs <- errors.New("different answer under concurrency")
					return
				}
				if _, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "a", End: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	qwg.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A request whose context is cancelled ends with Canceled, not with data or Internal.
func TestBucketStore_Cancelled(t *testing.T) {
	f := newRawFixture(t)
	st := newTestBucketStore(t, f.bkt, bucketStoreOpts{})
	ctx, cancel := context.WithCancel(tenancy.WithTenants(context.Background(), []string{"a"}))
	cancel()
	srv := storetest.NewSeriesServer(ctx)
	err := st.Series(&storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: []*storepb.LabelMatcher{lm(RE, "__name__", ".+")}}, srv)
	testutil.Equals(t, codes.Canceled, status.Code(err), "%v", err)
}

// Replicas' blocks of the same data (the same labels, DESIGN §4) are served as one series, identical chunks once.
func TestBucketStore_ReplicaBlocks(t *testing.T) {
	bkt := newTestBucket(t)
	dir := t.TempDir()
	series := map[string][]sample{`m{a="1"}`: floats(1, 0, 2*hour-1, 15_000), `m{a="2"}`: floats(2, 0, 2*hour-1, 15_000)}
	bdir := createTestBlock(t, dir, series)
	uploadTestBlock(t, bkt, "a", bdir, nil, 0)
	// Two more copies under other ULIDs.
	for i := 0; i < 2; i++ {
		uploadTestBlock(t, bkt, "a", withBlockID(t, bdir, t.TempDir(), newTestBlockID()), nil, 0)
	}
	single := serve(t, NewTSDBStore(roDBs{"a": openRO(t, dir)}, log.NewNopLogger()))
	c := serve(t, newTestBucketStore(t, bkt, bucketStoreOpts{}))
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 2 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}}
	got, hints, err := seriesWithHints(tenantCtx("a"), c, req)
	testutil.Ok(t, err)
	testutil.Equals(t, 3, len(hints.GetQueriedBlocks()))
	want, _, err := collect(tenantCtx("a"), single, req)
	testutil.Ok(t, err)
	testutil.Equals(t, flatten(t, want, 0, 2*hour), flatten(t, got, 0, 2*hour))
	for i := range want {
		testutil.Equals(t, len(want[i].GetChunks()), len(got[i].GetChunks()), "identical chunks of the replicas kept once")
	}
}

// gateBucket blocks the first range read of a chunk segment until released, and says which block it holds.
type gateBucket struct {
	objstore.Bucket
	once    sync.Once
	entered chan string // the block dir of the held read
	release chan struct{}
}

func (b *gateBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if strings.Contains(name, "/"+block.ChunksDirname+"/") {
		held := false
		b.once.Do(func() { held = true })
		if held {
			b.entered <- path.Dir(path.Dir(name))
			<-b.release
		}
	}
	return b.Bucket.GetRange(ctx, name, off, length)
}

// A block dropped by a sync (deleted, marked, no longer owned) while a request that selected it is running:
// the request still answers (Thanos's store waits for a block's pending readers before closing it).
func TestBucketStore_BlockDroppedDuringQuery(t *testing.T) {
	ctx := context.Background()
	root := newTestBucket(t)
	dir := t.TempDir()
	var ids []ulid.ULID
	for i := int64(0); i < 2; i++ {
		bdir := createTestBlock(t, dir, map[string][]sample{`m`: floats(1, i*2*hour, (i+1)*2*hour-1, 15_000)})
		ids = append(ids, uploadTestBlock(t, root, "a", bdir, nil, 0).ULID)
	}
	gb := &gateBucket{Bucket: root, entered: make(chan string, 1), release: make(chan struct{})}
	st := newTestBucketStore(t, gb, bucketStoreOpts{concurrency: 1})
	type result struct {
		series []*storepb.Series
		err    error
	}
	done := make(chan result, 1)
	go func() {
		srv := storetest.NewSeriesServer(tenancy.WithTenants(ctx, []string{"a"}))
		err := st.Series(&storepb.SeriesRequest{MinTime: 0, MaxTime: 4 * hour, Matchers: []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}}, srv)
		done <- result{srv.Series, err}
	}()
	held := <-gb.entered
	// Drop the other block, not yet read by the request.
	other := ids[0]
	if held == "a/"+ids[0].String() {
		other = ids[1]
	}
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), objstore.NewPrefixedBucket(root, "a"), other, "test", nil))
	testutil.Ok(t, st.SyncBlocks(ctx))
	testutil.Equals(t, 1, len(st.Blocks("a")))
	close(gb.release)
	r := <-done
	testutil.Ok(t, r.err, "BUG: a request fails when a block it selected is dropped by a concurrent sync (LazyReader closed before Acquire)")
	testutil.Equals(t, 1, len(r.series))
}
