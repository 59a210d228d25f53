package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// steadyLoad pushes, every interval, one sample for each of its series, all stamped with the time of sending
// (strictly increasing), one request at a time, as a Prometheus with one shard would; it records which requests
// were acknowledged. A request that failed (5xx, or no connection while a process restarts) is not retried: its
// samples may or may not be stored; an acknowledged one must be, exactly once.
type steadyLoad struct {
	url, tenant, metric string
	series              int

	mtx       sync.Mutex
	acked     []int64        // the timestamps of the acknowledged requests
	answers   map[string]int // "2xx", "4xx", "5xx", "no connection"
	clientErr []string       // the first 4xx answers

	stop chan struct{}
	done chan struct{}
}

func startSteadyLoad(pushURL, tenant, metric string, series int, interval time.Duration, maxRequests int) *steadyLoad {
	l := &steadyLoad{url: pushURL, tenant: tenant, metric: metric, series: series, answers: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		client := &http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		last := int64(0)
		for range maxRequests {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			ts := max(time.Now().UnixMilli(), last+1)
			last = ts
			code, body, err := l.push(client, ts)
			l.mtx.Lock()
			switch {
			case err != nil:
				l.answers["no connection"]++
			case code/100 == 2:
				l.answers["2xx"]++
				l.acked = append(l.acked, ts)
			case code/100 == 4:
				l.answers["4xx"]++
				if len(l.clientErr) < 5 {
					l.clientErr = append(l.clientErr, fmt.Sprintf("%d %s", code, body))
				}
			default:
				l.answers[fmt.Sprintf("%dxx", code/100)]++
			}
			l.mtx.Unlock()
		}
	}()
	return l
}

func (l *steadyLoad) push(client *http.Client, ts int64) (int, string, error) {
	series := make([]prompb.TimeSeries, l.series)
	for i := range series {
		series[i].Labels = []prompb.Label{{Name: "__name__", Value: l.metric}, {Name: "instance", Value: fmt.Sprintf("host-%03d", i)}}
		series[i].Samples = []prompb.Sample{{Timestamp: ts, Value: sampleValue(i, ts)}}
	}
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest("POST", l.url, bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("X-Scope-OrgID", l.tenant)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(b), nil
}

func (l *steadyLoad) ackedCount() int {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return len(l.acked)
}

// waitAcked waits for n more acknowledged requests than before; a 4xx fails the test at once.
func (l *steadyLoad) waitAcked(t *testing.T, before, n int, timeout time.Duration, what string) {
	t.Helper()
	waitUntil(t, timeout, what, func() bool {
		l.mtx.Lock()
		defer l.mtx.Unlock()
		if len(l.clientErr) > 0 {
			t.Fatalf("%s: a write was refused with a 4xx (answers %v): %v", what, l.answers, l.clientErr)
		}
		return len(l.acked) >= before+n
	})
}

// finish stops the load and checks that every request was answered 2xx or 5xx (or found no server while it
// restarted), never 4xx; it returns the acknowledged timestamps.
func (l *steadyLoad) finish(t *testing.T) []int64 {
	t.Helper()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mtx.Lock()
	defer l.mtx.Unlock()
	t.Logf("answers to the writes: %v", l.answers)
	testutil.Equals(t, 0, l.answers["4xx"], "writes refused: %v", l.clientErr)
	for class := range l.answers {
		testutil.Assert(t, class == "2xx" || class == "5xx" || class == "no connection", "answers %v", l.answers)
	}
	return append([]int64(nil), l.acked...)
}

// checkAckedOnce reads every raw sample of the load's metric through a querier and checks that each sample of
// every acknowledged request is there exactly once, with its value. It retries (at most 30s) while the query
// fails (a store-gateway that has not loaded a just-shipped block yet).
func checkAckedOnce(t *testing.T, queryBase string, l *steadyLoad, acked []int64) {
	t.Helper()
	testutil.Assert(t, len(acked) > 0, "no write was acknowledged")
	end := acked[len(acked)-1] + 1
	window := time.Duration(end-acked[0]+60_000) * time.Millisecond
	var (
		code int
		r    promResponse
	)
	waitUntil(t, 30*time.Second, "raw samples through the querier", func() bool {
		code, r = promAPI(t, queryBase, l.tenant, "/api/v1/query", url.Values{
			"query": {fmt.Sprintf("%s[%dms]", l.metric, window.Milliseconds())}, "time": {fmt.Sprintf("%.3f", float64(end)/1000)},
			"partial_response": {"false"}})
		return code == 200
	})
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &data))
	testutil.Equals(t, "matrix", data.ResultType)
	testutil.Equals(t, l.series, len(data.Result), "series read back")
	for _, s := range data.Result {
		i, err := strconv.Atoi(strings.TrimPrefix(s.Metric["instance"], "host-"))
		testutil.Ok(t, err, "series %v", s.Metric)
		got := map[int64]int{}
		for _, v := range s.Values {
			sec, ok := v[0].(float64)
			testutil.Assert(t, ok, "timestamp %v", v[0])
			ts := int64(math.Round(sec * 1000))
			got[ts]++
			testutil.Equals(t, sampleValue(i, ts), sampleFloat(t, v), "value of %v at %d", s.Metric, ts)
		}
		for ts, n := range got {
			testutil.Equals(t, 1, n, "%v has %d samples at %d", s.Metric, n, ts)
		}
		for _, ts := range acked {
			testutil.Assert(t, got[ts] == 1, "%v lost the acknowledged sample at %d (%d of %d acknowledged samples read)", s.Metric, ts, len(got), len(acked))
		}
	}
}

// noErrorLogs checks that a process's output has no line logged at level=error.
func noErrorLogs(t *testing.T, name, out string) {
	t.Helper()
	var errs []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "level=error") {
			errs = append(errs, line)
		}
	}
	testutil.Equals(t, 0, len(errs), "%s logged errors:\n%s", name, strings.Join(errs, "\n"))
}

// TestLocalClusterRollingRestartUnderLoad: the local cluster (3 ingesters in zones a, b, c, RF 3) under a steady
// load of 200 series written every 100ms; the ingesters are restarted gracefully one after another (SIGTERM: they
// leave the ring, flush their heads into blocks and ship them; then start again, each ACTIVE in the ring before the
// next stops). Every write is answered 2xx or 5xx, never 4xx (a flush that cut its block at the end of the 2h
// range made each restarted ingester refuse every new sample as too old), and every acknowledged sample is read
// back through the querier exactly once. Then a stop of the whole cluster logs no error.
func TestLocalClusterRollingRestartUnderLoad(t *testing.T) {
	c := startCluster(t)
	const tenant = "team-restart"
	load := startSteadyLoad(c.url(8080, "/api/v1/push"), tenant, "e2e_restart", 200, 100*time.Millisecond, 2000)
	defer func() { _ = load.finish(t) }()
	load.waitAcked(t, 0, 10, 20*time.Second, "writes before the restarts")
	for _, ing := range []string{"ingester-a", "ingester-b", "ingester-c"} {
		c.run(t, "stop.sh", ing)
		// start.sh returns once the ingester is ready and the distributor sees the 3 ingesters ACTIVE.
		c.run(t, "start.sh", ing)
		load.waitAcked(t, load.ackedCount(), 10, 20*time.Second, "writes after the restart of "+ing)
	}
	acked := load.finish(t)
	checkAckedOnce(t, c.url(8090, "/prometheus"), load, acked)

	c.run(t, "stop.sh")
	for _, n := range []string{"distributor", "ingester-a", "ingester-b", "ingester-c", "store-gateway-a", "store-gateway-b", "store-gateway-c", "querier"} {
		b, err := os.ReadFile(filepath.Join(c.dir, n+".log"))
		testutil.Ok(t, err)
		noErrorLogs(t, n, string(b))
	}
}

// restart starts the process again with the same arguments (same ports, same data directory) after it exited.
func (p *proc) restart(t *testing.T) *proc {
	t.Helper()
	<-p.exited
	q := startProc(t, p.cmd.Dir, "strata (restarted)", p.cmd.Path, p.cmd.Args[1:]...)
	q.httpAddr, q.grpcAddr, q.dataDir = p.httpAddr, p.grpcAddr, p.dataDir
	return q
}

// TestAllRestartUnderLoad: `strata all` under a steady load is stopped with SIGTERM (it flushes its head into
// blocks and ships them), logging no error, and started again on the same data directory. While it is down the
// writes find no server; every write answered is 2xx or 5xx, never 4xx (the flush used to cut its block at the
// end of the 2h range, after which every new sample was too old), and every acknowledged sample is read back
// exactly once.
func TestAllRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	p := startStrata(t, dir, "all", "--auth.multitenancy-enabled")
	p.waitReady(t, 60*time.Second)
	const tenant = "team-restart"
	load := startSteadyLoad(p.url("/api/v1/push"), tenant, "e2e_restart", 200, 100*time.Millisecond, 2000)
	defer func() { _ = load.finish(t) }()
	load.waitAcked(t, 0, 20, 20*time.Second, "writes before the restart")

	testutil.Equals(t, 0, p.stop(t))
	noErrorLogs(t, "strata all", p.out.String())
	p = p.restart(t)
	p.waitReady(t, 60*time.Second)
	load.waitAcked(t, load.ackedCount(), 20, 20*time.Second, "writes after the restart")
	acked := load.finish(t)
	checkAckedOnce(t, p.url("/prometheus"), load, acked)

	testutil.Equals(t, 0, p.stop(t))
	noErrorLogs(t, "strata all", p.out.String())
}
