package e2e

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
)

var (
	loadgenOnce sync.Once
	loadgenPath string
	loadgenErr  error
)

// loadgenBin builds the real strata-loadgen once, for the tests that need it.
func loadgenBin(t *testing.T) string {
	t.Helper()
	loadgenOnce.Do(func() {
		loadgenPath = filepath.Join(filepath.Dir(strataBin), "strata-loadgen") // removed with strata by TestMain
		build := exec.Command("go", "build", "-o", loadgenPath, "./cmd/strata-loadgen")
		build.Dir = repoRoot()
		out, err := build.CombinedOutput()
		if err != nil {
			loadgenErr = err
			loadgenPath = string(out)
		}
	})
	testutil.Ok(t, loadgenErr, "build strata-loadgen: %s", loadgenPath)
	return loadgenPath
}

// haElected is a distributor's /distributor/ha_tracker in JSON.
type haElected struct {
	Tenant, Cluster, Replica string
	ElectedAt                time.Time `json:"elected_at"`
}

func haPage(t *testing.T, p *proc) []haElected {
	t.Helper()
	code, body := httpGet(p.url("/distributor/ha_tracker"), map[string]string{"Accept": "application/json"})
	testutil.Equals(t, 200, code, body)
	var page struct {
		Enabled bool
		Elected []haElected
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &page))
	testutil.Assert(t, page.Enabled, "HA tracker disabled: %s", body)
	return page.Elected
}

// electedOn returns the replica p elected for tenant ha's cluster c1 ("" when none).
func electedOn(t *testing.T, p *proc) haElected {
	for _, e := range haPage(t, p) {
		if e.Tenant == "ha" && e.Cluster == "c1" {
			return e
		}
	}
	return haElected{}
}

// TestHATrackerFailover: two Prometheus-like writers (the real strata-loadgen) are the replicas a and b of HA
// cluster c1, a writing to distributor d1 and b to d2 (two distributors over memberlist, one ingester, RF 1,
// failover timeout 3s, update timeout 1s). Only a's samples are stored, without the replica label, while b's are
// answered 202 and dropped by d2, which learned a's election from the KV store, also after d2 is killed and
// restarted. a is killed: after the failover
// timeout b is elected and its samples stored; the stored series have exactly one switch from a to b, with no
// gap longer than the failover timeout plus b's next send (and not much shorter than the failover timeout less
// the update timeout: the failover waits); both distributors show the same elected replica.
func TestHATrackerFailover(t *testing.T) {
	const (
		failover      = 3 * time.Second
		updateTimeout = time.Second
		interval      = 250 * time.Millisecond
		series        = 10
	)
	loadgen := loadgenBin(t)
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  ha:\n    accept_ha_samples: true\n"), 0o600))
	gossip := newMemberlist(t, 4)
	common := func(i int) []string {
		return append(gossip.flags(i), "--runtime-config.file="+rt, "--ingester.ring.heartbeat-period=1s", "--ingester.ring.replication-factor=1")
	}
	haFlags := []string{"--distributor.ha-tracker.enable", "--distributor.ha-tracker.update-timeout=" + updateTimeout.String(),
		"--distributor.ha-tracker.update-timeout-jitter-max=0s", "--distributor.ha-tracker.failover-timeout=" + failover.String()}
	ing := startStrata(t, dir, append([]string{"ingester", "--ingester.id=i1"}, common(0)...)...)
	d1 := startStrata(t, dir, append(append([]string{"distributor", "--distributor.id=d1"}, common(1)...), haFlags...)...)
	d2 := startStrata(t, dir, append(append([]string{"distributor", "--distributor.id=d2"}, common(2)...), haFlags...)...)
	q := startStrata(t, dir, append([]string{"querier"}, common(3)...)...)
	for _, p := range []*proc{ing, d1, d2, q} {
		p.waitReady(t, 60*time.Second)
	}
	for _, p := range []*proc{d1, d2, q} {
		waitUntil(t, 30*time.Second, "the ingester ACTIVE in every ring view", func() bool {
			_, ir := httpGet(p.url("/ingester/ring"), map[string]string{"Accept": "application/json"})
			return strings.Count(ir, `"state":"ACTIVE"`) == 1
		})
	}

	writer := func(d *proc, replica string) *proc {
		return startProc(t, dir, "loadgen-"+replica, loadgen, "--url="+d.url("/api/v1/push"), "--tenant=ha",
			"--series="+strconv.Itoa(series), "--labels-per-series=10", "--series-per-request="+strconv.Itoa(series), "--concurrency=1",
			"--round-interval="+interval.String(), "--duration=2m", "--extra-label=cluster=c1", "--extra-label=__replica__="+replica)
	}
	startA := time.Now()
	a := writer(d1, "a")
	waitUntil(t, 20*time.Second, "both distributors elect a", func() bool {
		return electedOn(t, d1).Replica == "a" && electedOn(t, d2).Replica == "a"
	})
	// b starts 6s after a: its counters (value (round+1)×step) stay below a's until well after the failover, so a
	// sample of b among a's shows as a drop in value.
	time.Sleep(time.Until(startA.Add(6 * time.Second)))
	b := writer(d2, "b")
	waitUntil(t, 10*time.Second, "d2 drops b's samples", func() bool {
		return len(metricsLines(t, d2, "strata_distributor_deduped_samples_total", `cluster="c1"`, `tenant="ha"`)) == 1 &&
			len(metricsLines(t, d2, "strata_distributor_requests_total", `code="202"`)) == 1 &&
			!strings.HasSuffix(metricsLines(t, d2, "strata_distributor_requests_total", `code="202"`)[0], " 0")
	})
	time.Sleep(2 * time.Second)
	testutil.Equals(t, "a", electedOn(t, d2).Replica)

	// d2 killed (kill -9) and restarted on the same addresses while b writes to it: it learns a's election from
	// the KV store when it rejoins the gossip, so b's requests go on being dropped and nobody is elected anew (a
	// sample of b stored meanwhile would show below as a second drop in the series' values).
	electedAt := electedOn(t, d1).ElectedAt
	testutil.Ok(t, d2.cmd.Process.Kill())
	<-d2.exited
	d2 = restartStrata(t, dir, d2, append(append([]string{"distributor", "--distributor.id=d2"}, common(2)...), haFlags...)...)
	d2.waitReady(t, 60*time.Second)
	waitUntil(t, 15*time.Second, "the restarted d2 drops b's samples", func() bool {
		l := metricsLines(t, d2, "strata_distributor_deduped_samples_total", `cluster="c1"`, `tenant="ha"`)
		return len(l) == 1 && !strings.HasSuffix(l[0], " 0")
	})
	testutil.Equals(t, "a", electedOn(t, d2).Replica)
	testutil.Equals(t, electedAt, electedOn(t, d1).ElectedAt, "no new election")

	// Kill the elected writer, as a crash: b is elected within the failover timeout of a's last heartbeat.
	testutil.Ok(t, a.cmd.Process.Kill())
	<-a.exited
	killed := time.Now()
	waitUntil(t, 15*time.Second, "both distributors elect b", func() bool {
		return electedOn(t, d1).Replica == "b" && electedOn(t, d2).Replica == "b"
	})
	t.Logf("b elected %s after a was killed", time.Since(killed).Round(time.Millisecond))
	e1, e2 := electedOn(t, d1), electedOn(t, d2)
	testutil.Equals(t, e1.ElectedAt, e2.ElectedAt, "the distributors agree on the election")
	time.Sleep(2 * time.Second)
	testutil.Ok(t, b.cmd.Process.Kill())
	<-b.exited

	// What is stored: each series once, without __replica__, a's samples then b's.
	res, _ := promQuery(t, q.url(""), "ha", `{cluster="c1"}[2m]`, time.Now(), time.Now(), 0, url.Values{"dedup": {"false"}})
	testutil.Equals(t, series, len(res), "series stored: %v", res)
	code, r := promAPI(t, q.url(""), "ha", "/api/v1/label/__replica__/values", nil)
	testutil.Equals(t, 200, code)
	testutil.Equals(t, "[]", string(r.Data))
	for _, s := range res {
		_, hasReplica := s.Metric["__replica__"]
		testutil.Assert(t, !hasReplica, "replica label stored: %v", s.Metric)
		type sample struct {
			ts int64
			v  float64
		}
		var samples []sample
		for _, v := range s.Values {
			sec, ok := v[0].(float64)
			testutil.Assert(t, ok, "timestamp %v", v[0])
			samples = append(samples, sample{int64(sec*1000 + 0.5), sampleFloat(t, v)})
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i].ts < samples[j].ts })
		// a's counter grows, then b's (lower, as it started later) takes over: exactly one drop.
		var drops []int
		for i := 1; i < len(samples); i++ {
			if samples[i].v < samples[i-1].v {
				drops = append(drops, i)
			}
		}
		testutil.Equals(t, 1, len(drops), "%s: one switch from a to b, got drops at %v in %v", s.Metric["__name__"], drops, samples)
		i := drops[0]
		gap := time.Duration(samples[i].ts-samples[i-1].ts) * time.Millisecond
		t.Logf("%s: %d samples of a, %d of b, gap %s", s.Metric["__name__"], i, len(samples)-i, gap)
		testutil.Assert(t, i > 10 && len(samples)-i > 4, "%s: %d samples of a, %d of b", s.Metric["__name__"], i, len(samples)-i)
		// b is elected by its first request at least failover after a's last heartbeat in the KV store, which is
		// at most the update timeout (plus a send interval) older than a's last sample; b's first stored sample is
		// its next send after that. slack: request latency and scheduling on a busy machine.
		const slack = 500 * time.Millisecond
		testutil.Assert(t, gap <= failover+interval+slack, "%s: gap of %s between a's last sample and b's first", s.Metric["__name__"], gap)
		testutil.Assert(t, gap >= failover-updateTimeout-interval-slack, "%s: b elected too early, %s after a's last sample", s.Metric["__name__"], gap)
		testutil.Assert(t, time.UnixMilli(samples[i-1].ts).Before(killed), "a's last sample after it was killed")
	}
}

// restartStrata starts `strata <args>` again on p's addresses and data dir (p has exited).
func restartStrata(t *testing.T, dir string, p *proc, args ...string) *proc {
	t.Helper()
	np := startProc(t, dir, "strata", strataBin, append(args, "--http-address="+p.httpAddr, "--grpc-address="+p.grpcAddr, "--data-dir="+p.dataDir)...)
	np.httpAddr, np.grpcAddr, np.dataDir = p.httpAddr, p.grpcAddr, p.dataDir
	return np
}

// TestHATrackerAll: in `strata all` (the in-memory KV store) the tracker elects the first replica, answers the
// other 202 with nothing stored, refuses a cluster beyond ha_max_clusters with a 400 naming the key, and leaves
// a tenant without accept_ha_samples alone.
func TestHATrackerAll(t *testing.T) {
	dir := t.TempDir()
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte("overrides:\n  ha:\n    accept_ha_samples: true\n    ha_max_clusters: 1\n"), 0o600))
	p := startStrata(t, dir, "all", "--runtime-config.file="+rt, "--distributor.ha-tracker.enable")
	p.waitReady(t, 60*time.Second)
	now := time.Now().UnixMilli()
	ha := func(cluster, replica string) []prompb.Label {
		return []prompb.Label{{Name: "__replica__", Value: replica}, {Name: "cluster", Value: cluster}}
	}
	push := func(tenant string, ts int64, lbls []prompb.Label) (int, string) {
		return pushV1(t, p.url("/api/v1/push"), tenant, seriesOf("ha_m", 2, ts, lbls...))
	}
	code, body := push("ha", now, ha("c1", "a"))
	testutil.Equals(t, 204, code, body)
	code, body = push("ha", now+1, ha("c1", "b"))
	testutil.Equals(t, 202, code, body)
	mustContain(t, body, `replica "b" of HA cluster "c1" is not the elected replica "a"`)
	code, body = push("ha", now+2, ha("c2", "a"))
	testutil.Equals(t, 400, code, body)
	mustContain(t, body, "ha_max_clusters", "err-mimir-tenant-too-many-ha-clusters")
	code, body = push("other", now, ha("c1", "b"))
	testutil.Equals(t, 204, code, body)

	testutil.Equals(t, "a", electedOn(t, p).Replica)
	res, _ := promQuery(t, p.url(""), "ha", `ha_m[1m]`, time.UnixMilli(now+10), time.UnixMilli(now+10), 0, nil)
	testutil.Equals(t, 2, len(res))
	for _, s := range res {
		testutil.Equals(t, map[string]string{"__name__": "ha_m", "i": s.Metric["i"], "cluster": "c1"}, s.Metric)
		testutil.Equals(t, 1, len(s.Values)) // a's sample only
	}
	res, _ = promQuery(t, p.url(""), "other", `ha_m`, time.UnixMilli(now+10), time.UnixMilli(now+10), 0, nil)
	testutil.Equals(t, 2, len(res))
	testutil.Equals(t, "b", res[0].Metric["__replica__"])
}
