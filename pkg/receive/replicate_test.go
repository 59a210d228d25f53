package receive

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// testRing registers n in-process ingesters (zones a, b, c…) in a real dskit ring over the in-memory KV and
// returns a RingPusher writing to them without a network hop.
func testRing(t *testing.T, key string, n int, zoneAware bool) (*RingPusher, []*Ingester) {
	t.Helper()
	zones := make([]string, n)
	for i := range zones {
		zones[i] = string(rune('a' + i%3))
	}
	return testRingZones(t, key, zones, zoneAware)
}

// testRingZones is testRing with ingester i in zones[i].
func testRingZones(t *testing.T, key string, zones []string, zoneAware bool) (*RingPusher, []*Ingester) {
	t.Helper()
	n := len(zones)
	kv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	cfg := ring.DefaultConfig()
	cfg.ZoneAwarenessEnabled = zoneAware
	cfg.HeartbeatPeriod = 100 * time.Millisecond
	cfg.NumTokens = 64

	ctx := context.Background()
	local := map[string]Pusher{}
	var ings []*Ingester
	for i := 0; i < n; i++ {
		ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
		t.Cleanup(func() { _ = ing.Close() })
		addr := fmt.Sprintf("ingester-%d:9095", i)
		inst := ring.InstanceConfig{ID: fmt.Sprintf("ingester-%d", i), Addr: addr, Zone: zones[i]}
		// One KV per lifecycler, as one per process: the in-memory store behind them is shared.
		lkv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		lc, err := ring.NewLifecycler(cfg, inst, lkv, "ingester", key, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		testutil.Ok(t, services.StartAndAwaitRunning(ctx, lc))
		t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, lc) })
		local[addr] = ing
		ings = append(ings, ing)
	}
	client, err := ring.NewClient(cfg, kv, "ingester", key, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, client))
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, client) })
	deadline := time.Now().Add(10 * time.Second)
	for client.InstancesCount() < n {
		testutil.Assert(t, time.Now().Before(deadline), "ring did not see %d instances", n)
		time.Sleep(20 * time.Millisecond)
	}
	return NewRingPusher(client, 5*time.Second, local, log.NewNopLogger(), prometheus.NewRegistry()), ings
}

func manySeries(n int, t int64) *storepb.WriteRequest {
	req := &storepb.WriteRequest{}
	for i := 0; i < n; i++ {
		req.Timeseries = append(req.Timeseries, ts(series("m", "i", fmt.Sprint(i)), t))
	}
	return req
}

func copies(t *testing.T, ings []*Ingester, tenant string) map[string]int {
	out := map[string]int{}
	for _, ing := range ings {
		if ing.DB(tenant) == nil {
			continue
		}
		for s := range readAll(t, ing, tenant) {
			out[s]++
		}
	}
	return out
}

// TestRingPusherReplicates: every series ends up on exactly 3 ingesters (RF 3), whether the ring has 3 (each
// owns every series: the whole request goes to each) or 6 (each series sharded on its own).
func TestRingPusherReplicates(t *testing.T) {
	for _, tc := range []struct {
		n         int
		zoneAware bool
	}{{3, false}, {3, true}, {6, false}, {6, true}} {
		zoneAware := tc.zoneAware
		t.Run(fmt.Sprintf("ingesters=%d/zone-aware=%v", tc.n, zoneAware), func(t *testing.T) {
			p, ings := testRing(t, fmt.Sprintf("replicates-%d-%v", tc.n, zoneAware), tc.n, zoneAware)
			testutil.Ok(t, p.Push(context.Background(), "t", manySeries(200, 1000)))
			// Push returns at the quorum: every series is on 2 ingesters now, and on all 3 soon after.
			c := copies(t, ings, "t")
			testutil.Equals(t, 200, len(c))
			for s, n := range c {
				testutil.Assert(t, n >= 2, "series %s on %d ingesters", s, n)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				all3 := true
				for _, n := range copies(t, ings, "t") {
					all3 = all3 && n == 3
				}
				if all3 {
					break
				}
				testutil.Assert(t, time.Now().Before(deadline), "the third replica never got every series")
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestRingPusherQuorum: with one of three ingesters refusing writes every push still succeeds and every
// series is on the two others; with two refusing, pushes fail with Unavailable (a 503, retried by Prometheus).
func TestRingPusherQuorum(t *testing.T) {
	p, ings := testRing(t, "quorum", 3, true)
	ings[1].StopWrites()
	testutil.Ok(t, p.Push(context.Background(), "t", manySeries(100, 1000)))
	for s, n := range copies(t, ings, "t") {
		testutil.Assert(t, n >= 2, "series %s on %d ingesters", s, n)
	}
	testutil.Equals(t, 100, len(copies(t, ings, "t")))

	ings[2].StopWrites()
	err := p.Push(context.Background(), "t", manySeries(10, 2000))
	testutil.Equals(t, codes.Unavailable, status.Code(err), "err: %v", err)
}

// TestRingPusherClientErrors: a 4xx from the ingesters (here: out-of-order samples on all replicas) is passed
// on as such, not turned into a 503 the client would retry forever.
func TestRingPusherClientErrors(t *testing.T) {
	p, _ := testRing(t, "client-errors", 3, false)
	testutil.Ok(t, p.Push(context.Background(), "t", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 5000)}}))
	err := p.Push(context.Background(), "t", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 1000)}})
	testutil.NotOk(t, err)
	testutil.Assert(t, isClientError(err), "want a client error, got %v", err)
}

// TestWholeReplicationSet: the whole request goes to each instance exactly when every key's owners are all the
// ring's instances.
func TestWholeReplicationSet(t *testing.T) {
	for _, tc := range []struct {
		name      string
		zones     []string
		zoneAware bool
		whole     bool
	}{
		{name: "3 ingesters in 3 zones", zones: []string{"a", "b", "c"}, zoneAware: true, whole: true},
		{name: "3 ingesters, no zone awareness", zones: []string{"a", "a", "b"}, whole: true},
		{name: "2 ingesters, RF 3", zones: []string{"a", "b"}, zoneAware: true, whole: true},
		{name: "1 ingester", zones: []string{"a"}, whole: true},
		// Zone awareness takes one of zone a's two: which one depends on the key.
		{name: "3 ingesters in 2 zones", zones: []string{"a", "a", "b"}, zoneAware: true, whole: false},
		{name: "4 ingesters, no zone awareness", zones: []string{"a", "b", "c", "a"}, whole: false},
		{name: "6 ingesters in 3 zones", zones: []string{"a", "b", "c", "a", "b", "c"}, zoneAware: true, whole: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := testRingZones(t, "whole-"+strings.ReplaceAll(tc.name, " ", "-"), tc.zones, tc.zoneAware)
			w, ok := wholeReplicationSet(p.ring)
			testutil.Equals(t, tc.whole, ok)
			if !ok {
				return
			}
			testutil.Equals(t, len(tc.zones), len(w.rs.Instances))
			// Every key's set is the same instances.
			for key := uint32(1); key != 0 && key < 1<<31; key *= 7 {
				rs, err := p.ring.Get(key, dskitring.WriteNoExtend, nil, nil, nil)
				testutil.Ok(t, err)
				want, got := w.rs.GetAddressesWithout(""), rs.GetAddressesWithout("")
				slices.Sort(want)
				slices.Sort(got)
				testutil.Equals(t, want, got, "key %d", key)
			}
		})
	}
}

func TestRingPusherSmallerRingThanRF(t *testing.T) {
	p, ings := testRing(t, "small", 1, false) // RF 3, one ingester: strata all
	testutil.Ok(t, p.Push(context.Background(), "t", manySeries(10, 1000)))
	testutil.Equals(t, 10, len(copies(t, ings, "t")))
}

func TestShardKey(t *testing.T) {
	a := ShardKey("t", series("m", "a", "bc"))
	testutil.Equals(t, a, ShardKey("t", series("m", "a", "bc")))
	testutil.Assert(t, a != ShardKey("u", series("m", "a", "bc")), "tenant not in the key")
	testutil.Assert(t, a != ShardKey("t", series("m", "ab", "c")), "label boundaries not in the key")
}

// TestRingPusherUnderRingUpdates: pushes from several goroutines while the ingesters heartbeat (ring updates
// take the ring's write lock) all finish. A replication strategy calling back into the ring under its read
// lock deadlocked here.
func TestRingPusherUnderRingUpdates(t *testing.T) {
	p, _ := testRing(t, "updates", 3, true)
	done := make(chan error, 4)
	stop := time.Now().Add(2 * time.Second)
	for w := 0; w < 4; w++ {
		tenant := fmt.Sprintf("t%d", w) // one writer per tenant: its timestamps only go up
		go func() {
			for i := 0; time.Now().Before(stop); i++ {
				if err := p.Push(context.Background(), tenant, manySeries(50, int64(1000+i*1000))); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for w := 0; w < 4; w++ {
		select {
		case err := <-done:
			testutil.Ok(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("pushes did not finish: the ring is deadlocked")
		}
	}
}

func BenchmarkShardKey(b *testing.B) {
	ls := series("http_requests_total", "job", "api", "instance", "host-123:9100", "pod", "api-7d9f8c6b5-x2k4j",
		"namespace", "production", "cluster", "eu-west-1", "region", "eu", "zone", "eu-west-1a", "container", "api",
		"method", "GET", "status", "200", "route", "/api/v1/users/{id}", "team", "identity", "env", "prod")
	b.ReportAllocs()
	for b.Loop() {
		_ = ShardKey("tenant-a", ls)
	}
}

// TestRingPusherEmptyRing: with no ingester in the ring (as while the only ones restart), a write is a 503 that
// says so and names the tenant, not dskit's "DoBatch: InstancesCount <= 0".
func TestRingPusherEmptyRing(t *testing.T) {
	kv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	client, err := ring.NewClient(ring.DefaultConfig(), kv, "ingester", "empty-ring", log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	ctx := context.Background()
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, client))
	defer func() { _ = services.StopAndAwaitTerminated(ctx, client) }()
	p := NewRingPusher(client, time.Second, nil, log.NewNopLogger(), prometheus.NewRegistry())
	err = p.Push(ctx, "team-a", manySeries(3, 1000))
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	testutil.Equals(t, "no ingester available for tenant team-a: the ingester ring has no instance", status.Convert(err).Message())
}
