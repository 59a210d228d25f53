package e2e

import (
	"context"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
)

// sidecarQueries are compared between Prometheus's own API and a Strata querier over the sidecar (live data)
// and the store-gateway (uploaded blocks). withExt: the series keep their labels, so Strata's carry Prometheus's
// external labels besides (Prometheus's own API shows them without).
var sidecarQueries = []struct {
	query   string
	withExt bool
}{
	{query: `e2e_requests_total`, withExt: true},
	{query: `e2e_temperature`, withExt: true},
	{query: `up`, withExt: true},
	{query: `rate(e2e_requests_total[5s])`, withExt: true},
	{query: `max_over_time(e2e_temperature[7s])`, withExt: true},
	{query: `count_over_time(up[10s])`, withExt: true},
	{query: `sum by (path) (e2e_requests_total)`},
	{query: `sum(rate(e2e_requests_total[4s]))`},
	{query: `scrape_samples_scraped`, withExt: true},
}

// compareWithPrometheus runs every sidecarQueries query as a range query [start, end] by step and as instant
// queries at the given times, on Prometheus and on the Strata querier as tenant, and returns the first
// difference ("" when every answer is equal, Strata's series carrying ext besides where the query keeps labels).
func compareWithPrometheus(t *testing.T, prom *promProc, strataURL, tenant string, ext map[string]string, start, end time.Time, step time.Duration, instants ...time.Time) string {
	t.Helper()
	for _, q := range sidecarQueries {
		type run struct {
			start, end time.Time
			step       time.Duration
		}
		runs := []run{{start, end, step}}
		for _, at := range instants {
			runs = append(runs, run{at, at, 0})
		}
		for _, r := range runs {
			want, _ := promQuery(t, prom.baseURL(), "", q.query, r.start, r.end, r.step, nil)
			got, _ := promQuery(t, strataURL, tenant, q.query, r.start, r.end, r.step, nil)
			testutil.Assert(t, len(want) > 0, "%s: Prometheus answers nothing over [%s, %s]", q.query, r.start, r.end)
			if q.withExt {
				for i := range want {
					maps.Copy(want[i].Metric, ext)
				}
				sortSamples(want)
			}
			if d := sgDiff(want, got); d != "" {
				return q.query + " [" + r.start.UTC().Format(time.RFC3339Nano) + ", " + r.end.UTC().Format(time.RFC3339Nano) + "] step " + r.step.String() + ": " + d
			}
		}
	}
	return ""
}

// compareOverBlocksAndHead compares Strata's answers with Prometheus's once, over [start, a moment ago] (and
// instants at blockMid, at the end of the blocks and at the end), right after a block was uploaded: the range then
// ends in samples only Prometheus's head holds, which Strata reads through the sidecar alone. When another block
// was uploaded during the comparison (it may then have been read from the bucket) it tries again, at most 4
// times.
func compareOverBlocksAndHead(t *testing.T, prom *promProc, strataURL, bucketDir, tenant string, ext map[string]string, start, blockMid time.Time) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		n := len(bucketBlocks(t, bucketDir, tenant))
		waitUntil(t, 30*time.Second, "a block uploaded", func() bool { return len(bucketBlocks(t, bucketDir, tenant)) > n })
		metas := bucketBlocks(t, bucketDir, tenant)
		lastBlockEnd := metas[len(metas)-1].MaxTime
		end := time.Now().Add(-500 * time.Millisecond).Truncate(100 * time.Millisecond)
		testutil.Assert(t, end.UnixMilli() > lastBlockEnd+1000, "the range reaches a second into the head")
		began := time.Now()
		diff := compareWithPrometheus(t, prom, strataURL, tenant, ext, start, end, time.Second, blockMid, time.UnixMilli(lastBlockEnd-500), end)
		after := bucketBlocks(t, bucketDir, tenant)
		if after[len(after)-1].MaxTime != lastBlockEnd {
			testutil.Assert(t, attempt < 4, "a block was uploaded during each of %d comparisons (each took ~%s)", attempt, time.Since(began))
			continue
		}
		if diff != "" {
			t.Fatalf("over blocks and head (up to %s, head from %s): %s", end.UTC().Format(time.RFC3339Nano), time.UnixMilli(lastBlockEnd).UTC().Format(time.RFC3339Nano), diff)
		}
		t.Logf("equal over blocks and %.1fs of head (comparison took %s, attempt %d)", float64(end.UnixMilli()-lastBlockEnd)/1000, time.Since(began).Round(time.Millisecond), attempt)
		return
	}
}

// TestSidecar is issue 13's first "Must show": a real Prometheus with external labels {cluster, replica}, cutting
// a block every 10s, with `strata sidecar` beside it. The sidecar uploads its blocks into <tenant>/ of the bucket
// (thanos.labels = external labels + tenant_id, source sidecar); a Strata querier (`strata all`, the sidecar as a
// tenant-bound --endpoint, its store-gateway over the same bucket) answers query and query_range exactly as
// Prometheus's own API does, over a finished past range covering the uploaded blocks and the live head; the
// store-gateway alone answers for the uploaded range; a sidecar stopped and started again uploads nothing twice.
func TestSidecar(t *testing.T) {
	const tenant = "team-a"
	ext := map[string]string{"cluster": "eu1", "replica": "a"}
	dir := t.TempDir()
	bucketDir := filepath.Join(dir, "bucket")
	testutil.Ok(t, os.MkdirAll(bucketDir, 0o750))
	bucketCfg := writeFilesystemBucketConfig(t, dir, bucketDir)

	target := startMetricsTarget(t)
	prom := startPrometheus(t, dir, ext, 5*time.Second, target)
	begin := time.Now()

	sc := startStrata(t, dir, sidecarArgs(prom, tenant, bucketCfg)...)
	sc.waitReady(t, 30*time.Second)
	for _, path := range []string{"/-/ready", "/-/healthy"} {
		code, body := httpGet(sc.url(path), nil)
		testutil.Equals(t, 200, code, "%s: %s", path, body)
	}

	querier := startStrata(t, dir, "all", "--endpoint="+tenant+"="+sc.grpcAddr, "--objstore.config-file="+bucketCfg,
		"--sync-interval=1s", "--querier.blocks-refresh-interval=1s")
	querier.waitReady(t, 60*time.Second)

	// Two blocks uploaded, each as Prometheus wrote it, with the Thanos section.
	var metas []*block.Meta
	waitUntil(t, 60*time.Second, "two blocks uploaded by the sidecar", func() bool {
		metas = bucketBlocks(t, bucketDir, tenant)
		return len(metas) >= 2
	})
	t.Logf("blocks uploaded %.1fs after Prometheus started", time.Since(begin).Seconds())
	for _, m := range metas {
		local, err := block.ReadMetaFromDir(filepath.Join(prom.tsdbDir, m.ULID.String()))
		testutil.Ok(t, err, "uploaded block %s is not one of Prometheus's", m.ULID)
		testutil.Equals(t, local.BlockMeta, m.BlockMeta)
		testutil.Equals(t, 1, m.Compaction.Level)
		testutil.Equals(t, map[string]string{"cluster": "eu1", "replica": "a", "tenant_id": tenant}, m.Thanos.Labels)
		testutil.Equals(t, block.SidecarSource, m.Thanos.Source)
		testutil.Equals(t, int64(0), m.Thanos.Downsample.Resolution)
		testutil.Assert(t, m.Stats.NumSamples > 0, "block %s has samples", m.ULID)
	}
	root, err := os.ReadDir(bucketDir)
	testutil.Ok(t, err)
	testutil.Equals(t, 1, len(root), "only <tenant>/ in the bucket")
	testutil.Equals(t, tenant, root[0].Name())

	// Once the store-gateway serves the uploaded blocks (the querier lists them after their upload grace period),
	// Strata answers over them as Prometheus does; then over a range that ends in the head, read through the
	// sidecar.
	lastBlockEnd := time.UnixMilli(metas[len(metas)-1].MaxTime)
	// An instant inside the blocks (the first one may hold a single scrape: it ends at the first block boundary).
	blockMid := time.UnixMilli((metas[1].MinTime + metas[1].MaxTime) / 2)
	start := begin.Add(-5 * time.Second).Truncate(time.Second)
	blocksEnd := lastBlockEnd.Add(-time.Second).Truncate(time.Second)
	var diff string
	waitUntil(t, 20*time.Second, "Strata answers as Prometheus over the uploaded blocks", func() bool {
		diff = compareWithPrometheus(t, prom, querier.url(""), tenant, ext, start, blocksEnd, time.Second, blockMid, blocksEnd)
		return diff == ""
	})
	if diff != "" {
		t.Fatal(diff)
	}
	compareOverBlocksAndHead(t, prom, querier.url(""), bucketDir, tenant, ext, start, blockMid)
	// The uploaded blocks are served by the store-gateway.
	code, body := httpGet(querier.url("/store-gateway/tenant/"+tenant+"/blocks"), nil)
	testutil.Equals(t, 200, code)
	for _, m := range metas {
		mustContain(t, body, m.ULID.String())
	}

	// Sidecar stopped: the store-gateway alone answers for the uploaded range as Prometheus does.
	testutil.Equals(t, 0, sc.stop(t))
	firstRun := shippedBlocks(sc.out.String())
	metas = bucketBlocks(t, bucketDir, tenant) // with what the sidecar shipped at shutdown
	lastBlockEnd = time.UnixMilli(metas[len(metas)-1].MaxTime)
	blocksEnd = lastBlockEnd.Add(-time.Second).Truncate(time.Second)
	waitUntil(t, 20*time.Second, "the store-gateway answers as Prometheus over the uploaded blocks", func() bool {
		diff = compareWithPrometheus(t, prom, querier.url(""), tenant, ext, start, blocksEnd, time.Second, blockMid, blocksEnd)
		return diff == ""
	})
	if diff != "" {
		t.Fatal(diff)
	}

	// Started again where it ran: nothing uploaded twice (its thanos.shipper.json is honoured), the querier
	// reaches it again, and the answers over blocks and head are Prometheus's, with no duplicate sample.
	sc2 := startStrataAt(t, dir, sc.httpAddr, sc.grpcAddr, sc.dataDir, sidecarArgs(prom, tenant, bucketCfg)...)
	sc2.waitReady(t, 30*time.Second)
	waitUntil(t, 20*time.Second, "the querier reaches the restarted sidecar", func() bool {
		res, warns := promQuery(t, querier.url(""), tenant, "up", time.Now(), time.Now(), 0, nil)
		return len(res) == 1 && len(warns) == 0
	})
	compareOverBlocksAndHead(t, prom, querier.url(""), bucketDir, tenant, ext, start, blockMid)
	testutil.Assert(t, len(shippedBlocks(sc2.out.String())) > 0, "the restarted sidecar uploaded the new blocks")
	// Over gRPC, as a stock Thanos querier asks: the tenant's series carry the external labels and tenant_id;
	// another tenant gets none; no tenant is refused.
	own := readStore(t, sc2.grpcAddr, tenant)
	testutil.Assert(t, len(own) > 0, "the sidecar serves the tenant's series")
	for lset := range own {
		for _, l := range []string{`cluster="eu1"`, `replica="a"`, `tenant_id="team-a"`} {
			testutil.Assert(t, strings.Contains(lset, l), "series %s lacks %s", lset, l)
		}
	}
	testutil.Equals(t, 0, len(readStore(t, sc2.grpcAddr, "team-b")))
	c, conn, err := store.Dial(sc2.grpcAddr)
	testutil.Ok(t, err)
	_, err = storetest.Series(context.Background(), c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}})
	testutil.Equals(t, codes.Unauthenticated, status.Code(err))
	testutil.Ok(t, conn.Close())

	testutil.Equals(t, 0, sc2.stop(t))
	secondRun := shippedBlocks(sc2.out.String())
	testutil.Assert(t, !strings.Contains(sc2.out.String(), "already in the bucket"), "the restarted sidecar found blocks shipped but not recorded:\n%s", sc2.out.String())
	all := append(slices.Clone(firstRun), secondRun...)
	slices.Sort(all)
	testutil.Equals(t, len(all), len(slices.Compact(slices.Clone(all))), "a block shipped twice: first run %v, second run %v", firstRun, secondRun)
	var inBucket []string
	for _, m := range bucketBlocks(t, bucketDir, tenant) {
		inBucket = append(inBucket, m.ULID.String())
	}
	slices.Sort(inBucket)
	testutil.Equals(t, inBucket, all, "the bucket holds exactly the blocks shipped")
	rec, err := block.ReadShipperMeta(prom.tsdbDir)
	testutil.Ok(t, err)
	testutil.Equals(t, len(inBucket), len(rec.Uploaded), "thanos.shipper.json records every shipped block")
	t.Logf("%d blocks shipped (%d before the restart, %d after); test took %.1fs", len(all), len(firstRun), len(secondRun), time.Since(begin).Seconds())
}

// TestSidecar_RefusesWithoutExternalLabels: next to a Prometheus without external labels the sidecar exits with
// Thanos's message, uploading nothing and never ready.
func TestSidecar_RefusesWithoutExternalLabels(t *testing.T) {
	dir := t.TempDir()
	bucketDir := filepath.Join(dir, "bucket")
	testutil.Ok(t, os.MkdirAll(bucketDir, 0o750))
	prom := startPrometheus(t, dir, nil, 10*time.Second, startMetricsTarget(t))
	sc := startStrata(t, dir, sidecarArgs(prom, "team-a", writeFilesystemBucketConfig(t, dir, bucketDir))...)
	select {
	case <-sc.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the sidecar did not exit within 30s\n%s", sc.out.String())
	}
	testutil.Equals(t, 1, sc.cmd.ProcessState.ExitCode())
	mustContain(t, sc.out.String(), "no external labels configured on Prometheus server, uniquely identifying external labels must be configured; see https://thanos.io/tip/thanos/storage.md#external-labels")
	entries, err := os.ReadDir(bucketDir)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(entries))
}
