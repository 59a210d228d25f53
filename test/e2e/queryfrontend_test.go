package e2e

import (
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// frontendData starts `strata all` (its own frontend not splitting, so that its answers are the querier's) with
// promtool blocks over three days, ten days back, uploaded for team-a and team-b; it returns the process and
// the data's time range.
func frontendData(t *testing.T) (*proc, time.Time, time.Time) {
	t.Helper()
	start := time.Now().Add(-10 * 24 * time.Hour).Truncate(24 * time.Hour).Add(-7 * time.Hour)
	end := start.Add(3 * 24 * time.Hour)
	dirs := promtoolBlocks(t, start, end, 5*time.Minute, 6)
	s := startStrata(t, t.TempDir(), append([]string{"all", "--query-frontend.split-queries-by-interval=0"}, sgFlags...)...)
	s.waitReady(t, 30*time.Second)
	for _, tenant := range []string{"team-a", "team-b"} {
		ids := uploadBlocks(t, filepath.Join(s.dataDir, "bucket"), tenant, nil, dirs)
		waitBlocks(t, s.url(""), tenant, ids, syncWait)
	}
	probe := `count(app_requests_total)`
	waitUntil(t, 20*time.Second, "the querier to see the blocks", func() bool {
		code, body := rawQueryRange(t, s.url("/prometheus"), "team-a", url.Values{"query": {probe},
			"start": {unixS(start)}, "end": {unixS(end)}, "step": {"3600"}})
		return code == 200 && strings.Contains(body, `"6"`)
	})
	return s, start, end
}

const feDay = int64(24 * time.Hour / time.Millisecond)

func unixS(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }

// rawQueryRange returns the status and the body of a range query, exactly as received.
func rawQueryRange(t *testing.T, base, tenant string, params url.Values) (int, string) {
	t.Helper()
	return httpGet(base+"/api/v1/query_range?"+params.Encode(), map[string]string{"X-Scope-OrgID": tenant})
}

// TestQueryFrontendSplitEqualsQuerier: range queries across day boundaries through `strata query-frontend`
// (split by UTC day, parts in parallel, merged) answer byte for byte as the querier answers them whole: 80
// random start/end/step over three days of blocks, at least 50 of them across a midnight (steps that do not
// divide the day, times on and off the step grid, ranges within a day and over all three), plus queries the
// frontend must not split (@ start(), @ end()).
func TestQueryFrontendSplitEqualsQuerier(t *testing.T) {
	s, start, end := frontendData(t)
	fe := startStrata(t, t.TempDir(), "query-frontend", "--query-frontend.downstream-url=http://"+s.httpAddr)
	fe.waitReady(t, 30*time.Second)

	queries := []string{
		`app_requests_total`,
		`rate(app_requests_total[10m])`,
		`sum by (job) (rate(app_requests_total[10m]))`,
		`histogram_quantile(0.9, sum by (le, job) (rate(app_latency_seconds_bucket[10m])))`,
		`app_temperature_celsius offset 1h`,
		`max_over_time(app_temperature_celsius[1h:10m])`,
		`avg_over_time(app_temperature_celsius[30m])`,
		`count(app_temperature_celsius)`,
		`timestamp(app_temperature_celsius{instance="host-004"})`,
		`app_requests_total{job="job-1"} @ ` + unixS(start.Add(30*time.Hour)),
		`app_temperature_celsius @ end()`,
		`max_over_time(app_temperature_celsius[2h] @ start())`,
	}
	steps := []string{"60", "300", "7m", "1h", "13m17s", "2h", "25h", "90", "1800.5"}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	span := end.Sub(start).Milliseconds()
	var multiDay int
	firstMidnight := start.Truncate(24 * time.Hour).Add(24 * time.Hour).UnixMilli()
	const n = 80
	for i := range n {
		// Three in four cross a midnight (one to three of them); the others anywhere, a fifth over all the data.
		from := start.UnixMilli() + rng.Int63n(span)
		to := from + rng.Int63n(span-(from-start.UnixMilli())+1)
		switch {
		case i%4 != 3:
			midnight := firstMidnight + rng.Int63n(3)*feDay
			from = max(start.UnixMilli(), midnight-1-rng.Int63n(feDay))
			to = min(end.UnixMilli(), midnight+rng.Int63n(2*feDay))
		case i%8 == 3:
			from, to = start.UnixMilli(), end.UnixMilli()
		}
		fmtT := func(ms int64) string {
			if rng.Intn(3) == 0 {
				return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
			}
			return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)
		}
		params := url.Values{"query": {queries[rng.Intn(len(queries))]}, "start": {fmtT(from)}, "end": {fmtT(to)},
			"step": {steps[rng.Intn(len(steps))]}}
		if time.UnixMilli(from).UTC().YearDay() != time.UnixMilli(to).UTC().YearDay() {
			multiDay++
		}
		wantCode, want := rawQueryRange(t, s.url("/prometheus"), "team-a", params)
		gotCode, got := rawQueryRange(t, fe.url("/prometheus"), "team-a", params)
		testutil.Equals(t, wantCode, gotCode, "case %d %v: %s", i, params, got)
		testutil.Equals(t, want, got, "case %d %v", i, params)
		testutil.Equals(t, 200, gotCode, "case %d %v: %s", i, params, got)
	}
	t.Logf("%d of %d queries crossed a UTC midnight", multiDay, n)
	testutil.Assert(t, multiDay >= 50, "only %d queries crossed a day boundary", multiDay)
	splits := sgMetric(t, fe.url("/metrics"), "strata_query_frontend_split_queries_total", `tenant="team-a"`)
	testutil.Assert(t, splits > float64(multiDay), "split queries: %v", splits)

	// A query the querier refuses is the querier's error, through the frontend too.
	bad := url.Values{"query": {"rate(app_requests_total[5m]"}, "start": {unixS(start)}, "end": {unixS(end)}, "step": {"60"}}
	wantCode, want := rawQueryRange(t, s.url("/prometheus"), "team-a", bad)
	gotCode, got := rawQueryRange(t, fe.url("/prometheus"), "team-a", bad)
	testutil.Equals(t, 400, wantCode)
	testutil.Equals(t, wantCode, gotCode)
	testutil.Equals(t, want, got)
}

// TestQueryFrontendFairQueue: one tenant flooding 10× its max_outstanding_requests_per_tenant gets 429s while
// another tenant's queries keep answering, promptly and correctly. The querier is reached through a proxy that
// holds each of team-a's requests 1s, so that the flood really queues: with 2 requests running at once, a FIFO
// queue would keep team-b behind team-a's 5 waiting requests (≥ 2.5s); the fair queue lets it in at the next
// free slot (≤ 1s).
func TestQueryFrontendFairQueue(t *testing.T) {
	s, start, end := frontendData(t)
	target, err := url.Parse("http://" + s.httpAddr)
	testutil.Ok(t, err)
	slow := httputil.NewSingleHostReverseProxy(target)
	proxyAddr := freeAddr(t)
	srv := &http.Server{Addr: proxyAddr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Scope-OrgID") == "team-a" {
			time.Sleep(time.Second)
		}
		slow.ServeHTTP(w, r)
	})}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close() })

	const maxOutstanding = 5
	fe := startStrata(t, t.TempDir(), "query-frontend", "--query-frontend.downstream-url=http://"+proxyAddr,
		fmt.Sprintf("--query-frontend.max-outstanding-requests-per-tenant=%d", maxOutstanding), "--query-frontend.max-concurrent=2")
	fe.waitReady(t, 30*time.Second)

	params := url.Values{"query": {`sum by (job) (rate(app_requests_total[10m]))`}, "start": {unixS(start)}, "end": {unixS(end)}, "step": {"1h"}}
	_, want := rawQueryRange(t, s.url("/prometheus"), "team-b", params)

	// The flood: 10 × max_outstanding requests of team-a in flight at all times, until team-b is done.
	var (
		stop             atomic.Bool
		wg               sync.WaitGroup
		ok, limited, bad atomic.Int64
		badBody          atomic.Value
	)
	// One client with a connection per flooding goroutine kept alive: thousands of requests, not of connections.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 10 * maxOutstanding}}
	defer client.CloseIdleConnections()
	flood := func() (int, string) {
		req, err := http.NewRequest(http.MethodGet, fe.url("/prometheus/api/v1/query_range?"+params.Encode()), nil)
		if err != nil {
			return 0, err.Error()
		}
		req.Header.Set("X-Scope-OrgID", "team-a")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 10 * maxOutstanding {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				code, body := flood()
				switch {
				case code == 200:
					ok.Add(1)
				case code == 429 && strings.Contains(body, "too many outstanding requests"):
					limited.Add(1)
					time.Sleep(100 * time.Millisecond)
				default:
					bad.Add(1)
					badBody.Store(fmt.Sprint(code, body))
				}
			}
		}()
	}
	waitUntil(t, 10*time.Second, "team-a to be refused", func() bool { return limited.Load() > 0 })

	var slowest time.Duration
	for i := range 10 {
		began := time.Now()
		code, got := rawQueryRange(t, fe.url("/prometheus"), "team-b", params)
		took := time.Since(began)
		slowest = max(slowest, took)
		testutil.Equals(t, 200, code, "team-b query %d: %s", i, got)
		testutil.Equals(t, want, got, "team-b query %d", i)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("team-a: %d answered, %d refused (429); team-b: 10 answered, slowest %s", ok.Load(), limited.Load(), slowest)
	testutil.Equals(t, int64(0), bad.Load(), "unexpected answers to team-a, e.g. %v", badBody.Load())
	testutil.Assert(t, limited.Load() >= int64(10*maxOutstanding), "team-a got only %d 429s", limited.Load())
	testutil.Assert(t, ok.Load() > 0, "team-a got no answer at all")
	// team-b's request waits for the next free slot (team-a's running requests end every 0.5s on average, 1s at
	// most), never behind team-a's queue.
	testutil.Assert(t, slowest < 2*time.Second, "team-b's slowest query took %s", slowest)
	testutil.Assert(t, sgMetric(t, fe.url("/metrics"), "strata_query_frontend_discarded_requests_total", `tenant="team-a"`) >= float64(10*maxOutstanding), "discarded metric")
	testutil.Equals(t, 0.0, sgMetric(t, fe.url("/metrics"), "strata_query_frontend_discarded_requests_total", `tenant="team-b"`))
}
