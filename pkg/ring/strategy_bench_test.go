package ring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// benchRing returns a ring client (strategy wrapped around dskit's default one, as NewClient does) over three
// ACTIVE instances of 128 tokens, replication factor 3, optionally zone-aware.
func benchRing(b *testing.B, zoneAware bool, strategy dskitring.ReplicationStrategy) *dskitring.Ring {
	b.Helper()
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.ZoneAwarenessEnabled = zoneAware
	kv, err := NewKV(MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(b, err)
	key := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	for i := 0; i < 3; i++ {
		lkv, err := NewKV(MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(b, err)
		lc, err := NewLifecycler(cfg, InstanceConfig{ID: fmt.Sprintf("i%d", i), Addr: fmt.Sprintf("i%d:9095", i), Zone: string(rune('a' + i))}, lkv, "ingester", key, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(b, err)
		testutil.Ok(b, services.StartAndAwaitRunning(ctx, lc))
		b.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, lc) })
	}
	kvClient, err := kv.client("ingester")
	testutil.Ok(b, err)
	rcfg := dskitring.Config{KVStore: kv.config(), HeartbeatTimeout: cfg.HeartbeatTimeout, ReplicationFactor: cfg.ReplicationFactor, ZoneAwarenessEnabled: zoneAware}
	r, err := dskitring.NewWithStoreClientAndStrategy(rcfg, "ingester", key, kvClient, strategy, prometheus.NewRegistry(), log.NewNopLogger())
	testutil.Ok(b, err)
	testutil.Ok(b, services.StartAndAwaitRunning(ctx, r))
	b.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, r) })
	deadline := time.Now().Add(10 * time.Second)
	for r.InstancesCount() < 3 {
		testutil.Assert(b, time.Now().Before(deadline), "ring did not see its instances")
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// BenchmarkRingGet: the ring lookup DoBatch makes for every series the distributor forwards, with the
// distributor's strategy and with dskit's default one in its place; and the strategies' Filter alone.
func BenchmarkRingGet(b *testing.B) {
	for _, zoneAware := range []bool{false, true} {
		for _, s := range []struct {
			name     string
			strategy dskitring.ReplicationStrategy
		}{
			{"capped", &cappedStrategy{next: newQuorumStrategy()}},
			{"capped-dskit-default", &cappedStrategy{next: dskitring.NewDefaultReplicationStrategy()}},
		} {
			b.Run(fmt.Sprintf("zone-aware=%v/%s", zoneAware, s.name), func(b *testing.B) {
				r := benchRing(b, zoneAware, s.strategy)
				var (
					bufDescs [dskitring.GetBufferSize]dskitring.InstanceDesc
					bufHosts [dskitring.GetBufferSize]string
					bufZones [dskitring.GetBufferSize]string
				)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := r.Get(uint32(i)*2654435761, dskitring.WriteNoExtend, bufDescs[:0], bufHosts[:0], bufZones[:0]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	now := time.Now().Unix()
	instances := []dskitring.InstanceDesc{
		{Addr: "a", State: dskitring.ACTIVE, Timestamp: now},
		{Addr: "b", State: dskitring.ACTIVE, Timestamp: now},
		{Addr: "c", State: dskitring.ACTIVE, Timestamp: now},
	}
	for _, s := range []struct {
		name     string
		strategy dskitring.ReplicationStrategy
	}{
		{"capped", &cappedStrategy{next: newQuorumStrategy()}},
		{"capped-dskit-default", &cappedStrategy{next: dskitring.NewDefaultReplicationStrategy()}},
	} {
		b.Run("filter/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, _, err := s.strategy.Filter(instances, dskitring.WriteNoExtend, 3, time.Minute, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
