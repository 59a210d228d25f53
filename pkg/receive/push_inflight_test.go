package receive

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// blockingPusher holds every Push until release is closed; entered receives one value per Push.
type blockingPusher struct {
	entered chan struct{}
	release chan struct{}
}

func (p *blockingPusher) Push(ctx context.Context, _ string, _ *storepb.WriteRequest) error {
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
	}
	return nil
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestPushHandler_InstanceLimits: beyond max_inflight_push_requests, or when a request's bytes (body, decoded
// body and what it decodes into) would take the in-flight total beyond max_inflight_push_requests_bytes, the
// answer is a 503 naming the limit (retryable); the counts go back to 0 when requests end.
func TestPushHandler_InstanceLimits(t *testing.T) {
	body := encodeV1(t, series1(testNowMs(), "__name__", "up", "job", "a"))
	// What one such request holds while in Push: body, decoded body and its decoded series (estimated).
	raw, err := snappy.Decode(nil, body)
	testutil.Ok(t, err)
	decoded, err := remotewrite.DecodeCostV1(raw)
	testutil.Ok(t, err)
	oneRequest := len(body) + len(raw) + decoded
	for _, tc := range []struct {
		name          string
		limits        InstanceLimits
		whileBlocked  int    // the answer to a second request while the first is held in Push
		alone         int    // the answer to one request on its own
		msg           string // in the 503
		rejectedLimit string
	}{
		{name: "no limits", alone: 204, whileBlocked: 204},
		{name: "one request at a time", limits: InstanceLimits{MaxInflightPushRequests: 1}, alone: 204, whileBlocked: 503,
			msg: "(instance_limits.max_inflight_push_requests)", rejectedLimit: "max_inflight_push_requests"},
		{name: "bytes for one request", limits: InstanceLimits{MaxInflightPushRequestsBytes: oneRequest * 3 / 2}, alone: 204, whileBlocked: 503,
			msg: "(instance_limits.max_inflight_push_requests_bytes)", rejectedLimit: "max_inflight_push_requests_bytes"},
		{name: "bytes for no request", limits: InstanceLimits{MaxInflightPushRequestsBytes: 100}, alone: 503,
			msg: "(instance_limits.max_inflight_push_requests_bytes)", rejectedLimit: "max_inflight_push_requests_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultPushConfig()
			cfg.InstanceLimits = tc.limits
			testutil.Ok(t, cfg.Validate())
			reg := prometheus.NewRegistry()
			pusher := &blockingPusher{entered: make(chan struct{}, 2), release: make(chan struct{})}
			overrides := tenancy.NewOverrides(testLimits(), &fakeTenantLimits{})
			h := tenancy.DefaultConfig().HTTPMiddleware(false)(NewPushHandler(NewDistributor(cfg, overrides, pusher, log.NewNopLogger(), reg, WithClock(storetest.NewClock(testNow).Now))))
			do := func() *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodPost, "/api/v1/push", strings.NewReader(string(body)))
				req.Header.Set(tenancy.HeaderOrgID, "team-a")
				req.Header.Set("Content-Type", ctV1)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			checkRefused := func(rec *httptest.ResponseRecorder) {
				t.Helper()
				testutil.Equals(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
				testutil.Assert(t, strings.Contains(rec.Body.String(), tc.msg), rec.Body.String())
				testutil.Equals(t, 1.0, counterValue(t, reg, "strata_distributor_instance_rejected_requests_total", map[string]string{"reason": tc.rejectedLimit}))
			}

			if tc.alone == 503 {
				checkRefused(do())
				testutil.Equals(t, 0.0, gaugeValue(t, reg, "strata_distributor_inflight_push_requests"))
				testutil.Equals(t, 0.0, gaugeValue(t, reg, "strata_distributor_inflight_push_requests_bytes"))
				return
			}

			var wg sync.WaitGroup
			var first *httptest.ResponseRecorder
			wg.Add(1)
			go func() { defer wg.Done(); first = do() }()
			<-pusher.entered
			testutil.Equals(t, 1.0, gaugeValue(t, reg, "strata_distributor_inflight_push_requests"))
			testutil.Equals(t, float64(oneRequest), gaugeValue(t, reg, "strata_distributor_inflight_push_requests_bytes"))

			if tc.whileBlocked == 503 {
				checkRefused(do())
			} else {
				wg.Add(1)
				var second *httptest.ResponseRecorder
				go func() { defer wg.Done(); second = do() }()
				<-pusher.entered
				close(pusher.release)
				wg.Wait()
				testutil.Equals(t, tc.whileBlocked, second.Code, second.Body.String())
			}
			select {
			case <-pusher.release:
			default:
				close(pusher.release)
			}
			wg.Wait()
			testutil.Equals(t, tc.alone, first.Code, first.Body.String())
			testutil.Equals(t, 0.0, gaugeValue(t, reg, "strata_distributor_inflight_push_requests"))
			testutil.Equals(t, 0.0, gaugeValue(t, reg, "strata_distributor_inflight_push_requests_bytes"))
			testutil.Equals(t, http.StatusNoContent, do().Code, "limits free again")
		})
	}
}
