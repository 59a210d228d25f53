package main

import (
	"context"
	"sync"

	"github.com/efficientgo/core/errors"
	dskitring "github.com/grafana/dskit/ring"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
)

// newMetadataQuerier returns the querier of the metric metadata the ring's ingesters hold: each asked over its
// thanos.Metadata gRPC service, or directly for an ingester of this process (strata all).
func newMetadataQuerier(p *process) *query.MetadataQuerier {
	r := p.ingesterRing
	if r == nil {
		return nil
	}
	replicas := ingesterReadReplicas(p)
	conn := ingesterConns(p)
	dial := func(addr string) (query.MetadataReader, error) {
		if ing, ok := r.local[addr]; ok {
			return ing, nil
		}
		c, err := conn(addr)
		if err != nil {
			return nil, err
		}
		return query.GRPCMetadataReader(metadatapb.NewMetadataClient(c)), nil
	}
	q := query.NewMetadataQuerier(replicas, dial)
	if r.client != nil {
		q.WithShuffleSharding(r.client, p.overrides.IngestionTenantShardSize, p.cfg.Querier.IngestersLookback())
	}
	return q
}

// ingesterConns returns the gRPC connection to an ingester by address: dialled once (with the process's TLS
// and cluster secret), shared, and closed when the process stops.
func ingesterConns(p *process) func(addr string) (*grpc.ClientConn, error) {
	var (
		mtx   sync.Mutex
		conns = map[string]*grpc.ClientConn{}
	)
	addContextActor(p.g, func(ctx context.Context) error {
		<-ctx.Done()
		mtx.Lock()
		defer mtx.Unlock()
		for addr, c := range conns {
			_ = c.Close()
			delete(conns, addr)
		}
		return nil
	})
	return func(addr string) (*grpc.ClientConn, error) {
		mtx.Lock()
		defer mtx.Unlock()
		if c, ok := conns[addr]; ok {
			return c, nil
		}
		c, err := grpc.NewClient(addr, append(store.DialOptions(), p.dialOpts...)...)
		if err != nil {
			return nil, errors.Wrapf(err, "dial ingester %s", addr)
		}
		conns[addr] = c
		return c, nil
	}
}

// ingesterReadReplicas lists the healthy ingesters of the ring and the failures a read of every one of them
// (metadata, cardinality) tolerates. p.ingesterRing must be set.
func ingesterReadReplicas(p *process) func() (query.MetadataReplicas, error) {
	r, rfg := p.ingesterRing, p.cfg.IngesterRing
	return func() (query.MetadataReplicas, error) {
		rs, err := r.client.GetAllHealthy(dskitring.Read)
		if errors.Is(err, dskitring.ErrEmptyRing) {
			return query.MetadataReplicas{}, nil
		}
		if err != nil {
			return query.MetadataReplicas{}, err
		}
		// A write was acknowledged by a quorum of its min(RF, ingesters) owners: a read is complete while fewer
		// than the rest failed (or, with zones, the failures are in that few zones).
		n := r.client.InstancesCount()
		rf := min(rfg.ReplicationFactor, n)
		tolerated := rf - (rf/2 + 1)
		out := query.MetadataReplicas{MaxErrors: tolerated, Unhealthy: n - len(rs.Instances)}
		if rfg.ZoneAwarenessEnabled {
			out.MaxUnavailableZones = tolerated
		}
		for _, inst := range rs.Instances {
			out.Addrs = append(out.Addrs, inst.Addr)
			out.Zones = append(out.Zones, inst.Zone)
		}
		return out, nil
	}
}

// metadataInfo is an Info server that also announces the thanos.Metadata API, so that a Thanos querier pointed
// at the component asks it for metric metadata.
type metadataInfo struct{ infopb.InfoServer }

func (m metadataInfo) Info(ctx context.Context, req *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	resp, err := m.InfoServer.Info(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.MetricMetadata = &infopb.MetricMetadataInfo{}
	return resp, nil
}
