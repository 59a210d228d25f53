package receive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	gogoproto "github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	promprompb "github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// testNow is the fake clock's start: all test samples are around it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testNowMs() int64 { return testNow.UnixMilli() }

// fakeTenantLimits is a runtime overrides source whose limits the test changes between requests.
type fakeTenantLimits struct {
	mu     sync.Mutex
	limits map[string]*tenancy.Limits
}

func (f *fakeTenantLimits) ByTenant(tenant string) *tenancy.Limits {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limits[tenant]
}

func (f *fakeTenantLimits) AllByTenant() map[string]*tenancy.Limits {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limits
}

func (f *fakeTenantLimits) set(tenant string, l tenancy.Limits) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limits == nil {
		f.limits = map[string]*tenancy.Limits{}
	}
	f.limits[tenant] = &l
}

// fakePusher records what it is given (cloned: the handler owns the messages) and answers err.
type fakePusher struct {
	mu      sync.Mutex
	err     error
	tenants []string
	reqs    []*storepb.WriteRequest
	check   func(*storepb.WriteRequest) // optional, called during Push
}

func (p *fakePusher) Push(_ context.Context, tenant string, req *storepb.WriteRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.check != nil {
		p.check(req)
	}
	p.tenants = append(p.tenants, tenant)
	p.reqs = append(p.reqs, proto.Clone(req).(*storepb.WriteRequest))
	return p.err
}

func (p *fakePusher) series() []*prompb.TimeSeries {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*prompb.TimeSeries
	for _, r := range p.reqs {
		out = append(out, r.Timeseries...)
	}
	return out
}

func (p *fakePusher) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reqs)
}

// testLimits are the defaults with a generous rate limit, so that only tests about it hit it.
func testLimits() tenancy.Limits {
	l := tenancy.DefaultLimits()
	l.IngestionRate = 1e9
	l.IngestionBurstSize = 1e9
	return l
}

type testEnv struct {
	handler   http.Handler
	pusher    *fakePusher
	clock     *storetest.Clock
	reg       *prometheus.Registry
	limits    *fakeTenantLimits
	discarded *DiscardedSamples
}

// newTestEnv builds the handler behind the real tenancy middleware, with a fake clock, pusher and runtime
// overrides (tenant "team-a" starts with defaults).
func newTestEnv(t testing.TB, defaults tenancy.Limits, opts ...PushOption) *testEnv {
	t.Helper()
	return newTestEnvPusher(t, defaults, nil, opts...)
}

// newTestEnvPusher is newTestEnv with the Distributor's Pusher wrap(env.pusher) (nil: env.pusher itself).
func newTestEnvPusher(t testing.TB, defaults tenancy.Limits, wrap func(*fakePusher) Pusher, opts ...PushOption) *testEnv {
	t.Helper()
	env := &testEnv{
		pusher: &fakePusher{},
		clock:  storetest.NewClock(testNow),
		reg:    prometheus.NewRegistry(),
		limits: &fakeTenantLimits{},
	}
	env.discarded = NewDiscardedSamples(env.reg)
	overrides := tenancy.NewOverrides(defaults, env.limits)
	opts = append([]PushOption{WithClock(env.clock.Now), WithDiscardedSamples(env.discarded)}, opts...)
	var pusher Pusher = env.pusher
	if wrap != nil {
		pusher = wrap(env.pusher)
	}
	h := NewPushHandler(NewDistributor(DefaultPushConfig(), overrides, pusher, log.NewNopLogger(), env.reg, opts...))
	env.handler = tenancy.DefaultConfig().HTTPMiddleware(false)(h)
	return env
}

// do sends body with the given headers as tenant "team-a" and returns the recorded response.
func (env *testEnv) do(t testing.TB, body []byte, contentType string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(body))
	req.Header.Set(tenancy.HeaderOrgID, "team-a")
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Content-Encoding", "snappy")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	env.handler.ServeHTTP(rec, req)
	return rec
}

const (
	ctV1 = "application/x-protobuf"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

// series1 is a Prometheus (gogo) remote write 1.0 series with one float sample at ts.
func series1(ts int64, lbls ...string) promprompb.TimeSeries {
	s := promprompb.TimeSeries{Samples: []promprompb.Sample{{Value: 1, Timestamp: ts}}}
	for i := 0; i+1 < len(lbls); i += 2 {
		s.Labels = append(s.Labels, promprompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	return s
}

// encodeV1 marshals a 1.0 request with Prometheus's own types and snappy-compresses it, as Prometheus sends it.
func encodeV1(t testing.TB, series ...promprompb.TimeSeries) []byte {
	t.Helper()
	b, err := gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: series})
	testutil.Ok(t, err)
	return snappy.Encode(nil, b)
}

// encodeV2 marshals a 2.0 request with Prometheus's own types and snappy-compresses it.
func encodeV2(t testing.TB, req *writev2.Request) []byte {
	t.Helper()
	b, err := req.Marshal()
	testutil.Ok(t, err)
	return snappy.Encode(nil, b)
}

// protoFromV1 is the oracle: what proto.Unmarshal makes of the same series in our wire types.
func protoFromV1(t testing.TB, series ...promprompb.TimeSeries) []*prompb.TimeSeries {
	t.Helper()
	b, err := gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: series})
	testutil.Ok(t, err)
	var out prompb.WriteRequest
	testutil.Ok(t, proto.Unmarshal(b, &out))
	return out.Timeseries
}

func equalSeries(t testing.TB, want, got []*prompb.TimeSeries) {
	t.Helper()
	testutil.Equals(t, len(want), len(got), "series count")
	for i := range want {
		testutil.Assert(t, proto.Equal(want[i], got[i]), "series %d differs:\nwant %v\ngot  %v", i, want[i], got[i])
	}
}

// testIntHistogram and testFloatHistogram are native histograms with both bucket signs and a zero bucket.
func testIntHistogram() *histogram.Histogram {
	return &histogram.Histogram{
		CounterResetHint: histogram.NotCounterReset,
		Schema:           1, ZeroThreshold: 0.001, ZeroCount: 2, Count: 12, Sum: 18.4,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}},
		PositiveBuckets: []int64{1, 1, -1, 0},
		NegativeSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		NegativeBuckets: []int64{2, -1},
	}
}

func testFloatHistogram() *histogram.FloatHistogram {
	return &histogram.FloatHistogram{
		CounterResetHint: histogram.GaugeType,
		Schema:           0, ZeroThreshold: 0.5, ZeroCount: 1.5, Count: 9.5, Sum: -3.25,
		PositiveSpans:   []histogram.Span{{Offset: -1, Length: 3}},
		PositiveBuckets: []float64{1, 2.5, 3},
		NegativeSpans:   []histogram.Span{{Offset: 2, Length: 1}},
		NegativeBuckets: []float64{1.5},
	}
}

func testCustomBucketsHistogram() *histogram.Histogram {
	return &histogram.Histogram{
		Schema: histogram.CustomBucketsSchema, Count: 5, Sum: 12,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 3}},
		PositiveBuckets: []int64{1, 1, 0},
		CustomValues:    []float64{0.1, 1, 10},
	}
}

// richSeriesV1 is a 1.0 request with floats, int/float/custom-bucket histograms and exemplars.
func richSeriesV1() []promprompb.TimeSeries {
	now := testNowMs()
	return []promprompb.TimeSeries{
		{
			Labels:  []promprompb.Label{{Name: "__name__", Value: "http_requests_total"}, {Name: "code", Value: "200"}, {Name: "job", Value: "api"}},
			Samples: []promprompb.Sample{{Value: 10, Timestamp: now - 2000}, {Value: 11.5, Timestamp: now - 1000}},
			Exemplars: []promprompb.Exemplar{{
				Labels: []promprompb.Label{{Name: "trace_id", Value: "4bf92f3577b34da6"}}, Value: 11.5, Timestamp: now - 1000,
			}},
		},
		{
			Labels: []promprompb.Label{{Name: "__name__", Value: "rpc_latency_seconds"}, {Name: "job", Value: "api"}},
			Histograms: []promprompb.Histogram{
				promprompb.FromIntHistogram(now-1000, testIntHistogram()),
				promprompb.FromFloatHistogram(now, testFloatHistogram()),
			},
			Exemplars: []promprompb.Exemplar{{Labels: []promprompb.Label{{Name: "span_id", Value: "00f067aa0ba902b7"}}, Value: 0.2, Timestamp: now}},
		},
		{
			Labels:     []promprompb.Label{{Name: "__name__", Value: "nhcb_seconds"}, {Name: "job", Value: "api"}},
			Histograms: []promprompb.Histogram{promprompb.FromIntHistogram(now, testCustomBucketsHistogram())},
		},
	}
}

// richRequestV2 is richSeriesV1 as a 2.0 request (with metadata and start timestamps, which are dropped).
func richRequestV2() *writev2.Request {
	now := testNowMs()
	st := writev2.NewSymbolTable()
	refs := func(lbls ...string) []uint32 {
		var out []uint32
		for _, l := range lbls {
			out = append(out, st.Symbolize(l))
		}
		return out
	}
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{
			LabelsRefs: refs("__name__", "http_requests_total", "code", "200", "job", "api"),
			Samples:    []writev2.Sample{{Value: 10, Timestamp: now - 2000, StartTimestamp: now - 60000}, {Value: 11.5, Timestamp: now - 1000, StartTimestamp: now - 60000}},
			Exemplars:  []writev2.Exemplar{{LabelsRefs: refs("trace_id", "4bf92f3577b34da6"), Value: 11.5, Timestamp: now - 1000}},
			Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Requests."), UnitRef: 0},
		},
		{
			LabelsRefs: refs("__name__", "rpc_latency_seconds", "job", "api"),
			Histograms: []writev2.Histogram{
				writev2.FromIntHistogram(now-60000, now-1000, testIntHistogram()),
				writev2.FromFloatHistogram(0, now, testFloatHistogram()),
			},
			Exemplars: []writev2.Exemplar{{LabelsRefs: refs("span_id", "00f067aa0ba902b7"), Value: 0.2, Timestamp: now}},
			Metadata:  writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM},
		},
		{
			LabelsRefs: refs("__name__", "nhcb_seconds", "job", "api"),
			Histograms: []writev2.Histogram{writev2.FromIntHistogram(0, now, testCustomBucketsHistogram())},
		},
	}}
	req.Symbols = st.Symbols()
	return req
}

func TestPushConfig(t *testing.T) {
	testutil.Equals(t, 10<<20, DefaultPushConfig().MaxRecvMsgSize)
	testutil.Ok(t, DefaultPushConfig().Validate())
	testutil.NotOk(t, PushConfig{}.Validate())
	testutil.NotOk(t, PushConfig{MaxRecvMsgSize: -1}.Validate())
}

func TestPushHandler_V1RoundTrip(t *testing.T) {
	env := newTestEnv(t, testLimits())
	series := richSeriesV1()
	rec := env.do(t, encodeV1(t, series...), ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, "", rec.Header().Get(headerSamplesWritten), "1.0 answers carry no written-count headers")

	testutil.Equals(t, []string{"team-a"}, env.pusher.tenants)
	testutil.Equals(t, "team-a", env.pusher.reqs[0].GetTenant())
	got := env.pusher.series()
	equalSeries(t, protoFromV1(t, series...), got)

	// Spot checks that do not go through the oracle.
	testutil.Equals(t, "http_requests_total", got[0].Labels[0].GetValue())
	testutil.Equals(t, 11.5, got[0].Samples[1].GetValue())
	testutil.Equals(t, "4bf92f3577b34da6", got[0].Exemplars[0].Labels[0].GetValue())
	testutil.Equals(t, uint64(12), got[1].Histograms[0].GetCountInt())
	testutil.Equals(t, []int64{1, 1, -1, 0}, got[1].Histograms[0].GetPositiveDeltas())
	testutil.Equals(t, 9.5, got[1].Histograms[1].GetCountFloat())
	testutil.Equals(t, prompb.Histogram_GAUGE, got[1].Histograms[1].GetResetHint())
	testutil.Equals(t, int32(-1), got[1].Histograms[1].PositiveSpans[0].GetOffset())
	testutil.Equals(t, histogram.CustomBucketsSchema, got[2].Histograms[0].GetSchema())
	testutil.Equals(t, []float64{0.1, 1, 10}, got[2].Histograms[0].GetCustomValues())
}

func TestPushHandler_V2RoundTrip(t *testing.T) {
	env := newTestEnv(t, testLimits())
	rec := env.do(t, encodeV2(t, richRequestV2()), ctV2)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	testutil.Equals(t, "2", rec.Header().Get(headerSamplesWritten))
	testutil.Equals(t, "3", rec.Header().Get(headerHistogramsWritten))
	testutil.Equals(t, "2", rec.Header().Get(headerExemplarsWritten))

	// The same data sent as 1.0 gives the same series: 2.0's symbols, metadata and start timestamps are gone.
	equalSeries(t, protoFromV1(t, richSeriesV1()...), env.pusher.series())
}

func TestPushHandler_StatusCodes(t *testing.T) {
	valid := encodeV1(t, series1(testNowMs(), "__name__", "up", "job", "a"))
	validRaw, err := snappy.Decode(nil, valid)
	testutil.Ok(t, err)
	bomb := snappy.Encode(nil, make([]byte, 11<<20)) // ~500 KiB compressed, 11 MiB decoded
	invalid := encodeV1(t, series1(testNowMs(), "job", "a"))
	grpcErr := func(c codes.Code) error {
		return errors.Wrap(status.Error(c, c.String()+" from ingester"), "replicate")
	}

	for _, tc := range []struct {
		name       string
		method     string
		body       []byte
		ct         string
		hdr        []string
		noTenant   bool
		chunked    bool // no Content-Length: the limit is found while reading
		pushErr    error
		limits     func(*tenancy.Limits)
		want       int
		wantPushed bool
		wantMsg    string
	}{
		{name: "v1 ok", body: valid, ct: ctV1, want: 204, wantPushed: true},
		{name: "v1 with explicit proto parameter", body: valid, ct: "application/x-protobuf;proto=prometheus.WriteRequest", want: 204, wantPushed: true},
		{name: "no Content-Type is 1.0", body: valid, ct: "", want: 204, wantPushed: true},
		{name: "no Content-Encoding is snappy", body: valid, ct: ctV1, hdr: []string{"Content-Encoding", ""}, want: 204, wantPushed: true},
		{name: "v2 ok", body: encodeV2(t, richRequestV2()), ct: ctV2, want: 204, wantPushed: true},
		{name: "v2 with spaces and upper case", body: encodeV2(t, richRequestV2()), ct: "Application/X-Protobuf; proto=io.prometheus.write.v2.Request", want: 204, wantPushed: true},
		{name: "empty request", body: snappy.Encode(nil, nil), ct: ctV1, want: 204},
		{name: "GET", method: http.MethodGet, body: valid, ct: ctV1, want: 405},
		{name: "no tenant", noTenant: true, body: valid, ct: ctV1, want: 401, wantMsg: "no org id"},
		{name: "bad snappy", body: []byte("\xff\xff\xff\xff\xff\xff not snappy"), ct: ctV1, want: 400, wantMsg: "decompress request body"},
		{name: "snappy of garbage", body: snappy.Encode(nil, []byte("\x0a\xff\xff\xff\xff\x0f garbage")), ct: ctV1, want: 400, wantMsg: "decode remote write 1.0 request"},
		{name: "truncated protobuf", body: snappy.Encode(nil, validRaw[:len(validRaw)-3]), ct: ctV1, want: 400, wantMsg: "decode remote write 1.0 request"},
		{name: "v2 garbage", body: snappy.Encode(nil, []byte("\x22\xff\xff\xff\xff\x0f")), ct: ctV2, want: 400, wantMsg: "decode remote write 2.0 request"},
		{name: "uncompressed protobuf", body: validRaw, ct: ctV1, want: 400, wantMsg: "decompress request body"},
		{name: "body too large", body: make([]byte, 10<<20+1), ct: ctV1, want: 413, wantMsg: "max_recv_msg_size"},
		{name: "body too large, chunked", body: make([]byte, 10<<20+1), chunked: true, ct: ctV1, want: 413, wantMsg: "max_recv_msg_size"},
		{name: "decompression bomb", body: bomb, ct: ctV1, want: 413, wantMsg: "decompressed request body of 11534336 bytes exceeds the limit of 10485760 bytes"},
		{name: "JSON", body: valid, ct: "application/json", want: 415, wantMsg: "unsupported Content-Type"},
		{name: "unknown proto message", body: valid, ct: "application/x-protobuf;proto=io.prometheus.write.v3.Request", want: 415, wantMsg: "unsupported protobuf message"},
		{name: "malformed Content-Type", body: valid, ct: "application/x-protobuf;proto", want: 415},
		{name: "gzip", body: valid, ct: ctV1, hdr: []string{"Content-Encoding", "gzip"}, want: 415, wantMsg: "unsupported Content-Encoding"},
		{name: "only invalid series", body: invalid, ct: ctV1, want: 400, wantMsg: "err-mimir-missing-metric-name"},
		{name: "rate limited", body: valid, ct: ctV1, limits: func(l *tenancy.Limits) { l.IngestionRate, l.IngestionBurstSize = 1, 0 }, want: 429, wantMsg: "err-mimir-tenant-max-ingestion-rate"},
		{name: "pusher: tenancy error", body: valid, ct: ctV1, pushErr: errors.Wrap(tenancy.NewMaxSeriesPerUserError(5, "up", ""), "ingester"), want: 400, wantPushed: true, wantMsg: "per-user series limit of 5 exceeded"},
		{name: "pusher: InvalidArgument", body: valid, ct: ctV1, pushErr: grpcErr(codes.InvalidArgument), want: 400, wantPushed: true, wantMsg: "InvalidArgument from ingester"},
		{name: "pusher: ResourceExhausted", body: valid, ct: ctV1, pushErr: grpcErr(codes.ResourceExhausted), want: 429, wantPushed: true},
		{name: "pusher: Unavailable", body: valid, ct: ctV1, pushErr: grpcErr(codes.Unavailable), want: 503, wantPushed: true},
		{name: "pusher: DeadlineExceeded", body: valid, ct: ctV1, pushErr: grpcErr(codes.DeadlineExceeded), want: 503, wantPushed: true},
		{name: "pusher: quorum not reached", body: valid, ct: ctV1, pushErr: errors.New("quorum not reached: 1 of 3 ingesters acknowledged"), want: 503, wantPushed: true, wantMsg: "quorum not reached"},
		{name: "pusher: context canceled", body: valid, ct: ctV1, pushErr: context.Canceled, want: 503, wantPushed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := testLimits()
			if tc.limits != nil {
				tc.limits(&limits)
			}
			env := newTestEnv(t, limits)
			env.pusher.err = tc.pushErr
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/api/v1/push", bytes.NewReader(tc.body))
			if tc.chunked {
				req.ContentLength = -1
				req.Body = io.NopCloser(bytes.NewReader(tc.body))
			}
			if !tc.noTenant {
				req.Header.Set(tenancy.HeaderOrgID, "team-a")
			}
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			req.Header.Set("Content-Encoding", "snappy")
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			rec := httptest.NewRecorder()
			env.handler.ServeHTTP(rec, req)

			testutil.Equals(t, tc.want, rec.Code, rec.Body.String())
			testutil.Equals(t, tc.wantPushed, env.pusher.calls() > 0)
			if tc.wantMsg != "" {
				testutil.Assert(t, strings.Contains(rec.Body.String(), tc.wantMsg), "body %q does not contain %q", rec.Body.String(), tc.wantMsg)
			}
		})
	}
}

// TestPushHandler_V2Headers checks the written-count headers of 2.0 answers that are not plain successes.
func TestPushHandler_V2Headers(t *testing.T) {
	now := testNowMs()
	req := &writev2.Request{
		Symbols: []string{"", "__name__", "up", "job", "a", "b"},
		Timeseries: []writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: 1, Timestamp: now}, {Value: 2, Timestamp: now + 1}}},
			{LabelsRefs: []uint32{3, 5}, Samples: []writev2.Sample{{Value: 1, Timestamp: now}}}, // no metric name
		},
	}
	t.Run("partial", func(t *testing.T) {
		env := newTestEnv(t, testLimits())
		rec := env.do(t, encodeV2(t, req), ctV2)
		testutil.Equals(t, http.StatusBadRequest, rec.Code)
		testutil.Equals(t, "2", rec.Header().Get(headerSamplesWritten))
		testutil.Equals(t, "0", rec.Header().Get(headerHistogramsWritten))
		testutil.Equals(t, "0", rec.Header().Get(headerExemplarsWritten))
	})
	t.Run("pusher unavailable", func(t *testing.T) {
		env := newTestEnv(t, testLimits())
		env.pusher.err = status.Error(codes.Unavailable, "no ingester")
		rec := env.do(t, encodeV2(t, req), ctV2)
		testutil.Equals(t, http.StatusServiceUnavailable, rec.Code)
		testutil.Equals(t, "0", rec.Header().Get(headerSamplesWritten))
	})
	t.Run("undecodable", func(t *testing.T) {
		env := newTestEnv(t, testLimits())
		rec := env.do(t, []byte("junk"), ctV2)
		testutil.Equals(t, http.StatusBadRequest, rec.Code)
		testutil.Equals(t, "0", rec.Header().Get(headerSamplesWritten))
	})
}

// TestPushHandler_Validation checks every rule's exact (Mimir-format) message and discard reason.
func TestPushHandler_Validation(t *testing.T) {
	now := testNowMs()
	future := testNow.Add(10*time.Minute + time.Millisecond).UnixMilli()
	long := strings.Repeat("x", 2049)
	for _, tc := range []struct {
		name   string
		series promprompb.TimeSeries
		limits func(*tenancy.Limits)
		reason string
		msg    string
	}{
		{
			name: "missing metric name", series: series1(now, "job", "a"), reason: ReasonMissingMetricName,
			msg: `received series has no metric name, series: '{job="a"}' (err-mimir-missing-metric-name)`,
		},
		{
			name: "no labels at all", series: series1(now), reason: ReasonMissingMetricName,
			msg: `received series has no metric name, series: '{}' (err-mimir-missing-metric-name)`,
		},
		{
			name: "empty metric name is no metric name", series: series1(now, "__name__", "", "job", "a"), reason: ReasonMissingMetricName,
			msg: `received series has no metric name, series: '{job="a"}' (err-mimir-missing-metric-name)`,
		},
		{
			name: "invalid metric name", series: series1(now, "__name__", "http.requests", "job", "a"), reason: ReasonLabelInvalid,
			msg: `received a series with an invalid label: '__name__' series: '{__name__="http.requests", job="a"}' (err-mimir-label-invalid)`,
		},
		{
			name: "invalid label name", series: series1(now, "__name__", "up", "job-name", "a"), reason: ReasonLabelInvalid,
			msg: `received a series with an invalid label: 'job-name' series: '{__name__="up", "job-name"="a"}' (err-mimir-label-invalid)`,
		},
		{
			name: "label name starting with a digit", series: series1(now, "0job", "a", "__name__", "up"), reason: ReasonLabelInvalid,
			msg: `received a series with an invalid label: '0job' series: '{"0job"="a", __name__="up"}' (err-mimir-label-invalid)`,
		},
		{
			name: "duplicate label names", series: series1(now, "__name__", "up", "job", "a", "job", "b"), reason: ReasonDuplicateLabelNames,
			msg: `received a series with duplicate label name, label: 'job' series: '{__name__="up", job="a", job="b"}' (err-mimir-duplicate-label-names)`,
		},
		{
			name: "duplicate label names, not sorted", series: series1(now, "job", "a", "__name__", "up", "job", "b"), reason: ReasonDuplicateLabelNames,
			msg: `received a series with duplicate label name, label: 'job' series: '{__name__="up", job="a", job="b"}' (err-mimir-duplicate-label-names)`,
		},
		{
			name: "too many labels", series: series1(now, "__name__", "up", "a", "1", "b", "2", "c", "3"), reason: ReasonMaxLabelNamesPerSeries,
			limits: func(l *tenancy.Limits) { l.MaxLabelNamesPerSeries = 3 },
			msg:    `received a series whose number of labels exceeds the limit (actual: 4, limit: 3) series: '{__name__="up", a="1", b="2", c="3"}' (err-mimir-max-label-names-per-series). To adjust the related per-tenant limit, configure max_label_names_per_series, or contact your service administrator.`,
		},
		{
			name: "label name too long", series: series1(now, "__name__", "up", "instance_name", "a"), reason: ReasonLabelNameTooLong,
			limits: func(l *tenancy.Limits) { l.MaxLabelNameLength = 8 },
			msg:    `received a series whose label name length of 13 exceeds the limit of 8, label: 'instance_name' series: '{__name__="up", instance_name="a"}' (err-mimir-label-name-too-long). To adjust the related per-tenant limit, configure max_label_name_length, or contact your service administrator.`,
		},
		{
			name: "label value too long", series: series1(now, "__name__", "up", "job", "abcdef"), reason: ReasonLabelValueTooLong,
			limits: func(l *tenancy.Limits) { l.MaxLabelValueLength = 5 },
			msg:    `received a series whose label value length of 6 exceeds the limit of 5, label: 'job', value: 'abcdef' (truncated) series: '{__name__="up", job="abcdef"}' (err-mimir-label-value-too-long). To adjust the related per-tenant limit, configure max_label_value_length, or contact your service administrator.`,
		},
		{
			name: "label value too long (default limit, message cut)", series: series1(now, "__name__", "up", "job", long), reason: ReasonLabelValueTooLong,
			msg: `received a series whose label value length of 2049 exceeds the limit of 2048, label: 'job', value: '` + long[:200] + `' (truncated) series: '{__name__="up", job="` + long[:200-len(`{__name__="up", job="`)] + `' (err-mimir-label-value-too-long). To adjust the related per-tenant limit, configure max_label_value_length, or contact your service administrator.`,
		},
		{
			name: "too far in future", series: series1(future, "__name__", "up", "job", "a"), reason: ReasonTooFarInFuture,
			msg: fmt.Sprintf(`received a sample whose timestamp is too far in the future, timestamp: %d series: '{__name__="up", job="a"}' (err-mimir-too-far-in-future). To adjust the related per-tenant limit, configure creation_grace_period, or contact your service administrator.`, future),
		},
		{
			name: "histogram too far in future", reason: ReasonTooFarInFuture,
			series: promprompb.TimeSeries{
				Labels:     []promprompb.Label{{Name: "__name__", Value: "h"}},
				Histograms: []promprompb.Histogram{promprompb.FromIntHistogram(future, testIntHistogram())},
			},
			msg: fmt.Sprintf(`received a sample whose timestamp is too far in the future, timestamp: %d series: '{__name__="h"}' (err-mimir-too-far-in-future). To adjust the related per-tenant limit, configure creation_grace_period, or contact your service administrator.`, future),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := testLimits()
			if tc.limits != nil {
				tc.limits(&limits)
			}
			env := newTestEnv(t, limits)
			rec := env.do(t, encodeV1(t, tc.series), ctV1)
			testutil.Equals(t, http.StatusBadRequest, rec.Code)
			testutil.Equals(t, tc.msg+"\n", rec.Body.String())
			testutil.Equals(t, 0, env.pusher.calls())
			n := len(tc.series.Samples) + len(tc.series.Histograms)
			testutil.Equals(t, float64(n), discardedValue(t, env.reg, "team-a", tc.reason))
		})
	}
}

// TestPushHandler_ValidationNormalises checks what valid series become: empty label values and future exemplars
// are dropped, the series kept; a sample exactly at now + grace period is accepted.
func TestPushHandler_ValidationNormalises(t *testing.T) {
	env := newTestEnv(t, testLimits())
	edge := testNow.Add(10 * time.Minute).UnixMilli()
	s := series1(edge, "__name__", "up", "empty", "", "job", "a", "zone", "")
	s.Exemplars = []promprompb.Exemplar{
		{Labels: []promprompb.Label{{Name: "trace_id", Value: "1"}}, Value: 1, Timestamp: edge},
		{Labels: []promprompb.Label{{Name: "trace_id", Value: "2"}}, Value: 2, Timestamp: edge + 1},
	}
	rec := env.do(t, encodeV1(t, s), ctV1)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	want := series1(edge, "__name__", "up", "job", "a")
	want.Exemplars = s.Exemplars[:1]
	equalSeries(t, protoFromV1(t, want), env.pusher.series())
}

// TestPushHandler_UnsortedLabels: series whose labels are not sorted by name (Mimir's continuous test sends
// `__name__, series_id, hash_extra`) are written with their labels sorted, in 1.0 and 2.0.
func TestPushHandler_UnsortedLabels(t *testing.T) {
	now := testNowMs()
	sent := series1(now, "__name__", "mimir_continuous_test_sine_wave_v2", "series_id", "3", "hash_extra", "0")
	want := protoFromV1(t, series1(now, "__name__", "mimir_continuous_test_sine_wave_v2", "hash_extra", "0", "series_id", "3"))
	for name, body := range map[string]struct {
		body []byte
		ct   string
	}{
		"v1": {encodeV1(t, sent), ctV1},
		"v2": {encodeV2(t, &writev2.Request{
			Symbols:    []string{"", "__name__", "mimir_continuous_test_sine_wave_v2", "series_id", "3", "hash_extra", "0"},
			Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2, 3, 4, 5, 6}, Samples: []writev2.Sample{{Value: 1, Timestamp: now}}}},
		}), ctV2},
	} {
		t.Run(name, func(t *testing.T) {
			env := newTestEnv(t, testLimits())
			rec := env.do(t, body.body, body.ct)
			testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
			equalSeries(t, want, env.pusher.series())
		})
	}
}

// TestPushHandler_PartialAcceptance: valid series are written, the answer is 400 with the first error, every
// invalid series is counted under its reason.
func TestPushHandler_PartialAcceptance(t *testing.T) {
	now := testNowMs()
	limits := testLimits()
	limits.MaxLabelNamesPerSeries = 3
	env := newTestEnv(t, limits)
	series := []promprompb.TimeSeries{
		series1(now, "__name__", "up", "job", "a"),
		series1(now, "job", "b"), // first error
		series1(now, "__name__", "up", "job", "c"),
		series1(now, "__name__", "up", "a", "1", "b", "2", "c", "3"),
		series1(now, "job", "d"),
		{Labels: []promprompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "e"}}, Samples: []promprompb.Sample{{Timestamp: now}, {Timestamp: now + 1}}},
	}
	rec := env.do(t, encodeV1(t, series...), ctV1)
	testutil.Equals(t, http.StatusBadRequest, rec.Code)
	testutil.Equals(t, `received series has no metric name, series: '{job="b"}' (err-mimir-missing-metric-name)`+"\n", rec.Body.String())
	equalSeries(t, protoFromV1(t, series[0], series[2], series[5]), env.pusher.series())
	testutil.Equals(t, 2.0, discardedValue(t, env.reg, "team-a", ReasonMissingMetricName))
	testutil.Equals(t, 1.0, discardedValue(t, env.reg, "team-a", ReasonMaxLabelNamesPerSeries))
	testutil.Equals(t, 4.0, counterValue(t, env.reg, "strata_distributor_received_samples_total", map[string]string{"tenant": "team-a"}))
}

func TestPushErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		msg  string
	}{
		{err: tenancy.NewIngestionRateLimitedError(1, 2, -1), code: 429},
		{err: errors.Wrap(tenancy.NewSampleOutOfOrderError(5, "up"), "ingester 1"), code: 400},
		{err: status.Error(codes.InvalidArgument, "bad"), code: 400, msg: "bad"},
		{err: errors.Wrap(status.Error(codes.ResourceExhausted, "full"), "ingester 2"), code: 429, msg: "full"},
		{err: status.Error(codes.Unavailable, "down"), code: 503},
		{err: status.Error(codes.Internal, "bug"), code: 503},
		{err: context.DeadlineExceeded, code: 503},
		{err: errors.New("quorum not reached"), code: 503, msg: "push to ingesters: quorum not reached"},
	} {
		code, msg := pushErrorStatus(tc.err)
		testutil.Equals(t, tc.code, code, "%v", tc.err)
		if tc.msg != "" {
			testutil.Equals(t, tc.msg, msg)
		}
	}
}

// checkPushedSeries is the fuzz test's own statement of "valid" (written apart from validate.go, with
// prometheus/common's name rules), applied to what the Pusher receives.
func checkPushedSeries(ts *prompb.TimeSeries, l tenancy.Limits, maxTs int64) error {
	ls := ts.GetLabels()
	if len(ls) == 0 || len(ls) > l.MaxLabelNamesPerSeries {
		return errors.Newf("%d labels", len(ls))
	}
	hasName := false
	for i, lbl := range ls {
		n, v := lbl.GetName(), lbl.GetValue()
		if !model.LegacyValidation.IsValidLabelName(n) || len(n) > l.MaxLabelNameLength || v == "" || len(v) > l.MaxLabelValueLength {
			return errors.Newf("label %q=%q", n, v)
		}
		if i > 0 && n <= ls[i-1].GetName() {
			return errors.Newf("label %q after %q", n, ls[i-1].GetName())
		}
		if n == "__name__" {
			if !model.LegacyValidation.IsValidMetricName(v) {
				return errors.Newf("metric name %q", v)
			}
			hasName = true
		}
	}
	if !hasName {
		return errors.New("no metric name")
	}
	for _, s := range ts.GetSamples() {
		if s.GetTimestamp() > maxTs {
			return errors.Newf("sample at %d", s.GetTimestamp())
		}
	}
	for _, h := range ts.GetHistograms() {
		if h.GetTimestamp() > maxTs {
			return errors.Newf("histogram at %d", h.GetTimestamp())
		}
	}
	for _, e := range ts.GetExemplars() {
		if e.GetTimestamp() > maxTs {
			return errors.Newf("exemplar at %d", e.GetTimestamp())
		}
	}
	// What the ring client will do with it: it must marshal (valid UTF-8 everywhere).
	if _, err := proto.Marshal(ts); err != nil {
		return errors.Wrap(err, "marshal")
	}
	return nil
}

// FuzzDecodeValidate drives the whole handler with arbitrary bodies: it never panics, answers with an allowed
// status, and the Pusher only ever receives valid series.
func FuzzDecodeValidate(f *testing.F) {
	now := testNowMs()
	raw := func(b []byte, err error) []byte {
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	v1 := raw(gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: append(richSeriesV1(),
		series1(now, "__name__", "up", "job", "a"),
		series1(now, "job", "a"),
		series1(now, "__name__", "up", "b", "1", "a", "2"),
		series1(now+int64(time.Hour/time.Millisecond), "__name__", "up"),
	)}))
	v2 := raw(richRequestV2().Marshal())
	for _, seed := range []struct {
		v2, compress bool
		body         []byte
	}{
		{false, true, v1},
		{true, true, v2},
		{false, false, snappy.Encode(nil, v1)},
		{true, false, snappy.Encode(nil, v2)},
		{false, true, v1[:len(v1)/2]},
		{true, true, v2[:len(v2)-1]},
		{false, true, []byte("garbage")},
		{true, true, []byte{0x22, 0x02, 0x08, 0x01}},
		{false, false, []byte("\xff\xff\xff\xff not snappy")},
		{false, false, snappy.Encode(nil, []byte{0x0a, 0x80})},
		{false, true, nil},
		{true, true, []byte{0x2a, 0x04, 0x0a, 0x02, 0x07, 0x07}},              // label refs out of range
		{false, true, []byte{0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28}}, // invalid UTF-8 label name
	} {
		f.Add(seed.v2, seed.compress, seed.body)
	}

	limits := testLimits()
	limits.MaxLabelNamesPerSeries = 8
	limits.MaxLabelNameLength = 32
	limits.MaxLabelValueLength = 64
	maxTs := testNow.Add(time.Duration(limits.CreationGracePeriod)).UnixMilli()
	// The answers the handler may give to a POST with a valid tenant.
	allowedStatuses := map[int]bool{204: true, 400: true, 413: true, 415: true, 429: true, 503: true}

	f.Fuzz(func(t *testing.T, isV2, compress bool, body []byte) {
		env := newTestEnv(t, limits)
		var bad []string
		env.pusher.check = func(req *storepb.WriteRequest) {
			for _, ts := range req.Timeseries {
				if err := checkPushedSeries(ts, limits, maxTs); err != nil {
					bad = append(bad, err.Error())
				}
			}
		}
		if compress {
			body = snappy.Encode(nil, body)
		}
		ct := ctV1
		if isV2 {
			ct = ctV2
		}
		rec := env.do(t, body, ct)
		if !allowedStatuses[rec.Code] {
			t.Fatalf("status %d not allowed: %s", rec.Code, rec.Body.String())
		}
		if len(bad) > 0 {
			t.Fatalf("pusher received invalid series: %v", bad)
		}
	})
}

// benchSeries and benchLabels are the shape of the benchmark's request: Prometheus's default
// max_samples_per_send is 2000, and 15 labels is a typical Kubernetes series.
const benchSeries, benchLabels = 2000, 15

// benchRequests returns the benchmark's request, as 1.0 series and as a 2.0 request: realistic label names and
// values (a few metric names, many distinct pods and instances), one float sample per series.
func benchRequests() ([]promprompb.TimeSeries, *writev2.Request) {
	now := testNowMs()
	names := []string{"__name__", "cluster", "container", "endpoint", "instance", "job", "namespace", "node", "pod", "prometheus", "region", "service", "team", "uid", "zone"}
	var v1 []promprompb.TimeSeries
	st := writev2.NewSymbolTable()
	v2 := &writev2.Request{}
	for i := range benchSeries {
		s := promprompb.TimeSeries{Samples: []promprompb.Sample{{Value: float64(i), Timestamp: now}}}
		var refs []uint32
		for j := range benchLabels {
			var v string
			switch j {
			case 0:
				v = "container_memory_working_set_bytes_" + strconv.Itoa(i%50)
			case 4:
				v = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":9100"
			case 8:
				v = "api-server-7d9f8b6c5-" + strconv.Itoa(i)
			case 13:
				v = fmt.Sprintf("%08x-1f2e-4d3c-9b8a-%012x", i, i*7919)
			default:
				v = names[j] + "-value-" + strconv.Itoa(i%(7+j))
			}
			s.Labels = append(s.Labels, promprompb.Label{Name: names[j], Value: v})
			refs = append(refs, st.Symbolize(names[j]), st.Symbolize(v))
		}
		v1 = append(v1, s)
		v2.Timeseries = append(v2.Timeseries, writev2.TimeSeries{LabelsRefs: refs, Samples: []writev2.Sample{{Value: float64(i), Timestamp: now}}})
	}
	v2.Symbols = st.Symbols()
	return v1, v2
}

// BenchmarkPushHandler measures the handler (decompress, decode, validate, rate limit, hand over to a no-op
// Pusher) on a realistic remote write request of 2000 series × 15 labels, one sample each.
func BenchmarkPushHandler(b *testing.B) {
	v1Series, v2Req := benchRequests()

	for _, bc := range []struct {
		name   string
		ct     string
		body   []byte
		pusher Pusher
	}{
		{"v1", ctV1, encodeV1(b, v1Series...), nopPusher{}},
		{"v2", ctV2, encodeV2(b, v2Req), nopPusher{}},
		// As a distributor of remote ingesters: the request released once sent (its memory reused), the labels of
		// the series known valid not decoded (labels: decoded all the same, as before SkipLabels).
		{"v1-frames", ctV1, encodeV1(b, v1Series...), nopFramingPusher{takesRuns: true}},
		{"v1-frames-labels", ctV1, encodeV1(b, v1Series...), nopFramingPusher{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			limits := testLimits()
			limits.IngestionRate = math.MaxFloat64
			overrides := tenancy.NewOverrides(limits, nil)
			clock := storetest.NewClock(testNow)
			h := NewPushHandler(NewDistributor(DefaultPushConfig(), overrides, bc.pusher, log.NewNopLogger(), prometheus.NewRegistry(), WithClock(clock.Now)))
			ctx := tenancy.WithTenants(context.Background(), []string{"team-a"})
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/push", bytes.NewReader(bc.body))
				req.Header.Set("Content-Type", bc.ct)
				req.Header.Set("Content-Encoding", "snappy")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusNoContent {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchSeries, "ns/sample")
		})
	}
}

type nopPusher struct{}

func (nopPusher) Push(context.Context, string, *storepb.WriteRequest) error { return nil }

// nopFramingPusher is a FramingPusher that sends nothing and releases at once; takesRuns: a runLabelsPusher.
type nopFramingPusher struct{ takesRuns bool }

func (nopFramingPusher) Push(context.Context, string, *storepb.WriteRequest) error { return nil }
func (nopFramingPusher) PushRelease(_ context.Context, _ string, _ *storepb.WriteRequest, release func()) error {
	release()
	return nil
}
func (nopFramingPusher) PushFrames(_ context.Context, _ string, _ *storepb.WriteRequest, _, _ [][]byte, _ []byte, release func()) error {
	release()
	return nil
}
func (p nopFramingPusher) takesRunLabels() bool { return p.takesRuns }

// TestPushHandler_Concurrent: requests of several goroutines share the handler's pools and limiter (run with
// -race); each is answered as if alone.
func TestPushHandler_Concurrent(t *testing.T) {
	env := newTestEnv(t, testLimits())
	v1 := encodeV1(t, richSeriesV1()...)
	v2 := encodeV2(t, richRequestV2())
	bad := encodeV1(t, series1(testNowMs(), "job", "x"))
	want := protoFromV1(t, richSeriesV1()...)

	var wg sync.WaitGroup
	codes := make(chan int, 8*30)
	for g := range 8 {
		wg.Go(func() {
			for i := range 30 {
				switch (g + i) % 3 {
				case 0:
					codes <- env.do(t, v1, ctV1).Code
				case 1:
					codes <- env.do(t, v2, ctV2).Code
				default:
					codes <- -env.do(t, bad, ctV1).Code
				}
			}
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c < 0 {
			testutil.Equals(t, -http.StatusBadRequest, c)
			continue
		}
		testutil.Equals(t, http.StatusNoContent, c)
	}
	got := env.pusher.series()
	testutil.Equals(t, 160*len(want), len(got))
	for i := 0; i < len(got); i += len(want) {
		equalSeries(t, want, got[i:i+len(want)])
	}
}

// framingPusher is a fakePusher that also takes frames (a FramingPusher); it records, per call, each forwarded
// series' frame decoded back (nil without one) and calls release at once.
type framingPusher struct {
	fakePusher
	frames [][]*prompb.TimeSeries // per PushFrames call; nil: PushRelease was called
	// compressed: per PushFrames call, the request as received it was handed (nil: none).
	compressed [][]byte
}

func (p *framingPusher) PushRelease(ctx context.Context, tenant string, req *storepb.WriteRequest, release func()) error {
	defer release()
	p.mu.Lock()
	p.frames = append(p.frames, nil)
	p.mu.Unlock()
	return p.Push(ctx, tenant, req)
}

func (p *framingPusher) PushFrames(ctx context.Context, tenant string, req *storepb.WriteRequest, frames, _ [][]byte, compressed []byte, release func()) error {
	defer release()
	p.mu.Lock()
	p.compressed = append(p.compressed, bytes.Clone(compressed)) // valid until release
	p.mu.Unlock()
	decoded := make([]*prompb.TimeSeries, len(frames))
	for i, f := range frames {
		if f == nil {
			continue
		}
		one, err := remotewrite.DecodeV1(f, nil)
		if err != nil || len(one) != 1 {
			return errors.Newf("frame %d: %v", i, err)
		}
		decoded[i] = one[0]
	}
	p.mu.Lock()
	p.frames = append(p.frames, decoded)
	p.mu.Unlock()
	return p.Push(ctx, tenant, req)
}

// TestPushForwardsUnchangedSeriesAsReceived: a series validation leaves as it came is handed on with its bytes as
// received (which decode into it); one normalising changed (labels sorted, an empty value dropped) is not, nor any
// series of a tenant whose HA replica label is removed; refused series take their frame with them.
func TestPushForwardsUnchangedSeriesAsReceived(t *testing.T) {
	for _, ha := range []bool{false, true} {
		t.Run(fmt.Sprintf("ha=%v", ha), func(t *testing.T) {
			p := &framingPusher{}
			l := testLimits()
			l.AcceptHASamples = ha
			overrides := tenancy.NewOverrides(l, &fakeTenantLimits{})
			h := NewPushHandler(NewDistributor(DefaultPushConfig(), overrides, p, log.NewNopLogger(), prometheus.NewRegistry(), WithClock(storetest.NewClock(testNow).Now)))
			env := &testEnv{handler: tenancy.DefaultConfig().HTTPMiddleware(false)(h)}
			body := encodeV1(t,
				series1(testNow.UnixMilli(), "__name__", "a", "job", "x"),
				series1(testNow.UnixMilli(), "__name__", "bad-name"),                 // refused
				series1(testNow.UnixMilli(), "job", "y", "__name__", "b"),            // sorted by validation
				series1(testNow.UnixMilli(), "__name__", "c", "empty", "", "z", "1"), // empty value dropped
				series1(testNow.UnixMilli(), "__name__", "d"),
			)
			rec := env.do(t, body, ctV1)
			testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			testutil.Equals(t, 1, len(p.frames))
			sent := p.series()
			testutil.Equals(t, 4, len(sent))
			if ha {
				testutil.Assert(t, p.frames[0] == nil, "frames handed on for an HA tenant")
				return
			}
			got := p.frames[0]
			testutil.Equals(t, 4, len(got))
			for i, wantFrame := range []bool{true, false, false, true} {
				testutil.Equals(t, wantFrame, got[i] != nil, "series %d (%v)", i, sent[i])
				if got[i] != nil {
					testutil.Assert(t, proto.Equal(sent[i], got[i]), "frame %d decodes to %v, series is %v", i, got[i], sent[i])
				}
			}
		})
	}
}

// TestPushForwardsUnchangedRequestCompressed: the request as received is handed on (to be forwarded as is,
// RemoteWriteCompressed) exactly when every series of it passes validation as it came and it has no metadata:
// not when a series is refused, sorted, has an empty value or a future exemplar dropped, or has no sample, nor
// with metadata, nor for an HA tenant (the replica label is removed), nor for 2.0.
func TestPushForwardsUnchangedRequestCompressed(t *testing.T) {
	now := testNow.UnixMilli()
	ok := series1(now, "__name__", "a", "job", "x")
	future := series1(now, "__name__", "f")
	future.Exemplars = []promprompb.Exemplar{{Labels: []promprompb.Label{{Name: "trace_id", Value: "1"}}, Value: 1, Timestamp: now + time.Hour.Milliseconds()}}
	encodeMeta := func(series ...promprompb.TimeSeries) []byte {
		b, err := gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: series, Metadata: []promprompb.MetricMetadata{
			{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "a", Help: "help"}}})
		testutil.Ok(t, err)
		return snappy.Encode(nil, b)
	}
	for _, tc := range []struct {
		name       string
		body       []byte
		ct         string
		ha         bool
		compressed bool
	}{
		{name: "unchanged", body: encodeV1(t, ok, series1(now, "__name__", "b")), compressed: true},
		{name: "a series refused", body: encodeV1(t, ok, series1(now, "__name__", "bad-name"))},
		{name: "a series sorted", body: encodeV1(t, ok, series1(now, "job", "y", "__name__", "b"))},
		{name: "an empty value", body: encodeV1(t, ok, series1(now, "__name__", "c", "empty", "", "z", "1"))},
		{name: "a future exemplar", body: encodeV1(t, ok, future)},
		{name: "a series without samples", body: encodeV1(t, ok, promprompb.TimeSeries{Labels: []promprompb.Label{{Name: "__name__", Value: "e"}}})},
		{name: "metadata", body: encodeMeta(ok)},
		{name: "HA tenant", body: encodeV1(t, ok), ha: true},
		{name: "2.0", body: encodeV2(t, richRequestV2()), ct: ctV2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &framingPusher{}
			l := testLimits()
			l.AcceptHASamples = tc.ha
			overrides := tenancy.NewOverrides(l, &fakeTenantLimits{})
			h := NewPushHandler(NewDistributor(DefaultPushConfig(), overrides, p, log.NewNopLogger(), prometheus.NewRegistry(), WithClock(storetest.NewClock(testNow).Now)))
			env := &testEnv{handler: tenancy.DefaultConfig().HTTPMiddleware(false)(h)}
			ct := tc.ct
			if ct == "" {
				ct = ctV1
			}
			rec := env.do(t, tc.body, ct)
			testutil.Assert(t, rec.Code < 500, "status %d: %s", rec.Code, rec.Body.String())
			var got []byte
			for _, c := range p.compressed {
				if c != nil {
					got = c
				}
			}
			testutil.Equals(t, tc.compressed, got != nil)
			if tc.compressed {
				testutil.Equals(t, tc.body, got)
			}
		})
	}
}
