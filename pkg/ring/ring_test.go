package ring

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// TestHealthyCount: distributors registered in a ring are counted; one that leaves is not.
func TestHealthyCount(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.HeartbeatPeriod = 100 * time.Millisecond
	cfg.NumTokens = 1
	const key = "test-distributors"
	var lcs []*dskitring.BasicLifecycler
	for i := 0; i < 3; i++ {
		kv, err := NewKV(MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		lc, err := NewLifecycler(cfg, InstanceConfig{ID: fmt.Sprintf("d%d", i), Addr: fmt.Sprintf("d%d:9095", i)}, kv, "distributor", key, log.NewNopLogger(), prometheus.NewRegistry())
		testutil.Ok(t, err)
		testutil.Ok(t, services.StartAndAwaitRunning(ctx, lc))
		lcs = append(lcs, lc)
	}
	kv, err := NewKV(MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	client, err := NewClient(cfg, kv, "distributor", key, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	testutil.Ok(t, services.StartAndAwaitRunning(ctx, client))
	defer func() { _ = services.StopAndAwaitTerminated(ctx, client) }()

	h := NewHealthyCount(client)
	testutil.Equals(t, 1, h.Get()) // before the first refresh: never 0
	waitCount := func(want int) {
		deadline := time.Now().Add(10 * time.Second)
		for h.Refresh(); h.Get() != want; h.Refresh() {
			testutil.Assert(t, time.Now().Before(deadline), "count stayed %d, want %d", h.Get(), want)
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(3)
	testutil.Ok(t, services.StopAndAwaitTerminated(ctx, lcs[2])) // leaves the ring
	waitCount(2)
	for _, lc := range lcs[:2] {
		testutil.Ok(t, services.StopAndAwaitTerminated(ctx, lc))
	}
}

// TestKVStoppingLogsErrorsAsWarnings: once the process stops, memberlist's errors (gossip on a closing transport,
// "timeout waiting for leave broadcast" when the peers stop too) are warnings: a clean stop logs no level=error.
func TestKVStoppingLogsErrorsAsWarnings(t *testing.T) {
	var buf bytes.Buffer
	k, err := NewKV(MemberlistConfig{JoinMembers: []string{"127.0.0.1:1"}, BindAddr: "127.0.0.1"}, log.NewLogfmtLogger(&buf), prometheus.NewRegistry())
	testutil.Ok(t, err)
	l := stoppingLogger{next: log.NewLogfmtLogger(&buf), stopping: k.stopping}
	for _, tc := range []struct {
		stopping bool
		log      func(log.Logger) error
		want     string
	}{
		{log: func(l log.Logger) error { return level.Error(l).Log("msg", "a") }, want: "level=error msg=a\n"},
		{stopping: true, log: func(l log.Logger) error { return level.Error(l).Log("msg", "b") }, want: "level=warn msg=b\n"},
		{stopping: true, log: func(l log.Logger) error { return level.Info(log.With(l, "c", 1)).Log("msg", "c") }, want: "level=info c=1 msg=c\n"},
		{stopping: true, log: func(l log.Logger) error { return l.Log("level", level.ErrorValue(), "msg", "d") }, want: "level=warn msg=d\n"},
	} {
		buf.Reset()
		if tc.stopping {
			k.Stopping()
		}
		testutil.Ok(t, tc.log(l))
		testutil.Equals(t, tc.want, buf.String())
	}
}
