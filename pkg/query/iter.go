package query

import (
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// chunksIterator iterates the samples of one store's series — its chunks, in time order — within [mint, maxt],
// as Prometheus's own block querier trims them. A sample not after the previous one (overlapping chunks) is
// skipped.
type chunksIterator struct {
	metas      []chunks.Meta
	mint, maxt int64
	// aggrs, when set, is the aggregate read of downsampled chunks (see aggrChunkIterator).
	aggrs []storepb.Aggr

	cur     chunkenc.Iterator
	reuse   chunkenc.Iterator
	typ     chunkenc.ValueType
	started bool
	lastT   int64
	err     error
}

func newChunksIterator(metas []chunks.Meta, mint, maxt int64) *chunksIterator {
	return &chunksIterator{metas: metas, mint: mint, maxt: maxt}
}

// from is the first time the next sample may have.
func (it *chunksIterator) from() int64 {
	if it.started {
		return it.lastT + 1
	}
	return it.mint
}

// nextChunk opens the next chunk that may hold samples at or after t; false when there is none in range.
func (it *chunksIterator) nextChunk(t int64) bool {
	for len(it.metas) > 0 && it.metas[0].MaxTime < t {
		it.metas = it.metas[1:]
	}
	if len(it.metas) == 0 || it.metas[0].MinTime > it.maxt {
		it.metas = nil
		return false
	}
	if it.aggrs != nil {
		for len(it.metas) > 0 && it.metas[0].MinTime <= it.maxt {
			it.cur = aggrChunkIterator(it.metas[0].Chunk, it.aggrs)
			it.metas = it.metas[1:]
			if it.cur != nil {
				return true
			}
		}
		it.metas = nil
		return false
	}
	it.cur = it.metas[0].Chunk.Iterator(it.reuse)
	it.reuse = it.cur
	it.metas = it.metas[1:]
	return true
}

func (it *chunksIterator) done() chunkenc.ValueType {
	it.typ = chunkenc.ValNone
	it.cur, it.metas = nil, nil
	return chunkenc.ValNone
}

// accept checks the sample the current chunk iterator is on: skip (false, ValNone), end, or take it.
func (it *chunksIterator) accept(typ chunkenc.ValueType) (chunkenc.ValueType, bool) {
	t := it.cur.AtT()
	if t < it.mint || it.started && t <= it.lastT {
		return chunkenc.ValNone, false
	}
	if t > it.maxt {
		return it.done(), true
	}
	it.started, it.lastT, it.typ = true, t, typ
	return typ, true
}

func (it *chunksIterator) Next() chunkenc.ValueType {
	for {
		if it.cur == nil {
			if !it.nextChunk(it.from()) {
				return it.done()
			}
		}
		typ := it.cur.Next()
		if typ == chunkenc.ValNone {
			if err := it.cur.Err(); err != nil {
				it.err = err
				return it.done()
			}
			it.cur = nil
			continue
		}
		if v, ok := it.accept(typ); ok {
			return v
		}
	}
}

func (it *chunksIterator) Seek(t int64) chunkenc.ValueType {
	if it.started && it.typ != chunkenc.ValNone && it.lastT >= t {
		return it.typ
	}
	if it.err != nil {
		return chunkenc.ValNone
	}
	t = max(t, it.from())
	for {
		if it.cur == nil {
			if !it.nextChunk(t) {
				return it.done()
			}
		}
		typ := it.cur.Seek(t)
		if typ == chunkenc.ValNone {
			if err := it.cur.Err(); err != nil {
				it.err = err
				return it.done()
			}
			it.cur = nil
			continue
		}
		if v, ok := it.accept(typ); ok {
			return v
		}
		// Not after the previous sample: step on.
		for {
			typ = it.cur.Next()
			if typ == chunkenc.ValNone {
				break
			}
			if v, ok := it.accept(typ); ok {
				return v
			}
		}
		if err := it.cur.Err(); err != nil {
			it.err = err
			return it.done()
		}
		it.cur = nil
	}
}

func (it *chunksIterator) At() (int64, float64) { return it.cur.At() }

func (it *chunksIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.cur.AtHistogram(h)
}

func (it *chunksIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.cur.AtFloatHistogram(fh)
}

func (it *chunksIterator) AtT() int64  { return it.lastT }
func (it *chunksIterator) AtST() int64 { return it.cur.AtST() }
func (it *chunksIterator) Err() error  { return it.err }
