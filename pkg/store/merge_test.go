package store

import (
	"testing"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

func TestMergeSeries(t *testing.T) {
	ls := func(kv ...string) []*labelpb.Label {
		var out []*labelpb.Label
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &labelpb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	raw := func(minT, maxT int64, data string) *storepb.AggrChunk {
		return &storepb.AggrChunk{MinTime: minT, MaxTime: maxT, Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte(data)}}
	}
	aggr := func(minT, maxT int64, count, sum string) *storepb.AggrChunk {
		return &storepb.AggrChunk{MinTime: minT, MaxTime: maxT,
			Count: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte(count)},
			Sum:   &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte(sum)}}
	}
	series := func(l []*labelpb.Label, chks ...*storepb.AggrChunk) *storepb.Series {
		return &storepb.Series{Labels: l, Chunks: chks}
	}
	a, b := ls("__name__", "up", "job", "a"), ls("__name__", "up", "job", "b")

	for _, tc := range []struct {
		name string
		in   []*storepb.Series
		want []*storepb.Series
	}{
		{
			name: "none",
			want: []*storepb.Series{},
		},
		{
			name: "sorted by labels, a shorter label set first",
			in:   []*storepb.Series{series(b, raw(0, 9, "b")), series(a, raw(0, 9, "a")), series(ls("__name__", "up"), raw(0, 9, "u"))},
			want: []*storepb.Series{series(ls("__name__", "up"), raw(0, 9, "u")), series(a, raw(0, 9, "a")), series(b, raw(0, 9, "b"))},
		},
		{
			name: "one label set from several blocks: chunks by time, an identical one kept once",
			in:   []*storepb.Series{series(a, raw(10, 19, "2"), raw(20, 29, "3")), series(b, raw(0, 9, "b")), series(a, raw(0, 9, "1"), raw(10, 19, "2"))},
			want: []*storepb.Series{series(a, raw(0, 9, "1"), raw(10, 19, "2"), raw(20, 29, "3")), series(b, raw(0, 9, "b"))},
		},
		{
			name: "same time range, different bytes: both kept, ordered by bytes whatever the order of the blocks",
			in:   []*storepb.Series{series(a, raw(0, 9, "y")), series(a, raw(0, 9, "x"))},
			want: []*storepb.Series{series(a, raw(0, 9, "x"), raw(0, 9, "y"))},
		},
		{
			name: "same bytes, different time range or encoding: not the same chunk",
			in: []*storepb.Series{series(a, raw(0, 9, "x")), series(a, raw(0, 8, "x")),
				series(a, &storepb.AggrChunk{MinTime: 0, MaxTime: 9, Raw: &storepb.Chunk{Type: storepb.Chunk_HISTOGRAM, Data: []byte("x")}})},
			want: []*storepb.Series{series(a, raw(0, 8, "x"), raw(0, 9, "x"),
				&storepb.AggrChunk{MinTime: 0, MaxTime: 9, Raw: &storepb.Chunk{Type: storepb.Chunk_HISTOGRAM, Data: []byte("x")}})},
		},
		{
			name: "identical chunks not next to each other in the blocks' order are kept once",
			in:   []*storepb.Series{series(a, raw(0, 9, "x")), series(a, raw(0, 9, "y")), series(a, raw(0, 9, "x"))},
			want: []*storepb.Series{series(a, raw(0, 9, "x"), raw(0, 9, "y"))},
		},
		{
			name: "downsampled chunks: identical aggregates kept once, different ones ordered by them",
			in:   []*storepb.Series{series(a, aggr(0, 9, "c", "s2")), series(a, aggr(0, 9, "c", "s1")), series(a, aggr(0, 9, "c", "s2"))},
			want: []*storepb.Series{series(a, aggr(0, 9, "c", "s1"), aggr(0, 9, "c", "s2"))},
		},
		{
			name: "a series alone: its chunks ordered and made unique too",
			in:   []*storepb.Series{series(a, raw(10, 19, "2"), raw(0, 9, "1"), raw(10, 19, "2"))},
			want: []*storepb.Series{series(a, raw(0, 9, "1"), raw(10, 19, "2"))},
		},
		{
			name: "labels not sorted by name: sorted, then merged with the same label set",
			in:   []*storepb.Series{series(ls("job", "a", "__name__", "up"), raw(0, 9, "1")), series(a, raw(10, 19, "2"))},
			want: []*storepb.Series{series(a, raw(0, 9, "1"), raw(10, 19, "2"))},
		},
		{
			name: "chunks skipped",
			in:   []*storepb.Series{series(b), series(a), series(a)},
			want: []*storepb.Series{series(a), series(b)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make([]*storepb.Series, len(tc.in))
			for i, s := range tc.in {
				in[i] = proto.Clone(s).(*storepb.Series)
			}
			got := MergeSeries(in)
			testutil.Equals(t, len(tc.want), len(got))
			for i := range tc.want {
				testutil.Assert(t, proto.Equal(tc.want[i], got[i]), "series %d: want %v, got %v", i, tc.want[i], got[i])
			}
			for i := range tc.in {
				testutil.Assert(t, proto.Equal(tc.in[i], in[i]), "input series %d changed: was %v, is %v", i, tc.in[i], in[i])
			}
		})
	}
}

func TestCompareChunks(t *testing.T) {
	c := func(minT, maxT int64, raw *storepb.Chunk, count *storepb.Chunk) *storepb.AggrChunk {
		return &storepb.AggrChunk{MinTime: minT, MaxTime: maxT, Raw: raw, Count: count}
	}
	xor := func(d string) *storepb.Chunk { return &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte(d)} }
	for _, tc := range []struct {
		name string
		a, b *storepb.AggrChunk
		want int
	}{
		{name: "min time first", a: c(0, 20, xor("z"), nil), b: c(1, 2, xor("a"), nil), want: -1},
		{name: "then max time", a: c(0, 3, xor("z"), nil), b: c(0, 2, xor("a"), nil), want: 1},
		{name: "then raw encoding", a: c(0, 2, &storepb.Chunk{Type: storepb.Chunk_HISTOGRAM, Data: []byte("a")}, nil), b: c(0, 2, xor("z"), nil), want: 1},
		{name: "then raw bytes", a: c(0, 2, xor("a"), nil), b: c(0, 2, xor("b"), nil), want: -1},
		{name: "no raw chunk first", a: c(0, 2, nil, xor("a")), b: c(0, 2, xor(""), nil), want: -1},
		{name: "then aggregates", a: c(0, 2, nil, xor("b")), b: c(0, 2, nil, xor("a")), want: 1},
		{name: "identical", a: c(0, 2, xor("a"), xor("b")), b: c(0, 2, xor("a"), xor("b")), want: 0},
		{name: "hash not compared", a: c(0, 2, &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte("a"), Hash: 7}, nil), b: c(0, 2, xor("a"), nil), want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, CompareChunks(tc.a, tc.b))
			testutil.Equals(t, -tc.want, CompareChunks(tc.b, tc.a))
		})
	}
}
