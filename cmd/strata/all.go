package main

import (
	"context"
	"math"

	"github.com/stratametrics/strata/pkg/query/frontend"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// allStoreAPI is what the gRPC StoreAPI of `strata all` is made of: the ingester's store, asked by the queriers of
// the ring, and the merged view (ingesters and store-gateways, as `strata querier` serves it) for everyone else.
type allStoreAPI struct {
	ingester *store.TSDBStore
}

// soleInstanceInfo is the Info of a component of this process while it is the only instance in its ring, and so
// holds all the data of the merged view. With other instances (several `strata all` in one ring) each holds a
// share; the range and label sets are then unknown (unbounded, none), so that no querier rules the view out.
type soleInstanceInfo struct {
	infopb.UnimplementedInfoServer
	local infopb.InfoServer
	ring  interface{ InstancesCount() int } // the component's ring
}

func (i soleInstanceInfo) Info(ctx context.Context, r *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	if i.ring != nil && i.ring.InstancesCount() > 1 {
		return &infopb.InfoResponse{Store: &infopb.StoreInfo{MinTime: math.MinInt64, MaxTime: math.MaxInt64}}, nil
	}
	return i.local.Info(ctx, r)
}

// runAll runs every component in one process, with a filesystem bucket under <data-dir>/bucket unless another
// bucket is configured. The distributor writes to the in-process ingester directly. The gRPC port serves the
// ingester's writes, and a StoreAPI that a Thanos querier (or a Strata querier's --endpoint) sees as the merged
// view of the recent data and the bucket's blocks.
func runAll(p *process) error {
	p.storeAPI, p.frontInProcess = &allStoreAPI{}, true
	err := setupAll(p, (*process).mkDataDir, setupServers, setupBucket, setupIngesterRing,
		setupIngester, setupDistributor, setupGatewayRing, setupStoreGateway, setupQuerier, setupAllQueryFrontend, setupCompactor)
	if err != nil {
		return err
	}
	// The merged Info is this process's ingester and store-gateway: the proxy's own Info cannot tell the bucket's
	// time range and label sets (it asks the store-gateways per request).
	infos := []infopb.InfoServer{soleInstanceInfo{local: p.storeAPI.ingester, ring: p.ingesterRing.client}}
	if p.localGateway != nil {
		infos = append(infos, soleInstanceInfo{local: p.gateway.Store(), ring: p.gatewayRing})
	}
	scoped := store.NewScopedServer(p.storeAPI.ingester, p.proxy, infos...)
	storepb.RegisterStoreServer(p.srv.GRPC(), scoped)
	infopb.RegisterInfoServer(p.srv.GRPC(), metadataInfo{scoped})
	return nil
}

// setupAllQueryFrontend puts the query-frontend on the public HTTP API, in front of the in-process querier, which
// it calls without a connection (the same HTTP request as to a remote querier).
func setupAllQueryFrontend(p *process) error {
	m := frontend.NewMetrics(p.reg)
	return setupQueryFrontend(p, frontend.NewInProcessDownstream(p.cfg.Auth.ClusterSecretHandler(p.querierAPI), m), m)
}
