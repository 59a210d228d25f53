package store

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store/hintspb"
	"github.com/stratametrics/strata/pkg/store/indexheader"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// BlockIDLabel is the pseudo label a request's hints match block IDs with (Thanos's block matchers).
const BlockIDLabel = "__block_id__"

// queryStats counts what one request read.
type queryStats struct {
	postings      int
	seriesFetched int
	chunksFetched int
}

// queryLimiter enforces a tenant's per-query limits over all the blocks a request reads: distinct series (checked
// per block, then on the merged result) and chunk bytes fetched.
type queryLimiter struct {
	maxSeries, maxChunkBytes int64
	chunkBytes               atomic.Int64
}

// checkSeries checks a count of distinct series against the limit.
func (l *queryLimiter) checkSeries(n int) error {
	if l.maxSeries > 0 && int64(n) > l.maxSeries {
		return status.Error(codes.ResourceExhausted, tenancy.NewMaxSeriesPerQueryError(int(l.maxSeries)).Error())
	}
	return nil
}

func (l *queryLimiter) addChunkBytes(n int) error {
	if v := l.chunkBytes.Add(int64(n)); l.maxChunkBytes > 0 && v > l.maxChunkBytes {
		return status.Error(codes.ResourceExhausted, tenancy.NewMaxChunkBytesPerQueryError(int(l.maxChunkBytes)).Error())
	}
	return nil
}

// matchBlock reports whether a block's ID satisfies the block matchers.
func matchBlock(ms []*labels.Matcher, id string) bool {
	for _, m := range ms {
		if m.Name == BlockIDLabel && !m.Matches(id) {
			return false
		}
	}
	return true
}

// seriesResult is one series read from one block.
type seriesResult struct {
	lset   []*labelpb.Label // with the block's external labels
	chunks []*storepb.AggrChunk
}

// blockSeries reads the series of one block that match ms (external-label matchers already removed).
func (s *BucketStore) blockSeries(ctx context.Context, b *bucketBlock, ms []*labels.Matcher, req *storepb.SeriesRequest, lim *queryLimiter, stats *queryStats) ([]seriesResult, error) {
	hdr, release, err := b.header.Acquire(ctx)
	if err != nil {
		return nil, errors.Wrapf(err, "load index-header of block %s", b.id())
	}
	defer release()
	refs, err := b.expandedPostings(ctx, hdr, ms, stats)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, nil
	}
	entries, err := b.seriesEntries(ctx, hdr, refs, stats)
	if err != nil {
		return nil, err
	}
	dec := index.Decoder{LookupSymbol: hdr.LookupSymbol}
	builder := labels.NewScratchBuilder(8)
	var (
		out       []seriesResult
		metas     []chunks.Meta
		chunkRefs []chunks.ChunkRef
		owners    []int // the series each chunk ref belongs to
		chunkMeta []chunks.Meta
	)
	for i, e := range entries {
		metas = metas[:0]
		if err := dec.Series(e, &builder, &metas); err != nil {
			return nil, errors.Wrapf(err, "decode series %d of block %s", refs[i], b.id())
		}
		n := 0
		for _, m := range metas {
			if m.MaxTime < req.GetMinTime() || m.MinTime > req.GetMaxTime() {
				continue
			}
			n++
			if !req.GetSkipChunks() {
				chunkRefs = append(chunkRefs, m.Ref)
				chunkMeta = append(chunkMeta, m)
				owners = append(owners, len(out))
			}
		}
		if n == 0 {
			continue
		}
		out = append(out, seriesResult{lset: labelsWithExternalToPB(builder.Labels(), b.ext)})
	}
	if err := lim.checkSeries(len(out)); err != nil { // one block over the limit: no need to read its chunks
		return nil, err
	}
	if req.GetSkipChunks() || len(chunkRefs) == 0 {
		return out, nil
	}
	raws, err := b.rawChunks(ctx, chunkRefs, stats)
	if err != nil {
		return nil, err
	}
	size := 0
	for _, r := range raws {
		size += len(r)
	}
	if err := lim.addChunkBytes(size); err != nil {
		return nil, err
	}
	aggrs := make([]storepb.AggrChunk, len(raws))
	for j, raw := range raws {
		m := chunkMeta[j]
		aggrs[j] = storepb.AggrChunk{MinTime: m.MinTime, MaxTime: m.MaxTime}
		if err := fillAggrChunk(&aggrs[j], raw, req.GetAggregates()); err != nil {
			return nil, errors.Wrapf(err, "chunk of series %s in block %s", LabelsFromPB(out[owners[j]].lset), b.id())
		}
		out[owners[j]].chunks = append(out[owners[j]].chunks, &aggrs[j])
	}
	return out, nil
}

// fillAggrChunk sets the chunk's Raw (raw blocks) or its aggregates (downsampled blocks, encoding 0xff) from the
// encoding byte and data read from the segment. With no aggregates asked for, all present are returned.
func fillAggrChunk(c *storepb.AggrChunk, raw []byte, want []storepb.Aggr) error {
	if len(raw) == 0 {
		return errors.New("empty chunk")
	}
	enc, data := chunkenc.Encoding(raw[0]), raw[1:]
	if enc != chunkEncAggr {
		t, ok := EncodingToPB(enc)
		if !ok {
			return errors.Newf("chunk encoding %s has no StoreAPI name", enc)
		}
		c.Raw = &storepb.Chunk{Type: t, Data: data}
		return nil
	}
	parts, err := splitAggrChunk(data)
	if err != nil {
		return err
	}
	if len(want) == 0 {
		want = []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM, storepb.Aggr_MIN, storepb.Aggr_MAX, storepb.Aggr_COUNTER}
	}
	for _, a := range want {
		var dst **storepb.Chunk
		switch a {
		case storepb.Aggr_COUNT:
			dst = &c.Count
		case storepb.Aggr_SUM:
			dst = &c.Sum
		case storepb.Aggr_MIN:
			dst = &c.Min
		case storepb.Aggr_MAX:
			dst = &c.Max
		case storepb.Aggr_COUNTER:
			dst = &c.Counter
		default:
			return errors.Newf("unknown aggregate %s", a)
		}
		p := parts[aggrIndex(a)]
		if p == nil {
			continue
		}
		t, ok := EncodingToPB(chunkenc.Encoding(p[0]))
		if !ok {
			return errors.Newf("aggregate %s: chunk encoding %d has no StoreAPI name", a, p[0])
		}
		*dst = &storepb.Chunk{Type: t, Data: p[1:]}
	}
	return nil
}

// aggrIndex is the position of an aggregate in Thanos's aggregate chunk: count, sum, min, max, counter.
func aggrIndex(a storepb.Aggr) int {
	switch a {
	case storepb.Aggr_COUNT:
		return 0
	case storepb.Aggr_SUM:
		return 1
	case storepb.Aggr_MIN:
		return 2
	case storepb.Aggr_MAX:
		return 3
	}
	return 4
}

// splitAggrChunk splits Thanos's aggregate chunk (five entries: uvarint length of the chunk data, 0 for an
// absent aggregate, then encoding byte and data) into the encoding+data of each aggregate (nil when absent).
func splitAggrChunk(b []byte) ([5][]byte, error) {
	var out [5][]byte
	for i := range out {
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return out, errors.New("invalid aggregate chunk: bad length")
		}
		b = b[n:]
		if l == 0 {
			continue
		}
		if l >= uint64(len(b)) { // the entry is l+1 bytes: encoding and data

			return out, errors.New("invalid aggregate chunk: truncated")
		}
		out[i] = b[: l+1 : l+1]
		b = b[l+1:]
	}
	return out, nil
}

// mergeSeriesResults merges the series of several blocks (MergeSeries).
func mergeSeriesResults(parts [][]seriesResult) []*storepb.Series {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	slab := make([]storepb.Series, n)
	all := make([]*storepb.Series, 0, n)
	for _, p := range parts {
		for _, r := range p {
			s := &slab[len(all)]
			s.Labels, s.Chunks = r.lset, r.chunks
			all = append(all, s)
		}
	}
	return MergeSeries(all)
}

// selectedBlock is a block a request reads, with the matchers left for its index.
type selectedBlock struct {
	b  *bucketBlock
	ms []*labels.Matcher
}

// forEachBlock runs f on each selected block, at most concurrency at a time, and returns the first error.
func forEachBlock(ctx context.Context, blocks []selectedBlock, concurrency int, f func(ctx context.Context, i int, sb selectedBlock) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		once sync.Once
		ferr error
		sem  = make(chan struct{}, max(1, concurrency))
	)
	for i, sb := range blocks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, i, sb); err != nil {
				once.Do(func() { ferr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if ferr == nil && ctx.Err() != nil {
		// The caller's context ended.
		return ctx.Err()
	}
	return ferr
}

// grpcError turns an error of reading blocks into a gRPC status error.
func grpcError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	var st interface{ GRPCStatus() *status.Status }
	if errors.As(err, &st) {
		return status.Error(st.GRPCStatus().Code(), err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Series implements thanos.Store over the blocks of the request's tenants.
func (s *BucketStore) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	ctx := srv.Context()
	tenants, err := requestTenants(ctx)
	if err != nil {
		return err
	}
	ms, err := MatchersFromPB(req.GetMatchers())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var bms []*labels.Matcher
	if h := req.GetHints(); h != nil {
		var hints hintspb.SeriesRequestHints
		if err := h.UnmarshalTo(&hints); err != nil {
			return status.Errorf(codes.InvalidArgument, "decode request hints: %v", err)
		}
		if bms, err = MatchersFromPB(hints.GetBlockMatchers()); err != nil {
			return status.Errorf(codes.InvalidArgument, "block matchers: %v", err)
		}
	}
	var (
		selected []selectedBlock
		queried  []*hintspb.Block
		lim      = &queryLimiter{}
	)
	for _, tenant := range tenants {
		l := s.limits(tenant)
		lim.maxSeries = max(lim.maxSeries, int64(l.MaxFetchedSeriesPerQuery))
		lim.maxChunkBytes = max(lim.maxChunkBytes, int64(l.MaxFetchedChunkBytesPerQuery))
		blocks, considered, release := s.blocksFor(tenant, req.GetMinTime(), req.GetMaxTime(), req.GetMaxResolutionWindow(), false, bms)
		defer release()
		for _, b := range considered {
			queried = append(queried, &hintspb.Block{Id: b.id().String()})
		}
		for _, b := range blocks {
			ok, rest := matchExternalLabels(ms, b.ext)
			if !ok {
				continue
			}
			if len(rest) == 0 {
				return status.Error(codes.InvalidArgument, "no matchers specified (excluding external labels)")
			}
			selected = append(selected, selectedBlock{b: b, ms: rest})
		}
	}
	parts := make([][]seriesResult, len(selected))
	stats := make([]queryStats, len(selected))
	err = forEachBlock(ctx, selected, s.cfg.BlockQueryConcurrency, func(ctx context.Context, i int, sb selectedBlock) error {
		res, err := s.blockSeries(ctx, sb.b, sb.ms, req, lim, &stats[i])
		parts[i] = res
		return err
	})
	s.metrics.seriesRequests.WithLabelValues(outcome(err)).Inc()
	if err != nil {
		return grpcError(err)
	}
	s.metrics.blocksQueried.Add(float64(len(selected)))
	out := mergeSeriesResults(parts)
	if err := lim.checkSeries(len(out)); err != nil {
		return err
	}
	if req.GetLimit() > 0 && int64(len(out)) > req.GetLimit() {
		out = out[:req.GetLimit()]
	}
	sender := newSeriesSender(srv, req.GetResponseBatchSize())
	for _, series := range out {
		if err := sender.Series(series); err != nil {
			return err
		}
	}
	if err := sender.Flush(); err != nil {
		return err
	}
	anyHints, err := anypb.New(&hintspb.SeriesResponseHints{QueriedBlocks: queried})
	if err != nil {
		return status.Errorf(codes.Internal, "encode response hints: %v", err)
	}
	return srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Hints{Hints: anyHints}})
}

// labelBlocks selects the blocks of a label request and the matchers left for each.
func (s *BucketStore) labelBlocks(ctx context.Context, pbms []*storepb.LabelMatcher, h *anypb.Any, hints interface {
	GetBlockMatchers() []*storepb.LabelMatcher
}, unmarshal func(*anypb.Any) error, start, end int64) ([]selectedBlock, []*hintspb.Block, func(), error) {
	tenants, err := requestTenants(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	ms, err := MatchersFromPB(pbms)
	if err != nil {
		return nil, nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var bms []*labels.Matcher
	if h != nil {
		if err := unmarshal(h); err != nil {
			return nil, nil, nil, status.Errorf(codes.InvalidArgument, "decode request hints: %v", err)
		}
		if bms, err = MatchersFromPB(hints.GetBlockMatchers()); err != nil {
			return nil, nil, nil, status.Errorf(codes.InvalidArgument, "block matchers: %v", err)
		}
	}
	if end == 0 {
		end = maxTime
	}
	var (
		selected []selectedBlock
		queried  []*hintspb.Block
		releases []func()
	)
	for _, tenant := range tenants {
		// Label queries read every block in range, whatever its resolution.
		blocks, considered, release := s.blocksFor(tenant, start, end, 0, true, bms)
		releases = append(releases, release)
		for _, b := range considered {
			queried = append(queried, &hintspb.Block{Id: b.id().String()})
		}
		for _, b := range blocks {
			if ok, rest := matchExternalLabels(ms, b.ext); ok {
				selected = append(selected, selectedBlock{b: b, ms: rest})
			}
		}
	}
	return selected, queried, func() {
		for _, r := range releases {
			r()
		}
	}, nil
}

// LabelNames implements thanos.Store: the label names of the series in range (external labels included).
func (s *BucketStore) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	var hints hintspb.LabelNamesRequestHints
	selected, queried, release, err := s.labelBlocks(ctx, req.GetMatchers(), req.GetHints(), &hints, func(a *anypb.Any) error { return a.UnmarshalTo(&hints) }, req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, err
	}
	defer release()
	sets := make([][]string, len(selected))
	err = forEachBlock(ctx, selected, s.cfg.BlockQueryConcurrency, func(ctx context.Context, i int, sb selectedBlock) error {
		names, err := s.blockLabelNames(ctx, sb)
		sets[i] = names
		return err
	})
	if err != nil {
		return nil, grpcError(err)
	}
	var all []string
	for _, ns := range sets {
		all = append(all, ns...)
	}
	resp := &storepb.LabelNamesResponse{Names: sortedUnique(all, req.GetLimit())}
	if resp.Hints, err = anypb.New(&hintspb.LabelNamesResponseHints{QueriedBlocks: queried}); err != nil {
		return nil, status.Errorf(codes.Internal, "encode response hints: %v", err)
	}
	return resp, nil
}

func (s *BucketStore) blockLabelNames(ctx context.Context, sb selectedBlock) ([]string, error) {
	hdr, release, err := sb.b.header.Acquire(ctx)
	if err != nil {
		return nil, errors.Wrapf(err, "load index-header of block %s", sb.b.id())
	}
	defer release()
	var names []string
	if len(sb.ms) == 0 {
		names = slices.Clone(hdr.LabelNames())
	} else {
		lsets, err := s.blockLabelSets(ctx, sb, hdr)
		if err != nil {
			return nil, err
		}
		seen := map[string]struct{}{}
		for _, ls := range lsets {
			ls.Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
		}
		for n := range seen {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	sb.b.ext.Range(func(l labels.Label) { names = append(names, l.Name) })
	return names, nil
}

// blockLabelSets returns the label sets (without external labels) of the block's series matching sb.ms.
func (s *BucketStore) blockLabelSets(ctx context.Context, sb selectedBlock, hdr *indexheader.Reader) ([]labels.Labels, error) {
	var stats queryStats
	refs, err := sb.b.expandedPostings(ctx, hdr, sb.ms, &stats)
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	entries, err := sb.b.seriesEntries(ctx, hdr, refs, &stats)
	if err != nil {
		return nil, err
	}
	dec := index.Decoder{LookupSymbol: hdr.LookupSymbol}
	builder := labels.NewScratchBuilder(8)
	out := make([]labels.Labels, 0, len(entries))
	for i, e := range entries {
		if err := dec.Series(e, &builder, nil); err != nil {
			return nil, errors.Wrapf(err, "decode series %d of block %s", refs[i], sb.b.id())
		}
		out = append(out, builder.Labels())
	}
	return out, nil
}

// LabelValues implements thanos.Store. For an external label the value is the block's own.
func (s *BucketStore) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if req.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	var hints hintspb.LabelValuesRequestHints
	selected, queried, release, err := s.labelBlocks(ctx, req.GetMatchers(), req.GetHints(), &hints, func(a *anypb.Any) error { return a.UnmarshalTo(&hints) }, req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, err
	}
	defer release()
	name := req.GetLabel()
	sets := make([][]string, len(selected))
	err = forEachBlock(ctx, selected, s.cfg.BlockQueryConcurrency, func(ctx context.Context, i int, sb selectedBlock) error {
		hdr, release, err := sb.b.header.Acquire(ctx)
		if err != nil {
			return errors.Wrapf(err, "load index-header of block %s", sb.b.id())
		}
		defer release()
		if v := sb.b.ext.Get(name); v != "" {
			if len(sb.ms) == 0 {
				sets[i] = []string{v}
				return nil
			}
			lsets, err := s.blockLabelSets(ctx, sb, hdr)
			if len(lsets) > 0 {
				sets[i] = []string{v}
			}
			return err
		}
		if len(sb.ms) == 0 {
			sets[i] = slices.Clone(hdr.LabelValues(name))
			return nil
		}
		lsets, err := s.blockLabelSets(ctx, sb, hdr)
		for _, ls := range lsets {
			if v := ls.Get(name); v != "" {
				sets[i] = append(sets[i], v)
			}
		}
		return err
	})
	if err != nil {
		return nil, grpcError(err)
	}
	var all []string
	for _, vs := range sets {
		all = append(all, vs...)
	}
	resp := &storepb.LabelValuesResponse{Values: sortedUnique(all, req.GetLimit())}
	if resp.Hints, err = anypb.New(&hintspb.LabelValuesResponseHints{QueriedBlocks: queried}); err != nil {
		return nil, status.Errorf(codes.Internal, "encode response hints: %v", err)
	}
	return resp, nil
}
