package store

import (
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// AggrChunk is a downsampled chunk as a store sent it: the aggregates it asked for, each a decoded chunk (nil
// when absent). It is a chunkenc.Chunk through the first aggregate present, so code that only counts bytes or
// samples works on it; readers that know aggregates (the querier) pick the one they need.
type AggrChunk struct {
	chunkenc.Chunk
	Count, Sum, Min, Max, Counter chunkenc.Chunk
}

// Size is the bytes of every aggregate the chunk holds.
func (c *AggrChunk) Size() int {
	n := 0
	for _, a := range []chunkenc.Chunk{c.Count, c.Sum, c.Min, c.Max, c.Counter} {
		if a != nil {
			n += len(a.Bytes())
		}
	}
	return n
}

// aggrChunkFromPB decodes the aggregates of a wire chunk without raw data; nil when it has none.
func aggrChunkFromPB(c *storepb.AggrChunk) (*AggrChunk, error) {
	out := &AggrChunk{}
	for _, a := range []struct {
		name string
		pb   *storepb.Chunk
		dst  *chunkenc.Chunk
	}{
		{"count", c.GetCount(), &out.Count}, {"sum", c.GetSum(), &out.Sum}, {"min", c.GetMin(), &out.Min},
		{"max", c.GetMax(), &out.Max}, {"counter", c.GetCounter(), &out.Counter},
	} {
		if a.pb == nil {
			continue
		}
		enc, ok := EncodingFromPB(a.pb.GetType())
		if !ok {
			return nil, errors.Newf("aggregate %s: unknown chunk encoding %d", a.name, a.pb.GetType())
		}
		chk, err := chunkenc.FromData(enc, a.pb.GetData())
		if err != nil {
			return nil, errors.Wrapf(err, "decode aggregate %s", a.name)
		}
		*a.dst = chk
		if out.Chunk == nil {
			out.Chunk = chk
		}
	}
	if out.Chunk == nil {
		return nil, nil // none of the aggregates asked for: a store-gateway's downsampled chunk may lack the counter
	}
	return out, nil
}

// toPB encodes the chunk's aggregates for the wire.
func (c *AggrChunk) toPB(minT, maxT int64) (*storepb.AggrChunk, error) {
	out := &storepb.AggrChunk{MinTime: minT, MaxTime: maxT}
	for _, a := range []struct {
		chk chunkenc.Chunk
		dst **storepb.Chunk
	}{{c.Count, &out.Count}, {c.Sum, &out.Sum}, {c.Min, &out.Min}, {c.Max, &out.Max}, {c.Counter, &out.Counter}} {
		if a.chk == nil {
			continue
		}
		enc, ok := EncodingToPB(a.chk.Encoding())
		if !ok {
			return nil, errors.Newf("chunk encoding %s has no StoreAPI name", a.chk.Encoding())
		}
		*a.dst = &storepb.Chunk{Type: enc, Data: a.chk.Bytes()}
	}
	return out, nil
}
