package ring

import (
	"hash/fnv"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"
)

// CompactorRingKey is the KV key of the compactor ring (Mimir's).
const CompactorRingKey = "compactor"

// CompactorOwner selects the compactor that owns a tenant: ACTIVE instances only, the replica set not extended
// (Mimir's compactor RingOp); a tenant whose owner is joining or leaving has no owner until the ring settles.
var CompactorOwner = dskitring.NewOp([]dskitring.InstanceState{dskitring.ACTIVE}, nil)

// HashTenant is the ring key of a tenant: FNV-1a of its name.
func HashTenant(tenant string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant))
	return h.Sum32()
}

// NewCompactorClient returns a client of the compactor ring, replication factor 1: each tenant has exactly one
// owner, the first healthy ACTIVE compactor after the tenant's hash; unhealthy compactors are skipped.
func NewCompactorClient(cfg Config, k *KV, logger log.Logger, reg prometheus.Registerer) (*dskitring.Ring, error) {
	kvClient, err := k.client("compactor")
	if err != nil {
		return nil, err
	}
	rcfg := dskitring.Config{KVStore: k.config(), HeartbeatTimeout: cfg.HeartbeatTimeout, ReplicationFactor: 1}
	r, err := dskitring.NewWithStoreClientAndStrategy(rcfg, "compactor", CompactorRingKey, kvClient,
		dskitring.NewIgnoreUnhealthyInstancesReplicationStrategy(), prometheus.WrapRegistererWithPrefix("strata_", reg), logger)
	if err != nil {
		return nil, errors.Wrap(err, "create compactor ring client")
	}
	return r, nil
}

// TenantOwner returns the address of the compactor that owns tenant, "" when the ring has none (empty, or the
// owner is not ACTIVE).
func TenantOwner(r dskitring.ReadRing, tenant string) (string, error) {
	set, err := r.Get(HashTenant(tenant), CompactorOwner, nil, nil, nil)
	if errors.Is(err, dskitring.ErrEmptyRing) {
		return "", nil
	}
	if err != nil {
		return "", errors.Wrapf(err, "owner of tenant %s", tenant)
	}
	if len(set.Instances) == 0 {
		return "", nil
	}
	return set.Instances[0].Addr, nil
}

// OwnsTenant returns the ownership check of the compactor at addr: whether the ring gives it tenant.
func OwnsTenant(r dskitring.ReadRing, addr string) func(tenant string) (bool, error) {
	return func(tenant string) (bool, error) {
		owner, err := TenantOwner(r, tenant)
		return owner == addr && owner != "", err
	}
}
