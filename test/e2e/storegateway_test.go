package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/cache/cachetest"
)

// sgFlags make a `strata all` store-gateway pick up uploads within about a second, and its querier ask for
// them at once.
var sgFlags = []string{"--sync-interval=1s", "--querier.blocks-refresh-interval=1s", "--querier.blocks-upload-grace-period=1ms"}

// sgBlock is one row of /store-gateway/tenant/{tenant}/blocks in JSON.
type sgBlock struct {
	ID          string            `json:"block_id"`
	MinTime     int64             `json:"min_time"`
	MaxTime     int64             `json:"max_time"`
	Resolution  string            `json:"resolution"`
	Level       int               `json:"compaction_level"`
	Source      string            `json:"source"`
	Series      uint64            `json:"series"`
	Samples     uint64            `json:"samples"`
	SizeBytes   int64             `json:"size_bytes"`
	Labels      map[string]string `json:"labels"`
	IndexHeader bool              `json:"index_header_loaded"`
	MarkedAt    string            `json:"deletion_marked_at"`
}

// sgBlocksPage reads the JSON blocks page of a store-gateway for a tenant; ok is false when it did not answer 200.
func sgBlocksPage(t *testing.T, base, tenant string) (rows []sgBlock, ok bool, body string) {
	t.Helper()
	code, body := httpGet(base+"/store-gateway/tenant/"+url.PathEscape(tenant)+"/blocks", map[string]string{"Accept": "application/json"})
	if code != 200 {
		return nil, false, body
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &rows), body)
	return rows, true, body
}

// sgBlocks returns the blocks a store-gateway serves of a tenant, from its JSON page.
func sgBlocks(t *testing.T, base, tenant string) []sgBlock {
	t.Helper()
	rows, ok, body := sgBlocksPage(t, base, tenant)
	testutil.Assert(t, ok, "blocks page of %s at %s: %s", tenant, base, body)
	return rows
}

func sgBlockIDs(t *testing.T, base, tenant string) []string {
	return blockIDs(sgBlocks(t, base, tenant))
}

// blockIDs returns the sorted IDs of rows.
func blockIDs(rows []sgBlock) []string {
	var ids []string
	for _, b := range rows {
		ids = append(ids, b.ID)
	}
	sort.Strings(ids)
	return ids
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// syncWait bounds the wait for a store-gateway started with --sync-interval=1s to see a bucket change.
const syncWait = 10 * time.Second

// waitBlocks waits (at most timeout) until the store-gateway at base serves exactly the blocks ids of tenant (its
// blocks page answering 200 meanwhile or not).
func waitBlocks(t *testing.T, base, tenant string, ids []string, timeout time.Duration) {
	t.Helper()
	want := sortedCopy(ids)
	var got []string
	deadline := time.Now().Add(timeout)
	for {
		rows, ok, _ := sgBlocksPage(t, base, tenant)
		got = blockIDs(rows)
		if ok && slices.Equal(want, got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store-gateway %s serves blocks %v of tenant %s, want %v (after %s)", base, got, tenant, want, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitQueryEquals waits (bounded) until query answers as the reference does (the querier re-reads the block
// list every second).
func waitQueryEquals(t *testing.T, base, tenant, query string, want []promSample, ts time.Time) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := promQuery(t, base, tenant, query, ts, ts, 0, nil)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s as %s: got %v, want %v", query, tenant, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStoreGatewayPromtoolBlocksEqualPrometheus: blocks written by promtool from OpenMetrics, uploaded into
// the bucket of a running `strata all` long after their time range (8 days back, outside any ingester), are
// found by the periodic sync and answer ≥30 PromQL queries, instant and range, bit for bit as Prometheus's own
// engine does over the same block directories, without warnings; another tenant sees none of them.
//
// The blocks carry the external label cluster="old" (thanos.labels), which Strata adds to every series as
// Thanos does (tenant_id excepted). The reference adds it too (refQueryExt), rather than the comparison
// dropping it: that way aggregations that keep or drop it (sum by, sum without), label matchers on it, and
// the duplicate-labelset rules of PromQL are checked as a user sees them.
func TestStoreGatewayPromtoolBlocksEqualPrometheus(t *testing.T) {
	end := time.Now().Add(-8 * 24 * time.Hour).Truncate(time.Hour)
	start := end.Add(-10 * time.Hour)
	t0 := time.Now()
	dirs := promtoolBlocks(t, start, end, time.Minute, 50)
	t.Logf("blocks written (building the Prometheus tools once included): %s", time.Since(t0))
	testutil.Assert(t, len(dirs) >= 5, "want the 10h cut into 2h blocks, got %d blocks", len(dirs))

	s := startStrata(t, t.TempDir(), append([]string{"all"}, sgFlags...)...)
	s.waitReady(t, 30*time.Second)
	base := s.url("/prometheus")
	testutil.Equals(t, 0, len(sgBlockIDs(t, s.url(""), "team-a")))

	// Upload after start: the periodic sync finds them.
	ids := uploadBlocks(t, filepath.Join(s.dataDir, "bucket"), "team-a", map[string]string{"cluster": "old"}, dirs)
	t.Logf("started and uploaded: %s", time.Since(t0))
	waitBlocks(t, s.url(""), "team-a", ids, syncWait)
	t.Logf("blocks synced: %s", time.Since(t0))
	ext := map[string]string{"cluster": "old"}

	probe := `sum(count_over_time(app_requests_total[11h])) + sum(count_over_time(app_temperature_celsius[11h])) + sum(count_over_time(app_latency_seconds_count[11h]))`
	waitQueryEquals(t, base, "team-a", probe, refQueryExt(t, dirs, ext, probe, end, end, 0), end)

	// A 2h block boundary inside the data, and times around it.
	boundary := start.Add(4 * time.Hour).Truncate(2 * time.Hour)
	if !boundary.After(start.Add(time.Hour)) {
		boundary = boundary.Add(2 * time.Hour)
	}
	mid := start.Add(5*time.Hour + 30*time.Second)
	at := func(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }
	queries := []string{
		`app_requests_total`,
		`app_requests_total{job="job-1"}`,
		`app_requests_total{job!="job-1"}`,
		`app_requests_total{instance=~"host-00[0-9]"}`,
		`app_requests_total{instance!~"host-0[0-2].*", job=~"job-[02]"}`,
		`app_temperature_celsius{cluster="old"}`,
		`app_temperature_celsius{cluster!="old"}`,
		`app_temperature_celsius{cluster=~"o.*", instance="host-002"}`,
		`app_temperature_celsius{instance="host-004"}`,
		`{__name__=~"app_(requests|temperature).*", job="job-2"}`,
		`rate(app_requests_total[5m])`,
		`increase(app_requests_total{instance=~"host-00[1-3]"}[1h])`,
		`resets(app_requests_total[10h])`,
		`sum by (job) (rate(app_requests_total[10m]))`,
		`sum without (instance) (app_temperature_celsius)`,
		`sum(app_temperature_celsius)`,
		`avg_over_time(app_temperature_celsius[30m])`,
		`max_over_time(app_temperature_celsius[1h])`,
		`min_over_time(app_temperature_celsius{job="job-0"}[15m])`,
		`stddev by (job) (app_temperature_celsius)`,
		`quantile(0.75, app_temperature_celsius)`,
		`deriv(app_temperature_celsius[30m])`,
		`histogram_quantile(0.9, sum by (le, job) (rate(app_latency_seconds_bucket[10m])))`,
		`histogram_quantile(0.5, rate(app_latency_seconds_bucket[5m]))`,
		`sum(rate(app_latency_seconds_sum[15m])) / sum(rate(app_latency_seconds_count[15m]))`,
		`topk(3, app_temperature_celsius)`,
		`bottomk(2, rate(app_requests_total[5m]))`,
		`count(app_temperature_celsius)`,
		`count by (job) (app_requests_total)`,
		`absent(app_requests_total{job="nope"})`,
		`absent(app_requests_total)`,
		`label_replace(app_temperature_celsius{job="job-0"}, "host", "$1", "instance", "host-(.*)")`,
		`app_temperature_celsius offset 1h`,
		`app_requests_total offset -30m`,
		`app_requests_total @ ` + at(end.Add(-30*time.Minute)),
		`rate(app_requests_total[5m] @ ` + at(boundary) + `)`,
		`max_over_time(rate(app_requests_total[5m])[1h:5m])`,
		`avg_over_time(app_temperature_celsius[20m:])`,
		`app_requests_total - app_requests_total offset 5m`,
		`app_temperature_celsius > 0.5`,
		`timestamp(app_temperature_celsius{job="job-1"})`,
		`last_over_time(app_temperature_celsius[2h])`,
		`scalar(count(app_requests_total))`,
		`count_over_time(app_requests_total[10h])`,
	}
	type mode struct {
		name       string
		start, end time.Time
		step       time.Duration
	}
	modes := []mode{
		{"instant mid", mid, mid, 0},
		{"instant at a block boundary", boundary, boundary, 0},
		{"instant just after the data", end.Add(2 * time.Minute), end, 0},
		{"range 1m across a block boundary", boundary.Add(-40 * time.Minute), boundary.Add(40 * time.Minute), time.Minute},
		{"range 5m", start, end, 5 * time.Minute},
		{"range 1h beyond the data", start.Add(-2 * time.Hour), end.Add(2 * time.Hour), time.Hour},
		{"range whole 10h", start, end, 10 * time.Hour},
	}
	ref := openRef(t, dirs, ext)
	// The comparison sees a missing block: without the first one, the probe differs.
	testutil.Assert(t, sgDiff(refQueryExt(t, dirs[1:], ext, probe, end, end, 0), ref.query(t, probe, end, end, 0)) != "", "a block less went unnoticed")
	began := time.Now()
	nonEmpty := 0
	for _, q := range queries {
		for _, m := range modes {
			got, warnings := promQuery(t, base, "team-a", q, m.start, m.end, m.step, nil)
			want := ref.query(t, q, m.start, m.end, m.step)
			if d := sgDiff(want, got); d != "" {
				t.Errorf("%s (%s): %s", q, m.name, d)
				continue
			}
			testutil.Equals(t, want, got, "%s (%s)", q, m.name)
			testutil.Equals(t, 0, len(warnings), "%s (%s): warnings %v", q, m.name, warnings)
			if len(got) > 0 {
				nonEmpty++
			}
		}
	}
	t.Logf("%d queries × %d evaluations compared in %s", len(queries), len(modes), time.Since(began))
	// The comparison is not vacuous: most queries return data.
	testutil.Assert(t, nonEmpty > len(queries)*len(modes)*3/4, "only %d of %d answers have data", nonEmpty, len(queries)*len(modes))
	// Spot checks independent of the reference: the external label is there, tenant_id is not.
	vec, _ := promQuery(t, base, "team-a", `app_requests_total`, mid, mid, 0, nil)
	testutil.Equals(t, 50, len(vec))
	for _, smp := range vec {
		testutil.Equals(t, "old", smp.Metric["cluster"], "%v", smp.Metric)
		_, has := smp.Metric["tenant_id"]
		testutil.Assert(t, !has, "tenant_id leaked: %v", smp.Metric)
	}

	// Partial responses not allowed: the same answers, no error.
	got, _ := promQuery(t, base, "team-a", `sum by (job) (rate(app_requests_total[10m]))`, start, end, 5*time.Minute, url.Values{"partial_response": {"false"}})
	testutil.Equals(t, refQueryExt(t, dirs, ext, `sum by (job) (rate(app_requests_total[10m]))`, start, end, 5*time.Minute), got)

	// Another tenant sees nothing of them, whatever it asks.
	for _, q := range []string{`{__name__=~".+"}`, `app_requests_total`, `{tenant_id="team-a"}`, `{__name__=~".+", cluster="old"}`, `count_over_time({__name__=~"app_.+"}[10h])`} {
		for _, m := range modes {
			got, warnings := promQuery(t, base, "team-b", q, m.start, m.end, m.step, nil)
			testutil.Equals(t, 0, len(got), "%s as team-b (%s): %v", q, m.name, got)
			testutil.Equals(t, 0, len(warnings), "%s as team-b: %v", q, warnings)
		}
	}
	testutil.Equals(t, 0, len(sgBlockIDs(t, s.url(""), "team-b")))
}

// metricsSnapshot reads a /metrics page: series ("name{labels}") → value.
func metricsSnapshot(t *testing.T, metricsURL string) map[string]float64 {
	t.Helper()
	code, body := httpGet(metricsURL, nil)
	testutil.Equals(t, 200, code, "GET %s", metricsURL)
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		testutil.Ok(t, err, line)
		out[line[:i]] = v
	}
	return out
}

// sum adds the values of the series of metric name having all the label pairs with (e.g. `item="chunks"`).
func sumOf(snap map[string]float64, name string, with ...string) float64 {
	total := 0.0
	for k, v := range snap {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, w := range with {
			ok = ok && strings.Contains(k, w)
		}
		if ok {
			total += v
		}
	}
	return total
}

// memcachedStat returns one counter of memcached's `stats` (e.g. cmd_set).
func memcachedStat(t *testing.T, addr, name string) int64 {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	testutil.Ok(t, err)
	defer conn.Close()
	testutil.Ok(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("stats\r\n"))
	testutil.Ok(t, err)
	sc := bufio.NewScanner(conn)
	var v int64 = -1
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "END" {
			break
		}
		if len(f) == 3 && f[0] == "STAT" && f[1] == name {
			v, err = strconv.ParseInt(f[2], 10, 64)
			testutil.Ok(t, err)
		}
	}
	testutil.Ok(t, sc.Err())
	testutil.Assert(t, v >= 0, "memcached has no stat %s", name)
	return v
}

// waitMemcachedSettled waits (bounded) until memcached has received no set for 500ms: the store-gateway's
// asynchronous cache writes are done.
func waitMemcachedSettled(t *testing.T, addr string) {
	t.Helper()
	last, since := memcachedStat(t, addr, "cmd_set"), time.Now()
	deadline := time.Now().Add(15 * time.Second)
	for time.Since(since) < 500*time.Millisecond {
		testutil.Assert(t, time.Now().Before(deadline), "memcached sets did not settle")
		time.Sleep(100 * time.Millisecond)
		if n := memcachedStat(t, addr, "cmd_set"); n != last {
			last, since = n, time.Now()
		}
	}
}

// TestStoreGatewayMemcached: with both caches of the store-gateway on a real memcached, the same range query
// twice gives the same answer (the reference's); the second run finds its postings, series and chunks in
// memcached and reads nothing from the bucket. Asserted on the second run: strata_cache_hits_total of both
// memcached caches grew, the bucket store's hits for postings, series and chunks grew by as many as it asked
// for (every lookup a hit), and strata_bucket_store_fetched_bytes_total did not grow at all (index nor chunks),
// while the first run did fetch bytes. The cache writes are asynchronous, so between the runs the test waits
// until memcached stops receiving sets.
func TestStoreGatewayMemcached(t *testing.T) {
	mc := cachetest.StartMemcached(t)
	end := time.Now().Add(-8 * 24 * time.Hour).Truncate(time.Hour)
	start := end.Add(-4 * time.Hour)
	dirs := promtoolBlocks(t, start, end, time.Minute, 20)

	s := startStrata(t, t.TempDir(), append([]string{"all",
		"--store-gateway.index-cache.backend=memcached", "--store-gateway.index-cache.memcached.addresses=" + mc,
		"--store-gateway.chunks-cache.backend=memcached", "--store-gateway.chunks-cache.memcached.addresses=" + mc,
	}, sgFlags...)...)
	s.waitReady(t, 30*time.Second)
	base := s.url("/prometheus")
	ids := uploadBlocks(t, filepath.Join(s.dataDir, "bucket"), "team-m", nil, dirs)
	waitBlocks(t, s.url(""), "team-m", ids, syncWait)
	// The querier knows every block once a query over all of them answers as the reference; it reads another
	// metric than the one measured below.
	probe := `sum(count_over_time(app_temperature_celsius[5h]))`
	waitQueryEquals(t, base, "team-m", probe, refQuery(t, dirs, probe, end, end, 0), end)
	waitMemcachedSettled(t, mc)

	const q = `sum by (instance) (rate(app_requests_total[5m])) + on (instance) group_left max by (instance) (app_requests_total)`
	want := refQuery(t, dirs, q, start, end, time.Minute)
	testutil.Assert(t, len(want) == 20, "reference: %d series", len(want))
	m0 := metricsSnapshot(t, s.url("/metrics"))
	r1, w1 := promQuery(t, base, "team-m", q, start, end, time.Minute, nil)
	waitMemcachedSettled(t, mc)
	m1 := metricsSnapshot(t, s.url("/metrics"))
	r2, w2 := promQuery(t, base, "team-m", q, start, end, time.Minute, nil)
	m2 := metricsSnapshot(t, s.url("/metrics"))
	testutil.Equals(t, want, r1)
	testutil.Equals(t, r1, r2)
	testutil.Equals(t, 0, len(w1)+len(w2), "warnings: %v %v", w1, w2)

	delta := func(a, b map[string]float64, name string, with ...string) float64 {
		return sumOf(b, name, with...) - sumOf(a, name, with...)
	}
	// First run: read from the bucket (index and chunks), cache misses.
	for _, file := range []string{"index", "chunks"} {
		testutil.Assert(t, delta(m0, m1, "strata_bucket_store_fetched_bytes_total", `file="`+file+`"`) > 0, "first run fetched no %s bytes", file)
	}
	testutil.Assert(t, delta(m0, m1, "strata_bucket_store_cache_requests_total", `item="chunks"`) > delta(m0, m1, "strata_bucket_store_cache_hits_total", `item="chunks"`), "first run: no chunk cache misses")
	// Second run: everything from memcached.
	for _, name := range []string{"index", "chunks"} {
		hits := delta(m1, m2, "strata_cache_hits_total", `backend="memcached"`, `name="`+name+`"`)
		reqs := delta(m1, m2, "strata_cache_requests_total", `backend="memcached"`, `name="`+name+`"`)
		testutil.Assert(t, hits > 0 && hits == reqs, "second run, memcached %s cache: %v hits of %v requests", name, hits, reqs)
	}
	for _, item := range []string{"postings", "series", "chunks"} {
		hits := delta(m1, m2, "strata_bucket_store_cache_hits_total", `item="`+item+`"`)
		reqs := delta(m1, m2, "strata_bucket_store_cache_requests_total", `item="`+item+`"`)
		testutil.Assert(t, hits > 0 && hits == reqs, "second run, %s: %v hits of %v lookups", item, hits, reqs)
	}
	testutil.Equals(t, 0.0, delta(m1, m2, "strata_bucket_store_fetched_bytes_total"), "second run fetched bytes from the bucket")
	testutil.Equals(t, 0.0, sumOf(m2, "strata_cache_hits_total", `backend="inmemory"`), "an in-memory cache is in use")
}

// TestStoreGatewayPages: the ring page lists the store-gateway ACTIVE at its gRPC address; the tenants page
// lists the tenants with their block counts; the blocks page gives each block's time range, labels
// (tenant_id and the external ones), resolution, source, level, series, samples and size as in its meta.json
// and files, and whether its index-header is loaded (not before a query, yes after).
func TestStoreGatewayPages(t *testing.T) {
	end := time.Now().Add(-9 * 24 * time.Hour).Truncate(2 * time.Hour)
	dirs := promtoolBlocks(t, end.Add(-4*time.Hour), end, 5*time.Minute, 10)
	testutil.Equals(t, 2, len(dirs))
	s := startStrata(t, t.TempDir(), append([]string{"all", "--store-gateway.id=sg-e2e"}, sgFlags...)...)
	s.waitReady(t, 30*time.Second)

	// Ring page, JSON and HTML.
	var ring struct {
		Shards []struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Address string `json:"address"`
		} `json:"shards"`
	}
	code, body := httpGet(s.url("/store-gateway/ring"), map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code, body)
	testutil.Ok(t, json.Unmarshal([]byte(body), &ring), body)
	testutil.Equals(t, 1, len(ring.Shards), body)
	testutil.Equals(t, "sg-e2e", ring.Shards[0].ID)
	testutil.Equals(t, "ACTIVE", ring.Shards[0].State)
	testutil.Equals(t, s.grpcAddr, ring.Shards[0].Address)
	code, body = httpGet(s.url("/store-gateway/ring"), nil)
	testutil.Equals(t, 200, code)
	mustContain(t, body, "sg-e2e", "ACTIVE")

	// No tenant yet.
	code, body = httpGet(s.url("/store-gateway/tenants"), map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.TrimSpace(body) == "null" || strings.TrimSpace(body) == "[]", "tenants before upload: %s", body)

	idsP := uploadBlocks(t, filepath.Join(s.dataDir, "bucket"), "team-p", map[string]string{"cluster": "eu", "replica": "r1"}, dirs)
	idsQ := uploadBlocks(t, filepath.Join(s.dataDir, "bucket"), "team-q", nil, dirs[:1])
	waitBlocks(t, s.url(""), "team-p", idsP, syncWait)
	waitBlocks(t, s.url(""), "team-q", idsQ, syncWait)

	var tenants []struct {
		Tenant string `json:"tenant"`
		Blocks int    `json:"blocks"`
	}
	code, body = httpGet(s.url("/store-gateway/tenants"), map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code)
	testutil.Ok(t, json.Unmarshal([]byte(body), &tenants), body)
	sort.Slice(tenants, func(i, j int) bool { return tenants[i].Tenant < tenants[j].Tenant })
	testutil.Equals(t, 2, len(tenants), body)
	testutil.Equals(t, "team-p", tenants[0].Tenant)
	testutil.Equals(t, 2, tenants[0].Blocks)
	testutil.Equals(t, "team-q", tenants[1].Tenant)
	testutil.Equals(t, 1, tenants[1].Blocks)
	code, body = httpGet(s.url("/store-gateway/tenants"), nil)
	testutil.Equals(t, 200, code)
	mustContain(t, body, `href="tenant/team-p/blocks"`, `href="tenant/team-q/blocks"`)

	rows := sgBlocks(t, s.url(""), "team-p")
	testutil.Equals(t, 2, len(rows))
	for i, dir := range dirs { // promtool's blocks, sorted by ULID, are in time order, as the page's rows
		var meta struct {
			ULID    string `json:"ulid"`
			MinTime int64  `json:"minTime"`
			MaxTime int64  `json:"maxTime"`
			Stats   struct {
				NumSeries  uint64 `json:"numSeries"`
				NumSamples uint64 `json:"numSamples"`
			} `json:"stats"`
			Compaction struct {
				Level int `json:"level"`
			} `json:"compaction"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		testutil.Ok(t, err)
		testutil.Ok(t, json.Unmarshal(b, &meta))
		var size int64
		testutil.Ok(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Name() != "meta.json" {
				size += fi.Size()
			}
			return err
		}))
		r := rows[i]
		testutil.Equals(t, meta.ULID, r.ID)
		testutil.Equals(t, meta.MinTime, r.MinTime)
		testutil.Equals(t, meta.MaxTime, r.MaxTime)
		testutil.Equals(t, end.Add(time.Duration(i-2)*2*time.Hour).UnixMilli(), r.MinTime)
		testutil.Equals(t, "raw", r.Resolution)
		testutil.Equals(t, "promtool", r.Source)
		testutil.Equals(t, meta.Compaction.Level, r.Level)
		testutil.Equals(t, meta.Stats.NumSeries, r.Series)
		testutil.Equals(t, meta.Stats.NumSamples, r.Samples)
		testutil.Equals(t, size, r.SizeBytes)
		testutil.Equals(t, map[string]string{"tenant_id": "team-p", "cluster": "eu", "replica": "r1"}, r.Labels)
		testutil.Assert(t, !r.IndexHeader, "index-header loaded before any query")
	}
	code, body = httpGet(s.url("/store-gateway/tenant/team-p/blocks"), nil)
	testutil.Equals(t, 200, code)
	mustContain(t, body, idsP[0], idsP[1], "promtool", "raw", `cluster=&#34;eu&#34;`)

	// A query reads the blocks: their index-headers are loaded now.
	waitUntil(t, 20*time.Second, "team-p's data is queryable", func() bool {
		got, _ := promQuery(t, s.url("/prometheus"), "team-p", `count(app_requests_total)`, end.Add(-time.Minute), end, 0, nil)
		return len(got) == 1 && got[0].Value[1] == "10"
	})
	for _, r := range sgBlocks(t, s.url(""), "team-p") {
		testutil.Assert(t, r.IndexHeader == (r.MaxTime > end.Add(-time.Minute-5*time.Minute).UnixMilli()), "block %s: index-header loaded %v", r.ID, r.IndexHeader)
	}
	// A tenant without blocks has an empty list; an invalid tenant is refused.
	testutil.Equals(t, 0, len(sgBlocks(t, s.url(""), "team-none")))
	code, _ = httpGet(s.url("/store-gateway/tenant/..%2F/blocks"), map[string]string{"Accept": "application/json"})
	testutil.Assert(t, code == 400 || code == 404, "invalid tenant: %d", code)
}

// TestStoreGatewayDeletedAndPartialBlocks: of a tenant's blocks in the bucket, one without meta.json (a partial
// upload) is never served; one marked for deletion (block.MarkForDeletion: its deletion-mark.json and the
// markers/ mirror) less than the ignore-deletion-mark delay (1h by default) ago is still served and queried; one
// marked longer ago than the delay stops being served at the next sync and its data leaves query results; one
// whose meta.json is deleted after it was served (the first step of block.Delete, a partial delete) stops being
// served too. The answers are checked against the reference engine over exactly the blocks that should be
// served, with partial responses refused.
//
// The querier re-reads its block list only every hour here: each time the gateway drops a block, the querier's
// list still names it, as it does for up to blocks_refresh_interval in production once the compactor deletes
// blocks. The queries must still succeed at once, by the querier's consistency check: the blocks no gateway
// has make it read the list again and re-plan without them.
func TestStoreGatewayDeletedAndPartialBlocks(t *testing.T) {
	const tenant = "team-d"
	now := time.Now()
	day := 24 * time.Hour
	// Five disjoint periods, one 2h block each (ends on 2h boundaries); more series in "kept" to tell them apart.
	period := func(daysAgo int) (time.Time, time.Time) {
		end := now.Add(-time.Duration(daysAgo) * day).Truncate(2 * time.Hour)
		return end.Add(-2 * time.Hour), end
	}
	mk := func(daysAgo, n int) []string {
		s, e := period(daysAgo)
		d := promtoolBlocks(t, s, e, 5*time.Minute, n)
		testutil.Equals(t, 1, len(d))
		return d
	}
	kept, marked, partial, metaGone, markedRecently := mk(8, 10), mk(10, 11), mk(12, 12), mk(14, 13), mk(16, 14)

	bucketDir := filepath.Join(t.TempDir(), "bucket")
	objCfg := filepath.Join(t.TempDir(), "objstore.yaml")
	testutil.Ok(t, os.WriteFile(objCfg, []byte("type: FILESYSTEM\nconfig:\n  directory: "+bucketDir+"\n"), 0o600))
	ids := map[string]string{}
	for name, d := range map[string][]string{"kept": kept, "marked": marked, "partial": partial, "metaGone": metaGone, "markedRecently": markedRecently} {
		ids[name] = uploadBlocks(t, bucketDir, tenant, nil, d)[0]
	}
	// A partial upload: everything but meta.json.
	testutil.Ok(t, os.Remove(filepath.Join(bucketDir, tenant, ids["partial"], "meta.json")))

	args := []string{"all", "--objstore.config-file=" + objCfg}
	for _, f := range sgFlags {
		if strings.HasPrefix(f, "--querier.blocks-refresh-interval=") {
			f = "--querier.blocks-refresh-interval=1h"
		}
		args = append(args, f)
	}
	s := startStrata(t, t.TempDir(), args...)
	s.waitReady(t, 30*time.Second)
	base := s.url("/prometheus")
	// count_over_time over 30 days at now: how many samples of each series each served block holds.
	const q = `count_over_time(app_requests_total[30d])`
	check := func(t *testing.T, served ...[]string) {
		t.Helper()
		var dirs []string
		for _, d := range served {
			dirs = append(dirs, d...)
		}
		want := refQuery(t, dirs, q, now, now, 0)
		// Refusing partial responses: a block the querier expects and no gateway has fails the query (503).
		got, warnings := promQuery(t, base, tenant, q, now, now, 0, url.Values{"partial_response": {"false"}})
		testutil.Equals(t, want, got)
		testutil.Equals(t, 0, len(warnings), "warnings: %v", warnings)
		got, warnings = promQuery(t, base, tenant, q, now, now, 0, nil)
		testutil.Equals(t, want, got)
		testutil.Equals(t, 0, len(warnings), "warnings: %v", warnings)
		// Nothing at all from the partial block's period.
		ps, pe := period(12)
		got, _ = promQuery(t, base, tenant, `{__name__=~"app_.+"}`, ps, pe, 10*time.Minute, nil)
		testutil.Equals(t, 0, len(got), "data of the partial block: %v", got)
	}

	waitBlocks(t, s.url(""), tenant, []string{ids["kept"], ids["marked"], ids["metaGone"], ids["markedRecently"]}, syncWait)
	check(t, kept, marked, metaGone, markedRecently)

	fs, err := filesystem.NewBucket(bucketDir)
	testutil.Ok(t, err)
	tbkt := objstore.NewPrefixedBucket(fs, tenant)
	markedAt := func(at time.Time) func() time.Time { return func() time.Time { return at } }
	testutil.Ok(t, block.MarkForDeletion(context.Background(), log.NewNopLogger(), tbkt, ulid.MustParse(ids["marked"]), "e2e", markedAt(now.Add(-2*time.Hour))))
	testutil.Ok(t, block.MarkForDeletion(context.Background(), log.NewNopLogger(), tbkt, ulid.MustParse(ids["markedRecently"]), "e2e", markedAt(time.Now())))
	waitBlocks(t, s.url(""), tenant, []string{ids["kept"], ids["metaGone"], ids["markedRecently"]}, syncWait)
	check(t, kept, metaGone, markedRecently)
	// The gateway's page shows the served block's mark.
	for _, b := range sgBlocks(t, s.url(""), tenant) {
		testutil.Equals(t, b.ID == ids["markedRecently"], b.MarkedAt != "", "deletion mark of %s on the page: %q", b.ID, b.MarkedAt)
	}

	t.Run("meta.json deleted after the block was served", func(t *testing.T) {
		testutil.Ok(t, os.Remove(filepath.Join(bucketDir, tenant, ids["metaGone"], "meta.json")))
		waitBlocks(t, s.url(""), tenant, []string{ids["kept"], ids["markedRecently"]}, syncWait)
		check(t, kept, markedRecently)
	})

	// Each drop was noticed by a re-plan (the list is not re-read otherwise), and no query was left with
	// blocks it expected and could not query.
	metrics := s.url("/metrics")
	testutil.Assert(t, sgMetric(t, metrics, "strata_querier_blocks_replans_total") >= 2, "re-plans: %v", sgMetric(t, metrics, "strata_querier_blocks_replans_total"))
	testutil.Equals(t, 0.0, sgMetric(t, metrics, "strata_querier_blocks_consistency_checks_failed_total"))
}
