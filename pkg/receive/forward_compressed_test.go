package receive

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	gogoproto "github.com/gogo/protobuf/proto"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	promprompb "github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// serveTestIngester serves ing over gRPC on loopback: its RemoteWrite, and RemoteWriteCompressed unless old (an
// ingester of a version without it). It returns the address.
func serveTestIngester(t *testing.T, ing *Ingester, old bool, maxDecoded int) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	// As cmd/strata serves them: the tenancy interceptor lets both write methods through to check the tenant
	// themselves.
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(tenancy.DefaultConfig().UnaryServerInterceptor(
		tenancy.GRPCExempt{storepb.WriteableStore_RemoteWrite_FullMethodName, RemoteWriteCompressedFullMethodName})))
	RegisterWriteableStore(srv, ing)
	if !old {
		RegisterCompressedWrites(srv, ing, maxDecoded)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// TestRingPusherCompressedWrites: with every ingester owning every series (replication factor 3 over 3), a
// request the distributor leaves as it came is sent as received (RemoteWriteCompressed) to the ingesters that
// take it, and as a RemoteWrite to one that does not (an older version during a rolling upgrade), which is not
// asked again until compressedRetry has passed; a request validation changed goes as RemoteWrites. Every
// ingester ends up with every series, as sent or as validation made it.
func TestRingPusherCompressedWrites(t *testing.T) {
	r := &fakeRing{}
	var ings []*Ingester
	for i := range 3 {
		ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
		t.Cleanup(func() { _ = ing.Close() })
		ings = append(ings, ing)
		r.instances = append(r.instances, dskitring.InstanceDesc{Id: fmt.Sprintf("ing-%d", i), Addr: serveTestIngester(t, ing, i == 2, 1<<20)})
	}
	p := NewRingPusher(r, 5*time.Second, nil, log.NewNopLogger(), prometheus.NewRegistry())
	t.Cleanup(func() { _ = p.Close() })
	supportClock := storetest.NewClock(testNow)
	p.compressedSupport.now = supportClock.Now
	env := newUsageEnv(t, testLimits(), p)
	// writes waits for the counter of compressed writes of result to reach want (a replica past the quorum
	// may count after Push returned), and fails if it does not, or goes past it.
	writes := func(result string, want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := promtestutil.ToFloat64(p.metrics.compressed.WithLabelValues(result))
			if got >= want {
				testutil.Equals(t, want, got, "compressed writes, %s", result)
				return
			}
			testutil.Assert(t, time.Now().Before(deadline), "compressed writes, %s: %v, want %v", result, got, want)
			time.Sleep(10 * time.Millisecond)
		}
	}
	push := func(series ...promprompb.TimeSeries) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/push", strings.NewReader(string(encodeV1(t, series...))))
		req.Header.Set(tenancy.HeaderOrgID, "t")
		req.Header.Set("Content-Type", ctV1)
		rec := httptest.NewRecorder()
		env.push.ServeHTTP(rec, req)
		testutil.Equals(t, http.StatusNoContent, rec.Code, rec.Body.String())
	}
	// Each ingester has exactly want (series → sample times); the third may get its write after the quorum
	// answered.
	expect := func(want map[string][]int64) {
		t.Helper()
		for i, ing := range ings {
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := readAll(t, ing, "t")
				if fmt.Sprint(got) == fmt.Sprint(want) {
					break
				}
				testutil.Assert(t, time.Now().Before(deadline), "ingester %d has %v, want %v", i, got, want)
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	now := testNow.UnixMilli()
	want := map[string][]int64{}

	push(series1(now, "__name__", "m", "i", "0"), series1(now, "__name__", "m", "i", "1"))
	want[`{__name__="m", i="0", tenant_id="t"}`], want[`{__name__="m", i="1", tenant_id="t"}`] = []int64{now}, []int64{now}
	expect(want)
	writes("sent", 2.0)
	writes("unimplemented", 1.0)

	// The old ingester is not asked again for a while.
	push(series1(now+1, "__name__", "m", "i", "0"))
	want[`{__name__="m", i="0", tenant_id="t"}`] = []int64{now, now + 1}
	expect(want)
	writes("sent", 4.0)
	writes("unimplemented", 1.0)

	// Labels out of order: validation sorts them, and the series goes as a RemoteWrite to each.
	push(series1(now, "i", "2", "__name__", "m"))
	want[`{__name__="m", i="2", tenant_id="t"}`] = []int64{now}
	expect(want)
	writes("sent", 4.0)

	// Past compressedRetry the old ingester is asked again (still old: RemoteWrite again).
	supportClock.Add(compressedRetry + time.Second)
	push(series1(now+2, "__name__", "m", "i", "1"))
	want[`{__name__="m", i="1", tenant_id="t"}`] = []int64{now, now + 2}
	expect(want)
	writes("sent", 6.0)
	writes("unimplemented", 2.0)
}

// TestIngesterRemoteWriteCompressed: the ingester's side of RemoteWriteCompressed, as a client may call it.
// A body appends exactly what the same request sent as a RemoteWrite does; a malformed or hostile one is
// refused with InvalidArgument (Unauthenticated without a tenant) before anything is appended, a body that would
// decompress beyond the limit before it is decompressed.
func TestIngesterRemoteWriteCompressed(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	t.Cleanup(func() { _ = ing.Close() })
	const maxDecoded = 4 << 10
	conn, err := grpc.NewClient(serveTestIngester(t, ing, false, maxDecoded), grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	now := testNow.UnixMilli()
	series := []promprompb.TimeSeries{
		series1(now, "__name__", "up", "job", "a"),
		series1(now, "job", "b", "__name__", "up"), // validation sorts it
		series1(now, "__name__", "bad-name"),       // refused
	}
	raw := func(req *promprompb.WriteRequest) []byte {
		b, err := gogoproto.Marshal(req)
		testutil.Ok(t, err)
		return b
	}
	body := raw(&promprompb.WriteRequest{Timeseries: series})
	withMeta := raw(&promprompb.WriteRequest{Timeseries: series[:1], Metadata: []promprompb.MetricMetadata{{MetricFamilyName: "up", Help: "h"}}})

	for _, tc := range []struct {
		name   string
		tenant string // in the message; gRPC metadata names "c" unless noMD
		noMD   bool
		body   []byte
		code   codes.Code
		msg    string
	}{
		{name: "no tenant", noMD: true, body: snappy.Encode(nil, body), code: codes.Unauthenticated},
		{name: "tenants disagree", tenant: "other", body: snappy.Encode(nil, body), code: codes.InvalidArgument, msg: "does not match"},
		{name: "no body", body: nil, code: codes.InvalidArgument, msg: "without a body"},
		{name: "not snappy", body: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, code: codes.InvalidArgument, msg: "snappy"},
		{name: "bomb", body: snappy.Encode(nil, make([]byte, maxDecoded+1)), code: codes.InvalidArgument, msg: "exceeds the limit"},
		{name: "not a write request", body: snappy.Encode(nil, []byte{0x0a, 0x05, 0x01}), code: codes.InvalidArgument, msg: "decode"},
		{name: "metadata", body: snappy.Encode(nil, withMeta), code: codes.InvalidArgument, msg: "metadata"},
		{name: "ok", tenant: "c", body: snappy.Encode(nil, body), code: codes.InvalidArgument, msg: "bad-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if !tc.noMD {
				ctx = tenancy.OutgoingContext(ctx, "c")
			}
			var msg any = &compressedWrite{tenant: tc.tenant, body: tc.body}
			if tc.body == nil { // no body field at all
				msg = &rawMessage{b: append([]byte{compressedFieldTenant<<3 | 2, 1}, 'c')}
			}
			err := conn.Invoke(ctx, RemoteWriteCompressedFullMethodName, msg, &storepb.WriteResponse{})
			testutil.Equals(t, tc.code, status.Code(err), "%v", err)
			testutil.Assert(t, strings.Contains(status.Convert(err).Message(), tc.msg), "%v", err)
		})
	}
	// The same request as a RemoteWrite, for tenant r: the same series appended.
	_, err = storepb.NewWriteableStoreClient(conn).RemoteWrite(context.Background(), &storepb.WriteRequest{Tenant: "r", Timeseries: protoFromV1(t, series...)})
	testutil.Equals(t, codes.InvalidArgument, status.Code(err), "%v", err)
	want := map[string][]int64{}
	for s, ts := range readAll(t, ing, "r") {
		want[strings.Replace(s, `tenant_id="r"`, `tenant_id="c"`, 1)] = ts
	}
	testutil.Equals(t, 2, len(want))
	testutil.Equals(t, want, readAll(t, ing, "c"))
	testutil.Equals(t, 0, len(readAll(t, ing, "other")))
}

// FuzzCompressedWrite feeds RemoteWriteCompressed's handler arbitrary requests on a real ingester: b as the body
// (snappy-compressed here, so that the decoder sees what a distributor would send) or, with raw, as the whole
// message. Whatever it is, the handler never panics, and no sample beyond now + creation_grace_period reaches a
// head. Run it with
//
//	go test -run '^$' -fuzz '^FuzzCompressedWrite$' -fuzztime 30s ./pkg/receive/
func FuzzCompressedWrite(f *testing.F) {
	now := time.Now()
	nowMs := now.UnixMilli()
	for _, req := range []*storepb.WriteRequest{
		{Timeseries: []*prompb.TimeSeries{ts(series("up", "job", "a"), nowMs-1000, nowMs), ts(series("requests_total", "code", "200"), nowMs)}},
		{Timeseries: []*prompb.TimeSeries{ts(series("up", "job", "a\xffb"), nowMs), ts(series("up"), math.MaxInt64), ts(series("up"), math.MinInt64)}},
		{Timeseries: []*prompb.TimeSeries{ts([]*labelpb.Label{{Name: "job", Value: "x"}, {Name: "__name__", Value: "up"}}, nowMs)}},
	} {
		b, err := req.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "a", false)
		f.Add((&compressedWrite{tenant: "a", body: snappy.Encode(nil, b)}).marshal(), "", true)
	}
	ing := fuzzIngester(f, now)
	srv := &compressedWriteServer{ing: ing, maxDecoded: 1 << 20}

	f.Fuzz(func(t *testing.T, b []byte, tenant string, raw bool) {
		msg := b
		if !raw {
			msg = (&compressedWrite{tenant: tenant, body: snappy.Encode(nil, b)}).marshal()
		}
		dec := func(m any) error { return m.(storepb.InPlaceUnmarshaler).UnmarshalInPlace(msg, func() {}) }
		_, _ = remoteWriteCompressedHandler(srv, context.Background(), dec, nil)
		checkNoFutureSamples(t, ing, nowMs)
	})
}

// marshal returns m's wire bytes.
func (m *compressedWrite) marshal() []byte {
	b := make([]byte, m.SizeVT())
	n, _ := m.MarshalToSizedBufferVT(b)
	return b[len(b)-n:]
}

// TestRemoteWriteCompressedWaitsCompressed: a compressed write is decompressed once it has a push slot, so that
// the writes waiting for one (a replica behind the others) hold only what they were sent; the buffer it is
// decompressed into goes back to the pool once it is appended.
func TestRemoteWriteCompressedWaitsCompressed(t *testing.T) {
	ing := newTestIngester(t, t.TempDir(), nil, prometheus.NewRegistry())
	t.Cleanup(func() { _ = ing.Close() })
	now := testNow.UnixMilli()
	b, err := gogoproto.Marshal(&promprompb.WriteRequest{Timeseries: []promprompb.TimeSeries{series1(now, "__name__", "up", "job", "a")}})
	testutil.Ok(t, err)
	cw := &compressedWrite{tenant: "c", body: snappy.Encode(nil, b)}
	msg := make([]byte, cw.SizeVT())
	n, err := cw.MarshalToSizedBufferVT(msg)
	testutil.Ok(t, err)
	testutil.Equals(t, len(msg), n)
	released := 0
	dec := func(m any) error { return m.(*compressedWrite).UnmarshalInPlace(msg, func() { released++ }) }

	// Every push slot taken: the write waits, as received.
	for range cap(ing.pushSlots) {
		ing.pushSlots <- struct{}{}
	}
	var (
		waitingRaw  int  // the bytes the write held when intercepted, before it waited for a slot
		stillSnappy bool // its body was still compressed then
		intercepted = make(chan struct{})
	)
	done := make(chan error, 1)
	go func() {
		_, err := remoteWriteCompressedHandler(&compressedWriteServer{ing: ing, maxDecoded: 1 << 20}, context.Background(), dec,
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				w := req.(*forwardedWrite)
				waitingRaw, stillSnappy = len(w.raw), w.snappyBody != nil
				close(intercepted)
				return handler(ctx, req)
			})
		done <- err
	}()
	<-intercepted
	testutil.Equals(t, len(msg), waitingRaw) // the message as received: not decompressed
	testutil.Assert(t, stillSnappy)
	select {
	case err := <-done:
		t.Fatalf("written without a push slot: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	testutil.Equals(t, 0, released)
	for range cap(ing.pushSlots) {
		<-ing.pushSlots
	}
	testutil.Ok(t, <-done)
	testutil.Equals(t, 1, released) // the received message, given back once decompressed
	testutil.Equals(t, map[string][]int64{`{__name__="up", job="a", tenant_id="c"}`: {now}}, readAll(t, ing, "c"))
}
