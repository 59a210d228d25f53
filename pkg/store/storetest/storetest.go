// Package storetest holds what tests of several packages need to read the StoreAPI: draining a Series stream
// (client side or in process) and decoding a wire chunk. Only tests import it; it imports no strata package but
// the wire types, so that tests of pkg/store itself can use it.
package storetest

import (
	"context"
	"io"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// SeriesSet is what a Series call answered: every response in order, and their series (single or batched),
// warnings and hints.
type SeriesSet struct {
	Responses []*storepb.SeriesResponse
	Series    []*storepb.Series
	Warnings  []string
	Hints     []*anypb.Any
}

// Add records one response.
func (s *SeriesSet) Add(r *storepb.SeriesResponse) {
	s.Responses = append(s.Responses, r)
	if x := r.GetSeries(); x != nil {
		s.Series = append(s.Series, x)
	}
	s.Series = append(s.Series, r.GetBatch().GetSeries()...)
	if w := r.GetWarning(); w != "" {
		s.Warnings = append(s.Warnings, w)
	}
	if h := r.GetHints(); h != nil {
		s.Hints = append(s.Hints, h)
	}
}

// DrainSeries reads a Series stream to its end. On an error it returns what came before it.
func DrainSeries(stream storepb.Store_SeriesClient) (*SeriesSet, error) {
	out := &SeriesSet{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out.Add(r)
	}
}

// SeriesClient is the Series call of a storepb.StoreClient (or of anything that answers like one).
type SeriesClient interface {
	Series(ctx context.Context, req *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error)
}

// Series calls Series on c and drains the stream.
func Series(ctx context.Context, c SeriesClient, req *storepb.SeriesRequest) (*SeriesSet, error) {
	stream, err := c.Series(ctx, req)
	if err != nil {
		return &SeriesSet{}, err
	}
	return DrainSeries(stream)
}

// SeriesServer is an in-process storepb.Store_SeriesServer that keeps what is sent, for calling a StoreServer's
// Series directly.
type SeriesServer struct {
	storepb.Store_SeriesServer
	SeriesSet
	Ctx context.Context
}

// NewSeriesServer returns a SeriesServer whose stream context is ctx.
func NewSeriesServer(ctx context.Context) *SeriesServer { return &SeriesServer{Ctx: ctx} }

func (s *SeriesServer) Context() context.Context { return s.Ctx }
func (s *SeriesServer) Send(r *storepb.SeriesResponse) error {
	s.Add(r)
	return nil
}
func (s *SeriesServer) SetHeader(metadata.MD) error  { return nil }
func (s *SeriesServer) SendHeader(metadata.MD) error { return nil }
func (s *SeriesServer) SetTrailer(metadata.MD)       {}

// encodings maps the StoreAPI's chunk encodings to Prometheus'; it is store.EncodingFromPB, which this package
// cannot import (tests of pkg/store import this one). TestChunkFromPBEncodings in pkg/store keeps them equal.
var encodings = map[storepb.Chunk_Encoding]chunkenc.Encoding{
	storepb.Chunk_XOR:             chunkenc.EncXOR,
	storepb.Chunk_HISTOGRAM:       chunkenc.EncHistogram,
	storepb.Chunk_FLOAT_HISTOGRAM: chunkenc.EncFloatHistogram,
}

// ChunkFromPB decodes the raw chunk of a wire chunk; an aggregate-only (downsampled) chunk is an error.
func ChunkFromPB(c *storepb.AggrChunk) (chunkenc.Chunk, error) {
	if c.GetRaw() == nil {
		return nil, errors.Newf("chunk [%d, %d] without raw data", c.GetMinTime(), c.GetMaxTime())
	}
	return RawChunkFromPB(c.GetRaw())
}

// RawChunkFromPB decodes a wire chunk of any encoding the StoreAPI names.
func RawChunkFromPB(c *storepb.Chunk) (chunkenc.Chunk, error) {
	enc, ok := encodings[c.GetType()]
	if !ok {
		return nil, errors.Newf("unknown chunk encoding %d", c.GetType())
	}
	return chunkenc.FromData(enc, c.GetData())
}

// Sample is one sample of a series: its time, and its value when it is a float (zero for a histogram).
type Sample struct {
	T int64
	V float64
}

// SeriesSamples decodes the samples of a series' raw chunks, chunk by chunk.
func SeriesSamples(s *storepb.Series) ([]Sample, error) {
	var out []Sample
	for _, c := range s.GetChunks() {
		chk, err := ChunkFromPB(c)
		if err != nil {
			return nil, err
		}
		it := chk.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			smp := Sample{T: it.AtT()}
			if vt == chunkenc.ValFloat {
				_, smp.V = it.At()
			}
			out = append(out, smp)
		}
		if err := it.Err(); err != nil {
			return nil, errors.Wrap(err, "iterate chunk")
		}
	}
	return out, nil
}
