package query

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// EndpointSpec is one static --endpoint: a StoreAPI address, optionally bound to one tenant.
type EndpointSpec struct {
	Tenant string // empty: asked on behalf of every tenant (it must enforce tenancy itself)
	Addr   string
}

// ParseEndpoint reads "addr" or "tenant=addr".
func ParseEndpoint(s string) (EndpointSpec, error) {
	tenant, addr, bound := strings.Cut(s, "=")
	if !bound {
		tenant, addr = "", s
	}
	if addr == "" {
		return EndpointSpec{}, errors.Newf("endpoint %q: no address", s)
	}
	if bound {
		if err := tenancy.ValidateTenantID(tenant); err != nil {
			return EndpointSpec{}, errors.Wrapf(err, "endpoint %q", s)
		}
	}
	return EndpointSpec{Tenant: tenant, Addr: addr}, nil
}

func (e EndpointSpec) String() string {
	if e.Tenant == "" {
		return e.Addr
	}
	return e.Tenant + "=" + e.Addr
}

type staticEndpoint struct {
	spec   EndpointSpec
	client *store.Client
	conn   *grpc.ClientConn
}

// Endpoints chooses the StoreAPI endpoints of a request: static endpoints (tenant-bound ones only for their
// tenant) and the ingesters of the ring (or of the tenant's shuffle shard, see WithShuffleSharding), the latter
// only when the request reaches into the last queryIngestersWithin (their data is younger).
type Endpoints struct {
	logger               log.Logger
	dialOpts             []grpc.DialOption
	static               []*staticEndpoint
	ingesters            func() ([]string, error)
	replicationFactor    int
	queryIngestersWithin time.Duration
	now                  func() time.Time
	shards               *ingesterShards // nil: every tenant is read from every ingester (endpoints_shard.go)

	mtx  sync.Mutex
	pool map[string]*staticEndpoint // ingester connections by address
}

// NewEndpoints dials (lazily) the static endpoints. ingesters lists the ingesters' gRPC addresses (nil: none);
// with the write path's replication factor, a request absorbs the failures of RF − quorum of them silently.
// dialOpts are added to every connection (TLS, the cluster secret).
func NewEndpoints(specs []EndpointSpec, ingesters func() ([]string, error), replicationFactor int, queryIngestersWithin time.Duration, logger log.Logger, dialOpts ...grpc.DialOption) (*Endpoints, error) {
	e := &Endpoints{logger: logger, dialOpts: dialOpts, ingesters: ingesters, replicationFactor: replicationFactor, queryIngestersWithin: queryIngestersWithin, now: time.Now, pool: map[string]*staticEndpoint{}}
	for _, spec := range specs {
		c, conn, err := store.Dial(spec.Addr, e.dialOpts...)
		if err != nil {
			_ = e.Close()
			return nil, err
		}
		e.static = append(e.static, &staticEndpoint{spec: spec, client: c, conn: conn})
	}
	return e, nil
}

// WithClock replaces time.Now (tests).
func (e *Endpoints) WithClock(now func() time.Time) *Endpoints {
	e.now = now
	return e
}

// Select is a store.StoreSelector.
func (e *Endpoints) Select(tenants []string, minT, maxT int64) []store.StoreClient {
	var out []store.StoreClient
	for _, s := range e.static {
		if s.spec.Tenant == "" || tenants == nil || slices.Contains(tenants, s.spec.Tenant) {
			out = append(out, s.client)
		}
	}
	if e.ingesters == nil {
		return out
	}
	if e.queryIngestersWithin > 0 && tenants != nil && maxT < e.now().Add(-e.queryIngestersWithin).UnixMilli() {
		return out
	}
	set, err := e.ingesterSet(tenants)
	if err != nil {
		level.Warn(e.logger).Log("msg", "listing the ingesters failed; querying without them", "err", err)
		return out
	}
	return e.appendIngesters(out, set)
}

// ingesterSet returns the ingesters a request for tenants asks: the union of the tenants' shuffle shards when
// each has one (a shard with too many unhealthy ingesters is an unavailableStore), else every ingester.
func (e *Endpoints) ingesterSet(tenants []string) (ingesterSet, error) {
	set, sharded, err := e.shards.forTenants(tenants, e.now())
	if sharded {
		set.unavailable = err
		return set, nil
	}
	addrs, err := e.ingesters()
	if err != nil {
		return ingesterSet{}, err
	}
	// Writes went to min(RF, ingesters) of them and succeeded on a quorum: every sample is on all but
	// rf − quorum of those, so that many may fail without losing anything.
	rf := min(e.replicationFactor, len(addrs))
	set.maxErrors = max(0, rf-(rf/2+1))
	for _, addr := range addrs {
		set.instances = append(set.instances, dskitring.InstanceDesc{Addr: addr})
	}
	return set, nil
}

// appendIngesters appends the ingesters of set to out, dialling (lazily) those not dialled yet.
func (e *Endpoints) appendIngesters(out []store.StoreClient, set ingesterSet) []store.StoreClient {
	if set.unavailable != nil {
		return append(out, unavailableStore{err: set.unavailable})
	}
	e.mtx.Lock()
	defer e.mtx.Unlock()
	for _, inst := range set.instances {
		addr := inst.Addr
		s, ok := e.pool[addr]
		if !ok {
			// Scoped: in `strata all` the address also serves the merged view, which would ask this querier's
			// ingesters again.
			c, conn, err := store.Dial(addr, append(store.IngesterDialOptions(), e.dialOpts...)...)
			if err != nil {
				level.Warn(e.logger).Log("msg", "dial ingester", "addr", addr, "err", err)
				continue
			}
			s = &staticEndpoint{spec: EndpointSpec{Addr: addr}, client: c, conn: conn}
			e.pool[addr] = s
		}
		is := ingesterStore{Client: s.client, maxFailures: set.maxErrors}
		if set.zoneAware {
			is.zone, is.maxUnavailableZones = inst.Zone, set.maxUnavailableZones
		}
		out = append(out, is)
	}
	return out
}

// ingesterStore is an ingester as a store.ZonedReplicaStore.
type ingesterStore struct {
	*store.Client
	maxFailures int
	// zone is the ingester's with zone-aware replication ("": failures only count against maxFailures).
	zone                string
	maxUnavailableZones int
}

func (s ingesterStore) ReplicaGroup() (string, int) { return "ingesters", s.maxFailures }

func (s ingesterStore) ReplicaZone() (string, int) { return s.zone, s.maxUnavailableZones }

// RefreshInfo asks every static endpoint for its Info (label sets, time range), so requests skip those that
// cannot match. It runs at start and then every interval until ctx ends.
func (e *Endpoints) RefreshInfo(ctx context.Context, interval time.Duration) {
	refresh := func() {
		var wg sync.WaitGroup
		for _, s := range e.static {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.client.RefreshInfo(ctx, 10*time.Second); err != nil && ctx.Err() == nil {
					level.Warn(e.logger).Log("msg", "endpoint info", "endpoint", s.spec, "err", err)
				}
			}()
		}
		wg.Wait()
	}
	refresh()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			refresh()
			e.forgetIngesters()
		}
	}
}

// forgetIngesters closes the connections of ingesters no longer in the ring.
func (e *Endpoints) forgetIngesters() {
	if e.ingesters == nil {
		return
	}
	addrs, err := e.ingesters()
	if err != nil {
		return
	}
	e.mtx.Lock()
	defer e.mtx.Unlock()
	for addr, s := range e.pool {
		if !slices.Contains(addrs, addr) {
			_ = s.conn.Close()
			delete(e.pool, addr)
		}
	}
}

// Close closes every connection.
func (e *Endpoints) Close() error {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	var firstErr error
	for _, s := range e.static {
		if err := s.conn.Close(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for addr, s := range e.pool {
		_ = s.conn.Close()
		delete(e.pool, addr)
	}
	return firstErr
}
