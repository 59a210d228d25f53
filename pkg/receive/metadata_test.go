package receive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	gogoproto "github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	promprompb "github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

func md(typ prompb.MetricMetadata_MetricType, name, help, unit string) *prompb.MetricMetadata {
	return &prompb.MetricMetadata{Type: typ, MetricFamilyName: name, Help: help, Unit: unit}
}

func TestDecodeMetadataV1(t *testing.T) {
	encode := func(r *promprompb.WriteRequest) []byte {
		b, err := gogoproto.Marshal(r)
		testutil.Ok(t, err)
		return b
	}
	for _, tc := range []struct {
		name    string
		body    []byte
		want    []*prompb.MetricMetadata
		wantErr string
	}{
		{name: "no metadata", body: encode(&promprompb.WriteRequest{Timeseries: []promprompb.TimeSeries{series1(1, "__name__", "up")}})},
		{
			name: "metadata only, as Prometheus sends it",
			body: encode(&promprompb.WriteRequest{Metadata: []promprompb.MetricMetadata{
				{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests."},
				{Type: promprompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "latency_seconds", Help: "Latency.", Unit: "seconds"},
			}}),
			want: []*prompb.MetricMetadata{
				md(prompb.MetricMetadata_COUNTER, "http_requests_total", "Requests.", ""),
				md(prompb.MetricMetadata_HISTOGRAM, "latency_seconds", "Latency.", "seconds"),
			},
		},
		{
			name: "metadata beside series",
			body: encode(&promprompb.WriteRequest{
				Timeseries: []promprompb.TimeSeries{series1(1, "__name__", "up")},
				Metadata:   []promprompb.MetricMetadata{{Type: promprompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "Up."}},
			}),
			want: []*prompb.MetricMetadata{md(prompb.MetricMetadata_GAUGE, "up", "Up.", "")},
		},
		{
			name: "nameless entries are returned once, empty, for validation to refuse",
			body: encode(&promprompb.WriteRequest{Metadata: []promprompb.MetricMetadata{
				{Type: promprompb.MetricMetadata_COUNTER, Help: "no name"}, {}, {Type: promprompb.MetricMetadata_GAUGE, MetricFamilyName: "g", Help: "G."}, {},
			}}),
			want: []*prompb.MetricMetadata{{}, md(prompb.MetricMetadata_GAUGE, "g", "G.", "")},
		},
		// Field 3 (metadata), length 3: field 4 (help), length 1, byte 0xff.
		{name: "help not UTF-8", body: []byte{0x1a, 0x03, 0x22, 0x01, 0xff}, wantErr: "not valid UTF-8"},
		{name: "truncated request", body: []byte{0x1a, 0x05, 0x22, 0x01}, wantErr: "unexpected EOF"},
		{name: "truncated help in metadata", body: []byte{0x1a, 0x02, 0x22, 0x05}, wantErr: "metadata 0: decode metadata: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeMetadata(writeV1, tc.body)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, len(tc.want), len(got))
			for i := range tc.want {
				testutil.Equals(t, tc.want[i].String(), got[i].String())
			}
		})
	}
}

func TestDecodeMetadataV2(t *testing.T) {
	syms := []string{"", "__name__", "req_total", "Requests.", "lat_seconds_bucket", "le", "1", "lat_seconds_count", "Latency.", "seconds", "rpc_seconds_sum", "RPCs.", "plain", "job"}
	counter := writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: 3}
	hist := writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: 8, UnitRef: 9}
	summary := writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_SUMMARY, HelpRef: 11, UnitRef: 9}
	sample := []writev2.Sample{{Value: 1, Timestamp: 1}}
	for _, tc := range []struct {
		name    string
		req     *writev2.Request
		want    []*prompb.MetricMetadata
		wantErr string
	}{
		{
			name: "no metadata",
			req:  &writev2.Request{Symbols: syms, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 12}, Samples: sample}}},
		},
		{
			name: "per-series metadata, families of classic histograms and summaries, duplicates once",
			req: &writev2.Request{Symbols: syms, Timeseries: []writev2.TimeSeries{
				{LabelsRefs: []uint32{1, 2, 13, 12}, Samples: sample, Metadata: counter},
				{LabelsRefs: []uint32{1, 2, 13, 2}, Samples: sample, Metadata: counter},
				{LabelsRefs: []uint32{1, 4, 5, 6}, Samples: sample, Metadata: hist},
				{LabelsRefs: []uint32{1, 7}, Samples: sample, Metadata: hist},
				{LabelsRefs: []uint32{1, 10}, Samples: sample, Metadata: summary},
				{LabelsRefs: []uint32{1, 12}, Samples: sample}, // no metadata
			}},
			want: []*prompb.MetricMetadata{
				md(prompb.MetricMetadata_COUNTER, "req_total", "Requests.", ""),
				md(prompb.MetricMetadata_HISTOGRAM, "lat_seconds", "Latency.", "seconds"),
				md(prompb.MetricMetadata_SUMMARY, "rpc_seconds", "RPCs.", "seconds"),
			},
		},
		{
			name: "symbols after the series",
			req:  &writev2.Request{Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Samples: sample, Metadata: counter}}, Symbols: syms},
			want: []*prompb.MetricMetadata{md(prompb.MetricMetadata_COUNTER, "req_total", "Requests.", "")},
		},
		{
			name:    "help reference out of range",
			req:     &writev2.Request{Symbols: syms, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Samples: sample, Metadata: writev2.Metadata{Type: 1, HelpRef: 99}}}},
			wantErr: "out of range",
		},
		{
			name:    "label reference out of range",
			req:     &writev2.Request{Symbols: syms, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 99}, Samples: sample, Metadata: counter}}},
			wantErr: "out of range",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.req.Marshal()
			testutil.Ok(t, err)
			// As the handler passes it: a window of a larger pooled buffer.
			b = append(b, make([]byte, 64)...)[:len(b)]
			got, err := decodeMetadata(writeV2, b)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, len(tc.want), len(got), "%v", got)
			for i := range tc.want {
				testutil.Equals(t, tc.want[i].String(), got[i].String())
			}
		})
	}
}

func TestValidateMetadata(t *testing.T) {
	l := tenancy.DefaultLimits()
	l.MaxMetadataLength = 10
	for _, tc := range []struct {
		name       string
		in         *prompb.MetricMetadata
		wantReason string
		wantMsg    string
		wantHelp   string
	}{
		{name: "valid", in: md(prompb.MetricMetadata_GAUGE, "up", "Up.", "s"), wantHelp: "Up."},
		{name: "help truncated to max_metadata_length", in: md(prompb.MetricMetadata_GAUGE, "up", "0123456789abc", ""), wantHelp: "0123456789"},
		{name: "help truncated at a UTF-8 boundary", in: md(prompb.MetricMetadata_GAUGE, "up", "012345678é", ""), wantHelp: "012345678"},
		{name: "missing name", in: md(prompb.MetricMetadata_GAUGE, "", "", ""), wantReason: reasonMetadataMissingName, wantMsg: "err-mimir-metadata-missing-metric-name"},
		{name: "invalid name", in: md(prompb.MetricMetadata_GAUGE, "1up", "", ""), wantReason: reasonMetadataNameInvalid, wantMsg: "invalid metric name"},
		{name: "name too long", in: md(prompb.MetricMetadata_GAUGE, "abcdefghijk", "", ""), wantReason: reasonMetadataNameTooLong, wantMsg: "max_metadata_length"},
		{name: "unit too long", in: md(prompb.MetricMetadata_GAUGE, "up", "", "secondsxxxx"), wantReason: reasonMetadataUnitTooLong, wantMsg: "err-mimir-unit-too-long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reasons []string
			kept, err := validateMetadata(&l, []*prompb.MetricMetadata{tc.in}, func(r string) { reasons = append(reasons, r) })
			if tc.wantReason != "" {
				testutil.Equals(t, 0, len(kept))
				testutil.Equals(t, []string{tc.wantReason}, reasons)
				testutil.Assert(t, err != nil && err.Status == http.StatusBadRequest && strings.Contains(err.Msg, tc.wantMsg), "got %v", err)
				return
			}
			testutil.Assert(t, err == nil, "unexpected %v", err)
			testutil.Equals(t, 1, len(kept))
			testutil.Equals(t, tc.wantHelp, kept[0].Help)
		})
	}
}

// TestPushMetadata: the handler passes the metadata of 1.0 and 2.0 requests to the pusher, metadata alone too,
// and answers 400 for invalid metadata while passing the valid entries on.
func TestPushMetadata(t *testing.T) {
	env := newTestEnv(t, testLimits())
	b, err := gogoproto.Marshal(&promprompb.WriteRequest{Metadata: []promprompb.MetricMetadata{
		{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "a_total", Help: "A."},
		{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "", Help: "nameless"},
		{Type: promprompb.MetricMetadata_COUNTER, MetricFamilyName: "a_total", Help: "A."}, // sent once
	}})
	testutil.Ok(t, err)
	rec := env.do(t, snappy.Encode(nil, b), ctV1)
	testutil.Equals(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	testutil.Assert(t, strings.Contains(rec.Body.String(), "err-mimir-metadata-missing-metric-name"), rec.Body.String())

	rec = env.do(t, encodeV2(t, &writev2.Request{Symbols: []string{"", "__name__", "b_total", "B."}, Timeseries: []writev2.TimeSeries{{
		LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: testNowMs()}},
		Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: 3},
	}}}), ctV2)
	testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())

	testutil.Equals(t, 2, env.pusher.calls())
	testutil.Equals(t, md(prompb.MetricMetadata_COUNTER, "a_total", "A.", "").String(), env.pusher.reqs[0].Metadata[0].String())
	testutil.Equals(t, 1, len(env.pusher.reqs[0].Metadata))
	testutil.Equals(t, md(prompb.MetricMetadata_COUNTER, "b_total", "B.", "").String(), env.pusher.reqs[1].Metadata[0].String())
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(NewDiscardedMetadata(env.reg).c.WithLabelValues("team-a", reasonMetadataMissingName)))
}

// TestPushMetadataRateLimited: metadata counts against ingestion_rate (Mimir: samples, exemplars and metadata);
// refused metadata is counted as discarded for rate_limited.
func TestPushMetadataRateLimited(t *testing.T) {
	l := testLimits()
	l.IngestionRate, l.IngestionBurstSize = 1, 2
	env := newTestEnv(t, l)
	b, err := gogoproto.Marshal(&promprompb.WriteRequest{Metadata: []promprompb.MetricMetadata{
		{Type: promprompb.MetricMetadata_GAUGE, MetricFamilyName: "a"}, {Type: promprompb.MetricMetadata_GAUGE, MetricFamilyName: "b"},
		{Type: promprompb.MetricMetadata_GAUGE, MetricFamilyName: "c"},
	}})
	testutil.Ok(t, err)
	rec := env.do(t, snappy.Encode(nil, b), ctV1)
	testutil.Equals(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
	testutil.Equals(t, 0, env.pusher.calls())
	testutil.Equals(t, 3.0, promtestutil.ToFloat64(NewDiscardedMetadata(env.reg).c.WithLabelValues("team-a", ReasonRateLimited)))
}

// readMeta returns the metadata the ingester serves to tenant, as family -> "type|help|unit" entries.
func readMeta(t *testing.T, ing *Ingester, tenant, metric string, limit int32) map[string][]string {
	t.Helper()
	res, err := ing.ReadMetadata(tenancy.WithTenants(context.Background(), []string{tenant}), &metadatapb.MetricMetadataRequest{Metric: metric, Limit: limit})
	testutil.Ok(t, err)
	return metaStrings(res)
}

func metaStrings(res *metadatapb.MetricMetadata) map[string][]string {
	out := map[string][]string{}
	for name, e := range res.GetMetadata() {
		for _, m := range e.GetMetas() {
			out[name] = append(out[name], m.Type+"|"+m.Help+"|"+m.Unit)
		}
		sort.Strings(out[name])
	}
	return out
}

func TestIngesterMetadata(t *testing.T) {
	clock := storetest.NewClock(testNow)
	limits := fixedLimits{"limited": func() *tenancy.Limits {
		l := tenancy.DefaultLimits()
		l.MaxGlobalMetadataPerUser, l.MaxGlobalMetadataPerMetric = 2, 2
		return &l
	}()}
	reg := prometheus.NewRegistry()
	ing := newTestIngester(t, t.TempDir(), limits, reg, WithIngesterClock(clock.Now))
	defer func() { testutil.Ok(t, ing.Close()) }()
	push := func(tenant string, m ...*prompb.MetricMetadata) {
		t.Helper()
		testutil.Ok(t, ing.Push(context.Background(), tenant, &storepb.WriteRequest{Tenant: tenant, Metadata: m}))
	}

	t.Run("metadata only opens no TSDB; tenants are isolated", func(t *testing.T) {
		push("a", md(prompb.MetricMetadata_COUNTER, "x_total", "X.", ""), md(prompb.MetricMetadata_GAUGE, "y", "Y.", "bytes"))
		testutil.Equals(t, 0, len(ing.Tenants()))
		testutil.Equals(t, map[string][]string{"x_total": {"counter|X.|"}, "y": {"gauge|Y.|bytes"}}, readMeta(t, ing, "a", "", 0))
		testutil.Equals(t, map[string][]string{"y": {"gauge|Y.|bytes"}}, readMeta(t, ing, "a", "y", 0))
		testutil.Equals(t, map[string][]string{"x_total": {"counter|X.|"}}, readMeta(t, ing, "a", "", 1))
		testutil.Equals(t, map[string][]string{}, readMeta(t, ing, "b", "", 0))
		testutil.Equals(t, 2.0, promtestutil.ToFloat64(ing.metadata.entries.WithLabelValues("a")))
	})
	t.Run("invalid metadata is dropped: the ingester trusts no caller", func(t *testing.T) {
		push("c", md(prompb.MetricMetadata_GAUGE, "", "", ""), md(prompb.MetricMetadata_GAUGE, "ok", strings.Repeat("h", 2000), strings.Repeat("u", 2000)),
			md(prompb.MetricMetadata_GAUGE, "fine", strings.Repeat("h", 2000), ""))
		got := readMeta(t, ing, "c", "", 0)
		testutil.Equals(t, 1, len(got))
		testutil.Equals(t, "gauge|"+strings.Repeat("h", 1024)+"|", got["fine"][0])
	})
	t.Run("expiry after metadata_retain_period, refreshed by each receipt", func(t *testing.T) {
		push("e", md(prompb.MetricMetadata_GAUGE, "old", "", ""), md(prompb.MetricMetadata_GAUGE, "kept", "", ""))
		clock.Add(6 * time.Minute)
		push("e", md(prompb.MetricMetadata_GAUGE, "kept", "", ""))
		clock.Add(5 * time.Minute)
		testutil.Equals(t, map[string][]string{"kept": {"gauge||"}}, readMeta(t, ing, "e", "", 0))
		ing.metadata.purge()
		ing.metadata.mtx.RLock()
		testutil.Equals(t, 1, len(ing.metadata.tenants["e"].families))
		_, aLeft := ing.metadata.tenants["a"]
		ing.metadata.mtx.RUnlock()
		testutil.Assert(t, !aLeft, "tenant a's expired metadata was not purged")
		testutil.Equals(t, 1.0, promtestutil.ToFloat64(ing.metadata.entries.WithLabelValues("e")))
		testutil.Equals(t, []string{"e"}, gaugeTenants(t, reg, "strata_ingester_memory_metadata"))
		clock.Add(10 * time.Minute)
		testutil.Equals(t, map[string][]string{}, readMeta(t, ing, "e", "", 0))
	})
	t.Run("max_global_metadata_per_user and _per_metric", func(t *testing.T) {
		push("limited", md(prompb.MetricMetadata_GAUGE, "m1", "a", ""), md(prompb.MetricMetadata_GAUGE, "m1", "b", ""),
			md(prompb.MetricMetadata_GAUGE, "m1", "c", ""), md(prompb.MetricMetadata_GAUGE, "m2", "", ""), md(prompb.MetricMetadata_GAUGE, "m3", "", ""))
		testutil.Equals(t, map[string][]string{"m1": {"gauge|a|", "gauge|b|"}, "m2": {"gauge||"}}, readMeta(t, ing, "limited", "", 0))
		d := NewDiscardedMetadata(reg)
		testutil.Equals(t, 1.0, promtestutil.ToFloat64(d.c.WithLabelValues("limited", reasonMetadataPerMetricLimit)))
		testutil.Equals(t, 1.0, promtestutil.ToFloat64(d.c.WithLabelValues("limited", reasonMetadataPerUserLimit)))
		// Expired entries make room again.
		clock.Add(11 * time.Minute)
		push("limited", md(prompb.MetricMetadata_GAUGE, "m3", "", ""))
		testutil.Equals(t, map[string][]string{"m3": {"gauge||"}}, readMeta(t, ing, "limited", "", 0))
	})
}

// TestIngesterMetadataService: the thanos.Metadata gRPC service, behind tenancy's interceptors as in the
// process, refuses a call without a tenant and serves each tenant only its own metadata, however many families.
func TestIngesterMetadataService(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	defer func() { testutil.Ok(t, ing.Close()) }()
	var many []*prompb.MetricMetadata
	for i := 0; i < 2500; i++ {
		many = append(many, md(prompb.MetricMetadata_COUNTER, fmt.Sprintf("m%04d_total", i), "", ""))
	}
	testutil.Ok(t, ing.Push(context.Background(), "a", &storepb.WriteRequest{Tenant: "a", Metadata: many}))

	cfg := tenancy.DefaultConfig()
	srv := grpc.NewServer(grpc.StreamInterceptor(cfg.StreamServerInterceptor(nil)))
	metadatapb.RegisterMetadataServer(srv, ing.MetadataServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Ok(t, err)
	defer func() { _ = conn.Close() }()
	client := metadatapb.NewMetadataClient(conn)

	read := func(ctx context.Context) (map[string]int, int, error) {
		stream, err := client.MetricMetadata(ctx, &metadatapb.MetricMetadataRequest{Limit: -1})
		testutil.Ok(t, err)
		families, msgs := map[string]int{}, 0
		for {
			res, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return families, msgs, nil
				}
				return nil, 0, err
			}
			msgs++
			for name, e := range res.GetMetadata().GetMetadata() {
				families[name] += len(e.GetMetas())
			}
		}
	}
	_, _, err = read(context.Background())
	testutil.Equals(t, codes.Unauthenticated, status.Code(err), "%v", err)

	got, msgs, err := read(tenancy.OutgoingContext(context.Background(), "a"))
	testutil.Ok(t, err)
	testutil.Equals(t, 2500, len(got))
	testutil.Equals(t, 3, msgs) // batches of 1000 families
	got, _, err = read(tenancy.OutgoingContext(context.Background(), "b"))
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(got))
}

// TestRingPusherMetadata: metadata is sharded by tenant and metric family over the ring and replicated like
// series: each family's metadata ends up on exactly replication-factor ingesters, the same for every entry.
func TestRingPusherMetadata(t *testing.T) {
	p, ings := testRing(t, "metadata", 5, false)
	req := &storepb.WriteRequest{Tenant: "t"}
	for i := 0; i < 50; i++ {
		req.Metadata = append(req.Metadata, md(prompb.MetricMetadata_GAUGE, fmt.Sprintf("m%d", i), "one", ""), md(prompb.MetricMetadata_GAUGE, fmt.Sprintf("m%d", i), "two", ""))
	}
	testutil.Ok(t, p.Push(context.Background(), "t", req))
	deadline := time.Now().Add(10 * time.Second)
	for {
		holders := map[string]int{}
		for _, ing := range ings {
			for name, metas := range readMeta(t, ing, "t", "", 0) {
				testutil.Equals(t, []string{"gauge|one|", "gauge|two|"}, metas, name)
				holders[name]++
			}
		}
		testutil.Equals(t, 50, len(holders))
		done := true
		for name, n := range holders {
			testutil.Assert(t, n >= 2 && n <= 3, "family %s on %d ingesters", name, n)
			done = done && n == 3
		}
		if done {
			return
		}
		testutil.Assert(t, time.Now().Before(deadline), "the third replica never got every family")
		time.Sleep(20 * time.Millisecond)
	}
}

// allocatedBy returns the bytes f allocated (the test's goroutines are otherwise idle).
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeMetadataV1Memory: what decoding 1.0 metadata allocates is bounded by the body's size: a body of
// empty entries (as in the 0a 00 attack of issue 10) allocates nothing per entry; named entries cost a bounded
// multiple of their bytes.
func TestDecodeMetadataV1Memory(t *testing.T) {
	empty := bytes.Repeat([]byte{0x1a, 0x00}, 256<<10)
	var md []*prompb.MetricMetadata
	allocated := allocatedBy(func() {
		var err error
		md, err = decodeMetadata(writeV1, empty)
		testutil.Ok(t, err)
	})
	testutil.Equals(t, 1, len(md))
	testutil.Assert(t, allocated < 64<<10, "decoding %d bytes of empty entries allocated %d", len(empty), allocated)

	named := bytes.Repeat([]byte{0x1a, 0x03, 0x12, 0x01, 'a'}, 200<<10)
	allocated = allocatedBy(func() {
		var err error
		md, err = decodeMetadata(writeV1, named)
		testutil.Ok(t, err)
	})
	testutil.Equals(t, 200<<10, len(md))
	testutil.Assert(t, allocated < uint64(25*len(named)), "decoding %d bytes allocated %d", len(named), allocated)
	t.Logf("%d-byte body of the smallest named entries: %d bytes allocated (%.1f× the body)", len(named), allocated, float64(allocated)/float64(len(named)))
}

// TestDecodeMetadataV2Memory: a 2.0 request without metadata costs no allocation; one whose every series
// carries metadata (distinct names, so nothing deduplicates) allocates a bounded multiple of its size.
func TestDecodeMetadataV2Memory(t *testing.T) {
	build := func(n int, withMeta bool) []byte {
		req := &writev2.Request{Symbols: []string{"", "__name__", "Help.", "s"}}
		for i := 0; i < n; i++ {
			req.Symbols = append(req.Symbols, fmt.Sprintf("m%d", i))
			ts := writev2.TimeSeries{LabelsRefs: []uint32{1, uint32(len(req.Symbols) - 1)}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}}
			if withMeta {
				ts.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: 2, UnitRef: 3}
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		b, err := req.Marshal()
		testutil.Ok(t, err)
		return b
	}
	plain := build(10000, false)
	allocs := testing.AllocsPerRun(5, func() {
		md, err := decodeMetadata(writeV2, plain)
		if err != nil || md != nil {
			t.Fatalf("got %v, %v", md, err)
		}
	})
	testutil.Equals(t, 0.0, allocs)

	body := build(20000, true)
	var md []*prompb.MetricMetadata
	allocated := allocatedBy(func() {
		var err error
		md, err = decodeMetadata(writeV2, body)
		testutil.Ok(t, err)
	})
	testutil.Equals(t, 20000, len(md))
	// Each entry costs its message, its strings, and map entries to deduplicate: ~500 bytes for ~35 on the wire
	// (series and symbol).
	testutil.Assert(t, allocated < uint64(30*len(body))+1<<20, "decoding %d bytes allocated %d", len(body), allocated)
	t.Logf("%d-byte body, %d entries: %d bytes allocated (%.1f× the body)", len(body), len(md), allocated, float64(allocated)/float64(len(body)))
}

// gaugeTenants returns the tenant label values of the metric name in reg, sorted.
func gaugeTenants(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	testutil.Ok(t, err)
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
