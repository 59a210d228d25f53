package receive

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/kv/consul"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// haTestConfig: heartbeats every 15s, failover after 30s, no jitter.
func haTestConfig() HATrackerConfig {
	return HATrackerConfig{EnableHATracker: true, UpdateTimeout: 15 * time.Second, FailoverTimeout: 30 * time.Second}
}

// newInMemoryHAKV is a KV store shared by the trackers of a test, as memberlist is by distributors.
func newInMemoryHAKV(t *testing.T) kv.Client {
	c, closer := consul.NewInMemoryClient(HAReplicaCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })
	return c
}

func newTestHATracker(client kv.Client, limits tenancy.Limits, clock *storetest.Clock) (*HATracker, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return NewHATracker(haTestConfig(), client, tenancy.NewOverrides(limits, nil), log.NewNopLogger(), reg, WithHAClock(clock.Now)), reg
}

// haOutcome is what check answered: "keep", "202", "400" or "503".
func haOutcome(err error) string {
	if err == nil {
		return "keep"
	}
	var terr *tenancy.Error
	if errors.As(err, &terr) {
		return "400"
	}
	var herr *haStatusError
	if errors.As(err, &herr) && herr.code == http.StatusAccepted {
		return "202"
	}
	return "503"
}

// TestHATracker_ElectionAndFailover follows one cluster through time on one distributor: the first replica is
// elected, the other is dropped while the elected one sends, its heartbeat is renewed in the KV store only every
// update timeout, and the other replica is elected once the KV store has not seen the elected one for the
// failover timeout.
func TestHATracker_ElectionAndFailover(t *testing.T) {
	clock := storetest.NewClock(testNow)
	tr, _ := newTestHATracker(newInMemoryHAKV(t), testLimits(), clock)
	ctx := context.Background()
	type stepT struct {
		at      time.Duration
		replica string
		want    string
		cas     float64
	}
	steps := []stepT{
		{0, "a", "keep", 1},                 // first sample: a is elected (one CAS)
		{time.Second, "b", "202", 1},        // b is dropped from memory: no KV access
		{14 * time.Second, "a", "keep", 1},  // within the update timeout: memory only
		{15 * time.Second, "a", "keep", 2},  // the heartbeat is renewed in the KV store (received at 15s)
		{44 * time.Second, "b", "202", 2},   // 29s since a's heartbeat: dropped from memory
		{45 * time.Second, "b", "keep", 3},  // 30s without a heartbeat of a: b is elected
		{46 * time.Second, "a", "202", 3},   // a is back, and dropped
		{74 * time.Second, "b", "keep", 4},  // b's heartbeat, renewed at 74s (29s after 45s)
		{103 * time.Second, "a", "202", 4},  // 29s after b's heartbeat: still b
		{104 * time.Second, "a", "keep", 5}, // 30s: a again
		{104 * time.Second, "a", "keep", 5}, // and it stays
		{105 * time.Second, "b", "202", 5},  // b dropped
	}
	for _, s := range steps {
		clock.Set(testNow.Add(s.at))
		testutil.Equals(t, s.want, haOutcome(tr.check(ctx, "team-a", "c1", s.replica)), "replica %s at %s", s.replica, s.at)
		testutil.Equals(t, s.cas, promtestutil.ToFloat64(tr.metrics.kvCAS.WithLabelValues("team-a", "c1")), "CAS calls at %s", s.at)
	}
	el := tr.Elected()
	testutil.Equals(t, 1, len(el))
	testutil.Equals(t, "a", el[0].Replica)
	testutil.Equals(t, int64(3), el[0].ElectedChanges)
	testutil.Equals(t, testNow.Add(104*time.Second), el[0].ElectedAt)
	testutil.Equals(t, 3.0, promtestutil.ToFloat64(tr.metrics.electedChanges.WithLabelValues("team-a", "c1")))
}

// TestHATracker_DistributorsAgree: two distributors share the KV store. The second, which never saw the cluster,
// learns the elected replica from the store; a failover done by one is seen by the other, whose memory still
// holds the old replica, as soon as its memory is older than the update timeout; and the watch brings each
// distributor the other's elections.
func TestHATracker_DistributorsAgree(t *testing.T) {
	clock := storetest.NewClock(testNow)
	client := newInMemoryHAKV(t)
	d1, _ := newTestHATracker(client, testLimits(), clock)
	d2, _ := newTestHATracker(client, testLimits(), clock)
	ctx := context.Background()
	check := func(d *HATracker, replica string) string { return haOutcome(d.check(ctx, "team-a", "c1", replica)) }

	testutil.Equals(t, "keep", check(d1, "a"))
	testutil.Equals(t, "202", check(d2, "b")) // from the KV store
	testutil.Equals(t, "keep", check(d2, "a"))

	clock.Add(30 * time.Second) // a sent nothing to anyone
	testutil.Equals(t, "keep", check(d2, "b"))
	clock.Add(time.Second)
	// d1's memory says a, received 31s ago: older than the update timeout, so it asks the KV store, which says b.
	testutil.Equals(t, "202", check(d1, "a"))
	testutil.Equals(t, "b", d1.Elected()[0].Replica)

	// The watch: a third distributor learns the election without any request.
	d3, _ := newTestHATracker(client, testLimits(), clock)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d3.Run(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(d3.Elected()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	testutil.Equals(t, 1, len(d3.Elected()))
	testutil.Equals(t, "b", d3.Elected()[0].Replica)
	clock.Add(31 * time.Second)
	testutil.Equals(t, "keep", check(d1, "a")) // failover back to a, by d1
	for d3.Elected()[0].Replica != "a" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	testutil.Equals(t, "a", d3.Elected()[0].Replica)
	cancel()
	testutil.Ok(t, <-done)
}

// TestHATracker_MaxClusters: a tenant's clusters beyond ha_max_clusters are refused with a 400 naming the limit's
// key; clusters already tracked, and other tenants, are not affected; a cluster removed by the cleanup frees its
// place.
func TestHATracker_MaxClusters(t *testing.T) {
	clock := storetest.NewClock(testNow)
	limits := testLimits()
	limits.HAMaxClusters = 2
	tr, _ := newTestHATracker(newInMemoryHAKV(t), limits, clock)
	ctx := context.Background()
	testutil.Ok(t, tr.check(ctx, "team-a", "c1", "a"))
	testutil.Ok(t, tr.check(ctx, "team-a", "c2", "a"))
	err := tr.check(ctx, "team-a", "c3", "a")
	var terr *tenancy.Error
	testutil.Assert(t, errors.As(err, &terr), "got %v", err)
	testutil.Equals(t, http.StatusBadRequest, terr.Status)
	testutil.Assert(t, strings.Contains(terr.Msg, "ha_max_clusters") && strings.Contains(terr.Msg, "limit: 2") &&
		strings.Contains(terr.Msg, "err-mimir-tenant-too-many-ha-clusters"), terr.Msg)
	testutil.Ok(t, tr.check(ctx, "team-a", "c1", "a"))
	testutil.Ok(t, tr.check(ctx, "team-b", "c3", "a"))

	// c1 keeps sending, c2 stops: after 30 minutes the cleanup marks c2 deleted, and c3 fits.
	clock.Add(20 * time.Minute)
	testutil.Ok(t, tr.check(ctx, "team-a", "c1", "a"))
	clock.Add(11 * time.Minute)
	tr.cleanup(ctx)
	testutil.Equals(t, []string{"c1"}, clustersOf(tr, "team-a"))
	testutil.Ok(t, tr.check(ctx, "team-a", "c3", "b"))
	testutil.Equals(t, []string{"c1", "c3"}, clustersOf(tr, "team-a"))
	// c2, deleted, would be a third cluster now.
	testutil.Equals(t, "400", haOutcome(tr.check(ctx, "team-a", "c2", "b")))
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(tr.metrics.cleanups.WithLabelValues("marked"))) // team-a's c2, team-b's c3

	// 30 minutes after the marks, their keys go from the KV store; team-a's c3, silent since, is marked.
	keys, err := tr.client.List(ctx, haKeyPrefix)
	testutil.Ok(t, err)
	testutil.Equals(t, 4, len(keys))
	clock.Add(31 * time.Minute)
	testutil.Ok(t, tr.check(ctx, "team-a", "c1", "a"))
	tr.cleanup(ctx)
	keys, err = tr.client.List(ctx, haKeyPrefix)
	testutil.Ok(t, err)
	slices.Sort(keys)
	testutil.Equals(t, []string{haKey("team-a", "c1"), haKey("team-a", "c3")}, keys)
	testutil.Equals(t, 3.0, promtestutil.ToFloat64(tr.metrics.cleanups.WithLabelValues("marked")))
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(tr.metrics.cleanups.WithLabelValues("deleted")))
	testutil.Equals(t, []string{"c1"}, clustersOf(tr, "team-a"))
}

func clustersOf(tr *HATracker, tenant string) []string {
	var out []string
	for _, e := range tr.Elected() {
		if e.Tenant == tenant {
			out = append(out, e.Cluster)
		}
	}
	return out
}

// TestHAReplicaDesc_Merge: merging keeps the newest value of a total order, so gossip converges whatever the
// order of the updates.
func TestHAReplicaDesc_Merge(t *testing.T) {
	vals := []HAReplicaDesc{
		{Replica: "a", ElectedAt: 10, ReceivedAt: 10, ElectedChanges: 1},
		{Replica: "a", ElectedAt: 10, ReceivedAt: 25, ElectedChanges: 1},                // a's heartbeat
		{Replica: "b", ElectedAt: 10, ReceivedAt: 10, ElectedChanges: 1},                // a concurrent election of b
		{Replica: "b", ElectedAt: 60, ReceivedAt: 60, ElectedChanges: 2},                // a failover to b
		{Replica: "a", ElectedAt: 10, ReceivedAt: 70, ElectedChanges: 1},                // a stale heartbeat of a
		{Replica: "b", ElectedAt: 60, ReceivedAt: 60, ElectedChanges: 2, DeletedAt: 90}, // b marked deleted
	}
	want := vals[5]
	perms := [][]int{{0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {2, 0, 4, 5, 1, 3}, {3, 5, 1, 0, 2, 4}}
	for _, p := range perms {
		cur := vals[p[0]]
		for _, i := range p[1:] {
			o := vals[i]
			change, err := cur.Merge(&o, false)
			testutil.Ok(t, err)
			if change != nil {
				testutil.Equals(t, cur, *change.(*HAReplicaDesc))
			}
		}
		testutil.Equals(t, want, cur, "order %v", p)
	}
	for _, tc := range []struct {
		name       string
		cur, other HAReplicaDesc
		changed    bool
	}{
		{"heartbeat", vals[0], vals[1], true},
		{"older heartbeat", vals[1], vals[0], false},
		{"same", vals[1], vals[1], false},
		{"concurrent elections: replica name breaks the tie", vals[0], vals[2], true},
		{"failover beats a stale heartbeat", vals[3], vals[4], false},
		{"a later election after a deletion", vals[5], HAReplicaDesc{Replica: "a", ElectedAt: 100, ReceivedAt: 100, ElectedChanges: 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, other := tc.cur, tc.other
			change, err := cur.Merge(&other, true)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.changed, change != nil)
		})
	}
}

func TestHAReplicaCodec(t *testing.T) {
	c := HAReplicaCodec()
	in := &HAReplicaDesc{Replica: "prom-0", ReceivedAt: testNowMs(), ElectedAt: testNowMs() - 5, ElectedChanges: 7, DeletedAt: 0}
	b, err := c.Encode(in)
	testutil.Ok(t, err)
	out, err := c.Decode(b)
	testutil.Ok(t, err)
	testutil.Equals(t, in, out)
	for _, bad := range [][]byte{nil, {0}, {2, 0, 0, 0, 0, 0}, b[:len(b)-1], append(append([]byte{}, b...), 'x'), {1, 0x80}} {
		_, err := c.Decode(bad)
		testutil.NotOk(t, err, "%v", bad)
	}
	_, err = c.Encode("not a replica")
	testutil.NotOk(t, err)
}

func TestHATrackerConfig_Validate(t *testing.T) {
	testutil.Ok(t, DefaultHATrackerConfig().Validate())
	testutil.Ok(t, HATrackerConfig{UpdateTimeout: time.Second, FailoverTimeout: 3 * time.Second}.Validate())
	for _, c := range []HATrackerConfig{
		{UpdateTimeout: 0, FailoverTimeout: 30 * time.Second},
		{UpdateTimeout: 15 * time.Second, UpdateTimeoutJitterMax: -1, FailoverTimeout: 30 * time.Second},
		{UpdateTimeout: 15 * time.Second, UpdateTimeoutJitterMax: 5 * time.Second, FailoverTimeout: 20 * time.Second},
	} {
		testutil.NotOk(t, c.Validate(), "%+v", c)
	}
	cfg := DefaultPushConfig()
	cfg.HATracker.FailoverTimeout = time.Second
	testutil.Ok(t, cfg.Validate()) // not enabled: not checked
	cfg.HATracker.EnableHATracker = true
	testutil.NotOk(t, cfg.Validate())
}

// TestPushHandler_HADedup runs remote write requests through the handler: the elected replica's series are
// handed on without the replica label, the other replica's are answered 202 and dropped (counted per cluster),
// requests with only one of the labels are kept as they are (Mimir's rule), and without the tracker a tenant
// with accept_ha_samples still loses the replica label.
func TestPushHandler_HADedup(t *testing.T) {
	limits := testLimits()
	limits.AcceptHASamples = true
	limits.MaxLabelNamesPerSeries = 3 // __name__, cluster, job: the replica label does not count
	clock := storetest.NewClock(testNow)
	tr, _ := newTestHATracker(newInMemoryHAKV(t), limits, clock)
	env := newTestEnv(t, limits, WithHATracker(tr))
	ts := testNowMs()
	push := func(lbls ...string) *httptest.ResponseRecorder {
		return env.do(t, encodeV1(t, series1(ts, lbls...), series1(ts, append([]string{"__name__", "down"}, lbls[2:]...)...)), ctV1)
	}

	rec := push("__name__", "up", "__replica__", "r1", "cluster", "c1", "job", "j")
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, 1, env.pusher.calls())
	for _, s := range env.pusher.series() {
		testutil.Equals(t, 3, len(s.Labels))
		for _, l := range s.Labels {
			testutil.Assert(t, l.Name != "__replica__", "replica label kept: %v", s.Labels)
		}
	}

	rec = push("__name__", "up", "__replica__", "r2", "cluster", "c1", "job", "j")
	testutil.Equals(t, http.StatusAccepted, rec.Code)
	body, _ := io.ReadAll(rec.Body)
	testutil.Assert(t, strings.Contains(string(body), `replica "r2" of HA cluster "c1" is not the elected replica "r1"`), string(body))
	testutil.Equals(t, 1, env.pusher.calls())
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(tr.metrics.deduped.WithLabelValues("team-a", "c1")))

	// Only one of the labels: kept with its labels (the replica label too), counted as non-HA.
	limits.MaxLabelNamesPerSeries = 30
	env.limits.set("team-a", limits)
	testutil.Equals(t, http.StatusNoContent, push("__name__", "up", "cluster", "c1", "job", "j").Code)
	testutil.Equals(t, http.StatusNoContent, push("__name__", "up", "__replica__", "r2", "job", "j").Code)
	testutil.Equals(t, 3, env.pusher.calls())
	last := env.pusher.series()[len(env.pusher.series())-1]
	testutil.Equals(t, "__replica__", last.Labels[1].Name)
	testutil.Equals(t, 4.0, promtestutil.ToFloat64(tr.metrics.nonHA.WithLabelValues("team-a")))

	// A tenant without accept_ha_samples: untouched, no election.
	limits.AcceptHASamples = false
	env.limits.set("team-a", limits)
	testutil.Equals(t, http.StatusNoContent, push("__name__", "up", "__replica__", "r2", "cluster", "c9", "job", "j").Code)
	testutil.Equals(t, 4, len(env.pusher.series()[len(env.pusher.series())-1].Labels))
	testutil.Equals(t, 1, len(tr.Elected()))

	// Without the tracker (enable_ha_tracker false): every replica is kept, without the replica label.
	limits.AcceptHASamples = true
	off := newTestEnv(t, limits)
	rec = off.do(t, encodeV1(t, series1(ts, "__name__", "up", "__replica__", "r2", "cluster", "c1")), ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code)
	testutil.Equals(t, 2, len(off.pusher.series()[0].Labels))
}

func TestHATrackerHandler(t *testing.T) {
	clock := storetest.NewClock(testNow)
	tr, _ := newTestHATracker(newInMemoryHAKV(t), testLimits(), clock)
	testutil.Ok(t, tr.check(context.Background(), "team-a", "c1", "prom-0"))
	clock.Add(10 * time.Second)
	for _, tc := range []struct {
		tr     *HATracker
		accept string
		want   []string
	}{
		{tr, "application/json", []string{`"enabled":true`, `"tenant":"team-a"`, `"cluster":"c1"`, `"replica":"prom-0"`}},
		{tr, "text/html", []string{"<td>prom-0</td>", "<td>5s</td>", "<td>20s</td>"}},
		{nil, "text/html", []string{"disabled"}},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/distributor/ha_tracker", nil)
		req.Header.Set("Accept", tc.accept)
		HATrackerHandler(tc.tr).ServeHTTP(rec, req)
		testutil.Equals(t, http.StatusOK, rec.Code)
		for _, w := range tc.want {
			testutil.Assert(t, strings.Contains(rec.Body.String(), w), "%q not in %s", w, rec.Body.String())
		}
	}
}

func TestPushErrorStatus_HA(t *testing.T) {
	code, msg := pushErrorStatus(errors.Wrap(errNotElected("c1", "b", "a"), "push"))
	testutil.Equals(t, http.StatusAccepted, code)
	testutil.Equals(t, `samples deduplicated: replica "b" of HA cluster "c1" is not the elected replica "a" (they were accepted and dropped)`, msg)
	code, _ = pushErrorStatus(&haStatusError{code: http.StatusServiceUnavailable, msg: "kv down"})
	testutil.Equals(t, http.StatusServiceUnavailable, code)
	code, msg = pushErrorStatus(tooManyHAClustersError(3))
	testutil.Equals(t, http.StatusBadRequest, code)
	testutil.Assert(t, strings.Contains(msg, "configure ha_max_clusters"), msg)
}

// FuzzHAReplicaCodec: any bytes from gossip decode into a value or an error, never a panic, and a decoded value
// encodes back to the same bytes.
func FuzzHAReplicaCodec(f *testing.F) {
	c := HAReplicaCodec()
	for _, d := range []*HAReplicaDesc{{Replica: "a", ReceivedAt: 1, ElectedAt: 1, ElectedChanges: 1}, {Replica: "", DeletedAt: -5}} {
		b, err := c.Encode(d)
		testutil.Ok(f, err)
		f.Add(b)
	}
	f.Add([]byte{1, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := c.Decode(b)
		if err != nil {
			return
		}
		out, err := c.Encode(v)
		testutil.Ok(t, err)
		back, err := c.Decode(out)
		testutil.Ok(t, err)
		testutil.Equals(t, v, back)
	})
}
