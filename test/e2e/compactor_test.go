package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// bucketBlock is what the test reads of a block directory of the filesystem bucket.
type bucketBlock struct {
	id         string
	complete   bool // meta.json present
	marked     bool // deletion-mark.json present
	numSamples uint64
	sources    int
	source     string
}

// readBucket lists the tenant's block directories of the filesystem bucket at dir.
func readBucket(t *testing.T, dir, tenant string) map[string]bucketBlock {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, tenant))
	testutil.Ok(t, err)
	out := map[string]bucketBlock{}
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 26 {
			continue
		}
		b := bucketBlock{id: e.Name()}
		raw, err := os.ReadFile(filepath.Join(dir, tenant, e.Name(), "meta.json"))
		if err == nil {
			var m struct {
				Stats struct {
					NumSamples uint64 `json:"numSamples"`
				} `json:"stats"`
				Compaction struct {
					Sources []string `json:"sources"`
				} `json:"compaction"`
				Thanos struct {
					Source string `json:"source"`
				} `json:"thanos"`
			}
			testutil.Ok(t, json.Unmarshal(raw, &m))
			b.complete, b.numSamples, b.sources, b.source = true, m.Stats.NumSamples, len(m.Compaction.Sources), m.Thanos.Source
		}
		_, err = os.Stat(filepath.Join(dir, tenant, e.Name(), "deletion-mark.json"))
		b.marked = err == nil
		out[b.id] = b
	}
	return out
}

// liveSamples sums numSamples over the complete blocks not marked for deletion, and returns their IDs.
func liveSamples(blocks map[string]bucketBlock) (uint64, []string) {
	var (
		n   uint64
		ids []string
	)
	for _, b := range blocks {
		if b.complete && !b.marked {
			n += b.numSamples
			ids = append(ids, b.id)
		}
	}
	return n, sortedCopy(ids)
}

// TestCompactorLocalCluster is issue 14's first Must show: the local cluster (RF 3, 1m blocks) ships three copies
// of several 1m blocks; `strata compactor` killed with -9 in the middle of a run, then a full `--once` run, leave
// the bucket holding each sample once (the sum of numSamples over the live blocks is the number of samples
// written), never with a partial block served, and the querier's answers are the same before, right after the
// compaction (the marked blocks still served) and once the store-gateways dropped the marked blocks.
func TestCompactorLocalCluster(t *testing.T) {
	const (
		tenant      = "team-compact"
		nSeries     = 30
		ignoreDelay = 15 * time.Second
	)
	c := &cluster{dir: t.TempDir(), off: freePortOffset(t)}
	c.env = append(os.Environ(), "STRATA_BIN="+strataBin, fmt.Sprintf("STRATA_PORT_OFFSET=%d", c.off), "STRATA_BLOCK_DURATION=1m",
		"STRATA_SYNC_INTERVAL=1s", "STRATA_BLOCKS_REFRESH_INTERVAL=1s", "STRATA_UPLOAD_GRACE_PERIOD=1ms",
		"STRATA_IGNORE_DELETION_MARKS_DELAY="+ignoreDelay.String())
	c.run(t, "start.sh")
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"store-gateway-a", "querier"} {
				b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
				t.Logf("%s.log (tail):\n%s", n, tail(string(b), 30))
			}
		}
		c.run(t, "stop.sh")
	})

	// Five minutes of samples every 15s, in the past and aligned to the minute, in one push (each series' samples
	// in order): three copies, one per ingester; stopping the ingesters cuts and ships their 1m blocks.
	t0 := time.Now().Truncate(time.Minute).Add(-7 * time.Minute).UnixMilli()
	var ts []int64
	for x := t0; x < t0+5*time.Minute.Milliseconds(); x += 15000 {
		ts = append(ts, x)
	}
	code, body := pushV1(t, c.url(8080, "/api/v1/push"), tenant, genSeries(nSeries, ts...))
	testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)
	written := uint64(nSeries * len(ts))
	time.Sleep(time.Second) // the third copy
	c.run(t, "stop.sh", "ingester-a", "ingester-b", "ingester-c")

	bucket := filepath.Join(c.dir, "bucket")
	shipped := readBucket(t, bucket, tenant)
	shippedSamples, shippedIDs := liveSamples(shipped)
	testutil.Assert(t, len(shippedIDs) >= 3*5, "want at least 5 blocks from each of 3 ingesters, got %d", len(shippedIDs))
	testutil.Equals(t, 3*written, shippedSamples, "three copies shipped")
	for _, port := range gatewayHTTP {
		waitBlocks(t, c.url(port, ""), tenant, shippedIDs, 30*time.Second)
	}

	q := c.url(8090, "/prometheus")
	strict := url.Values{"partial_response": {"false"}}
	end := ts[len(ts)-1]
	answers := func() string {
		t.Helper()
		raw := rangeQuery(t, q, tenant, "e2e_metric", t0, end, "15s", strict)
		counts := rangeQuery(t, q, tenant, "count_over_time(e2e_metric[10m])", end, end, "1s", strict)
		testutil.Equals(t, nSeries, len(raw))
		testutil.Equals(t, nSeries, len(counts))
		for _, s := range counts {
			testutil.Equals(t, float64(len(ts)), sampleFloat(t, s.Values[0]), "samples of %v", s.Metric)
		}
		return fmt.Sprint(raw, counts)
	}
	before := answers()

	compactorArgs := func(extra ...string) []string {
		return append([]string{"compactor", "--objstore.config-file=" + filepath.Join(c.dir, "objstore.yaml"),
			"--compactor.block-ranges=1m,2m,4m", "--compactor.consistency-delay=0s", "--compactor.deletion-delay=1m",
			"--store-gateway.ignore-deletion-marks-delay=" + ignoreDelay.String()}, extra...)
	}

	// kill -9 once the first compacted block is uploaded and its sources are being marked.
	killed := startStrata(t, "", compactorArgs("--compactor.compaction-interval=1h")...)
	waitUntil(t, 30*time.Second, "the compactor to mark its first source block", func() bool {
		return strings.Contains(killed.out.String(), `msg="marked block"`)
	})
	testutil.Ok(t, killed.cmd.Process.Signal(syscall.SIGKILL))
	<-killed.exited
	ws, _ := killed.cmd.ProcessState.Sys().(syscall.WaitStatus)
	testutil.Assert(t, ws.Signaled(), "the compactor ended before the kill: %v", killed.err)
	mid := readBucket(t, bucket, tenant)
	midSamples, _ := liveSamples(mid)
	t.Logf("killed mid-run: %d block dirs, %d samples in live blocks (%d written)", len(mid), midSamples, written)
	// Whatever the gateways serve has its meta.json: no partial block is ever served.
	for _, port := range gatewayHTTP {
		rows, ok, body := sgBlocksPage(t, c.url(port, ""), tenant)
		testutil.Assert(t, ok, body)
		for _, id := range blockIDs(rows) {
			testutil.Assert(t, readBucket(t, bucket, tenant)[id].complete, "partial block %s served", id)
		}
	}
	testutil.Equals(t, before, answers(), "answers after the kill")

	// A full run finishes the job: each sample once.
	start := time.Now()
	full := startStrata(t, "", compactorArgs("--once")...)
	<-full.exited
	testutil.Ok(t, full.err, full.out.String())
	t.Logf("compactor --once took %s", time.Since(start))
	after := readBucket(t, bucket, tenant)
	liveN, liveIDs := liveSamples(after)
	testutil.Equals(t, written, liveN, "samples in the live blocks")
	for _, id := range liveIDs {
		testutil.Equals(t, "compactor", after[id].source, "live block %s", id)
	}
	for id := range shipped {
		testutil.Assert(t, after[id].marked, "shipped block %s not marked for deletion", id)
	}
	_, err := os.Stat(filepath.Join(bucket, tenant, "bucket-index.json.gz"))
	testutil.Ok(t, err, "bucket index")

	// During: the marked blocks are still served (for the ignore-deletion-marks delay), the answers unchanged.
	rows, ok, _ := sgBlocksPage(t, c.url(gatewayHTTP["store-gateway-a"], ""), tenant)
	testutil.Assert(t, ok)
	servedMarked := 0
	for _, id := range blockIDs(rows) {
		if after[id].marked {
			servedMarked++
		}
	}
	testutil.Assert(t, servedMarked > 0, "no marked block served right after the compaction")
	testutil.Equals(t, before, answers(), "answers during")

	// A compactor started now finds nothing left to do: /compactor/tenants shows no planned group, none failed,
	// and it compacts nothing.
	again := startStrata(t, "", compactorArgs("--compactor.compaction-interval=1h")...)
	again.waitReady(t, 30*time.Second)
	var status []struct {
		Tenant        string            `json:"tenant"`
		LastRun       time.Time         `json:"last_run"`
		PlannedGroups map[string]int    `json:"planned_groups"`
		FailedGroups  map[string]string `json:"failed_groups"`
		LiveBlocks    int               `json:"live_blocks"`
	}
	waitUntil(t, 30*time.Second, "the compactor's pass over "+tenant, func() bool {
		code, body := httpGet(again.url("/compactor/tenants"), map[string]string{"Accept": "application/json"})
		testutil.Equals(t, 200, code, body)
		testutil.Ok(t, json.Unmarshal([]byte(body), &status))
		return len(status) == 1 && !status[0].LastRun.IsZero()
	})
	testutil.Equals(t, tenant, status[0].Tenant)
	testutil.Equals(t, 0, len(status[0].PlannedGroups), "planned: %v", status[0].PlannedGroups)
	testutil.Equals(t, 0, len(status[0].FailedGroups), "failed: %v", status[0].FailedGroups)
	testutil.Equals(t, len(liveIDs), status[0].LiveBlocks)
	testutil.Equals(t, 0.0, sgMetric(t, again.url("/metrics"), "strata_compactor_groups_compacted_total"))
	testutil.Equals(t, 0.0, sgMetric(t, again.url("/metrics"), "strata_compactor_tenant_oldest_uncompacted_block_age_seconds", `tenant="`+tenant+`"`))
	testutil.Equals(t, 0, again.stop(t))

	// After: the gateways serve the compacted blocks only.
	for _, port := range gatewayHTTP {
		waitBlocks(t, c.url(port, ""), tenant, liveIDs, ignoreDelay+20*time.Second)
	}
	testutil.Equals(t, before, answers(), "answers after")
}
