package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"

	"github.com/stratametrics/strata/pkg/store"
)

// sgcMember is one instance of a dskit ring page's JSON (Accept: application/json): {"shards":[{"id", "state",
// "address", "zone", …}]}; the state is UNHEALTHY once its heartbeats stopped for the heartbeat timeout.
type sgcMember struct {
	State   string `json:"state"`
	Address string `json:"address"`
	Zone    string `json:"zone"`
}

// sgcRing reads a ring page as JSON: the instances by ID.
func sgcRing(t *testing.T, ringURL string) map[string]sgcMember {
	t.Helper()
	code, body := httpGet(ringURL, map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code, "GET %s: %s", ringURL, body)
	var page struct {
		Shards []struct {
			ID string `json:"id"`
			sgcMember
		} `json:"shards"`
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &page), body)
	out := map[string]sgcMember{}
	for _, s := range page.Shards {
		out[s.ID] = s.sgcMember
	}
	return out
}

// TestStoreGatewayKillOneOfThree: 3 store-gateways (zones a, b, c, RF 3: each owns every block) and a querier
// over a filesystem bucket of promtool-made blocks. Queries equal a plain Prometheus engine over the same blocks;
// after kill -9 of the gateway that served them, the querier retries the blocks on their other owners at once
// (before the ring notices) and after the heartbeat timeout answers from the two left, with the same results and
// no warning, even with partial responses refused.
func TestStoreGatewayKillOneOfThree(t *testing.T) {
	const (
		tenant  = "team-sg"
		nSeries = 30
	)
	// ~8 days old, 5 hours every 30s: 3 or 4 two-hour blocks.
	start := time.Now().Add(-8 * 24 * time.Hour).Truncate(time.Hour).Add(-30 * time.Minute)
	end := start.Add(5 * time.Hour)
	dirs := promtoolBlocks(t, start, end, 30*time.Second, nSeries)
	testutil.Assert(t, len(dirs) >= 3, "want ≥ 3 blocks, got %d", len(dirs))

	dir := t.TempDir()
	bucket := filepath.Join(dir, "bucket")
	ids := uploadBlocks(t, bucket, tenant, nil, dirs)
	objstoreFile := filepath.Join(dir, "objstore.yaml")
	testutil.Ok(t, os.WriteFile(objstoreFile, []byte("type: FILESYSTEM\nconfig:\n  directory: "+bucket+"\n"), 0o600))

	gossip := newMemberlist(t, 4)
	common := func(i int) []string {
		return append([]string{"--objstore.config-file=" + objstoreFile, "--auth.multitenancy-enabled",
			"--store-gateway.ring.replication-factor=3", "--store-gateway.zone-awareness-enabled",
			"--store-gateway.ring.heartbeat-period=1s", "--store-gateway.ring.heartbeat-timeout=5s"}, gossip.flags(i)...)
	}
	zones := []string{"a", "b", "c"}
	gws := map[string]*proc{}
	for i, z := range zones {
		name := "store-gateway-" + z
		gws[name] = startStrata(t, dir, append([]string{"store-gateway", "--store-gateway.id=" + name,
			"--store-gateway.availability-zone=" + z, "--sync-interval=1s"}, common(i)...)...)
	}
	querier := startStrata(t, dir, append([]string{"querier", "--querier.blocks-refresh-interval=1s",
		"--querier.blocks-upload-grace-period=1ms"}, common(3)...)...)
	for _, g := range gws {
		g.waitReady(t, 60*time.Second)
	}
	querier.waitReady(t, 60*time.Second)
	for _, g := range gws {
		waitBlocks(t, g.url(""), tenant, ids, 60*time.Second)
	}
	waitUntil(t, 30*time.Second, "3 ACTIVE store-gateways in the querier's ring", func() bool {
		r := sgcRing(t, querier.url("/store-gateway/ring"))
		for name, g := range gws {
			if r[name].State != "ACTIVE" || r[name].Address != g.grpcAddr {
				return false
			}
		}
		return len(r) == 3
	})

	type q struct {
		query string
		at    time.Time // instant query when step is 0
		step  time.Duration
	}
	mid := start.Add(150 * time.Minute)
	queries := []q{
		{query: sgCounter, step: 5 * time.Minute},
		{query: `rate(` + sgCounter + `[5m])`, step: 2 * time.Minute},
		{query: `sum by (job) (` + sgGauge + `)`, step: time.Minute},
		{query: `histogram_quantile(0.9, sum by (le) (rate(` + sgHistogram + `_bucket[10m])))`, step: 10 * time.Minute},
		{query: `count_over_time(` + sgGauge + `[6h])`, at: end},
		{query: sgGauge, at: mid},
		{query: `max_over_time(` + sgCounter + `[1h])`, at: mid.Add(17 * time.Minute)},
		{query: `count(` + sgHistogram + `_count)`, at: end.Add(-time.Minute)},
	}
	want := make([][]promSample, len(queries))
	for i, qq := range queries {
		if qq.step == 0 {
			want[i] = refQuery(t, dirs, qq.query, qq.at, qq.at, 0)
		} else {
			want[i] = refQuery(t, dirs, qq.query, start, end, qq.step)
		}
		testutil.Assert(t, len(want[i]) > 0, "reference of %s is empty", qq.query)
	}
	// check runs every query, with partial responses refused and with the default (allowed), and compares.
	check := func(phase string) {
		t.Helper()
		for i, qq := range queries {
			for _, extra := range []url.Values{{"partial_response": {"false"}}, nil} {
				var (
					got      []promSample
					warnings []string
				)
				if qq.step == 0 {
					got, warnings = promQuery(t, querier.url("/prometheus"), tenant, qq.query, qq.at, qq.at, 0, extra)
				} else {
					got, warnings = promQuery(t, querier.url("/prometheus"), tenant, qq.query, start, end, qq.step, extra)
				}
				testutil.Equals(t, 0, len(warnings), "%s: %s %v: warnings %v", phase, qq.query, extra, warnings)
				testutil.Equals(t, want[i], got, "%s: %s %v", phase, qq.query, extra)
			}
		}
	}
	queried := func() map[string]float64 {
		out := map[string]float64{}
		for name, g := range gws {
			out[name] = sgMetric(t, g.url("/metrics"), "strata_bucket_store_series_blocks_queried_total")
		}
		return out
	}
	querierMetric := func(name string) float64 {
		return sgMetric(t, querier.url("/metrics"), name)
	}

	before := queried()
	check("3 gateways")
	after := queried()
	// The gateway to kill: the one that read the most blocks (it is the first owner of some of them).
	victim := ""
	for name := range gws {
		if d := after[name] - before[name]; d > 0 && (victim == "" || d > after[victim]-before[victim]) {
			victim = name
		}
	}
	testutil.Assert(t, victim != "", "no store-gateway read a block: %v → %v", before, after)
	testutil.Equals(t, 0.0, querierMetric("strata_querier_blocks_retried_total"), "retries with 3 healthy gateways")
	t.Logf("blocks read per gateway: before %v, after %v; killing %s", before, after, victim)

	// kill -9: the ring still shows it ACTIVE until the heartbeat timeout (5s); the querier's requests to it fail
	// and its blocks go to their next owners.
	killed := time.Now()
	testutil.Ok(t, gws[victim].cmd.Process.Signal(syscall.SIGKILL))
	<-gws[victim].exited
	check("right after kill -9")
	t.Logf("queries right after the kill took %s", time.Since(killed))
	testutil.Assert(t, querierMetric("strata_querier_blocks_retried_total") > 0, "no block was retried on another owner")
	testutil.Equals(t, 0.0, querierMetric("strata_querier_blocks_unqueried_total"))
	testutil.Assert(t, sgMetric(t, querier.url("/metrics"), "strata_querier_store_gateway_requests_total", `outcome="error"`) > 0,
		"no failed store-gateway request counted")

	// After the heartbeat timeout the ring marks it unhealthy; the two others answer alone.
	waitUntil(t, 30*time.Second, victim+" UNHEALTHY in the querier's ring", func() bool {
		return sgcRing(t, querier.url("/store-gateway/ring"))[victim].State == "UNHEALTHY"
	})
	retried := querierMetric("strata_querier_blocks_retried_total")
	check("after the heartbeat timeout")
	testutil.Equals(t, retried, querierMetric("strata_querier_blocks_retried_total"), "retries once the ring knows")
	testutil.Equals(t, 0.0, querierMetric("strata_querier_blocks_unqueried_total"))
}

// TestShippingBoundaryNoGapNoDuplicate: with `strata all` (1m blocks, 2m local retention, shipping every second),
// one series written every 5s over 5½ minutes ends up in three places: its oldest minutes only in the bucket
// (deleted from the ingester by retention once shipped), the next in both the ingester's blocks and the bucket,
// the newest only in the ingester's head. The querier's answer over the whole period has every sample exactly
// once: no gap at the shipping boundary, no duplicate where ingester and store-gateway overlap.
func TestShippingBoundaryNoGapNoDuplicate(t *testing.T) {
	const (
		tenant   = "team-boundary"
		metric   = "boundary_metric"
		interval = 5 * time.Second
		perMin   = int(time.Minute / interval)
	)
	p := startStrata(t, t.TempDir(), "all", "--auth.multitenancy-enabled",
		"--tsdb.block-duration=1m", "--tsdb.retention=2m", "--tsdb.ship-interval=1s",
		"--sync-interval=1s", "--querier.blocks-refresh-interval=1s", "--querier.blocks-upload-grace-period=1ms")
	p.waitReady(t, 60*time.Second)

	// Minutes 0-4 are written and flushed (cut into 1m blocks and shipped) one after the other; minute 5 is half
	// written and stays in the head. All of it in the past, aligned to the minute (the blocks' boundaries).
	t0 := time.Now().Truncate(time.Minute).Add(-7 * time.Minute).UnixMilli()
	value := func(ts int64) float64 { return 1000 + float64(ts-t0)/1000 + 0.25 } // distinct at every timestamp
	var written []int64
	push := func(ts []int64) {
		t.Helper()
		s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "boundary"}}}
		for _, x := range ts {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: x, Value: value(x)})
		}
		code, body := pushV1(t, p.url("/api/v1/push"), tenant, []prompb.TimeSeries{s})
		testutil.Assert(t, code/100 == 2, "push: %d %s", code, body)
		written = append(written, ts...)
	}
	flush := func() {
		t.Helper()
		resp, err := http.Post(p.url("/ingester/flush"), "", nil)
		testutil.Ok(t, err)
		_ = resp.Body.Close()
		testutil.Equals(t, http.StatusNoContent, resp.StatusCode, "flush")
	}
	minute := func(m, n int) []int64 {
		var ts []int64
		for k := 0; k < n; k++ {
			ts = append(ts, t0+int64(m)*time.Minute.Milliseconds()+int64(k)*interval.Milliseconds())
		}
		return ts
	}
	for m := 0; m < 5; m++ {
		push(minute(m, perMin))
		flush()
	}
	push(minute(5, perMin/2))
	last := written[len(written)-1]

	// The bucket holds minutes 0-4, one block each.
	metas, err := filepath.Glob(filepath.Join(p.dataDir, "bucket", tenant, "*", "meta.json"))
	testutil.Ok(t, err)
	testutil.Equals(t, 5, len(metas), "blocks in the bucket")
	var ids []string
	for _, m := range metas {
		ids = append(ids, filepath.Base(filepath.Dir(m)))
	}
	// The ingester dropped the shipped blocks beyond its 2m retention (at the last flush's reload: minutes 0-2);
	// it keeps minutes 3-4 in blocks and minute 5 in its head. Its own StoreAPI is the process's gRPC port, asked
	// with the ingester scope (without it, the port serves the merged view).
	var local []int64
	waitUntil(t, 90*time.Second, "the ingester to drop the blocks beyond retention", func() bool {
		local = local[:0]
		for _, samples := range readStore(t, p.grpcAddr, tenant, store.IngesterDialOptions()...) {
			for ts := range samples {
				local = append(local, ts)
			}
		}
		slices.Sort(local)
		return len(local) > 0 && local[0] >= t0+3*time.Minute.Milliseconds()
	})
	testutil.Equals(t, written[3*perMin:], local, "samples left on the ingester")
	waitBlocks(t, p.url(""), tenant, ids, 30*time.Second)

	base := p.url("/prometheus")
	strict := url.Values{"partial_response": {"false"}}
	blocksQueried := sgMetric(t, p.url("/metrics"), "strata_bucket_store_series_blocks_queried_total")
	sel := metric + `{job="boundary"}`

	// Every step at the sample interval has exactly the value written at that time (a gap would show the previous
	// sample's value, or nothing).
	got := rangeQuery(t, base, tenant, sel, t0, last, "5s", strict)
	testutil.Equals(t, 1, len(got), "series")
	testutil.Equals(t, map[string]string{"__name__": metric, "job": "boundary"}, got[0].Metric)
	testutil.Equals(t, len(written), len(got[0].Values), "steps")
	for i, v := range got[0].Values {
		ts := written[i]
		testutil.Equals(t, float64(ts)/1000, v[0], "step %d", i)
		testutil.Equals(t, value(ts), sampleFloat(t, v), "value at %ds", (ts-t0)/1000)
	}
	// Exactly one sample in each (t-5s, t], 12 in each (t-1m, t] (a duplicate would count twice).
	for _, c := range []struct {
		window, step string
		from         int64
		want         float64
	}{
		{"5s", "5s", t0, 1},
		{"1m", "5s", t0 + time.Minute.Milliseconds() - interval.Milliseconds(), float64(perMin)},
	} {
		got := rangeQuery(t, base, tenant, fmt.Sprintf("count_over_time(%s[%s])", sel, c.window), c.from, last, c.step, strict)
		testutil.Equals(t, 1, len(got), "count_over_time [%s]", c.window)
		testutil.Assert(t, len(got[0].Values) > 0, "count_over_time [%s]: no points", c.window)
		for _, v := range got[0].Values {
			testutil.Equals(t, c.want, sampleFloat(t, v), "count_over_time(%s[%s]) at %v", metric, c.window, v[0])
		}
	}
	// The raw samples of the whole period: exactly those written, in order.
	code, r := promAPI(t, base, tenant, "/api/v1/query", url.Values{"query": {sel + "[10m]"},
		"time": {fmt.Sprintf("%.3f", float64(last)/1000)}, "partial_response": {"false"}})
	testutil.Equals(t, 200, code, "%s %s", r.ErrorType, r.Error)
	testutil.Equals(t, 0, len(r.Warnings), "warnings %v", r.Warnings)
	var raw struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &raw))
	testutil.Equals(t, "matrix", raw.ResultType)
	testutil.Equals(t, 1, len(raw.Result))
	var gotTS []int64
	for _, v := range raw.Result[0].Values {
		ms := int64(v[0].(float64)*1000 + 0.5)
		gotTS = append(gotTS, ms)
		testutil.Equals(t, value(ms), sampleFloat(t, v), "raw sample at %ds", (ms-t0)/1000)
	}
	testutil.Equals(t, written, gotTS, "raw samples")
	// And the oldest minutes did come from the store-gateway.
	testutil.Assert(t, sgMetric(t, p.url("/metrics"), "strata_bucket_store_series_blocks_queried_total") > blocksQueried, "the store-gateway read no block")
	testutil.Equals(t, 0.0, sgMetric(t, p.url("/metrics"), "strata_querier_blocks_unqueried_total"))
}

// TestStoreGatewayKeepsTokens: a store-gateway started with a fresh --data-dir stores its ring tokens in
// <data-dir>/store-gateway-tokens.json, so that a restart keeps the blocks it owned (as the ingester does).
func TestStoreGatewayKeepsTokens(t *testing.T) {
	dir := t.TempDir()
	bucket := filepath.Join(dir, "bucket")
	testutil.Ok(t, os.MkdirAll(bucket, 0o750))
	objstoreFile := filepath.Join(dir, "objstore.yaml")
	testutil.Ok(t, os.WriteFile(objstoreFile, []byte("type: FILESYSTEM\nconfig:\n  directory: "+bucket+"\n"), 0o600))
	g := startStrata(t, dir, append([]string{"store-gateway", "--store-gateway.id=sg-tokens", "--objstore.config-file=" + objstoreFile,
		"--sync-interval=1s"}, newMemberlist(t, 1).flags(0)...)...)
	g.waitReady(t, 60*time.Second)
	waitUntil(t, 30*time.Second, "the store-gateway ACTIVE in its ring", func() bool {
		return sgcRing(t, g.url("/store-gateway/ring"))["sg-tokens"].State == "ACTIVE"
	})
	var tokens []uint32
	waitUntil(t, 10*time.Second, "store-gateway-tokens.json in the data dir", func() bool {
		b, err := os.ReadFile(filepath.Join(g.dataDir, "store-gateway-tokens.json"))
		if err != nil {
			return false
		}
		var f struct {
			Tokens []uint32 `json:"tokens"`
		}
		testutil.Ok(t, json.Unmarshal(b, &f), string(b))
		tokens = f.Tokens
		return true
	})
	code, body := httpGet(g.url("/store-gateway/ring"), map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code)
	var page struct {
		Shards []struct {
			Tokens []uint32 `json:"tokens"`
		} `json:"shards"`
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &page))
	testutil.Equals(t, 1, len(page.Shards))
	testutil.Equals(t, page.Shards[0].Tokens, tokens, "tokens in the file and in the ring")
}
