package e2e

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc/metadata"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// writeBlock writes one TSDB block with n series of old_metric, a sample every minute over [start, end), and
// returns its directory.
func writeBlock(t *testing.T, n int, start, end time.Time) string {
	t.Helper()
	dir := t.TempDir()
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(t, err)
	app := db.Appender(context.Background())
	for i := range n {
		lbls := labels.FromStrings("__name__", "old_metric", "job", "old", "instance", string(rune('a'+i)))
		for ts := start; ts.Before(end); ts = ts.Add(time.Minute) {
			_, err := app.Append(0, lbls, ts.UnixMilli(), float64(i))
			testutil.Ok(t, err)
		}
	}
	testutil.Ok(t, app.Commit())
	testutil.Ok(t, db.CompactHead(tsdb.NewRangeHead(db.Head(), start.UnixMilli(), end.UnixMilli()-1)))
	blocks := db.Blocks()
	testutil.Equals(t, 1, len(blocks))
	blockDir := blocks[0].Dir()
	testutil.Ok(t, db.Close())
	return blockDir
}

// TestAllServesMergedStoreAPI: a Thanos querier pointed at `strata all` (its gRPC StoreAPI) sees the bucket's
// blocks as well as the recent data in the ingester, and its Info covers both, with the tenant's label set.
func TestAllServesMergedStoreAPI(t *testing.T) {
	const tenant = "team-a"
	blockEnd := time.Now().Add(-3 * 24 * time.Hour).Truncate(time.Hour)
	blockStart := blockEnd.Add(-time.Hour)
	blockDir := writeBlock(t, 3, blockStart, blockEnd)

	p := startStrata(t, t.TempDir(), append([]string{"all"}, sgFlags...)...)
	p.waitReady(t, 30*time.Second)
	ids := uploadBlocks(t, filepath.Join(p.dataDir, "bucket"), tenant, nil, []string{blockDir})
	waitBlocks(t, p.url(""), tenant, ids, syncWait)

	now := time.Now().UnixMilli()
	code, body := pushV1(t, p.url("/api/v1/push"), tenant, genSeries(2, now-1000, now))
	testutil.Equals(t, 204, code, body)

	// Series on the gRPC port: the block's series and the head's, each with all of its samples.
	var got map[string]map[int64]float64
	waitUntil(t, 30*time.Second, "block and head series on the StoreAPI of strata all", func() bool {
		got = readStore(t, p.grpcAddr, tenant)
		return len(got) == 5
	})
	for i, inst := range []string{"a", "b", "c"} {
		key := labels.FromStrings("__name__", "old_metric", "instance", inst, "job", "old", "tenant_id", tenant).String()
		testutil.Equals(t, 60, len(got[key]), "samples of %s in %v", key, sortedKeys(got))
		testutil.Equals(t, float64(i), got[key][blockStart.UnixMilli()])
	}
	for i := range 2 {
		key := labels.FromStrings("__name__", "e2e_metric", "instance", []string{"host-000", "host-001"}[i], "job", "e2e", "tenant_id", tenant).String()
		testutil.Equals(t, map[int64]float64{now - 1000: sampleValue(i, now-1000), now: sampleValue(i, now)}, got[key], "series %s in %v", key, sortedKeys(got))
	}

	// Info, as a Thanos querier asks it (no tenant), and for the tenant: from the block's start to the head's
	// end, with the tenant's label set.
	c, conn, err := store.Dial(p.grpcAddr)
	testutil.Ok(t, err)
	defer conn.Close()
	for _, ctx := range []context.Context{context.Background(), tenancy.OutgoingContext(context.Background(), tenant)} {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
		cancel()
		testutil.Ok(t, err)
		testutil.Equals(t, blockStart.UnixMilli(), info.GetStore().GetMinTime())
		testutil.Equals(t, int64(math.MaxInt64), info.GetStore().GetMaxTime())
		testutil.Equals(t, 1, len(info.GetLabelSets()))
		testutil.Equals(t, labels.FromStrings("tenant_id", tenant), store.LabelsFromPB(info.GetLabelSets()[0].GetLabels()))
	}
	testutil.Ok(t, c.RefreshInfo(context.Background(), 10*time.Second))

	// With the ingester scope (as the querier of a ring asks its ingesters) only the head's data.
	scoped := metadata.AppendToOutgoingContext(tenancy.OutgoingContext(context.Background(), tenant), store.ScopeMetadataKey, store.ScopeIngester)
	info, err := infopb.NewInfoClient(conn).Info(scoped, &infopb.InfoRequest{})
	testutil.Ok(t, err)
	testutil.Assert(t, info.GetStore().GetMinTime() > blockEnd.UnixMilli(), "ingester-scoped info reaches into the block: %v", info.GetStore())
}
