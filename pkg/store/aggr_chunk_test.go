package store

import (
	"context"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// A downsampled series decodes into *AggrChunk metas (the querier reads them) and encodes back unchanged, so the
// proxy's own Series passes aggregates through.
func TestSeriesFromPB_AggrChunks(t *testing.T) {
	xor := func(vs ...float64) *storepb.Chunk {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		testutil.Ok(t, err)
		for i, v := range vs {
			app.Append(0, int64(i+1)*300_000-1, v)
		}
		return &storepb.Chunk{Type: storepb.Chunk_XOR, Data: c.Bytes()}
	}
	for _, tc := range []struct {
		name    string
		chunk   *storepb.AggrChunk
		wantErr string
	}{
		{name: "count and sum", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999, Count: xor(20, 20), Sum: xor(100, 140)}},
		{name: "every aggregate", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999, Count: xor(20, 20), Sum: xor(100, 140), Min: xor(1, 2), Max: xor(9, 8), Counter: xor(5, 7)}},
		{name: "counter only", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999, Counter: xor(5, 7)}},
		{name: "none of the aggregates asked for: skipped", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999}},
		{name: "bad aggregate", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999, Sum: &storepb.Chunk{Type: storepb.Chunk_Encoding(99), Data: []byte{0, 0}}}, wantErr: "aggregate sum: unknown chunk encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &storepb.Series{Labels: LabelsToPB(labels.FromStrings("__name__", "m")), Chunks: []*storepb.AggrChunk{tc.chunk}}
			cs, err := seriesFromPB(in)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not name %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			it := cs.Iterator(nil)
			if tc.chunk.GetCount() == nil && tc.chunk.GetSum() == nil && tc.chunk.GetCounter() == nil {
				testutil.Assert(t, !it.Next(), "an empty chunk was kept")
				return
			}
			testutil.Assert(t, it.Next(), "no chunk")
			_, ok := it.At().Chunk.(*AggrChunk)
			testutil.Assert(t, ok, "chunk is %T, not *AggrChunk", it.At().Chunk)
			out, err := seriesToPB(cs, false)
			testutil.Ok(t, err)
			testutil.Assert(t, proto.Equal(in, out), "round trip changed the series:\n%v\n%v", in, out)
		})
	}
}

// The proxy's series sets carry a store-gateway's downsampled chunks as *AggrChunk with the aggregates asked
// for, next to the raw chunks that fill the gaps; a chunk lacking the one aggregate asked for is left out.
func TestProxySeriesSets_DownsampledBlocks(t *testing.T) {
	f := newAggrFixture(t)
	c := serve(t, newTestBucketStore(t, f.bkt, bucketStoreOpts{}))
	p := NewProxy(func() []StoreClient { return []StoreClient{c} }, 0, log.NewNopLogger(), nil)
	ms := []*storepb.LabelMatcher{lm(EQ, "__name__", "m")}
	for _, tc := range []struct {
		name      string
		aggrs     []storepb.Aggr
		wantAggrs int
		check     func(t *testing.T, i int, a *AggrChunk)
	}{
		{name: "count and sum", aggrs: []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}, wantAggrs: 2, check: func(t *testing.T, i int, a *AggrChunk) {
			testutil.Equals(t, f.written[i].count, chunkFloats(t, a.Count))
			testutil.Equals(t, f.written[i].sum, chunkFloats(t, a.Sum))
			testutil.Assert(t, a.Min == nil && a.Max == nil && a.Counter == nil, "only count and sum")
		}},
		{name: "counter: the second chunk has none", aggrs: []storepb.Aggr{storepb.Aggr_COUNTER}, wantAggrs: 1, check: func(t *testing.T, i int, a *AggrChunk) {
			testutil.Equals(t, f.written[i].counter, chunkFloats(t, a.Counter))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets, err := p.SeriesSets(context.Background(), []string{"a"}, &storepb.SeriesRequest{MinTime: 0, MaxTime: 6 * hour, Matchers: ms, MaxResolutionWindow: 300_000, Aggregates: tc.aggrs})
			testutil.Ok(t, err)
			testutil.Equals(t, 1, len(sets))
			testutil.Assert(t, sets[0].Next(), "no series: %v", sets[0].Err())
			it := sets[0].At().Iterator(nil)
			var aggrs, raws int
			for it.Next() {
				m := it.At()
				if a, ok := m.Chunk.(*AggrChunk); ok {
					tc.check(t, aggrs, a)
					aggrs++
					continue
				}
				testutil.Assert(t, m.MinTime >= 4*hour, "raw chunk [%d, %d] where the 5m block has data", m.MinTime, m.MaxTime)
				raws++
			}
			testutil.Ok(t, it.Err())
			testutil.Equals(t, tc.wantAggrs, aggrs)
			testutil.Assert(t, raws > 0, "raw chunks fill [4h, 6h)")
			testutil.Assert(t, !sets[0].Next(), "one series")
			testutil.Ok(t, sets[0].Err())
		})
	}
}

func chunkFloats(t *testing.T, c chunkenc.Chunk) []sample {
	t.Helper()
	var out []sample
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		out = append(out, sample{t: ts, v: v})
	}
	testutil.Ok(t, it.Err())
	return out
}
