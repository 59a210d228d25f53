package query

import (
	"context"
	"math"
	"time"

	"github.com/efficientgo/core/errors"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// ShardRing is what the querier needs of the ingester ring to read a tenant from its shuffle shard (a *ring.Ring).
type ShardRing interface {
	ShuffleShardWithLookback(identifier string, size int, lookbackPeriod time.Duration, now time.Time) dskitring.ReadRing
}

// ingesterShards reads shuffle-sharded tenants from their shards of the ingester ring.
type ingesterShards struct {
	ring      ShardRing
	shardSize func(tenant string) int
	lookback  time.Duration
}

// WithShuffleSharding makes requests for tenants with a shard size above 0 (their ingestion_tenant_shard_size) ask
// only the ingesters of their shuffle shard: dskit's ShuffleShardWithLookback of r, which also holds the
// ingesters that were in the shard within lookback (the distributors write to ShuffleShard of the same ring). The
// failures a request absorbs are those of the shard's replication set for reads. lookback 0 leaves every tenant
// read from every ingester. It returns e.
func (e *Endpoints) WithShuffleSharding(r ShardRing, shardSize func(tenant string) int, lookback time.Duration) *Endpoints {
	if r != nil && shardSize != nil && lookback > 0 {
		e.shards = &ingesterShards{ring: r, shardSize: shardSize, lookback: lookback}
	}
	return e
}

// ingesterSet is the ingesters one request asks and the failures it absorbs among them (a dskit replication set).
type ingesterSet struct {
	instances []dskitring.InstanceDesc // Addr, and Zone with zone awareness
	// maxErrors failures anywhere, or (zoneAware) failures within maxUnavailableZones zones, lose nothing.
	maxErrors, maxUnavailableZones int
	zoneAware                      bool
	// unavailable: the request cannot be answered in full (too many unhealthy ingesters in a shard).
	unavailable error
}

// forTenants returns the union of the tenants' shards (ok false when one of them is not shuffle-sharded: the
// request asks every ingester). A failure is absorbed only when every shard absorbs it: the union takes the
// smallest budget, counted over all of it.
func (s *ingesterShards) forTenants(tenants []string, now time.Time) (set ingesterSet, ok bool, err error) {
	if s == nil || len(tenants) == 0 {
		return ingesterSet{}, false, nil
	}
	seen := map[string]bool{}
	first := true
	for _, tenant := range tenants {
		size := s.shardSize(tenant)
		if size <= 0 {
			return ingesterSet{}, false, nil
		}
		rs, err := shardReplicationSet(s.ring.ShuffleShardWithLookback(tenant, size, s.lookback, now))
		if errors.Is(err, dskitring.ErrEmptyRing) {
			continue
		}
		if err != nil {
			return ingesterSet{}, true, errors.Wrapf(err, "ingesters of tenant %s's shard", tenant)
		}
		if first {
			set.maxErrors, set.maxUnavailableZones, set.zoneAware, first = rs.MaxErrors, rs.MaxUnavailableZones, rs.ZoneAwarenessEnabled, false
		}
		set.maxErrors, set.maxUnavailableZones = min(set.maxErrors, rs.MaxErrors), min(set.maxUnavailableZones, rs.MaxUnavailableZones)
		for _, inst := range rs.Instances {
			if !seen[inst.Addr] {
				seen[inst.Addr] = true
				set.instances = append(set.instances, inst)
			}
		}
	}
	return set, true, nil
}

// shardReplicationSet is the replication set for reads of a tenant's shard: dskit's, except for a shard smaller
// than the replication factor without zone awareness, which dskit refuses (it wants RF − RF/2 instances) but
// Strata writes to (the factor is capped at the instances a key finds, see pkg/ring): every write reached a
// quorum (n/2 + 1) of the shard's n ingesters, so a read misses nothing while fewer than a quorum of them,
// unhealthy ones included, failed.
func shardReplicationSet(shard dskitring.ReadRing) (dskitring.ReplicationSet, error) {
	rs, err := shard.GetReplicationSetForOperation(dskitring.Read)
	n := shard.InstancesCount()
	if !errors.Is(err, dskitring.ErrTooManyUnhealthyInstances) || n >= shard.ReplicationFactor() {
		return rs, err
	}
	healthy, herr := shard.GetAllHealthy(dskitring.Read)
	if herr != nil {
		return rs, err
	}
	tolerated := n/2 - (n - len(healthy.Instances))
	if tolerated < 0 {
		return rs, err
	}
	return dskitring.ReplicationSet{Instances: healthy.Instances, MaxErrors: tolerated}, nil
}

// unavailableStore stands for ingesters a request cannot do without and cannot ask (more of a tenant's shard is
// unhealthy than its replication tolerates): every call fails with Unavailable, so the request fails, or, with
// partial responses, answers with a warning.
type unavailableStore struct{ err error }

func (s unavailableStore) Series(context.Context, *storepb.SeriesRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[storepb.SeriesResponse], error) {
	return nil, status.Error(codes.Unavailable, s.err.Error())
}

func (s unavailableStore) LabelNames(context.Context, *storepb.LabelNamesRequest, ...grpc.CallOption) (*storepb.LabelNamesResponse, error) {
	return nil, status.Error(codes.Unavailable, s.err.Error())
}

func (s unavailableStore) LabelValues(context.Context, *storepb.LabelValuesRequest, ...grpc.CallOption) (*storepb.LabelValuesResponse, error) {
	return nil, status.Error(codes.Unavailable, s.err.Error())
}

func (unavailableStore) LabelSets() []labels.Labels    { return nil }
func (unavailableStore) TimeRange() (minT, maxT int64) { return math.MinInt64, math.MaxInt64 }
func (unavailableStore) String() string                { return "ingesters" }

// WithShuffleSharding makes reads for tenants with a shard size above 0 ask only the ingesters of their shuffle
// shard, as Endpoints.WithShuffleSharding. It returns q.
func (q *MetadataQuerier) WithShuffleSharding(r ShardRing, shardSize func(tenant string) int, lookback time.Duration) *MetadataQuerier {
	q.shards = nil
	if r != nil && shardSize != nil && lookback > 0 {
		q.shards = &ingesterShards{ring: r, shardSize: shardSize, lookback: lookback}
	}
	return q
}

// tenantReplicas is the ingesters a metadata read for the tenants of ctx asks: the union of their shards when
// each has one (dskit's replication set: unhealthy ingesters are left out and already spent from the budget),
// else every ingester.
func (q *MetadataQuerier) tenantReplicas(ctx context.Context) (MetadataReplicas, error) {
	tenants, _ := tenancy.TenantsFromContext(ctx)
	set, sharded, err := q.shards.forTenants(tenants, q.now())
	if !sharded {
		return q.replicas()
	}
	if err != nil {
		return MetadataReplicas{}, err
	}
	out := MetadataReplicas{MaxErrors: set.maxErrors}
	for _, inst := range set.instances {
		out.Addrs = append(out.Addrs, inst.Addr)
		if set.zoneAware {
			out.Zones = append(out.Zones, inst.Zone)
		}
	}
	if set.zoneAware {
		out.MaxUnavailableZones = set.maxUnavailableZones
	}
	return out, nil
}
