package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/block"
)

// contExt are the external labels of the continuity test's Prometheus.
var contExt = map[string]string{"cluster": "eu1", "replica": "0"}

// contRemoteWrite is the remote_write section that switches the continuity test's Prometheus to Strata.
func contRemoteWrite(pushURL string) string {
	return fmt.Sprintf(`remote_write:
  - url: %s
    headers:
      X-Scope-OrgID: team-a
    queue_config:
      batch_send_deadline: 1s
`, pushURL)
}

// sidecarBlocks returns the metas of the blocks the sidecar uploaded into tenant's prefix of a filesystem bucket.
func sidecarBlocks(t *testing.T, bucketDir, tenant string) []*block.Meta {
	t.Helper()
	var out []*block.Meta
	for _, m := range bucketBlocks(t, bucketDir, tenant) {
		if m.Thanos.Source == block.SidecarSource {
			out = append(out, m)
		}
	}
	return out
}

// TestSidecarToRemoteWriteContinuity is the migration of one Prometheus (external labels cluster, replica) from
// a sidecar to remote write, as an operator does it: Prometheus runs with `strata sidecar` (its blocks uploaded
// into team-a/, its live data served to the querier through --endpoint=team-a=<sidecar>); then its config gets
// a remote_write into the distributor and is reloaded; the sidecar runs until it has uploaded the block that
// holds the switch, then stops, and the querier is restarted without it. Twice — right after the switch
// (sidecar blocks, sidecar live, ingesters: everything overlaps) and after the sidecar is gone (sidecar blocks,
// ingester blocks flushed on restart, ingesters) — one range query over the whole period, at the scrape
// interval, answers exactly as Prometheus's own API does over its TSDB (each series once, the external labels
// added), and so does a range selector over the whole period (every scraped sample once: none missing at the
// cut-over, none doubled), with replica deduplication and without.
func TestSidecarToRemoteWriteContinuity(t *testing.T) {
	if testing.Short() {
		t.Skip("about a minute of real scraping")
	}
	began := time.Now()
	target := startMetricsTarget(t)
	work := t.TempDir()
	bucketDir := filepath.Join(work, "bucket")
	bucketConf := writeFilesystemBucketConfig(t, work, bucketDir)
	sidecarGRPC := freeAddr(t)

	// Strata: every component in one process, the sidecar as a tenant-bound endpoint. The store-gateway syncs
	// every second; the querier asks for blocks uploaded at least grace ago (the sidecar serves the younger ones).
	const grace = 3 * time.Second
	strataHTTP, strataGRPC, strataData := freeAddr(t), freeAddr(t), filepath.Join(work, "strata")
	startAll := func(extra ...string) *proc {
		args := []string{"all", "--objstore.config-file=" + bucketConf, "--query.replica-label=replica",
			"--sync-interval=1s", "--querier.blocks-refresh-interval=1s", "--querier.blocks-upload-grace-period=" + grace.String()}
		p := startStrataAt(t, "", strataHTTP, strataGRPC, strataData, append(args, extra...)...)
		p.waitReady(t, 30*time.Second)
		return p
	}
	s := startAll("--endpoint=team-a=" + sidecarGRPC)

	// Phase 1: Prometheus (blocks of 10s, so that they are cut while the test runs) and its sidecar.
	promStart := time.Now().Truncate(time.Second)
	promConf := filepath.Join(work, "prometheus.yml")
	writePrometheusConfig(t, promConf, contExt, "", target)
	prom := startPrometheusWithConfig(t, work, promConf, 10*time.Second)
	sidecar := startProc(t, "", "sidecar", strataBin, append(sidecarArgs(prom, "team-a", bucketConf),
		"--grpc-address="+sidecarGRPC, "--http-address="+freeAddr(t), "--data-dir="+filepath.Join(work, "sidecar"))...)
	waitUntil(t, 60*time.Second, "the sidecar uploads two blocks", func() bool { return len(sidecarBlocks(t, bucketDir, "team-a")) >= 2 })

	// Phase 2: the switch to remote write, by a config reload.
	writePrometheusConfig(t, promConf, contExt, contRemoteWrite(s.url("/api/v1/push")), target)
	resp, err := http.Post(prom.baseURL()+"/-/reload", "", nil)
	testutil.Ok(t, err)
	_ = resp.Body.Close()
	testutil.Equals(t, 200, resp.StatusCode, "reload")
	// Remote write sends the samples scraped after its WAL watcher started, a moment after the reload returned.
	switchT := time.Now().Add(time.Second)
	// The sidecar runs on until the block that holds the switch is uploaded: from then on the bucket has
	// everything up to the switch, and remote write everything after it.
	var (
		lastUpload int64     // max time of the sidecar's blocks
		uploadedAt time.Time // when the last of them was uploaded
	)
	waitUntil(t, 60*time.Second, "the sidecar uploads the block holding the switch", func() bool {
		for _, m := range sidecarBlocks(t, bucketDir, "team-a") {
			if m.MaxTime > lastUpload {
				lastUpload, uploadedAt = m.MaxTime, m.Thanos.UploadTime
			}
		}
		return lastUpload > switchT.UnixMilli()
	})
	t.Logf("switched at %s; the sidecar's uploads reach %s", switchT.Format(time.RFC3339Nano), time.UnixMilli(lastUpload).Format(time.RFC3339Nano))

	check := func(phase string, end time.Time) {
		t.Helper()
		contCompare(t, phase, prom.addr, s.url("/prometheus"), promStart, end)
	}
	check("sidecar running", time.Now().Add(-3*time.Second).Truncate(time.Second))

	// Phase 3: the sidecar stops (after a last upload) once the querier reads its uploads from the bucket; the
	// querier is restarted without it (its ingester flushes and ships its blocks as it stops, and replays its WAL
	// as it starts).
	time.Sleep(time.Until(uploadedAt.Add(grace + time.Second)))
	testutil.Equals(t, 0, sidecar.stop(t), "sidecar exit code")
	testutil.Equals(t, 0, s.stop(t), "strata exit code")
	s = startAll()
	for _, m := range sidecarBlocks(t, bucketDir, "team-a") {
		lastUpload = max(lastUpload, m.MaxTime)
	}
	time.Sleep(3 * time.Second) // Prometheus retries the samples it could not send during the restart
	end := time.Now().Add(-3 * time.Second).Truncate(time.Second)
	testutil.Assert(t, end.UnixMilli() > lastUpload+3000, "the query must reach past the sidecar's last upload (%d), into what only remote write has", lastUpload)
	check("sidecar stopped", end)
	t.Logf("whole test: %s", time.Since(began).Round(time.Second))
}

// contCompare waits (bounded) until Strata answers for team-a over [start, end] as Prometheus does over its own
// TSDB: a range query at the scrape interval, and the raw samples of a range selector at end, with dedup on the
// replica label (the answer has the external label cluster) and without (cluster and replica).
func contCompare(t *testing.T, phase, promAddr, strataBase string, start, end time.Time) {
	t.Helper()
	const sel = `{job="e2e"}`
	window := fmt.Sprintf("%ds", int(end.Sub(start).Seconds())+1)
	for _, c := range []struct {
		name  string
		extra url.Values
		ext   map[string]string
	}{
		{"dedup", nil, map[string]string{"cluster": "eu1"}},
		{"no dedup", url.Values{"dedup": {"false"}}, map[string]string{"cluster": "eu1", "replica": "0"}},
	} {
		withExt := func(s []promSample) []promSample {
			for i := range s {
				for k, v := range c.ext {
					s[i].Metric[k] = v
				}
			}
			sortSamples(s)
			return s
		}
		wantRange, _ := promQuery(t, "http://"+promAddr, "", sel, start, end, time.Second, nil)
		wantRange = withExt(wantRange)
		wantRaw, _ := promQuery(t, "http://"+promAddr, "", sel+"["+window+"]", end, end, 0, nil)
		wantRaw = withExt(wantRaw)
		testutil.Assert(t, len(wantRange) >= 5 && len(wantRaw) == len(wantRange), "prometheus: %d series", len(wantRange))
		points := 0
		for _, s := range wantRaw {
			points += len(s.Values)
		}
		testutil.Assert(t, points > len(wantRaw)*int(end.Sub(start).Seconds())/2, "prometheus holds only %d samples", points)

		var gotRange, gotRaw []promSample
		deadline := time.Now().Add(20 * time.Second)
		for {
			var warnings []string
			gotRange, warnings = promQuery(t, strataBase, "team-a", sel, start, end, time.Second, c.extra)
			gotRaw, _ = promQuery(t, strataBase, "team-a", sel+"["+window+"]", end, end, 0, c.extra)
			same := fmt.Sprint(gotRange) == fmt.Sprint(wantRange) && fmt.Sprint(gotRaw) == fmt.Sprint(wantRaw)
			if same && len(warnings) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s, %s: strata differs from prometheus over [%s, %s] (warnings %v):\nrange: %s\nraw: %s", phase, c.name,
					start.Format(time.TimeOnly), end.Format(time.TimeOnly), warnings, contDiff(wantRange, gotRange), contDiff(wantRaw, gotRaw))
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("%s, %s: %d series, %d samples over %s, as prometheus", phase, c.name, len(gotRaw), points, end.Sub(start))
	}
}

// contDiff describes how got differs from want: series missing or extra, and per series the timestamps one has
// and the other lacks, or differing values.
func contDiff(want, got []promSample) string {
	index := func(s []promSample) map[string]map[string]string {
		out := map[string]map[string]string{}
		for _, x := range s {
			pts := map[string]string{}
			for _, v := range x.Values {
				ts := fmt.Sprint(v[0])
				if prev, dup := pts[ts]; dup {
					pts[ts] = prev + " AND " + fmt.Sprint(v[1]) // a doubled sample
				} else {
					pts[ts] = fmt.Sprint(v[1])
				}
			}
			key := labelsString(x.Metric)
			if _, twice := out[key]; twice {
				key += " (again)"
			}
			out[key] = pts
		}
		return out
	}
	w, g := index(want), index(got)
	var lines []string
	for _, k := range sortedKeys(w) {
		gp, ok := g[k]
		if !ok {
			lines = append(lines, "missing series "+k)
			continue
		}
		var diffs []string
		for _, ts := range sortedKeys(w[k]) {
			if gv, ok := gp[ts]; !ok {
				diffs = append(diffs, "missing @"+ts)
			} else if gv != w[k][ts] {
				diffs = append(diffs, fmt.Sprintf("@%s %s want %s", ts, gv, w[k][ts]))
			}
		}
		for _, ts := range sortedKeys(gp) {
			if _, ok := w[k][ts]; !ok {
				diffs = append(diffs, "extra @"+ts)
			}
		}
		if len(diffs) > 8 {
			diffs = append(diffs[:8], fmt.Sprintf("… %d more", len(diffs)-8))
		}
		if len(diffs) > 0 {
			lines = append(lines, k+": "+strings.Join(diffs, ", "))
		}
	}
	for _, k := range sortedKeys(g) {
		if _, ok := w[k]; !ok {
			lines = append(lines, "extra series "+k)
		}
	}
	if len(lines) == 0 {
		return "(same points, different formatting)"
	}
	return strings.Join(lines, "\n")
}
