package query

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/kv/consul"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// testShardRing is a dskit ring (RF 3) of 6 ingesters, ing-0 … ing-5 at 127.0.0.1:10000+i in zones a, b, c, a,
// b, c, registered at registered[i] (default: a day ago); those in unhealthy have not heartbeated for 10 minutes.
func testShardRing(t *testing.T, zoneAware bool, registered map[int]time.Time, unhealthy ...int) *dskitring.Ring {
	t.Helper()
	ctx := context.Background()
	kvClient, closer := consul.NewInMemoryClient(dskitring.GetCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })
	now := time.Now()
	rnd := rand.New(rand.NewSource(1))
	desc := dskitring.NewDesc()
	for i := 0; i < 6; i++ {
		tokens := make([]uint32, 64)
		for j := range tokens {
			tokens[j] = rnd.Uint32()
		}
		slices.Sort(tokens)
		reg, ok := registered[i]
		if !ok {
			reg = now.Add(-24 * time.Hour)
		}
		inst := desc.AddIngester(fmt.Sprintf("ing-%d", i), fmt.Sprintf("127.0.0.1:%d", 10000+i), string(rune('a'+i%3)), tokens, dskitring.ACTIVE, reg, false, time.Time{}, nil)
		if slices.Contains(unhealthy, i) {
			inst.Timestamp = now.Add(-10 * time.Minute).Unix()
			desc.Ingesters[inst.Id] = inst
		}
	}
	testutil.Ok(t, kvClient.CAS(ctx, "ring", func(any) (any, bool, error) { return desc, true, nil }))
	r, err := dskitring.NewWithStoreClientAndStrategy(dskitring.Config{HeartbeatTimeout: time.Minute, ReplicationFactor: 3, ZoneAwarenessEnabled: zoneAware},
		"ingester", "ring", kvClient, dskitring.NewDefaultReplicationStrategy(), prometheus.NewRegistry(), log.NewNopLogger())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, r))
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, r) })
	return r
}

// shardAddrs is the addresses of dskit's shard of tenant in r, sorted.
func shardAddrs(t *testing.T, r *dskitring.Ring, tenant string, size int) []string {
	rs, err := r.ShuffleShard(tenant, size).GetAllHealthy(dskitring.Read)
	testutil.Ok(t, err)
	addrs := rs.GetAddresses()
	slices.Sort(addrs)
	return addrs
}

// selected is the ingesters (sorted addresses) among stores, and the failure budget they carry.
func selected(stores []store.StoreClient) (addrs []string, maxFailures, maxZones int, zones []string, unavailable int) {
	for _, s := range stores {
		switch s := s.(type) {
		case ingesterStore:
			addrs = append(addrs, s.String())
			maxFailures, maxZones = s.maxFailures, s.maxUnavailableZones
			if s.zone != "" && !slices.Contains(zones, s.zone) {
				zones = append(zones, s.zone)
			}
		case unavailableStore:
			unavailable++
		}
	}
	slices.Sort(addrs)
	slices.Sort(zones)
	return addrs, maxFailures, maxZones, zones, unavailable
}

// TestEndpointsShuffleSharding: a request for a tenant with a shard size asks only the ingesters of its shuffle
// shard, with the failures the shard's replication set for reads tolerates; a tenant without one, or a request
// for several tenants one of which has none, asks every ingester; several sharded tenants ask the union.
func TestEndpointsShuffleSharding(t *testing.T) {
	sizes := map[string]int{"a": 3, "b": 3, "c": 3}
	shardSize := func(tenant string) int { return sizes[tenant] }
	all := []string{"127.0.0.1:10000", "127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003", "127.0.0.1:10004", "127.0.0.1:10005"}
	for _, zoneAware := range []bool{true, false} {
		t.Run(fmt.Sprintf("zone-aware=%v", zoneAware), func(t *testing.T) {
			r := testShardRing(t, zoneAware, nil)
			ingesters := func() ([]string, error) { return all, nil }
			e, err := NewEndpoints(nil, ingesters, 3, time.Hour, log.NewNopLogger())
			testutil.Ok(t, err)
			defer e.Close()
			e.WithShuffleSharding(r, shardSize, time.Hour)

			shardA, shardB := shardAddrs(t, r, "a", 3), shardAddrs(t, r, "b", 3)
			union := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(shardA), shardB...))))
			wantFailures, wantZones, wantZoneNames := 1, 0, []string(nil)
			if zoneAware {
				wantFailures, wantZones, wantZoneNames = 0, 1, []string{"a", "b", "c"}
			}
			for _, tc := range []struct {
				name    string
				tenants []string
				want    []string
			}{
				{"sharded tenant", []string{"a"}, shardA},
				{"another sharded tenant", []string{"b"}, shardB},
				{"unsharded tenant", []string{"u"}, all},
				{"two sharded tenants: the union", []string{"a", "b"}, union},
				{"a sharded and an unsharded tenant", []string{"a", "u"}, all},
				{"no tenant (info)", nil, all},
			} {
				t.Run(tc.name, func(t *testing.T) {
					addrs, maxFailures, maxZones, zones, _ := selected(e.Select(tc.tenants, 0, time.Now().UnixMilli()))
					testutil.Equals(t, tc.want, addrs)
					if slices.Equal(tc.want, all) {
						testutil.Equals(t, 1, maxFailures) // RF 3 − quorum 2, as without shuffle sharding
						testutil.Equals(t, 0, len(zones))
						return
					}
					testutil.Equals(t, wantFailures, maxFailures)
					testutil.Equals(t, wantZones, maxZones)
					testutil.Equals(t, wantZoneNames, zones)
				})
			}
			testutil.Equals(t, 3, len(shardA))
		})
	}

	t.Run("lookback: ingesters registered within it are read too", func(t *testing.T) {
		recent := map[int]time.Time{}
		for i := 0; i < 6; i++ {
			recent[i] = time.Now().Add(-time.Minute)
		}
		r := testShardRing(t, true, recent)
		e, err := NewEndpoints(nil, func() ([]string, error) { return all, nil }, 3, time.Hour, log.NewNopLogger())
		testutil.Ok(t, err)
		defer e.Close()
		e.WithShuffleSharding(r, shardSize, time.Hour)
		addrs, _, _, _, _ := selected(e.Select([]string{"a"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, all, addrs) // each joined after the lookback started: any may hold the tenant's series

		e.WithShuffleSharding(r, shardSize, 30*time.Second)
		addrs, _, _, _, _ = selected(e.Select([]string{"a"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, shardAddrs(t, r, "a", 3), addrs)
	})

	t.Run("unhealthy ingesters of the shard", func(t *testing.T) {
		base := testShardRing(t, true, nil)
		shard := shardAddrs(t, base, "a", 3)
		idx := func(addr string) int {
			var port int
			_, err := fmt.Sscanf(addr, "127.0.0.1:%d", &port)
			testutil.Ok(t, err)
			return port - 10000
		}
		// One down: the other two are asked and no further failure is absorbed (the down one's zone is spent).
		r := testShardRing(t, true, nil, idx(shard[0]))
		e, err := NewEndpoints(nil, func() ([]string, error) { return all, nil }, 3, time.Hour, log.NewNopLogger())
		testutil.Ok(t, err)
		defer e.Close()
		e.WithShuffleSharding(r, shardSize, time.Hour)
		addrs, _, maxZones, _, unavailable := selected(e.Select([]string{"a"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, shard[1:], addrs)
		testutil.Equals(t, 0, maxZones)
		testutil.Equals(t, 0, unavailable)

		// Two down (two zones): the shard cannot answer in full, the request gets an unavailable store.
		r = testShardRing(t, true, nil, idx(shard[0]), idx(shard[1]))
		e.WithShuffleSharding(r, shardSize, time.Hour)
		addrs, _, _, _, unavailable = selected(e.Select([]string{"a"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, 0, len(addrs))
		testutil.Equals(t, 1, unavailable)

		// An unsharded tenant is unaffected by the shard's state: every healthy ingester, as before.
		addrs, _, _, _, unavailable = selected(e.Select([]string{"u"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, all, addrs)
		testutil.Equals(t, 0, unavailable)
	})

	t.Run("shards smaller than the replication factor", func(t *testing.T) {
		for _, zoneAware := range []bool{true, false} {
			r := testShardRing(t, zoneAware, nil)
			e, err := NewEndpoints(nil, func() ([]string, error) { return all, nil }, 3, time.Hour, log.NewNopLogger())
			testutil.Ok(t, err)
			defer e.Close()
			e.WithShuffleSharding(r, func(tenant string) int { return map[string]int{"one": 1, "two": 2}[tenant] }, time.Hour)
			for _, size := range []int{1, 2} {
				tenant := map[int]string{1: "one", 2: "two"}[size]
				addrs, maxFailures, maxZones, _, unavailable := selected(e.Select([]string{tenant}, 0, time.Now().UnixMilli()))
				testutil.Equals(t, shardAddrs(t, r, tenant, size), addrs, "zone-aware=%v size %d", zoneAware, size)
				testutil.Equals(t, 0, unavailable, "zone-aware=%v size %d", zoneAware, size)
				// Without zones: written to all of it (RF capped); dskit tolerates no failure of 2 (RF − RF/2 needed),
				// nor of 1 (where dskit refuses: the capped quorum, 1 of 1, is read). With zones dskit rounds the
				// shard up to one per zone: RF 3 over 3 zones.
				wantFailures, wantZones := 0, 0
				if zoneAware {
					testutil.Equals(t, 3, len(addrs))
					wantFailures, wantZones = 0, 1
				}
				testutil.Equals(t, wantFailures, maxFailures, "zone-aware=%v size %d", zoneAware, size)
				testutil.Equals(t, wantZones, maxZones, "zone-aware=%v size %d", zoneAware, size)
			}
		}
	})

	t.Run("lookback 0: every ingester", func(t *testing.T) {
		r := testShardRing(t, true, nil)
		e, err := NewEndpoints(nil, func() ([]string, error) { return all, nil }, 3, 0, log.NewNopLogger())
		testutil.Ok(t, err)
		defer e.Close()
		e.WithShuffleSharding(r, shardSize, 0)
		addrs, _, _, _, _ := selected(e.Select([]string{"a"}, 0, time.Now().UnixMilli()))
		testutil.Equals(t, all, addrs)
	})
}

// TestMetadataQuerierShuffleSharding: a metadata read for a sharded tenant asks only its shard's ingesters, so the
// failure of two ingesters outside it (in two zones) does not fail it; two failures in its shard (two zones) do.
func TestMetadataQuerierShuffleSharding(t *testing.T) {
	r := testShardRing(t, true, nil)
	shard := shardAddrs(t, r, "a", 3)
	var outside []string
	for i := 0; i < 6; i++ {
		if addr := fmt.Sprintf("127.0.0.1:%d", 10000+i); !slices.Contains(shard, addr) {
			outside = append(outside, addr)
		}
	}
	everyone := func() (MetadataReplicas, error) {
		t.Fatal("a sharded tenant's read listed every ingester")
		return MetadataReplicas{}, nil
	}
	for _, tc := range []struct {
		name    string
		down    []string
		wantErr bool
	}{
		{"two down outside the shard", outside[:2], false},
		{"one down in the shard", shard[:1], false},
		{"two down in the shard", shard[:2], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mtx   sync.Mutex // the ingesters are asked concurrently
				asked []string
			)
			q := NewMetadataQuerier(everyone, func(addr string) (MetadataReader, error) {
				mtx.Lock()
				asked = append(asked, addr)
				mtx.Unlock()
				if slices.Contains(tc.down, addr) {
					return fakeMetadataReader{err: errors.New("connection refused")}, nil
				}
				return fakeMetadataReader{byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"up": {{Type: "gauge"}}}}}, nil
			}).WithShuffleSharding(r, func(tenant string) int { return 3 }, time.Hour)
			got, err := q.Metadata(tenancy.WithTenants(context.Background(), []string{"a"}), "", -1, 0)
			slices.Sort(asked)
			testutil.Equals(t, shard, asked)
			if tc.wantErr {
				testutil.NotOk(t, err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, map[string][]metadataEntry{"up": {{Type: "gauge"}}}, got)
		})
	}
}

func TestConfigIngestersLookback(t *testing.T) {
	for _, tc := range []struct {
		name             string
		enabled          bool
		within, lookback time.Duration
		want             time.Duration
		wantErr          bool
	}{
		{name: "default: query_ingesters_within", enabled: true, within: 13 * time.Hour, want: 13 * time.Hour},
		{name: "longer lookback", enabled: true, within: 13 * time.Hour, lookback: 24 * time.Hour, want: 24 * time.Hour},
		{name: "shorter lookback refused", enabled: true, within: 13 * time.Hour, lookback: time.Hour, wantErr: true},
		{name: "negative lookback refused", enabled: true, lookback: -time.Second, wantErr: true},
		{name: "ingesters always asked, no lookback: every ingester", enabled: true, within: 0, want: 0},
		{name: "disabled: every ingester", enabled: false, within: 13 * time.Hour, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.ShuffleShardingIngestersEnabled, c.QueryIngestersWithin, c.ShuffleShardingIngestersLookbackPeriod = tc.enabled, tc.within, tc.lookback
			if tc.wantErr {
				testutil.NotOk(t, c.Validate())
				return
			}
			testutil.Ok(t, c.Validate())
			testutil.Equals(t, tc.want, c.IngestersLookback())
		})
	}
}
