package ring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// TestCompactorRingSplitsTenants: two compactors, each with its lifecycler and its own ring client over a shared
// in-memory KV, split a set of tenants with no overlap and no gap, both of them owning some; once one leaves the
// ring, the other owns every tenant.
func TestCompactorRingSplitsTenants(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.HeartbeatPeriod = 100 * time.Millisecond
	cfg.ReplicationFactor = 1
	tenants := make([]string, 50)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%d", i)
	}
	type compactor struct {
		addr   string
		lc     *dskitring.BasicLifecycler
		client *dskitring.Ring
		owns   func(string) (bool, error)
	}
	var cs []*compactor
	for i := range 2 {
		kv, err := NewKV(MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		c := &compactor{addr: fmt.Sprintf("c%d:9095", i)}
		c.lc, err = NewLifecycler(cfg, InstanceConfig{ID: fmt.Sprintf("c%d", i), Addr: c.addr}, kv, "compactor", CompactorRingKey, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		testutil.Ok(t, services.StartAndAwaitRunning(ctx, c.lc))
		c.client, err = NewCompactorClient(cfg, kv, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		testutil.Ok(t, services.StartAndAwaitRunning(ctx, c.client))
		defer func() { _ = services.StopAndAwaitTerminated(ctx, c.client) }()
		c.owns = OwnsTenant(c.client, c.addr)
		cs = append(cs, c)
	}
	// owned returns, per tenant, how many of the running compactors own it, and per compactor how many it owns.
	owned := func(running []*compactor) (map[string]int, []int) {
		perTenant, perCompactor := map[string]int{}, make([]int, len(running))
		for _, tenant := range tenants {
			for i, c := range running {
				ok, err := c.owns(tenant)
				if err == nil && ok {
					perTenant[tenant]++
					perCompactor[i]++
				}
			}
		}
		return perTenant, perCompactor
	}
	// waitSplit waits until every tenant has exactly one owner among running (each compactor's client sees the
	// ring on its own watch), and returns the number each owns.
	waitSplit := func(running []*compactor) []int {
		deadline := time.Now().Add(10 * time.Second)
		for {
			perTenant, perCompactor := owned(running)
			ok := true
			for _, tenant := range tenants {
				ok = ok && perTenant[tenant] == 1
			}
			for _, c := range running {
				ok = ok && c.client.InstancesCount() == len(running)
			}
			if ok {
				return perCompactor
			}
			testutil.Assert(t, time.Now().Before(deadline), "tenants not split one owner each: %v", perTenant)
			time.Sleep(20 * time.Millisecond)
		}
	}
	counts := waitSplit(cs)
	testutil.Equals(t, len(tenants), counts[0]+counts[1])
	testutil.Assert(t, counts[0] > 0 && counts[1] > 0, "one compactor owns no tenant: %v", counts)

	testutil.Ok(t, Leave(cs[1].lc, log.NewNopLogger()))
	counts = waitSplit(cs[:1])
	testutil.Equals(t, []int{len(tenants)}, counts)
	_, gone := owned(cs[1:])
	testutil.Equals(t, []int{0}, gone)
	testutil.Ok(t, services.StopAndAwaitTerminated(ctx, cs[0].lc))
}
