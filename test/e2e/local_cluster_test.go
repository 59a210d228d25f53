package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// cluster is examples/local-cluster started under a temp dir.
type cluster struct {
	dir string
	off int
	env []string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), off: freePortOffset(t)}
	// The store-gateways scan the bucket every second, the querier reads the block list every second and asks the
	// gateways for blocks as soon as they are uploaded (the test waits for the gateways to have them).
	c.env = append(os.Environ(), "STRATA_BIN="+strataBin, fmt.Sprintf("STRATA_PORT_OFFSET=%d", c.off), "STRATA_BLOCK_DURATION=2h",
		"STRATA_SYNC_INTERVAL=1s", "STRATA_BLOCKS_REFRESH_INTERVAL=1s", "STRATA_UPLOAD_GRACE_PERIOD=1ms")
	c.run(t, "start.sh")
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"distributor", "ingester-a", "ingester-b", "ingester-c", "store-gateway-a", "store-gateway-b", "store-gateway-c", "querier", "query-frontend"} {
				b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
				t.Logf("%s.log (tail):\n%s", n, tail(string(b), 40))
			}
		}
		cmd := exec.Command("bash", filepath.Join(repoRoot(), "examples/local-cluster/stop.sh"), c.dir)
		_ = cmd.Run()
	})
	return c
}

func (c *cluster) run(t *testing.T, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(repoRoot(), "examples/local-cluster", script), c.dir}, args...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	testutil.Ok(t, err, "%s: %s", script, out)
}

func (c *cluster) url(port int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", port+c.off, path)
}

func (c *cluster) grpc(port int) string { return fmt.Sprintf("127.0.0.1:%d", port+c.off) }

func (c *cluster) pid(t *testing.T, name string) int {
	b, err := os.ReadFile(filepath.Join(c.dir, name+".pid"))
	testutil.Ok(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	testutil.Ok(t, err)
	return pid
}

// stopIngesters stops the three ingesters gracefully (each leaves the ring, flushes and ships its blocks) and waits
// until the querier's view of the ring has none left: their leaving reaches it by gossip, and until then it would
// still ask an ingester that is gone (with RF 3 over a ring it sees as one ingester, none may fail).
func (c *cluster) stopIngesters(t *testing.T) {
	t.Helper()
	c.run(t, "stop.sh", "ingester-a", "ingester-b", "ingester-c")
	waitUntil(t, 30*time.Second, "the querier sees no ingester in the ring", func() bool {
		code, body := httpGet(c.url(8087, "/ingester/ring"), map[string]string{"Accept": "application/json"})
		if code != 200 {
			return false
		}
		for _, state := range []string{"ACTIVE", "LEAVING", "JOINING", "PENDING"} {
			if strings.Contains(body, `"state":"`+state+`"`) {
				return false
			}
		}
		return true
	})
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	ingesterGRPC = map[string]int{"ingester-a": 9096, "ingester-b": 9097, "ingester-c": 9098}
	gatewayHTTP  = map[string]int{"store-gateway-a": 8084, "store-gateway-b": 8085, "store-gateway-c": 8086}
)

// TestLocalCluster is the write path's process-level check: 3 ingesters (zones a, b, c, RF 3) and a distributor
// on loopback; every acknowledged sample is on at least 2 ingesters; kill -9 of one ingester does not fail a
// push nor lose an acknowledged sample; its WAL brings its data back on restart; a graceful stop ships blocks
// with the Thanos meta.json section that promtool accepts; once the ingesters are gone, the 3 store-gateways
// (zones a, b, c, in their ring) serve the shipped blocks to the querier.
func TestLocalCluster(t *testing.T) {
	c := startCluster(t)
	// start.sh returned once the querier saw the 3 store-gateways ACTIVE in their ring, one per zone.
	ring := sgcRing(t, c.url(8087, "/store-gateway/ring"))
	testutil.Equals(t, map[string]sgcMember{
		"store-gateway-a": {State: "ACTIVE", Zone: "a", Address: c.grpc(9084)},
		"store-gateway-b": {State: "ACTIVE", Zone: "b", Address: c.grpc(9085)},
		"store-gateway-c": {State: "ACTIVE", Zone: "c", Address: c.grpc(9086)},
	}, ring)
	push := c.url(8080, "/api/v1/push")
	const (
		tenant  = "team-e2e"
		nSeries = 100
	)
	now := time.Now().UnixMilli()
	phase1 := []int64{now - 60000, now - 45000, now - 30000, now - 15000}
	for _, ts := range phase1 {
		code, body := pushV1(t, push, tenant, genSeries(nSeries, ts))
		testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)
	}
	// checkCopies asserts that every sample at the given timestamps of every series is on at least minCopies of
	// the ingesters.
	checkCopies := func(t *testing.T, ingesters []string, times []int64, minCopies int) {
		t.Helper()
		copies := map[string]map[int64]int{}
		for _, ing := range ingesters {
			for s, samples := range readStore(t, c.grpc(ingesterGRPC[ing]), tenant) {
				if copies[s] == nil {
					copies[s] = map[int64]int{}
				}
				for ts, v := range samples {
					testutil.Equals(t, sampleValue(seriesIndex(t, s), ts), v, "%s@%d on %s", s, ts, ing)
					copies[s][ts]++
				}
			}
		}
		testutil.Equals(t, nSeries, len(copies), "series on the ingesters")
		for s, byTime := range copies {
			for _, ts := range times {
				testutil.Assert(t, byTime[ts] >= minCopies, "%s@%d on %d of %v, want ≥ %d", s, ts-now, byTime[ts], ingesters, minCopies)
			}
		}
	}
	// A push returns once 2 of 3 ingesters acknowledged it. The third write lands just after, unless the next push
	// of the same series overtook it there: then that ingester refuses it as out of order (as Mimir's do), and the
	// sample lives on the other two. So: every sample on at least 2 ingesters.
	checkCopies(t, []string{"ingester-a", "ingester-b", "ingester-c"}, phase1, 2)
	time.Sleep(time.Second) // let the third writes land, so the snapshot below is what ingester-b acknowledged
	beforeKill := readStore(t, c.grpc(ingesterGRPC["ingester-b"]), tenant)
	testutil.Assert(t, len(beforeKill) > 0, "ingester-b holds nothing")

	// Tenancy holds on the ingesters' StoreAPI too.
	testutil.Equals(t, 0, len(readStore(t, c.grpc(9096), "someone-else")))

	// kill -9 one ingester: pushes keep succeeding, on the two others.
	testutil.Ok(t, syscall.Kill(c.pid(t, "ingester-b"), syscall.SIGKILL))
	phase2 := []int64{now, now + 15000}
	for _, ts := range phase2 {
		code, body := pushV1(t, push, tenant, genSeries(nSeries, ts))
		testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)
	}
	// With ingester-b down a push needs both others: phase 2 is on both; earlier samples are on at least one.
	checkCopies(t, []string{"ingester-a", "ingester-c"}, phase2, 2)
	checkCopies(t, []string{"ingester-a", "ingester-c"}, phase1, 1)

	// Queries while ingester-b is down (and still in the ring): the other replicas answer, with no warning,
	// even when partial responses are refused.
	for _, ts := range append(append([]int64{}, phase1...), phase2...) {
		code, r := promAPI(t, c.url(8090, "/prometheus"), tenant, "/api/v1/query", url.Values{"query": {"count(e2e_metric)"},
			"time": {fmt.Sprintf("%.3f", float64(ts)/1000)}, "partial_response": {"false"}})
		testutil.Equals(t, 200, code, "%s %s", r.ErrorType, r.Error)
		testutil.Equals(t, 0, len(r.Warnings), "warnings: %v", r.Warnings)
		testutil.Assert(t, strings.Contains(string(r.Data), fmt.Sprintf(`"%d"`, nSeries)), "count at %d: %s", ts-now, r.Data)
	}

	// Restart: the WAL brings back everything ingester-b had acknowledged before the kill.
	c.run(t, "start.sh", "ingester-b")
	afterRestart := readStore(t, c.grpc(ingesterGRPC["ingester-b"]), tenant)
	for series, samples := range beforeKill {
		for ts, v := range samples {
			got, ok := afterRestart[series][ts]
			testutil.Assert(t, ok && got == v, "ingester-b lost %s@%d in the restart", series, ts-now)
		}
	}
	checkCopies(t, []string{"ingester-a", "ingester-b", "ingester-c"}, append(append([]int64{}, phase1...), phase2...), 2)

	// The querier (from the ring) returns each series once, without tenant_id, with the values pushed.
	q := c.url(8090, "/prometheus")
	// checkVector checks the e2e_metric vector at ts: every series once, without tenant_id, with the value pushed.
	checkVector := func(vec []promSample, ts int64, from string) {
		t.Helper()
		testutil.Equals(t, nSeries, len(vec), "series at %d%s", ts-now, from)
		seen := map[string]bool{}
		for _, s := range vec {
			testutil.Equals(t, map[string]string{"__name__": "e2e_metric", "instance": s.Metric["instance"], "job": "e2e"}, s.Metric)
			testutil.Assert(t, !seen[s.Metric["instance"]], "duplicate series %v", s.Metric)
			seen[s.Metric["instance"]] = true
			i, err := strconv.Atoi(strings.TrimPrefix(s.Metric["instance"], "host-"))
			testutil.Ok(t, err)
			testutil.Equals(t, sampleValue(i, ts), sampleFloat(t, s.Value), "%v at %d", s.Metric, ts-now)
		}
	}
	for _, ts := range append(append([]int64{}, phase1...), phase2...) {
		checkVector(instantQuery(t, q, tenant, "e2e_metric", ts), ts, "")
	}
	testutil.Equals(t, 0, len(instantQuery(t, q, "someone-else", `{__name__=~".+"}`, now)))

	// Graceful stop of the ingesters: each leaves the ring, flushes and ships its blocks.
	c.stopIngesters(t)
	metas, err := filepath.Glob(filepath.Join(c.dir, "bucket", tenant, "*", "meta.json"))
	testutil.Ok(t, err)
	testutil.Assert(t, len(metas) >= 3, "want blocks from 3 ingesters in the bucket, got %d", len(metas))
	promtool := promTool(t, "promtool")
	for _, m := range metas {
		b, err := os.ReadFile(m)
		testutil.Ok(t, err)
		var meta struct {
			ULID   string `json:"ulid"`
			Thanos struct {
				Labels     map[string]string `json:"labels"`
				Source     string            `json:"source"`
				Downsample struct {
					Resolution int64 `json:"resolution"`
				} `json:"downsample"`
			} `json:"thanos"`
		}
		testutil.Ok(t, json.Unmarshal(b, &meta))
		testutil.Equals(t, map[string]string{"tenant_id": tenant}, meta.Thanos.Labels)
		testutil.Equals(t, "receive", meta.Thanos.Source)
		testutil.Equals(t, int64(0), meta.Thanos.Downsample.Resolution)
		out, err := exec.Command(promtool, "tsdb", "analyze", filepath.Join(c.dir, "bucket", tenant), meta.ULID).CombinedOutput()
		testutil.Ok(t, err, "promtool tsdb analyze %s: %s", meta.ULID, out)
		testutil.Assert(t, strings.Contains(string(out), "Block ID: "+meta.ULID), string(out))
	}

	// The store-gateways (RF 3 over 3 gateways: each owns every block) pick the shipped blocks up, and with no
	// ingester left the querier answers from them alone: every series once, every value pushed, no warning, even
	// with partial responses refused.
	var ids []string
	for _, m := range metas {
		ids = append(ids, filepath.Base(filepath.Dir(m)))
	}
	for _, port := range gatewayHTTP {
		waitBlocks(t, c.url(port, ""), tenant, ids, 30*time.Second)
	}
	queriedBefore := map[string]float64{}
	for name, port := range gatewayHTTP {
		queriedBefore[name] = sgMetric(t, c.url(port, "/metrics"), "strata_bucket_store_series_blocks_queried_total")
	}
	for _, ts := range append(append([]int64{}, phase1...), phase2...) {
		vec, warnings := promQuery(t, q, tenant, "e2e_metric", time.UnixMilli(ts), time.UnixMilli(ts), 0, url.Values{"partial_response": {"false"}})
		testutil.Equals(t, 0, len(warnings), "warnings: %v", warnings)
		checkVector(vec, ts, " from the store-gateways")
	}
	// Every raw sample pushed, exactly once.
	vec := rangeQuery(t, q, tenant, "count_over_time(e2e_metric[2m])", now+15000, now+15000, "1s", url.Values{"partial_response": {"false"}})
	testutil.Equals(t, nSeries, len(vec))
	for _, s := range vec {
		testutil.Equals(t, 1, len(s.Values), "%v", s.Metric)
		testutil.Equals(t, float64(len(phase1)+len(phase2)), sampleFloat(t, s.Values[0]), "samples of %v", s.Metric)
	}
	served := 0.0
	for name, port := range gatewayHTTP {
		served += sgMetric(t, c.url(port, "/metrics"), "strata_bucket_store_series_blocks_queried_total") - queriedBefore[name]
	}
	testutil.Assert(t, served > 0, "no store-gateway read a block")
	testutil.Equals(t, 0.0, sgMetric(t, c.url(8087, "/metrics"), "strata_querier_blocks_unqueried_total"))
}

// seriesIndex is the i of genSeries's instance="host-<i>" in a series' labels.
func seriesIndex(t *testing.T, series string) int {
	i := strings.Index(series, `instance="host-`)
	testutil.Assert(t, i >= 0, "not a generated series: %s", series)
	n, err := strconv.Atoi(series[i+len(`instance="host-`) : i+len(`instance="host-`)+3])
	testutil.Ok(t, err)
	return n
}
