package sidecar

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// Store is the sidecar's StoreAPI: a store.TSDBStore over Prometheus (see promDB) that answers Unavailable until
// Prometheus's external labels are read. Before that its series would lack them, and a querier would cache an
// Info without them, ruling the sidecar out of queries that name them.
type Store struct {
	*store.TSDBStore
	ready func() bool
}

var (
	_ storepb.StoreServer = (*Store)(nil)
	_ infopb.InfoServer   = (*Store)(nil)
)

func (s *Store) notReady() error {
	if s.ready() {
		return nil
	}
	return status.Error(codes.Unavailable, "sidecar not ready: Prometheus's external labels not read yet")
}

// Series implements thanos.Store.
func (s *Store) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	if err := s.notReady(); err != nil {
		return err
	}
	return s.TSDBStore.Series(r, srv)
}

// LabelNames implements thanos.Store.
func (s *Store) LabelNames(ctx context.Context, r *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	if err := s.notReady(); err != nil {
		return nil, err
	}
	return s.TSDBStore.LabelNames(ctx, r)
}

// LabelValues implements thanos.Store.
func (s *Store) LabelValues(ctx context.Context, r *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if err := s.notReady(); err != nil {
		return nil, err
	}
	return s.TSDBStore.LabelValues(ctx, r)
}

// Info implements thanos.info.Info.
func (s *Store) Info(ctx context.Context, r *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	if err := s.notReady(); err != nil {
		return nil, err
	}
	return s.TSDBStore.Info(ctx, r)
}
