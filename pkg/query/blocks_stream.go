package query

import (
	"context"
	"io"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// seriesStream is an in-memory storepb.Store_SeriesClient: the warnings, then the series (in batches when the
// request asked for them), then err or io.EOF.
type seriesStream struct {
	ctx   context.Context
	resps []*storepb.SeriesResponse
	err   error
	next  int
}

func newSeriesStream(ctx context.Context, warnings []string, series []*storepb.Series, batchSize int, err error) *seriesStream {
	s := &seriesStream{ctx: ctx, err: err}
	for _, w := range warnings {
		s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: w}})
	}
	if batchSize <= 1 {
		for _, ser := range series {
			s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: ser}})
		}
		return s
	}
	for len(series) > 0 {
		n := min(batchSize, len(series))
		s.resps = append(s.resps, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: series[:n:n]}}})
		series = series[n:]
	}
	return s
}

func (s *seriesStream) Recv() (*storepb.SeriesResponse, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, statusFromContext(err)
	}
	if s.next < len(s.resps) {
		r := s.resps[s.next]
		s.resps[s.next] = nil
		s.next++
		return r, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

func (s *seriesStream) RecvMsg(m any) error {
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	dst, ok := m.(*storepb.SeriesResponse)
	if !ok {
		return errors.Newf("blocks store stream: cannot receive into %T", m)
	}
	proto.Reset(dst)
	proto.Merge(dst, resp)
	return nil
}

func (s *seriesStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (s *seriesStream) Trailer() metadata.MD         { return metadata.MD{} }
func (s *seriesStream) CloseSend() error             { return nil }
func (s *seriesStream) Context() context.Context     { return s.ctx }
func (s *seriesStream) SendMsg(any) error            { return nil }
