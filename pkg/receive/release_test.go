package receive

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// releasingPusher is a fakePusher that releases when told (release is called from done).
type releasingPusher struct {
	fakePusher
	mu       sync.Mutex
	releases []func()
}

func (p *releasingPusher) PushRelease(ctx context.Context, tenant string, req *storepb.WriteRequest, release func()) error {
	p.mu.Lock()
	p.releases = append(p.releases, release)
	p.mu.Unlock()
	return p.Push(ctx, tenant, req)
}

// TestDistributorPushReleases: Distributor.Push calls PushRequest.Release exactly once on every path where the
// series never reach the Pusher; hands it to a ReleasingPusher otherwise; and never calls it for a Pusher that
// does not say when it is done (it may go on using the request).
func TestDistributorPushReleases(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	good := func() []*prompb.TimeSeries { return []*prompb.TimeSeries{ts(series("up"), now.UnixMilli())} }
	bad := func() []*prompb.TimeSeries {
		return []*prompb.TimeSeries{ts(series("up"), now.Add(time.Hour).UnixMilli())}
	}
	for _, tc := range []struct {
		name          string
		series        []*prompb.TimeSeries
		rateLimited   bool
		releasing     bool
		wantReleased  int // by Push itself
		wantHandedOff bool
	}{
		{name: "nothing valid", series: bad(), releasing: true, wantReleased: 1},
		{name: "empty", releasing: true, wantReleased: 1},
		{name: "rate limited", series: good(), rateLimited: true, releasing: true, wantReleased: 1},
		{name: "pushed to a releasing pusher", series: good(), releasing: true, wantHandedOff: true},
		{name: "pushed to a plain pusher", series: good()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testLimits()
			if tc.rateLimited {
				l.IngestionRate, l.IngestionBurstSize = 1, 0
			}
			rp := &releasingPusher{}
			var pusher Pusher = &rp.fakePusher
			if tc.releasing {
				pusher = rp
			}
			d := NewDistributor(DefaultPushConfig(), tenancy.NewOverrides(l, nil), pusher, log.NewNopLogger(), prometheus.NewRegistry(),
				WithClock(func() time.Time { return now }))
			var released atomic.Int32
			_, _ = d.Push(context.Background(), "a", &PushRequest{Series: tc.series, Release: func() { released.Add(1) }})
			testutil.Equals(t, int32(tc.wantReleased), released.Load())
			testutil.Equals(t, tc.wantHandedOff, len(rp.releases) == 1)
			for _, r := range rp.releases {
				r()
			}
			testutil.Equals(t, int32(tc.wantReleased+len(rp.releases)), released.Load())
		})
	}
}

// gatedPusher is an in-process replica that holds its Push until gate is closed.
type gatedPusher struct {
	gate    chan struct{}
	entered chan struct{}
	done    atomic.Bool
}

func (g *gatedPusher) Push(context.Context, string, *storepb.WriteRequest) error {
	g.entered <- struct{}{}
	<-g.gate
	g.done.Store(true)
	return nil
}

// TestRingPusherReleasesAfterLastReplica: with RF 3, PushRelease returns once a quorum (2) answered, but calls
// release only after the third replica, still sending, is done with the request; and a push with nothing to
// send releases at once.
func TestRingPusherReleasesAfterLastReplica(t *testing.T) {
	p, ings := testRing(t, "release", 3, true)
	slow := &gatedPusher{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	for addr, l := range p.local {
		if l == Pusher(ings[0]) {
			p.local[addr] = slow
		}
	}
	var released atomic.Bool
	req := manySeries(20, time.Now().UnixMilli())
	testutil.Ok(t, p.PushRelease(context.Background(), "a", req, func() { released.Store(true) }))
	<-slow.entered
	testutil.Assert(t, !released.Load(), "released while a replica was still sending")
	close(slow.gate)
	deadline := time.Now().Add(10 * time.Second)
	for !released.Load() {
		testutil.Assert(t, time.Now().Before(deadline), "not released after the last replica finished")
		time.Sleep(5 * time.Millisecond)
	}
	testutil.Assert(t, slow.done.Load(), "released before the last replica returned")

	var releasedEmpty atomic.Bool
	testutil.Ok(t, p.PushRelease(context.Background(), "a", &storepb.WriteRequest{}, func() { releasedEmpty.Store(true) }))
	testutil.Assert(t, releasedEmpty.Load(), "a push with nothing to send must release at once")
}

// TestRingPusherOnlyLocalIngester: with one in-process ingester (`strata all`) every series goes to it without
// a batch, release is called by the time PushRelease returns, and its errors are answered as through the batch:
// a client error as is, another as Unavailable.
func TestRingPusherOnlyLocalIngester(t *testing.T) {
	p, ings := testRing(t, "only-local", 1, false)
	_, _, ok := p.onlyLocalIngester(p.ring)
	testutil.Assert(t, ok, "one healthy in-process ingester")
	var released atomic.Bool
	testutil.Ok(t, p.PushRelease(context.Background(), "a", manySeries(50, time.Now().UnixMilli()), func() { released.Store(true) }))
	testutil.Assert(t, released.Load(), "released on return")
	testutil.Equals(t, 50, len(copies(t, ings, "a")))

	ings[0].StopWrites() // Unavailable: not the client's error
	err := p.Push(context.Background(), "a", manySeries(1, time.Now().UnixMilli()))
	testutil.Equals(t, codes.Unavailable, status.Code(err), "error: %v", err)
}
