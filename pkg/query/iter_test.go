package query

import (
	"math"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

func xorChunk(t *testing.T, ts ...int64) chunks.Meta {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	testutil.Ok(t, err)
	for _, x := range ts {
		app.Append(0, x, float64(x))
	}
	return chunks.Meta{MinTime: ts[0], MaxTime: ts[len(ts)-1], Chunk: c}
}

func drain(it chunkenc.Iterator) []int64 {
	var out []int64
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		if float64(ts) != v || it.AtT() != ts {
			return append(out, -1)
		}
		out = append(out, ts)
	}
	return out
}

// TestChunksIterator: samples of several chunks in order, trimmed to [mint, maxt] as Prometheus's block
// querier does, overlapping samples once; Seek never goes back.
func TestChunksIterator(t *testing.T) {
	metas := func() []chunks.Meta {
		return []chunks.Meta{xorChunk(t, 10, 20, 30), xorChunk(t, 30, 40, 50), xorChunk(t, 60, 70)}
	}
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		want       []int64
	}{
		{"all", math.MinInt64, math.MaxInt64, []int64{10, 20, 30, 40, 50, 60, 70}},
		{"trimmed", 20, 60, []int64{20, 30, 40, 50, 60}},
		{"inside one chunk", 41, 49, nil},
		{"before", 0, 5, nil},
		{"after", 71, 100, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, drain(newChunksIterator(metas(), tc.mint, tc.maxt)))
		})
	}

	it := newChunksIterator(metas(), math.MinInt64, math.MaxInt64)
	testutil.Equals(t, chunkenc.ValFloat, it.Seek(35))
	testutil.Equals(t, int64(40), it.AtT())
	testutil.Equals(t, chunkenc.ValFloat, it.Seek(5)) // not backwards
	testutil.Equals(t, int64(40), it.AtT())
	testutil.Equals(t, chunkenc.ValFloat, it.Seek(55))
	testutil.Equals(t, int64(60), it.AtT())
	testutil.Equals(t, []int64{70}, drain(it))
	testutil.Equals(t, chunkenc.ValNone, it.Seek(100))

	it = newChunksIterator(metas(), 0, 45)
	testutil.Equals(t, chunkenc.ValNone, it.Seek(46))
	testutil.Ok(t, it.Err())
}

// TestCopiesIteratorOverlappingChunks: one store's series whose chunks overlap — a store-gateway sends the
// chunks of the RF replicas' blocks of one range, each of which may miss a sample the others have — yields every
// sample once, whichever chunk has it, also when several stores send such series.
func TestCopiesIteratorOverlappingChunks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		copies [][]chunks.Meta
		want   []int64
	}{
		{name: "in order, no overlap", copies: [][]chunks.Meta{{xorChunk(t, 10, 20), xorChunk(t, 30, 40)}}, want: []int64{10, 20, 30, 40}},
		{name: "replica blocks, the first misses a sample", copies: [][]chunks.Meta{{xorChunk(t, 10, 20, 40), xorChunk(t, 10, 20, 30, 40)}},
			want: []int64{10, 20, 30, 40}},
		{name: "three replicas, each misses another", copies: [][]chunks.Meta{{xorChunk(t, 20, 30, 40), xorChunk(t, 10, 30, 40), xorChunk(t, 10, 20, 40), xorChunk(t, 50, 60)}},
			want: []int64{10, 20, 30, 40, 50, 60}},
		{name: "a later chunk inside an earlier one", copies: [][]chunks.Meta{{xorChunk(t, 10, 50), xorChunk(t, 20, 30), xorChunk(t, 60)}},
			want: []int64{10, 20, 30, 50, 60}},
		{name: "two stores, one with overlapping chunks", copies: [][]chunks.Meta{{xorChunk(t, 10, 30), xorChunk(t, 10, 20, 30)}, {xorChunk(t, 40, 50)}},
			want: []int64{10, 20, 30, 40, 50}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var copies []fetchedSeries
			for _, metas := range tc.copies {
				copies = append(copies, fetchedSeries{metas: metas})
			}
			testutil.Equals(t, tc.want, drain(copiesIterator(copies, math.MinInt64, math.MaxInt64)))
		})
	}
}
