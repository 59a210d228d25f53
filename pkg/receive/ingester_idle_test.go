package receive

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// tenantSeries returns the strata_* series of reg labelled tenant="<tenant>", as "name{labels}".
func tenantSeries(t *testing.T, reg *prometheus.Registry, tenant string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	var out []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "strata_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" && l.GetValue() == tenant {
					out = append(out, mf.GetName())
				}
			}
		}
	}
	return out
}

// TestIngesterCloseIdleAndReopenWithRealShipper: a tenant closed as idle writes again, three times, with the real
// shipper registering its metrics on a real registry: no panic (registering them again used to panic with
// "duplicate metrics collector registration attempted"), every block is in the bucket, and while the tenant is
// closed no strata_* series of it is left; the other tenant's series stay.
func TestIngesterCloseIdleAndReopenWithRealShipper(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	bkt := objstore.NewInMemBucket()
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	ing := newTestIngester(t, dir, nil, reg, WithIngesterClock(clock),
		WithShippers(func(tenant, d string, lbls labels.Labels, treg prometheus.Registerer) (Shipper, error) {
			return block.NewShipper(log.NewNopLogger(), treg, d, objstore.NewPrefixedBucket(bkt, tenant),
				func() labels.Labels { return lbls }, block.ReceiveSource), nil
		}))
	defer ing.Close()
	ing.cfg.CloseIdleTSDBTimeout = time.Hour
	ctx := context.Background()
	hour := time.Hour.Milliseconds()

	const rounds = 3
	for r := int64(0); r < rounds; r++ {
		sampleT := (10*r + 1) * hour // each round in its own block range
		testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), sampleT)}}))
		// The same timestamp with another value: a discarded sample, so that the tenant has that series too.
		dup := ts(series("m"), sampleT)
		dup.Samples[0].Value = -1
		testutil.NotOk(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{dup}}))
		testutil.Ok(t, ing.Push(ctx, "b", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), sampleT)}}))
		testutil.Equals(t, []int64{sampleT}, readAll(t, ing, "a")[`{__name__="m", tenant_id="a"}`], "round %d", r)

		testutil.Ok(t, ing.Flush(ctx)) // cuts the head into a block and ships it: the head is empty
		testutil.Assert(t, len(tenantSeries(t, reg, "a")) > 0, "round %d: tenant a has no series before closing", r)

		now = now.Add(2 * time.Hour)
		ing.mtx.RLock()
		ing.tsdbs["b"].lastWrite.Store(now.UnixNano()) // b is not idle
		ing.mtx.RUnlock()
		testutil.Equals(t, []string{"a"}, ing.CloseIdle(), "round %d", r)
		testutil.Equals(t, []string{"b"}, ing.Tenants())
		testutil.Equals(t, []string(nil), tenantSeries(t, reg, "a"), "round %d: series of the closed tenant", r)
		testutil.Assert(t, len(tenantSeries(t, reg, "b")) > 0, "round %d: tenant b lost its series", r)
	}

	// Every round's block is in the bucket with its sample.
	var samples uint64
	testutil.Ok(t, bkt.Iter(ctx, "a/", func(name string) error {
		id, err := ulid.Parse(strings.TrimSuffix(strings.TrimPrefix(name, "a/"), "/"))
		if err != nil {
			return nil
		}
		m, err := block.ReadMetaFromBucket(ctx, objstore.NewPrefixedBucket(bkt, "a"), id)
		if err != nil {
			return err
		}
		samples += m.Stats.NumSamples
		return nil
	}))
	testutil.Equals(t, uint64(rounds), samples)

	// The tenant opens again for a write, with its metrics.
	testutil.Ok(t, ing.Push(ctx, "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 100*hour)}}))
	testutil.Equals(t, []int64{100 * hour}, readAll(t, ing, "a")[`{__name__="m", tenant_id="a"}`])
	testutil.Assert(t, len(tenantSeries(t, reg, "a")) > 0, "tenant a reopened has no series")
}
