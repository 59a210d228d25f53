package compact

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// TestProgressETA: the ETA is the elapsed time × bytes left / bytes done; a level beyond the plan grows the total.
func TestProgressETA(t *testing.T) {
	start := time.Unix(1000, 0)
	sized := func(n int64) *block.Meta {
		return &block.Meta{Thanos: block.ThanosMeta{Files: []block.File{{RelPath: "index", SizeBytes: n / 2}, {RelPath: "chunks/000001", SizeBytes: n - n/2}}}}
	}
	for _, tc := range []struct {
		name        string
		planned     []int64 // bytes of the planned blocks
		done        []int64 // bytes of each compacted plan, one per 10s
		wantETA     time.Duration
		wantPlanned int64
	}{
		{name: "quarter done", planned: []int64{50, 50}, done: []int64{25}, wantETA: 30 * time.Second, wantPlanned: 100},
		{name: "half done", planned: []int64{50, 50}, done: []int64{25, 25}, wantETA: 20 * time.Second, wantPlanned: 100},
		{name: "all done", planned: []int64{50, 50}, done: []int64{100}, wantETA: 0, wantPlanned: 100},
		{name: "beyond the plan", planned: []int64{50}, done: []int64{50, 70}, wantETA: 0, wantPlanned: 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			p := &progress{metrics: newProgressMetrics(reg)}
			p.start(start)
			var metas []*block.Meta
			for _, n := range tc.planned {
				metas = append(metas, sized(n))
			}
			p.plan(metas)
			var got CycleProgress
			for i, n := range tc.done {
				got = p.done(1, n, start.Add(time.Duration(i+1)*10*time.Second))
			}
			testutil.Equals(t, tc.wantETA, got.ETA)
			testutil.Equals(t, tc.wantPlanned, got.PlannedBytes)
			testutil.Equals(t, tc.wantETA.Seconds(), promtestutil.ToFloat64(p.metrics.eta))
			testutil.Equals(t, float64(tc.wantPlanned), promtestutil.ToFloat64(p.metrics.plannedBytes))
		})
	}
}

// TestCompactorProgress: a cycle plans the groups of every tenant, counts the compacted blocks and bytes, and
// shows the progress on /compactor/tenants.
func TestCompactorProgress(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	lset := map[string]string{"tenant_id": "t1"}
	for h := range int64(2) {
		for range 3 {
			shipBlock(t, bkt, "t1", lset, 2, h*hourMs, (h+1)*hourMs)
		}
	}
	c := newTestCompactor(t, bkt, prometheus.NewRegistry(), time.Hour, 2*time.Hour)
	testutil.Ok(t, c.RunOnce(context.Background()))
	p := c.Progress()
	testutil.Equals(t, false, p.Running)
	// Two 1h merges of three replicas, both planned at the start (the newest range waits for its 2h level).
	testutil.Equals(t, 2, p.DoneGroups)
	testutil.Equals(t, 2, p.PlannedGroups)
	testutil.Equals(t, 6, p.DoneBlocks)
	testutil.Equals(t, 6, p.PlannedBlocks)
	testutil.Equals(t, promtestutil.ToFloat64(c.metrics.blocksCompacted), float64(p.DoneBlocks))
	testutil.Equals(t, promtestutil.ToFloat64(c.metrics.bytesDownloaded), float64(p.DoneBytes))
	testutil.Equals(t, p.DoneBytes, p.PlannedBytes)
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(c.progress.metrics.eta))

	rec := httptest.NewRecorder()
	c.TenantsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/compactor/tenants", nil))
	body, err := io.ReadAll(rec.Body)
	testutil.Ok(t, err)
	testutil.Assert(t, strings.Contains(string(body), fmt.Sprintf("%d/%d group compactions", p.DoneGroups, p.PlannedGroups)), "%s", body)
}

// TestCompactorOwnsOnlyItsTenants: with an owner check (a compactor ring), a cycle compacts only the tenants the
// compactor owns and leaves the others' blocks alone; when ownership moves, the next cycle takes the new ones.
func TestCompactorOwnsOnlyItsTenants(t *testing.T) {
	ctx := context.Background()
	bkt := objstore.NewInMemBucket()
	tenants := []string{"a", "b", "c", "d"}
	for _, tenant := range tenants {
		for range 3 {
			shipBlock(t, bkt, tenant, map[string]string{"tenant_id": tenant}, 2, 0, hourMs)
		}
	}
	owned := map[string]bool{"a": true, "c": true}
	reg := prometheus.NewRegistry()
	c := newTestCompactor(t, bkt, reg, time.Hour)
	c.SetTenantOwner(func(tenant string) (bool, error) { return owned[tenant], nil })

	check := func(want map[string]bool, blocks map[string]int) {
		t.Helper()
		var paged []string
		for _, s := range c.Status() {
			paged = append(paged, s.Tenant)
		}
		var wantPaged []string
		for _, tenant := range tenants {
			testutil.Equals(t, blocks[tenant], len(liveBlocks(t, bkt, tenant)), "live blocks of tenant %s", tenant)
			if want[tenant] {
				wantPaged = append(wantPaged, tenant)
			}
		}
		testutil.Equals(t, wantPaged, paged)
		testutil.Equals(t, float64(len(wantPaged)), promtestutil.ToFloat64(c.metrics.tenantsOwned))
	}
	testutil.Ok(t, c.RunOnce(ctx))
	check(map[string]bool{"a": true, "c": true}, map[string]int{"a": 1, "b": 3, "c": 1, "d": 3})

	owned = map[string]bool{"b": true} // the ring changed: a and c moved to another compactor
	testutil.Ok(t, c.RunOnce(ctx))
	// a and c stay as compacted by the first cycle but leave the page; d is still nobody's here.
	check(map[string]bool{"b": true}, map[string]int{"a": 1, "b": 1, "c": 1, "d": 3})
}
