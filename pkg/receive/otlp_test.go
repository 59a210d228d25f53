package receive

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type otlpTestEnv struct {
	handler *OTLPHandler
	http    http.Handler
	pusher  *fakePusher
	limits  *fakeTenantLimits
	reg     *prometheus.Registry
}

// newOTLPTestEnv builds the OTLP handler behind the real tenancy middleware, with a fake clock and pusher.
func newOTLPTestEnv(t testing.TB, cfg PushConfig, defaults tenancy.Limits) *otlpTestEnv {
	t.Helper()
	env := &otlpTestEnv{pusher: &fakePusher{}, limits: &fakeTenantLimits{}, reg: prometheus.NewRegistry()}
	d := NewDistributor(cfg, tenancy.NewOverrides(defaults, env.limits), env.pusher, log.NewNopLogger(), env.reg,
		WithClock(storetest.NewClock(testNow).Now))
	env.handler = NewOTLPHandler(d, env.reg)
	t.Cleanup(func() { testutil.Ok(t, env.handler.Close()) })
	env.http = tenancy.DefaultConfig().HTTPMiddleware(false)(env.handler)
	return env
}

func (env *otlpTestEnv) do(t testing.TB, method string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "/otlp/v1/metrics", bytes.NewReader(body))
	req.Header.Set(tenancy.HeaderOrgID, "team-a")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	env.http.ServeHTTP(rec, req)
	return rec
}

// otlpTestMetrics is one resource (service "shop", instance "i-1", region "eu") with a gauge, a cumulative
// monotonic sum, an explicit-bucket histogram and an exponential histogram, one point each at testNow, and a
// sum of the given temporality.
func otlpTestMetrics(sumTemporality pmetric.AggregationTemporality, sumValue float64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "shop")
	rm.Resource().Attributes().PutStr("service.instance.id", "i-1")
	rm.Resource().Attributes().PutStr("cloud.region", "eu")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName("test")
	ts := pcommon.NewTimestampFromTime(testNow)
	start := pcommon.NewTimestampFromTime(testNow.Add(-time.Minute))

	g := sm.Metrics().AppendEmpty()
	g.SetName("queue.depth")
	g.SetDescription("Items waiting.")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(ts)
	dp.SetDoubleValue(7)
	dp.Attributes().PutStr("queue", "orders")

	s := sm.Metrics().AppendEmpty()
	s.SetName("requests")
	s.SetUnit("1")
	sum := s.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(sumTemporality)
	sdp := sum.DataPoints().AppendEmpty()
	sdp.SetStartTimestamp(start)
	sdp.SetTimestamp(ts)
	sdp.SetDoubleValue(sumValue)

	h := sm.Metrics().AppendEmpty()
	h.SetName("latency")
	h.SetUnit("s")
	hist := h.SetEmptyHistogram()
	hist.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	hdp := hist.DataPoints().AppendEmpty()
	hdp.SetStartTimestamp(start)
	hdp.SetTimestamp(ts)
	hdp.SetCount(6)
	hdp.SetSum(3.5)
	hdp.ExplicitBounds().FromRaw([]float64{0.1, 1})
	hdp.BucketCounts().FromRaw([]uint64{1, 3, 2})

	e := sm.Metrics().AppendEmpty()
	e.SetName("size")
	exp := e.SetEmptyExponentialHistogram()
	exp.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	edp := exp.DataPoints().AppendEmpty()
	edp.SetStartTimestamp(start)
	edp.SetTimestamp(ts)
	edp.SetScale(0)
	edp.SetCount(5)
	edp.SetSum(12)
	edp.SetZeroCount(1)
	edp.Positive().SetOffset(0)
	edp.Positive().BucketCounts().FromRaw([]uint64{1, 2, 1})
	return md
}

func otlpProto(t testing.TB, md pmetric.Metrics) []byte {
	t.Helper()
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	testutil.Ok(t, err)
	return b
}

func otlpJSONBody(t testing.TB, md pmetric.Metrics) []byte {
	t.Helper()
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalJSON()
	testutil.Ok(t, err)
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, err := w.Write(b)
	testutil.Ok(t, err)
	testutil.Ok(t, w.Close())
	return buf.Bytes()
}

// seriesByName maps each pushed series, as name{labels but __name__, sorted}, to its first value (a float, or
// "h" and a histogram's count).
func seriesByName(series []*prompb.TimeSeries) map[string]string {
	out := map[string]string{}
	for _, s := range series {
		var name string
		var rest []string
		for _, l := range s.Labels {
			if l.Name == "__name__" {
				name = l.Value
				continue
			}
			rest = append(rest, l.Name+"="+l.Value)
		}
		sort.Strings(rest)
		var v string
		switch {
		case len(s.Samples) > 0:
			v = strconv.FormatFloat(s.Samples[0].Value, 'g', -1, 64)
		case len(s.Histograms) > 0:
			v = "h" + strconv.FormatUint(s.Histograms[0].GetCountInt(), 10)
		}
		out[name+"{"+strings.Join(rest, ",")+"}"] = v
	}
	return out
}

func TestOTLPHandler(t *testing.T) {
	base := map[string]string{
		`queue_depth{instance=i-1,job=shop,queue=orders}`:    "7",
		`requests{instance=i-1,job=shop}`:                    "10",
		`latency_bucket{instance=i-1,job=shop,le=0.1}`:       "1",
		`latency_bucket{instance=i-1,job=shop,le=1}`:         "4",
		`latency_bucket{instance=i-1,job=shop,le=+Inf}`:      "6",
		`latency_count{instance=i-1,job=shop}`:               "6",
		`latency_sum{instance=i-1,job=shop}`:                 "3.5",
		`size{instance=i-1,job=shop}`:                        "h5",
		`target_info{cloud_region=eu,instance=i-1,job=shop}`: "1",
	}
	cumulative := otlpTestMetrics(pmetric.AggregationTemporalityCumulative, 10)
	for _, tc := range []struct {
		name   string
		limits func(*tenancy.Limits)
		body   []byte
		hdr    []string
		code   int
		want   map[string]string // pushed series (nil: nothing pushed)
		errSub string            // in the error status' message
	}{
		{name: "protobuf", body: otlpProto(t, cumulative), hdr: []string{"Content-Type", "application/x-protobuf"}, code: 200, want: base},
		{name: "json", body: otlpJSONBody(t, cumulative), hdr: []string{"Content-Type", "application/json"}, code: 200, want: base},
		{name: "gzip protobuf", body: gzipped(t, otlpProto(t, cumulative)), hdr: []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "gzip"}, code: 200, want: base},
		{
			name: "suffixes and promoted resource attributes",
			limits: func(l *tenancy.Limits) {
				l.OTelMetricSuffixesEnabled = true
				l.PromoteOTelResourceAttributes = []string{"cloud.region"}
			},
			body: otlpProto(t, cumulative), hdr: []string{"Content-Type", "application/x-protobuf"}, code: 200,
			want: map[string]string{
				`queue_depth{cloud_region=eu,instance=i-1,job=shop,queue=orders}`:       "7",
				`requests_total{cloud_region=eu,instance=i-1,job=shop}`:                 "10",
				`latency_seconds_bucket{cloud_region=eu,instance=i-1,job=shop,le=0.1}`:  "1",
				`latency_seconds_bucket{cloud_region=eu,instance=i-1,job=shop,le=1}`:    "4",
				`latency_seconds_bucket{cloud_region=eu,instance=i-1,job=shop,le=+Inf}`: "6",
				`latency_seconds_count{cloud_region=eu,instance=i-1,job=shop}`:          "6",
				`latency_seconds_sum{cloud_region=eu,instance=i-1,job=shop}`:            "3.5",
				`size{cloud_region=eu,instance=i-1,job=shop}`:                           "h5",
				`target_info{cloud_region=eu,instance=i-1,job=shop}`:                    "1",
			},
		},
		{name: "bad content type", body: otlpProto(t, cumulative), hdr: []string{"Content-Type", "text/plain"}, code: 415},
		{name: "bad content encoding", body: otlpProto(t, cumulative), hdr: []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "br"}, code: 415, errSub: "Content-Encoding"},
		{name: "bad protobuf body", body: []byte{0x0a, 0xff, 0xff, 0x01}, hdr: []string{"Content-Type", "application/x-protobuf"}, code: 400, errSub: "decode the OTLP protobuf body"},
		{name: "bad json body", body: []byte(`{"resourceMetrics":[`), hdr: []string{"Content-Type", "application/json"}, code: 400, errSub: "decode the OTLP JSON body"},
		{name: "bad gzip body", body: []byte("not gzip"), hdr: []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "gzip"}, code: 400, errSub: "gzip"},
		{
			name: "delta refused", body: otlpProto(t, otlpTestMetrics(pmetric.AggregationTemporalityDelta, 5)),
			hdr: []string{"Content-Type", "application/x-protobuf"}, code: 400,
			errSub: `invalid temporality and type combination for metric "requests" (delta temporality is not accepted`,
		},
		{
			name:   "partial success",
			limits: func(l *tenancy.Limits) { l.MaxLabelNamesPerSeries = 3 },
			body:   otlpProto(t, cumulative), hdr: []string{"Content-Type", "application/x-protobuf"}, code: 200,
			want: map[string]string{ // the 4-label series (queue_depth, le buckets, target_info) are refused
				`requests{instance=i-1,job=shop}`:      "10",
				`latency_count{instance=i-1,job=shop}`: "6",
				`latency_sum{instance=i-1,job=shop}`:   "3.5",
				`size{instance=i-1,job=shop}`:          "h5",
			},
		},
		{
			name:   "rate limited",
			limits: func(l *tenancy.Limits) { l.IngestionRate, l.IngestionBurstSize = 1, 1 },
			body:   otlpProto(t, cumulative), hdr: []string{"Content-Type", "application/x-protobuf"}, code: 429, errSub: "ingestion rate limit",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testLimits()
			if tc.limits != nil {
				tc.limits(&l)
			}
			env := newOTLPTestEnv(t, DefaultPushConfig(), l)
			rec := env.do(t, http.MethodPost, tc.body, tc.hdr...)
			testutil.Equals(t, tc.code, rec.Code, rec.Body.String())
			if tc.want == nil {
				testutil.Equals(t, 0, env.pusher.calls())
			} else {
				testutil.Equals(t, tc.want, seriesByName(env.pusher.series()))
			}
			if rec.Code == http.StatusUnsupportedMediaType && tc.errSub == "" {
				return // the encoding is unknown: a text answer
			}
			json := strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json")
			if tc.code == http.StatusOK {
				resp := pmetricotlp.NewExportResponse()
				if json {
					testutil.Ok(t, resp.UnmarshalJSON(rec.Body.Bytes()))
				} else {
					testutil.Ok(t, resp.UnmarshalProto(rec.Body.Bytes()))
				}
				if tc.name == "partial success" {
					testutil.Equals(t, int64(5), resp.PartialSuccess().RejectedDataPoints())
					testutil.Assert(t, strings.Contains(resp.PartialSuccess().ErrorMessage(), "max_label_names_per_series"), resp.PartialSuccess().ErrorMessage())
				} else {
					testutil.Equals(t, int64(0), resp.PartialSuccess().RejectedDataPoints())
					testutil.Equals(t, "", resp.PartialSuccess().ErrorMessage())
				}
				return
			}
			var st rpcstatus.Status
			if json {
				testutil.Ok(t, protojson.Unmarshal(rec.Body.Bytes(), &st))
			} else {
				testutil.Ok(t, proto.Unmarshal(rec.Body.Bytes(), &st))
			}
			testutil.Assert(t, strings.Contains(st.Message, tc.errSub), "status message %q lacks %q", st.Message, tc.errSub)
		})
	}
}

func TestOTLPHandlerMethodNotAllowed(t *testing.T) {
	env := newOTLPTestEnv(t, DefaultPushConfig(), testLimits())
	rec := env.do(t, http.MethodGet, nil)
	testutil.Equals(t, http.StatusMethodNotAllowed, rec.Code)
	testutil.Equals(t, http.MethodPost, rec.Header().Get("Allow"))
}

func TestOTLPHandlerTooLarge(t *testing.T) {
	cfg := DefaultPushConfig()
	cfg.MaxRecvMsgSize = 4 << 10
	env := newOTLPTestEnv(t, cfg, testLimits())
	big := otlpProto(t, otlpTestMetrics(pmetric.AggregationTemporalityCumulative, 1))
	big = append(big, bytes.Repeat([]byte{0}, cfg.MaxRecvMsgSize)...) // too large as sent

	// A gzip body within the limit that decompresses beyond it ("gzip bomb"): refused while decompressing.
	bomb := gzipped(t, bytes.Repeat([]byte{0x0a, 0x00}, 64<<10))
	testutil.Assert(t, len(bomb) < cfg.MaxRecvMsgSize, "bomb is %d bytes", len(bomb))

	for _, tc := range []struct {
		name string
		body []byte
		hdr  []string
	}{
		{"body", big, []string{"Content-Type", "application/x-protobuf"}},
		{"decompressed", bomb, []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "gzip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := env.do(t, http.MethodPost, tc.body, tc.hdr...)
			testutil.Equals(t, http.StatusRequestEntityTooLarge, rec.Code, rec.Body.String())
			var st rpcstatus.Status
			testutil.Ok(t, proto.Unmarshal(rec.Body.Bytes(), &st))
			testutil.Assert(t, strings.Contains(st.Message, "max_recv_msg_size"), st.Message)
			testutil.Equals(t, 0, env.pusher.calls())
		})
	}
}

// TestOTLPHandlerInflightBytes: a request whose decoding would exceed max_inflight_push_requests_bytes is
// answered 503 (retried by OTLP exporters), and gives its bytes back.
func TestOTLPHandlerInflightBytes(t *testing.T) {
	cfg := DefaultPushConfig()
	body := otlpProto(t, otlpTestMetrics(pmetric.AggregationTemporalityCumulative, 1))
	cfg.InstanceLimits.MaxInflightPushRequestsBytes = 4 * len(body) // less than otlpDecodeRatio× the body
	env := newOTLPTestEnv(t, cfg, testLimits())
	rec := env.do(t, http.MethodPost, body, "Content-Type", "application/x-protobuf")
	testutil.Equals(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	testutil.Equals(t, int64(0), env.handler.d.inflight.bytes.Load())
	testutil.Equals(t, 0, env.pusher.calls())
}

// TestOTLPHandlerDeltaToCumulative: with otel_convert_delta_to_cumulative, delta sums are added up per stream
// and tenant; another tenant's state is its own.
func TestOTLPHandlerDeltaToCumulative(t *testing.T) {
	l := testLimits()
	l.OTelConvertDeltaToCumulative = true
	env := newOTLPTestEnv(t, DefaultPushConfig(), l)
	for i, v := range []float64{5, 3} {
		md := otlpTestMetrics(pmetric.AggregationTemporalityDelta, v)
		// Consecutive intervals: (-1m, 0], (0, 1m].
		dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(1).Sum().DataPoints().At(0)
		dp.SetStartTimestamp(pcommon.NewTimestampFromTime(testNow.Add(time.Duration(i-1) * time.Minute)))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(testNow.Add(time.Duration(i) * time.Minute)))
		rec := env.do(t, http.MethodPost, otlpProto(t, md), "Content-Type", "application/x-protobuf")
		testutil.Equals(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	req := httptest.NewRequest(http.MethodPost, "/otlp/v1/metrics", bytes.NewReader(otlpProto(t, otlpTestMetrics(pmetric.AggregationTemporalityDelta, 2))))
	req.Header.Set(tenancy.HeaderOrgID, "team-b")
	req.Header.Set("Content-Type", "application/x-protobuf")
	rec := httptest.NewRecorder()
	env.http.ServeHTTP(rec, req)
	testutil.Equals(t, http.StatusOK, rec.Code, rec.Body.String())

	var got []float64
	for _, s := range env.pusher.series() {
		for _, lb := range s.Labels {
			if lb.Name == "__name__" && lb.Value == "requests" {
				got = append(got, s.Samples[0].Value)
			}
		}
	}
	testutil.Equals(t, []float64{5, 8, 2}, got)
	testutil.Equals(t, []string{"team-a", "team-a", "team-b"}, env.pusher.tenants)
}

// TestOTLPHandlerTooExpensive: a small request that would translate into far more series bytes than its size
// (an explicit histogram's every bucket is a series with all of the point's labels) is refused, 400, nothing
// written, before it holds the memory.
func TestOTLPHandlerTooExpensive(t *testing.T) {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("wide")
	h := m.SetEmptyHistogram()
	h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := h.DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(testNow))
	for i := range 25 {
		dp.Attributes().PutStr("attr_"+strconv.Itoa(i), strings.Repeat("v", 100))
	}
	bounds := make([]float64, 20000)
	for i := range bounds {
		bounds[i] = float64(i)
	}
	dp.ExplicitBounds().FromRaw(bounds)
	dp.BucketCounts().FromRaw(make([]uint64, len(bounds)+1))
	body := otlpProto(t, md)

	env := newOTLPTestEnv(t, DefaultPushConfig(), testLimits())
	rec := env.do(t, http.MethodPost, body, "Content-Type", "application/x-protobuf")
	testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	var st rpcstatus.Status
	testutil.Ok(t, proto.Unmarshal(rec.Body.Bytes(), &st))
	testutil.Assert(t, strings.Contains(st.Message, "translates into too many series bytes for its size"), st.Message)
	testutil.Equals(t, 0, env.pusher.calls())
	testutil.Equals(t, int64(0), env.handler.d.inflight.bytes.Load())
}

// FuzzOTLPHandler: whatever the body, the handler answers (never panics) with a status of the OTLP spec, and
// holds no bytes afterwards.
func FuzzOTLPHandler(f *testing.F) {
	for _, md := range []pmetric.Metrics{
		otlpTestMetrics(pmetric.AggregationTemporalityCumulative, 1),
		otlpTestMetrics(pmetric.AggregationTemporalityDelta, 1),
	} {
		f.Add(otlpProto(f, md), false)
		f.Add(otlpJSONBody(f, md), true)
	}
	f.Add([]byte{}, false)
	f.Add([]byte("{}"), true)
	env := newOTLPTestEnv(f, DefaultPushConfig(), testLimits())
	f.Fuzz(func(t *testing.T, body []byte, json bool) {
		ct := "application/x-protobuf"
		if json {
			ct = "application/json"
		}
		rec := env.do(t, http.MethodPost, body, "Content-Type", ct)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusTooManyRequests:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		testutil.Equals(t, int64(0), env.handler.d.inflight.bytes.Load())
	})
}

// TestOTLPHandlerHADedup: OTLP goes through the same HA tracker as remote write: with the replica's attributes
// promoted, the elected replica's export is stored (200) without the replica label, the other one's is answered
// 202 with an export response (a success for the exporter, which must not retry it) and nothing is stored.
func TestOTLPHandlerHADedup(t *testing.T) {
	limits := testLimits()
	limits.AcceptHASamples = true
	limits.HAClusterLabel, limits.HAReplicaLabel = "cluster", "replica"
	limits.PromoteOTelResourceAttributes = []string{"cluster", "replica"}
	pusher := &fakePusher{}
	clock := storetest.NewClock(testNow)
	ha, _ := newTestHATracker(newInMemoryHAKV(t), limits, clock)
	d := NewDistributor(DefaultPushConfig(), tenancy.NewOverrides(limits, nil), pusher, log.NewNopLogger(), prometheus.NewRegistry(),
		WithClock(clock.Now), WithHATracker(ha))
	h := NewOTLPHandler(d, prometheus.NewRegistry())
	t.Cleanup(func() { testutil.Ok(t, h.Close()) })
	srv := tenancy.DefaultConfig().HTTPMiddleware(false)(h)

	export := func(replica string) *httptest.ResponseRecorder {
		md := otlpTestMetrics(pmetric.AggregationTemporalityCumulative, 10)
		md.ResourceMetrics().At(0).Resource().Attributes().PutStr("cluster", "c1")
		md.ResourceMetrics().At(0).Resource().Attributes().PutStr("replica", replica)
		req := httptest.NewRequest(http.MethodPost, "/otlp/v1/metrics", bytes.NewReader(otlpProto(t, md)))
		req.Header.Set(tenancy.HeaderOrgID, "team-a")
		req.Header.Set("Content-Type", "application/x-protobuf")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct {
		replica string
		code    int
		stored  bool
	}{
		{replica: "a", code: http.StatusOK, stored: true},
		{replica: "b", code: http.StatusAccepted},
		{replica: "a", code: http.StatusOK, stored: true},
	} {
		before := pusher.calls()
		rec := export(tc.replica)
		testutil.Equals(t, tc.code, rec.Code, "replica %s: %s", tc.replica, rec.Body.String())
		resp := pmetricotlp.NewExportResponse()
		testutil.Ok(t, resp.UnmarshalProto(rec.Body.Bytes()), "replica %s: the body is an export response", tc.replica)
		testutil.Equals(t, int64(0), resp.PartialSuccess().RejectedDataPoints())
		if !tc.stored {
			testutil.Equals(t, before, pusher.calls(), "replica %s: nothing pushed", tc.replica)
			continue
		}
		testutil.Equals(t, before+1, pusher.calls())
		pusher.mu.Lock()
		last := pusher.reqs[len(pusher.reqs)-1]
		pusher.mu.Unlock()
		testutil.Assert(t, len(last.Timeseries) > 0)
		for _, ts := range last.Timeseries {
			for _, l := range ts.Labels {
				testutil.Assert(t, l.GetName() != "replica", "replica label stored: %v", ts.Labels)
			}
		}
	}
}
