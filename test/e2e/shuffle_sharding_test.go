package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/kv/consul"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
)

// TestShuffleShardingIsolatesTenants: 6 ingesters (zones a, b, c × 2, RF 3, zone-aware), a distributor and a
// querier over memberlist; tenants A and B have ingestion_tenant_shard_size 3 and disjoint shards (names chosen
// with dskit's ShuffleShard over the cluster's ring). Each tenant's series are on exactly its 3 ingesters (one
// per zone) and its queries are exact. After kill -9 of two of A's ingesters, A's writes fail (5xx: its quorum is
// gone) and its strict queries and metadata reads fail rather than answer short, while B writes and reads exactly,
// without warnings, with partial responses refused.
func TestShuffleShardingIsolatesTenants(t *testing.T) {
	const nSeries = 40
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides: {}\n"), 0o600))
	gossip := newMemberlist(t, 8)
	common := func(i int) []string {
		return append(gossip.flags(i), "--runtime-config.file="+rt, "--runtime-config.reload-period=100ms",
			"--ingester.ring.heartbeat-period=1s", "--distributor.zone-awareness-enabled", "--auth.multitenancy-enabled")
	}
	ings := map[string]*proc{}
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("ingester-%d", i)
		ings[id] = startStrata(t, dir, append([]string{"ingester", "--ingester.id=" + id,
			"--ingester.availability-zone=zone-" + string(rune('a'+i%3))}, common(i)...)...)
	}
	dist := startStrata(t, dir, append([]string{"distributor", "--distributor.id=d1"}, common(6)...)...)
	// The shard read also asks the ingesters that joined within the last 3s (the lookback): wait past it below.
	querier := startStrata(t, dir, append([]string{"querier", "--querier.query-ingesters-within=3s"}, common(7)...)...)
	for _, p := range append(slices.Collect(maps.Values(ings)), dist, querier) {
		p.waitReady(t, 60*time.Second)
	}
	var members []ringMember
	for _, p := range []*proc{dist, querier} {
		waitUntil(t, 30*time.Second, "6 ACTIVE ingesters in the ring", func() bool {
			members = ingesterRing(t, p.url("/ingester/ring"))
			active := 0
			for _, m := range members {
				if m.State == "ACTIVE" && len(m.Tokens) > 0 {
					active++
				}
			}
			return active == 6
		})
	}

	// Two tenant names whose shards of 3 do not overlap: with zone awareness each takes one ingester per zone.
	shards := shuffleShards(t, members)
	tenantA, tenantB := "", ""
	for i := 0; i < 200 && tenantB == ""; i++ {
		name := fmt.Sprintf("tenant-%d", i)
		switch {
		case tenantA == "":
			tenantA = name
		case !slices.ContainsFunc(shards(name), func(id string) bool { return slices.Contains(shards(tenantA), id) }):
			tenantB = name
		}
	}
	testutil.Assert(t, tenantB != "", "no tenant with a shard disjoint from %s's %v", tenantA, shards(tenantA))
	shardA, shardB := shards(tenantA), shards(tenantB)
	t.Logf("tenant %s: %v; tenant %s: %v", tenantA, shardA, tenantB, shardB)
	for _, s := range [][]string{shardA, shardB} {
		zones := map[string]bool{}
		for _, id := range s {
			zones[zoneOf(members, id)] = true
		}
		testutil.Equals(t, 3, len(zones), "one ingester per zone: %v", s)
	}
	testutil.Ok(t, os.WriteFile(rt, []byte(fmt.Sprintf("overrides:\n  %s:\n    ingestion_tenant_shard_size: 3\n  %s:\n    ingestion_tenant_shard_size: 3\n", tenantA, tenantB)), 0o600))
	for _, p := range append(slices.Collect(maps.Values(ings)), dist, querier) {
		for _, tenant := range []string{tenantA, tenantB} {
			waitUntil(t, 10*time.Second, "shard size 3 loaded", func() bool {
				code, body := httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": tenant})
				return code == 200 && strings.Contains(body, `"ingestion_tenant_shard_size":3`)
			})
		}
	}

	// Series i of a tenant has value base+i.
	gen := func(base float64, ts int64) []prompb.TimeSeries {
		out := make([]prompb.TimeSeries, nSeries)
		for i := range out {
			out[i].Labels = []prompb.Label{{Name: "__name__", Value: "shard_test"}, {Name: "i", Value: strconv.Itoa(i)}}
			out[i].Samples = []prompb.Sample{{Timestamp: ts, Value: base + float64(i)}}
		}
		return out
	}
	bases := map[string]float64{tenantA: 1000, tenantB: 2000}
	now := time.Now().UnixMilli()
	for _, tenant := range []string{tenantA, tenantB} {
		code, body := pushV1(t, dist.url("/api/v1/push"), tenant, gen(bases[tenant], now))
		testutil.Equals(t, 204, code, body)
	}
	// Every series on each of its tenant's 3 ingesters (the third replica may land just after the answer) and
	// on no other ingester.
	for _, tc := range []struct {
		tenant string
		shard  []string
	}{{tenantA, shardA}, {tenantB, shardB}} {
		waitUntil(t, 10*time.Second, tc.tenant+"'s series on exactly its 3 ingesters", func() bool {
			for id, p := range ings {
				want := 0.0
				if slices.Contains(tc.shard, id) {
					want = nSeries
				}
				if activeSeries(t, p, tc.tenant) != want {
					return false
				}
			}
			return true
		})
	}

	// Past the lookback, the querier reads each tenant from its shard only.
	latest := time.Time{}
	for _, m := range members {
		if m.Registered.After(latest) {
			latest = m.Registered
		}
	}
	time.Sleep(time.Until(latest.Add(4 * time.Second)))
	strict := url.Values{"partial_response": {"false"}}
	exact := func(tenant string) {
		t.Helper()
		at := time.Now()
		got, warnings := promQuery(t, querier.url("/prometheus"), tenant, "shard_test", at, at, 0, strict)
		testutil.Equals(t, 0, len(warnings), "warnings: %v", warnings)
		testutil.Equals(t, nSeries, len(got))
		for _, s := range got {
			i, err := strconv.Atoi(s.Metric["i"])
			testutil.Ok(t, err)
			testutil.Equals(t, bases[tenant]+float64(i), sampleFloat(t, s.Value), "series %d of %s", i, tenant)
		}
		sum, _ := promQuery(t, querier.url("/prometheus"), tenant, "sum(shard_test)", at, at, 0, strict)
		testutil.Equals(t, 1, len(sum))
		testutil.Equals(t, nSeries*bases[tenant]+nSeries*(nSeries-1)/2, sampleFloat(t, sum[0].Value))
	}
	exact(tenantA)
	exact(tenantB)

	// kill -9 two of A's ingesters (two zones: A's quorum is gone; none of B's).
	for _, id := range shardA[:2] {
		testutil.Ok(t, ings[id].cmd.Process.Kill())
		<-ings[id].exited
	}
	code, body := pushV1(t, dist.url("/api/v1/push"), tenantB, gen(bases[tenantB], now+1000))
	testutil.Equals(t, 204, code, "tenant B's write: %s", body)
	code, body = pushV1(t, dist.url("/api/v1/push"), tenantA, gen(bases[tenantA], now+1000))
	testutil.Assert(t, code/100 == 5, "tenant A's write without its quorum: %d %s", code, body)
	exact(tenantB)
	// Metadata reads too ask only the tenant's shard: B's answers, A's fails (two of its zones gone).
	code, body = httpGet(querier.url("/prometheus/api/v1/metadata"), map[string]string{"X-Scope-OrgID": tenantB})
	testutil.Equals(t, 200, code, "tenant B's metadata: %s", body)
	code, body = httpGet(querier.url("/prometheus/api/v1/metadata"), map[string]string{"X-Scope-OrgID": tenantA})
	testutil.Assert(t, code/100 == 5, "tenant A's metadata with 2 of its 3 ingesters gone: %d %s", code, body)
	code, r := promAPI(t, querier.url("/prometheus"), tenantA, "/api/v1/query", url.Values{"query": {"shard_test"}, "partial_response": {"false"}})
	testutil.Assert(t, code != 200, "tenant A's strict query with 2 of its 3 ingesters gone answered %d: %s", code, r.Data)
}

// ringMember is an instance of a ring page's JSON.
type ringMember struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Address    string    `json:"address"`
	Zone       string    `json:"zone"`
	Tokens     []uint32  `json:"tokens"`
	Registered time.Time `json:"registered_timestamp"`
}

func ingesterRing(t *testing.T, ringURL string) []ringMember {
	t.Helper()
	code, body := httpGet(ringURL, map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code, "GET %s: %s", ringURL, body)
	var page struct {
		Shards []ringMember `json:"shards"`
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &page), body)
	return page.Shards
}

func zoneOf(members []ringMember, id string) string {
	for _, m := range members {
		if m.ID == id {
			return m.Zone
		}
	}
	return ""
}

// shuffleShards returns a function giving the IDs (sorted) of a tenant's shard of 3 in a dskit ring (RF 3, zone
// aware) with the members' tokens and zones: the cluster's own shards.
func shuffleShards(t *testing.T, members []ringMember) func(tenant string) []string {
	t.Helper()
	ctx := context.Background()
	kvClient, closer := consul.NewInMemoryClient(dskitring.GetCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })
	desc := dskitring.NewDesc()
	for _, m := range members {
		desc.AddIngester(m.ID, m.Address, m.Zone, m.Tokens, dskitring.ACTIVE, m.Registered, false, time.Time{}, nil)
	}
	testutil.Ok(t, kvClient.CAS(ctx, "ring", func(any) (any, bool, error) { return desc, true, nil }))
	r, err := dskitring.NewWithStoreClientAndStrategy(dskitring.Config{HeartbeatTimeout: time.Hour, ReplicationFactor: 3, ZoneAwarenessEnabled: true},
		"ingester", "ring", kvClient, dskitring.NewDefaultReplicationStrategy(), prometheus.NewRegistry(), log.NewNopLogger())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, r))
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, r) })
	return func(tenant string) []string {
		rs, err := r.ShuffleShard(tenant, 3).GetAllHealthy(dskitring.Read)
		testutil.Ok(t, err)
		var ids []string
		for _, inst := range rs.Instances {
			ids = append(ids, inst.Id)
		}
		slices.Sort(ids)
		return ids
	}
}

// activeSeries is strata_ingester_active_series of tenant on an ingester (0 when it has none).
func activeSeries(t *testing.T, p *proc, tenant string) float64 {
	t.Helper()
	for _, l := range metricsLines(t, p, "strata_ingester_active_series{", `tenant="`+tenant+`"`) {
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		testutil.Ok(t, err)
		return v
	}
	return 0
}
