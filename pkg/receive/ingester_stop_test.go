package receive

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
)

// stopRecorder is a ring lifecycler recording, at each step Stop drives, what state the ingester is in.
type stopRecorder struct {
	services.Service
	ing     *Ingester
	shipper *countingShipper
	events  []string
}

func (r *stopRecorder) ChangeState(_ context.Context, s dskitring.InstanceState) error {
	r.events = append(r.events, fmt.Sprintf("%s: writes stopped %v", s, r.ing.stopped.Load()))
	return nil
}

func (r *stopRecorder) leave(error) error {
	r.ing.mtx.RLock()
	defer r.ing.mtx.RUnlock()
	blocks := 0
	if u := r.ing.tsdbs["a"]; u != nil {
		blocks = len(u.db.Blocks())
	}
	r.events = append(r.events, fmt.Sprintf("ring left: blocks %d, ships %d, closed %v", blocks, r.shipper.syncs, r.ing.closed))
	return nil
}

// TestIngesterStop: the shutdown sequence is LEAVING while writes still go in, then no writes, heads flushed and
// shipped, the ring left, TSDBs closed; writes afterwards are Unavailable (the distributor uses the other replicas).
func TestIngesterStop(t *testing.T) {
	shipper := &countingShipper{}
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry(), WithShippers(func(string, string, labels.Labels, prometheus.Registerer) (Shipper, error) {
		return shipper, nil
	}))
	hour := int64(time.Hour / time.Millisecond)
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 10, hour)}}))

	r := &stopRecorder{ing: ing, shipper: shipper}
	r.Service = services.NewIdleService(nil, r.leave)
	testutil.Ok(t, services.StartAndAwaitRunning(context.Background(), r))
	testutil.Ok(t, ing.Stop(r))

	testutil.Equals(t, []string{"LEAVING: writes stopped false", "ring left: blocks 1, ships 1, closed false"}, r.events)
	err := ing.Push(context.Background(), "a", &storepb.WriteRequest{Timeseries: []*prompb.TimeSeries{ts(series("m"), 2*hour)}})
	testutil.Equals(t, codes.Unavailable, status.Code(err))
	testutil.Assert(t, ing.closed, "TSDBs closed")
}
