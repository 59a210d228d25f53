package store

import (
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
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
		{name: "no data at all", chunk: &storepb.AggrChunk{MinTime: 299_999, MaxTime: 599_999}, wantErr: "neither raw data nor aggregates"},
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
			testutil.Assert(t, it.Next(), "no chunk")
			_, ok := it.At().Chunk.(*AggrChunk)
			testutil.Assert(t, ok, "chunk is %T, not *AggrChunk", it.At().Chunk)
			out, err := seriesToPB(cs, false)
			testutil.Ok(t, err)
			testutil.Assert(t, proto.Equal(in, out), "round trip changed the series:\n%v\n%v", in, out)
		})
	}
}
