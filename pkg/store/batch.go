package store

import (
	"github.com/efficientgo/core/errors"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// DefaultResponseBatchSize is how many series the proxy asks each store to pack into one response message
// (Thanos's default): fewer, larger gRPC messages. Stores that predate batching ignore the field.
const DefaultResponseBatchSize = 64

// seriesSender sends a Series response stream, packing series into SeriesBatch messages when the request set
// response_batch_size > 1, as Thanos stores do. Warnings flush the pending batch first, so order is kept.
// Call Flush once at the end.
type seriesSender struct {
	srv     storepb.Store_SeriesServer
	size    int
	pending []*storepb.Series
}

func newSeriesSender(srv storepb.Store_SeriesServer, batchSize int64) *seriesSender {
	return &seriesSender{srv: srv, size: int(batchSize)}
}

func (s *seriesSender) Series(series *storepb.Series) error {
	if s.size <= 1 {
		return errors.Wrap(s.srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: series}}), "send series")
	}
	s.pending = append(s.pending, series)
	if len(s.pending) >= s.size {
		return s.Flush()
	}
	return nil
}

func (s *seriesSender) Warning(w string) error {
	if err := s.Flush(); err != nil {
		return err
	}
	return errors.Wrap(s.srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: w}}), "send warning")
}

func (s *seriesSender) Flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	err := s.srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: s.pending}}})
	s.pending = make([]*storepb.Series, 0, s.size)
	return errors.Wrap(err, "send series batch")
}
