package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/compact"
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
	c.stopIngesters(t)

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

// setS3Delays sets the PUT and DELETE delays of the slow bucket of the test S3 server at addr (test/e2e/s3server).
func setS3Delays(t *testing.T, addr string, put, del time.Duration) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/-/delays?put="+put.String()+"&delete="+del.String(), "text/plain", nil)
	testutil.Ok(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	testutil.Equals(t, 200, resp.StatusCode, string(b))
}

// uploadCopy uploads a copy of the block in dir (a new ULID) under <tenant>/ of bkt with block.Upload (meta.json
// last), labelled tenant_id=<tenant>, as a block of its own (its own ULID as its only source, as each ingester's
// copy of a block is), and returns its meta.
func uploadCopy(t *testing.T, bkt objstore.Bucket, tenant, dir string) *block.Meta {
	t.Helper()
	cp, m := copyBlockDir(t, dir, t.TempDir())
	m.Compaction.Sources = []ulid.ULID{m.ULID}
	m.Thanos.Labels = map[string]string{"tenant_id": tenant}
	m.Thanos.Source = "promtool"
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, tenant), cp, m))
	return m
}

// TestCompactorKilledMidUploadAndDeletion is issue 14's crash-safety Must show through the binary, on objstore's
// S3 provider against the test S3 server, whose PUTs and DELETEs are slowed so the kill -9 lands where meant:
//   - A: `strata compactor --once` killed while it uploads the compacted block (an object of the new block present,
//     no meta.json): the half-uploaded block is partial to a reader (block.MetaFetcher), the sources still served;
//     the next --once completes and the live blocks hold each sample once, with the same answers as the sources;
//   - B: killed while the cleaner deletes the sources (meta.json already gone, other objects left): the
//     half-deleted block is partial, never served; the next --once leaves no object of the sources.
func TestCompactorKilledMidUploadAndDeletion(t *testing.T) {
	const tenant = "team-crash"
	ctx := context.Background()
	addr := startS3Server(t, []string{"blocks"}, "-slow-bucket=blocks")
	conf := s3BucketConfig(t, addr, "blocks")
	bkt := openBucket(t, conf)

	// Three copies (RF 3) of one 2h block of a day ago.
	const twoHours = int64(2 * time.Hour / time.Millisecond)
	start := time.UnixMilli(time.Now().Add(-24*time.Hour).UnixMilli() / twoHours * twoHours)
	dirs := promtoolBlocks(t, start, start.Add(2*time.Hour), 30*time.Second, 20)
	testutil.Equals(t, 1, len(dirs))
	sources := map[ulid.ULID]bool{}
	var written uint64
	for range 3 {
		m := uploadCopy(t, bkt, tenant, dirs[0])
		sources[m.ULID], written = true, m.Stats.NumSamples
	}
	const query = `{__name__=~"app_.+"}`
	before := refQuery(t, dirs, query, start, start.Add(2*time.Hour), time.Minute)
	testutil.Assert(t, len(before) > 0)

	args := func(extra ...string) []string {
		return append([]string{"compactor", "--once", "--objstore.config-file=" + conf, "--compactor.consistency-delay=0s"}, extra...)
	}
	kill := func(p *proc) {
		t.Helper()
		testutil.Ok(t, p.cmd.Process.Signal(syscall.SIGKILL))
		<-p.exited
		ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		testutil.Assert(t, ws.Signaled(), "the compactor ended before the kill: %v\n%s", p.err, p.out.String())
	}
	// fetch is what a reader (store-gateway, querier) discovers now, marked blocks served for an hour.
	fetch := func() *block.Discovered {
		t.Helper()
		d, err := block.NewMetaFetcher(bkt, 4, time.Hour, nil).Fetch(ctx, tenant)
		testutil.Ok(t, err)
		return d
	}

	// A: kill -9 mid-upload of the compacted block.
	setS3Delays(t, addr, 2*time.Second, 0)
	p := startStrata(t, "", args()...)
	var half ulid.ULID
	waitUntil(t, 30*time.Second, "an upload of a compacted block in progress", func() bool {
		blocks, _ := tenantBlocks(t, bkt, tenant)
		for id, files := range blocks {
			if !sources[id] && len(files) > 0 && !slices.Contains(files, block.MetaFilename) {
				half = id
				return true
			}
		}
		return false
	})
	kill(p)
	setS3Delays(t, addr, 0, 0)
	blocks, _ := tenantBlocks(t, bkt, tenant)
	t.Logf("killed mid-upload: block %s has %v", half, blocks[half])
	for id, files := range blocks {
		testutil.Equals(t, id != half, slices.Contains(files, block.MetaFilename), "block %s: %v", id, files)
	}
	d := fetch()
	testutil.Equals(t, []ulid.ULID{half}, d.Partial, "the half-uploaded block is partial to readers")
	testutil.Equals(t, len(sources), len(d.Metas))
	for id := range sources {
		testutil.Assert(t, d.Metas[id] != nil, "source %s not served", id)
	}

	p = startStrata(t, "", args()...)
	<-p.exited
	testutil.Ok(t, p.err, p.out.String())
	d = fetch()
	var (
		live      uint64
		compacted []ulid.ULID
	)
	for id, m := range d.Metas {
		if _, marked := d.DeletionMarks[id]; !marked {
			live += m.Stats.NumSamples
			compacted = append(compacted, id)
			testutil.Equals(t, "compactor", string(m.Thanos.Source))
		}
	}
	testutil.Equals(t, written, live, "samples in the live blocks: each once")
	testutil.Equals(t, 1, len(compacted))
	for id := range sources {
		_, marked := d.DeletionMarks[id]
		testutil.Assert(t, marked, "source %s not marked for deletion", id)
	}
	got := filepath.Join(t.TempDir(), compacted[0].String())
	testutil.Ok(t, objstore.DownloadDir(ctx, log.NewNopLogger(), bkt, tenant+"/"+compacted[0].String(), tenant+"/"+compacted[0].String(), got))
	testutil.Equals(t, before, refQuery(t, []string{got}, query, start, start.Add(2*time.Hour), time.Minute), "answers of the compacted block")

	// B: kill -9 mid-deletion of the sources (deletion delay 2s: the marks are due once 3s old).
	var marked time.Time
	for _, mt := range d.DeletionMarks {
		marked = mt
	}
	time.Sleep(time.Until(marked.Add(4 * time.Second)))
	cleanArgs := args("--compactor.deletion-delay=2s", "--store-gateway.ignore-deletion-marks-delay=1s")
	setS3Delays(t, addr, 0, time.Second)
	p = startStrata(t, "", cleanArgs...)
	var halfDeleted ulid.ULID
	waitUntil(t, 30*time.Second, "a source block half deleted", func() bool {
		blocks, _ := tenantBlocks(t, bkt, tenant)
		for id, files := range blocks {
			if sources[id] && len(files) > 1 && !slices.Contains(files, block.MetaFilename) {
				halfDeleted = id
				return true
			}
		}
		return false
	})
	kill(p)
	setS3Delays(t, addr, 0, 0)
	blocks, _ = tenantBlocks(t, bkt, tenant)
	t.Logf("killed mid-deletion: block %s has %v", halfDeleted, blocks[halfDeleted])
	d = fetch()
	testutil.Assert(t, slices.Contains(d.Partial, halfDeleted), "half-deleted block not partial: %v", d.Partial)
	testutil.Assert(t, d.Metas[halfDeleted] == nil, "half-deleted block served")
	testutil.Assert(t, d.Metas[compacted[0]] != nil, "compacted block not served")

	p = startStrata(t, "", cleanArgs...)
	<-p.exited
	testutil.Ok(t, p.err, p.out.String())
	blocks, others := tenantBlocks(t, bkt, tenant)
	for id := range sources {
		testutil.Equals(t, 0, len(blocks[id]), "objects of deleted block %s: %v", id, blocks[id])
		for _, o := range others {
			testutil.Assert(t, !strings.Contains(o, id.String()), "marker %s of deleted block left", o)
		}
	}
	d = fetch()
	testutil.Equals(t, written, d.Metas[compacted[0]].Stats.NumSamples)
	testutil.Equals(t, 1, len(d.Metas), "live blocks after the deletion")
}

// TestCompactorRetention is issue 14's retention Must show through the binary: tenant A has
// compactor_blocks_retention_period 5d in the runtime overrides, tenant B none, and the per-resolution retention
// is 15d for raw blocks and 30d for 5m ones. After a `--once` run and a second one (the cleaner, deletion delay
// 1s): A's 10-day-old block is deleted and its recent one kept, B's blocks of the same ages are untouched, and
// tenant C's 20-day-old raw block is deleted while its 5m-downsampled copy of the same data is kept.
func TestCompactorRetention(t *testing.T) {
	dir := t.TempDir()
	bucketDir := filepath.Join(dir, "bucket")
	testutil.Ok(t, os.MkdirAll(bucketDir, 0o750))
	conf := fsBucketConfig(t, bucketDir)
	bkt := openBucket(t, conf)
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  team-a:\n    compactor_blocks_retention_period: 5d\n"), 0o600))

	const twoHours = int64(2 * time.Hour / time.Millisecond)
	blockAt := func(age time.Duration) string {
		start := time.UnixMilli(time.Now().Add(-age).UnixMilli() / twoHours * twoHours)
		dirs := promtoolBlocks(t, start, start.Add(2*time.Hour), time.Minute, 5)
		testutil.Equals(t, 1, len(dirs))
		return dirs[0]
	}
	day := 24 * time.Hour
	recent, old, older := blockAt(day), blockAt(10*day), blockAt(20*day)
	aOld, aRecent := uploadCopy(t, bkt, "team-a", old), uploadCopy(t, bkt, "team-a", recent)
	bOld, bRecent := uploadCopy(t, bkt, "team-b", old), uploadCopy(t, bkt, "team-b", recent)
	cRaw := uploadCopy(t, bkt, "team-c", older)
	// C's 5m block: the same data downsampled by Strata's own downsampling, in its own directory.
	dsDir := t.TempDir()
	dsID, err := compact.DownsampleDir(log.NewNopLogger(), older, dsDir, compact.Resolution5m)
	testutil.Ok(t, err)
	ds, err := block.ReadMetaFromDir(filepath.Join(dsDir, dsID.String()))
	testutil.Ok(t, err)
	ds.Thanos.Labels = map[string]string{"tenant_id": "team-c"}
	ds.Thanos.Source = "compactor"
	testutil.Equals(t, compact.Resolution5m, ds.Thanos.Downsample.Resolution)
	testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), objstore.NewPrefixedBucket(bkt, "team-c"), filepath.Join(dsDir, dsID.String()), ds))

	run := func() {
		t.Helper()
		p := startStrata(t, "", "compactor", "--once", "--objstore.config-file="+conf, "--runtime-config.file="+rt,
			"--compactor.consistency-delay=0s", "--compactor.deletion-delay=1s", "--store-gateway.ignore-deletion-marks-delay=0s",
			"--compactor.retention-resolution-raw=360h", "--compactor.retention-resolution-5m=720h")
		<-p.exited
		testutil.Ok(t, p.err, p.out.String())
	}
	type want struct {
		tenant string
		id     ulid.ULID
		kept   bool
	}
	wants := []want{
		{"team-a", aOld.ULID, false}, {"team-a", aRecent.ULID, true},
		{"team-b", bOld.ULID, true}, {"team-b", bRecent.ULID, true},
		{"team-c", cRaw.ULID, false}, {"team-c", dsID, true},
	}

	run()
	for _, w := range wants {
		b := readBucket(t, bucketDir, w.tenant)[w.id.String()]
		testutil.Assert(t, b.complete, "%s block %s not complete after the first run", w.tenant, w.id)
		testutil.Equals(t, !w.kept, b.marked, "%s block %s marked for deletion", w.tenant, w.id)
	}
	time.Sleep(2 * time.Second) // the marks are past the deletion delay
	run()
	for _, w := range wants {
		blocks, _ := tenantBlocks(t, bkt, w.tenant)
		b := readBucket(t, bucketDir, w.tenant)[w.id.String()]
		if w.kept {
			testutil.Assert(t, b.complete && !b.marked, "%s block %s: want kept, got %+v", w.tenant, w.id, b)
		} else {
			testutil.Equals(t, 0, len(blocks[w.id]), "%s block %s: objects left %v", w.tenant, w.id, blocks[w.id])
		}
	}
}
