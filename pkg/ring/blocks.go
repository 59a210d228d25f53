package ring

import (
	"context"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// StoreGatewayRingKey is the KV key of the store-gateway ring (Mimir's).
const StoreGatewayRingKey = "store-gateway"

var (
	// BlocksOwnerSync selects the gateways that should hold a block: a joining or leaving gateway keeps serving
	// its blocks until its replacement does (Mimir's BlocksOwnerSync).
	BlocksOwnerSync = dskitring.NewOp([]dskitring.InstanceState{dskitring.JOINING, dskitring.ACTIVE, dskitring.LEAVING}, nil)
	// BlocksRead selects the gateways a querier asks for a block: ACTIVE ones, the replica set extended past
	// those in another state (Mimir's BlocksRead).
	BlocksRead = dskitring.NewOp([]dskitring.InstanceState{dskitring.ACTIVE}, func(s dskitring.InstanceState) bool {
		return s != dskitring.ACTIVE
	})
)

// HashBlockID is the ring key of a block: FNV-1a of its 16 ULID bytes (Mimir's).
func HashBlockID(id ulid.ULID) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(id[:])
	return h.Sum32()
}

// NewGatewayClient returns a client of the store-gateway ring. Unlike the ingester ring, a block's replica set
// does not need a quorum: unhealthy gateways are dropped from it and any one healthy owner can serve the block.
func NewGatewayClient(cfg Config, k *KV, logger log.Logger, reg prometheus.Registerer) (*dskitring.Ring, error) {
	kvClient, err := k.client("store-gateway")
	if err != nil {
		return nil, err
	}
	rcfg := dskitring.Config{
		KVStore:              k.config(),
		HeartbeatTimeout:     cfg.HeartbeatTimeout,
		ReplicationFactor:    cfg.ReplicationFactor,
		ZoneAwarenessEnabled: cfg.ZoneAwarenessEnabled,
	}
	strategy := &cappedStrategy{next: dskitring.NewIgnoreUnhealthyInstancesReplicationStrategy()}
	r, err := dskitring.NewWithStoreClientAndStrategy(rcfg, "store-gateway", StoreGatewayRingKey, kvClient, strategy, prometheus.WrapRegistererWithPrefix("strata_", reg), logger)
	if err != nil {
		return nil, errors.Wrap(err, "create store-gateway ring client")
	}
	return r, nil
}

// BlockOwners returns the gRPC addresses of the gateways op selects for a block, in ring order.
func BlockOwners(r dskitring.ReadRing, id ulid.ULID, op dskitring.Operation) ([]string, error) {
	set, err := r.Get(HashBlockID(id), op, nil, nil, nil)
	if err != nil {
		return nil, errors.Wrapf(err, "owners of block %s", id)
	}
	addrs := make([]string, 0, len(set.Instances))
	for _, in := range set.Instances {
		addrs = append(addrs, in.Addr)
	}
	return addrs, nil
}

// WaitForInstance waits until the ring client sees the instance at addr healthy (at most timeout), so that a
// gateway's first sync owns its blocks.
func WaitForInstance(ctx context.Context, r dskitring.ReadRing, addr string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if rs, err := r.GetAllHealthy(BlocksOwnerSync); err == nil && rs.Includes(addr) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MembershipState summarises the healthy members of a ring (IDs, addresses, states), to detect changes.
func MembershipState(r dskitring.ReadRing) string {
	rs, err := r.GetAllHealthy(BlocksOwnerSync)
	if err != nil {
		return err.Error()
	}
	parts := make([]string, 0, len(rs.Instances))
	for _, in := range rs.Instances {
		parts = append(parts, in.Id+"@"+in.Addr+":"+in.State.String())
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}
