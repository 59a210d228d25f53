package receive

import (
	"github.com/grafana/dskit/ring/shard"
)

// WithShuffleSharding makes the pusher write each tenant whose shard size (its ingestion_tenant_shard_size) is
// above 0 to its shuffle shard only: dskit's ShuffleShard of the ingester ring, the same instances for every
// write while the ring does not change (with zone awareness, shard size ÷ zones in each zone, rounded up). A
// tenant then reaches that many ingesters instead of every one. It returns p.
func (p *RingPusher) WithShuffleSharding(shardSize func(tenant string) int) *RingPusher {
	p.shardSize = shardSize
	return p
}

// tenantRing is the ring a tenant's writes are sharded over: its shuffle shard, or the whole ring. dskit caches
// the shard until the ring changes.
func (p *RingPusher) tenantRing(tenant string) WriteRing {
	if p.shardSize == nil {
		return p.ring
	}
	size := p.shardSize(tenant)
	if size <= 0 {
		return p.ring
	}
	return p.ring.ShuffleShard(tenant, size)
}

// GlobalLimitShare is an ingester's share of a tenant's global limits (DESIGN.md §9, Mimir's limiter): every
// series is on rf ingesters, in rf distinct zones with zone awareness, so the limit × rf is spread evenly over
// the zones (zones: 1 without zone awareness) and, within a zone, over the ingesters that hold the tenant's
// series there: all ingestersInZone, or with shuffle sharding (shardSize > 0) at most the shard's share of the
// zone (dskit's expected instances per zone). At most 1; 1 when the ring is not known yet.
func GlobalLimitShare(rf, zones, ingestersInZone, shardSize int) float64 {
	if zones <= 0 || ingestersInZone <= 0 {
		return 1
	}
	if shardSize > 0 {
		ingestersInZone = min(ingestersInZone, shard.ShuffleShardExpectedInstancesPerZone(shardSize, zones))
	}
	return min(1, float64(rf)/float64(zones)/float64(ingestersInZone))
}
