package receive

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	dskitring "github.com/grafana/dskit/ring"
)

// TestRingPusherShuffleSharding: over 6 ingesters (zones a, b, c × 2) a tenant with shard size 3 is written to
// exactly the 3 ingesters of dskit's ShuffleShard (one per zone with zone awareness), every series to all 3 (RF
// 3); a tenant without a shard size is spread over all 6.
func TestRingPusherShuffleSharding(t *testing.T) {
	for _, zoneAware := range []bool{true, false} {
		t.Run(fmt.Sprintf("zone-aware=%v", zoneAware), func(t *testing.T) {
			p, ings := testRing(t, fmt.Sprintf("shuffle-%v", zoneAware), 6, zoneAware)
			p.WithShuffleSharding(func(tenant string) int { return map[string]int{"sharded": 3, "single": 1}[tenant] })
			shard, err := p.ring.ShuffleShard("sharded", 3).GetAllHealthy(dskitring.Read)
			testutil.Ok(t, err)
			testutil.Equals(t, 3, len(shard.Instances))
			var want []int // indexes of the shard's ingesters in ings (testRing's ids are ingester-<i>)
			zones := map[string]bool{}
			for _, inst := range shard.Instances {
				var i int
				_, err := fmt.Sscanf(inst.Id, "ingester-%d", &i)
				testutil.Ok(t, err)
				want = append(want, i)
				zones[inst.Zone] = true
			}
			slices.Sort(want)
			if zoneAware {
				testutil.Equals(t, 3, len(zones), "one ingester per zone: %v", shard.Instances)
			}

			ctx := context.Background()
			testutil.Ok(t, p.Push(ctx, "sharded", manySeries(300, 1000)))
			testutil.Ok(t, p.Push(ctx, "spread", manySeries(300, 1000)))
			holders := func(tenant string) []int {
				var out []int
				for i, ing := range ings {
					if ing.DB(tenant) != nil && len(readAll(t, ing, tenant)) > 0 {
						out = append(out, i)
					}
				}
				return out
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				c := copies(t, ings, "sharded")
				all3 := len(c) == 300
				for _, n := range c {
					all3 = all3 && n == 3
				}
				if all3 {
					break
				}
				testutil.Assert(t, time.Now().Before(deadline), "not every series of the sharded tenant reached its 3 ingesters")
				time.Sleep(20 * time.Millisecond)
			}
			testutil.Equals(t, want, holders("sharded"))
			eventually := func(tenant string, want []int) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for !slices.Equal(want, holders(tenant)) { // replicas past the quorum land after Push returned
					testutil.Assert(t, time.Now().Before(deadline), "tenant %s on %v, want %v", tenant, holders(tenant), want)
					time.Sleep(20 * time.Millisecond)
				}
			}
			eventually("spread", []int{0, 1, 2, 3, 4, 5})

			// A shard smaller than RF: without zones, one ingester takes every write (RF capped to the shard);
			// with zones dskit takes one per zone.
			testutil.Ok(t, p.Push(ctx, "single", manySeries(50, 1000)))
			single, err := p.ring.ShuffleShard("single", 1).GetAllHealthy(dskitring.Read)
			testutil.Ok(t, err)
			wantSingle := 1
			if zoneAware {
				wantSingle = 3
			}
			testutil.Equals(t, wantSingle, len(single.Instances))
			var singleIdx []int
			for _, inst := range single.Instances {
				var i int
				_, err := fmt.Sscanf(inst.Id, "ingester-%d", &i)
				testutil.Ok(t, err)
				singleIdx = append(singleIdx, i)
			}
			slices.Sort(singleIdx)
			eventually("single", singleIdx)
		})
	}
}

func TestGlobalLimitShare(t *testing.T) {
	for _, tc := range []struct {
		name                                  string
		rf, zones, ingestersInZone, shardSize int
		want                                  float64
	}{
		{"no zones, 6 ingesters", 3, 1, 6, 0, 0.5},
		{"no zones, shard of 3 of 6", 3, 1, 6, 3, 1},
		{"no zones, shard of 4 of 12", 3, 1, 12, 4, 0.75},
		{"no zones, shard larger than the ring", 3, 1, 6, 10, 0.5},
		{"3 zones × 2", 3, 3, 2, 0, 0.5},
		{"3 zones × 2, shard of 3: one per zone", 3, 3, 2, 3, 1},
		{"3 zones × 4, shard of 6: two per zone", 3, 3, 4, 6, 0.5},
		{"3 zones × 4, shard of 4: rounded up to two per zone", 3, 3, 4, 4, 0.5},
		{"ring not known yet", 3, 0, 0, 3, 1},
		{"RF 1, 4 ingesters", 1, 1, 4, 0, 0.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, GlobalLimitShare(tc.rf, tc.zones, tc.ingestersInZone, tc.shardSize))
		})
	}
}
