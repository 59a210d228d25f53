package compact

import (
	"encoding/binary"
	"math"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// ChunkEncAggr is the chunk encoding of Thanos's aggregate chunks, the chunks of downsampled blocks.
const ChunkEncAggr = chunkenc.Encoding(0xff)

// aggrType is the position of an aggregate in an aggregate chunk; the order is Thanos's.
type aggrType int

const (
	aggrCount aggrType = iota
	aggrSum
	aggrMin
	aggrMax
	aggrCounter
	numAggrs
)

var aggrNames = [numAggrs]string{"count", "sum", "min", "max", "counter"}

// errAggrAbsent is returned by aggrChunk.get for an aggregate the chunk does not hold.
var errAggrAbsent = errors.New("aggregate not in chunk")

// aggrChunk is Thanos's aggregate chunk (encoding 0xff): for count, sum, min, max and counter in that order, the
// uvarint length of the aggregate's chunk data (0 when absent), then the chunk's encoding byte and data. It is
// a chunkenc.Chunk only so that the TSDB's chunk reader and writer carry it; it has no iterator or appender.
type aggrChunk []byte

// encodeAggrChunk encodes the aggregate chunks (nil when absent) into one aggregate chunk.
func encodeAggrChunk(parts [numAggrs]chunkenc.Chunk) aggrChunk {
	n := 0
	for _, p := range parts {
		if p != nil {
			n += binary.MaxVarintLen32 + 1 + len(p.Bytes())
		} else {
			n++
		}
	}
	b := make([]byte, 0, n)
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

// get decodes one aggregate; errAggrAbsent when the chunk does not hold it.
func (c aggrChunk) get(t aggrType) (chunkenc.Chunk, error) {
	b := []byte(c)
	for i := aggrType(0); i <= t; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.Newf("aggregate chunk: bad length of %s", aggrNames[i])
		}
		b = b[n:]
		if l == 0 {
			if i == t {
				return nil, errAggrAbsent
			}
			continue
		}
		if uint64(len(b)) < l+1 {
			return nil, errors.Newf("aggregate chunk: %s longer than the chunk", aggrNames[i])
		}
		if i == t {
			chk, err := chunkenc.FromData(chunkenc.Encoding(b[0]), b[1:l+1])
			if err != nil {
				return nil, errors.Wrapf(err, "aggregate chunk: decode %s", aggrNames[i])
			}
			return chk, nil
		}
		b = b[l+1:]
	}
	return nil, errAggrAbsent
}

func (c aggrChunk) Bytes() []byte               { return c }
func (c aggrChunk) Encoding() chunkenc.Encoding { return ChunkEncAggr }
func (c aggrChunk) Appender() (chunkenc.Appender, error) {
	return nil, errors.New("aggregate chunk: read only")
}
func (c aggrChunk) Iterator(chunkenc.Iterator) chunkenc.Iterator { return chunkenc.NewNopIterator() }
func (c aggrChunk) Compact()                                     {}
func (c aggrChunk) Reset([]byte)                                 {}

// NumSamples is the number of windows (samples of the count aggregate), as in Thanos.
func (c aggrChunk) NumSamples() int {
	cnt, err := c.get(aggrCount)
	if err != nil {
		return 0
	}
	return cnt.NumSamples()
}

// aggrPool is the chunk pool of the TSDB's chunk reader for downsampled blocks: aggregate chunks are returned as
// aggrChunk over the reader's bytes, any other encoding as the TSDB decodes it.
type aggrPool struct{ chunkenc.Pool }

func (p aggrPool) Get(e chunkenc.Encoding, b []byte) (chunkenc.Chunk, error) {
	if e == ChunkEncAggr {
		return aggrChunk(b), nil
	}
	return p.Pool.Get(e, b)
}

func (p aggrPool) Put(c chunkenc.Chunk) error {
	if _, ok := c.(aggrChunk); ok {
		return nil
	}
	return p.Pool.Put(c)
}

// counterResetsIterator iterates over the counter aggregates of consecutive aggregate chunks (Thanos's
// ApplyCounterResetsSeriesIterator) and yields one monotonic counter. Each counter aggregate starts with the
// raw first value of the chunk's data and ends with a repeat of its last timestamp holding the raw last value;
// comparing a chunk's raw last value with the next chunk's raw first value finds the resets between chunks.
// Samples going back in time are skipped.
type counterResetsIterator struct {
	chks  []chunkenc.Iterator
	i     int
	total int     // samples yielded
	lastT int64   // timestamp of the last sample
	lastV float64 // raw value of the last sample (the raw last value after a chunk's repeated timestamp)
	sumV  float64 // the counter with resets applied
	err   error
}

func newCounterResetsIterator(chks ...chunkenc.Iterator) *counterResetsIterator {
	return &counterResetsIterator{chks: chks}
}

func (it *counterResetsIterator) Next() chunkenc.ValueType {
	for it.i < len(it.chks) {
		c := it.chks[it.i]
		vt := c.Next()
		if vt == chunkenc.ValNone {
			if err := c.Err(); err != nil {
				it.err = err
				return chunkenc.ValNone
			}
			it.i++
			continue
		}
		if vt != chunkenc.ValFloat {
			it.err = errors.Newf("counter aggregate holds %s values", vt)
			return chunkenc.ValNone
		}
		t, v := c.At()
		if math.IsNaN(v) {
			continue
		}
		switch {
		case it.total == 0:
			it.sumV = v
		case t > it.lastT:
			if v >= it.lastV {
				it.sumV += v - it.lastV
			} else {
				it.sumV += v // a reset: the counter restarted from 0
			}
		case t == it.lastT:
			it.lastV = v // the raw last value of a chunk: no sample, the base for the next chunk
			continue
		default:
			continue // back in time (overlapping chunks)
		}
		it.total++
		it.lastT, it.lastV = t, v
		return chunkenc.ValFloat
	}
	return chunkenc.ValNone
}

func (it *counterResetsIterator) Seek(t int64) chunkenc.ValueType {
	for it.total == 0 || it.lastT < t {
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
	return chunkenc.ValFloat
}

func (it *counterResetsIterator) At() (int64, float64) { return it.lastT, it.sumV }
func (it *counterResetsIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	panic("counterResetsIterator: no histograms")
}

func (it *counterResetsIterator) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	panic("counterResetsIterator: no histograms")
}
func (it *counterResetsIterator) AtT() int64  { return it.lastT }
func (it *counterResetsIterator) AtST() int64 { return 0 }
func (it *counterResetsIterator) Err() error  { return it.err }

// expandFloats appends the float samples of it to buf, without stale markers and samples going back in time.
// A histogram sample is an error.
func expandFloats(it chunkenc.Iterator, buf []sample) ([]sample, error) {
	lastT := int64(math.MinInt64)
	for {
		vt := it.Next()
		if vt == chunkenc.ValNone {
			break
		}
		if vt != chunkenc.ValFloat {
			return buf, errors.Newf("%s sample in a float chunk", vt)
		}
		t, v := it.At()
		if value.IsStaleNaN(v) || t < lastT {
			continue
		}
		buf = append(buf, sample{t: t, v: v})
		lastT = t
	}
	return buf, it.Err()
}
