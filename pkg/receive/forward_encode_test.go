package receive

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// randomWrite returns a write of n series (samples, and some with exemplars or native histograms) and m metadata
// entries, with label values long enough at times to need multi-byte length varints.
func randomWrite(rng *rand.Rand, n, m int) *storepb.WriteRequest {
	str := func(max int) string {
		b := make([]byte, rng.Intn(max))
		for i := range b {
			b[i] = byte('a' + rng.Intn(26))
		}
		return string(b)
	}
	req := &storepb.WriteRequest{}
	for i := 0; i < n; i++ {
		s := &prompb.TimeSeries{Labels: []*labelpb.Label{{Name: "__name__", Value: fmt.Sprintf("m%d", i)}}}
		for j := rng.Intn(12); j > 0; j-- {
			s.Labels = append(s.Labels, &labelpb.Label{Name: str(10), Value: str(300)})
		}
		for j := rng.Intn(3); j > 0; j-- {
			s.Samples = append(s.Samples, &prompb.Sample{Timestamp: rng.Int63(), Value: rng.NormFloat64()})
		}
		if rng.Intn(3) == 0 {
			s.Exemplars = append(s.Exemplars, &prompb.Exemplar{
				Labels: []*labelpb.Label{{Name: "trace_id", Value: str(32)}}, Value: rng.Float64(), Timestamp: rng.Int63(),
			})
		}
		if rng.Intn(3) == 0 {
			s.Histograms = append(s.Histograms, &prompb.Histogram{
				Count: &prompb.Histogram_CountInt{CountInt: rng.Uint64()}, Sum: rng.Float64(), Schema: int32(rng.Intn(8)),
				ZeroThreshold: 1e-128, ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: uint64(rng.Intn(10))},
				PositiveSpans: []*prompb.BucketSpan{{Offset: int32(rng.Intn(5)) - 2, Length: 2}}, PositiveDeltas: []int64{rng.Int63n(9) - 4, 3},
				NegativeSpans: []*prompb.BucketSpan{{Offset: 1, Length: 1}}, NegativeDeltas: []int64{-7},
				Timestamp: rng.Int63(), ResetHint: prompb.Histogram_GAUGE,
			})
		}
		req.Timeseries = append(req.Timeseries, s)
	}
	for i := 0; i < m; i++ {
		req.Metadata = append(req.Metadata, &prompb.MetricMetadata{
			Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: fmt.Sprintf("m%d", i), Help: str(200), Unit: str(5),
		})
	}
	return req
}

// randomIdx returns a random ascending subset of 0..n-1 (as DoBatch gives a callback), sometimes all of it.
func randomIdx(rng *rand.Rand, n int) []int {
	idx := []int{}
	all := rng.Intn(3) == 0
	for i := 0; i < n; i++ {
		if all || rng.Intn(2) == 0 {
			idx = append(idx, i)
		}
	}
	return idx
}

// TestEncodedWriteEqualsWriteRequest: the bytes the gRPC codec sends for an encodedWrite are those of the
// *storepb.WriteRequest sub-request it replaces, which UnmarshalVT reads back equal to it, for random writes
// (histograms, exemplars, metadata; no tenant) and random subsets of their items, through a reused scratch; half
// of them with their series copied as the frames of a remote write body they were decoded from.
func TestEncodedWriteEqualsWriteRequest(t *testing.T) {
	codec := encoding.GetCodecV2("proto")
	rng := rand.New(rand.NewSource(1))
	var pool forwardPool
	for iter := 0; iter < 300; iter++ {
		req := randomWrite(rng, rng.Intn(40), rng.Intn(6))
		tenant := []string{"", "t", fmt.Sprintf("tenant-%0200d", iter)}[rng.Intn(3)]
		s := pool.get()
		var frames [][]byte
		if iter%2 == 1 {
			// As a distributor forwards a remote write: the series decoded from a body, sent as their bytes in it.
			body, err := (&prompb.WriteRequest{Timeseries: req.Timeseries}).MarshalVT()
			testutil.Ok(t, err)
			o := remotewrite.Options{KeepFrames: true}
			req.Timeseries, err = remotewrite.DecodeV1(body, &o)
			testutil.Ok(t, err)
			frames = o.Frames()
		}
		testutil.Ok(t, s.encodeOnce(req.Timeseries, req.Metadata, frames))
		for k := 0; k < 4; k++ {
			idx := randomIdx(rng, len(req.Timeseries)+len(req.Metadata))
			want := subRequest(tenant, req.Timeseries, req.Metadata, idx)
			wantBytes, err := want.MarshalVT()
			testutil.Ok(t, err)

			enc := newEncodedWrite(s, len(req.Timeseries), idx, tenant)
			testutil.Equals(t, len(wantBytes), enc.SizeVT())
			data, err := codec.Marshal(enc)
			testutil.Ok(t, err)
			gotBytes := data.Materialize()
			data.Free()
			testutil.Assert(t, bytes.Equal(wantBytes, gotBytes), "iteration %d: bytes differ", iter)

			got := &storepb.WriteRequest{}
			testutil.Ok(t, got.UnmarshalVT(gotBytes))
			testutil.Assert(t, proto.Equal(want, got), "iteration %d:\nwant %v\ngot  %v", iter, want, got)
		}
		pool.put(s)
	}
}

// TestEncodedWriteMarshalsAtTheEnd: like vtprotobuf's MarshalToSizedBufferVT, an encodedWrite fills the end of
// a larger buffer and returns its size, and refuses a buffer too small.
func TestEncodedWriteMarshalsAtTheEnd(t *testing.T) {
	req := randomWrite(rand.New(rand.NewSource(2)), 5, 1)
	var s forwardScratch
	testutil.Ok(t, s.encodeOnce(req.Timeseries, req.Metadata, nil))
	enc := newEncodedWrite(&s, 5, []int{0, 2, 3, 5}, "t")
	want, err := subRequest("t", req.Timeseries, req.Metadata, []int{0, 2, 3, 5}).MarshalVT()
	testutil.Ok(t, err)

	buf := make([]byte, enc.SizeVT()+7)
	n, err := enc.MarshalToSizedBufferVT(buf)
	testutil.Ok(t, err)
	testutil.Equals(t, len(want), n)
	testutil.Equals(t, want, buf[len(buf)-n:])
	_, err = enc.MarshalToSizedBufferVT(buf[:n-1])
	testutil.NotOk(t, err)
	testutil.NotOk(t, enc.UnmarshalVT(want))
}

// TestForwardPoolDropsLargeScratch: the scratch of a huge request is not kept by the pool.
func TestForwardPoolDropsLargeScratch(t *testing.T) {
	var pool forwardPool
	s := pool.get()
	s.buf = make([]byte, 0, forwardScratchMaxBytes+1)
	pool.put(s)
	for i := 0; i < 10; i++ { // sync.Pool may drop anything, but must never return the large one
		testutil.Assert(t, cap(pool.get().buf) <= forwardScratchMaxBytes, "large buffer pooled")
	}
}

// fakeRing places key k on instances k%n, k%n+1 and k%n+2 (of n), tolerating one failure.
type fakeRing struct{ instances []dskitring.InstanceDesc }

func (r *fakeRing) Get(key uint32, _ dskitring.Operation, buf []dskitring.InstanceDesc, _, _ []string) (dskitring.ReplicationSet, error) {
	n := len(r.instances)
	for j := 0; j < 3; j++ {
		buf = append(buf, r.instances[(int(key)+j)%n])
	}
	return dskitring.ReplicationSet{Instances: buf, MaxErrors: 1}, nil
}
func (r *fakeRing) ReplicationFactor() int { return 3 }
func (r *fakeRing) InstancesCount() int    { return len(r.instances) }
func (r *fakeRing) GetAllHealthy(dskitring.Operation) (dskitring.ReplicationSet, error) {
	return dskitring.ReplicationSet{Instances: r.instances}, nil
}

// ShuffleShard is never called: the pusher under test has no shuffle sharding.
func (r *fakeRing) ShuffleShard(string, int) dskitring.ReadRing { return nil }

// owned returns the items of a write of n items (keys) that fakeRing places on instance inst.
func (r *fakeRing) owned(keys []uint32, inst int) []int {
	var idx []int
	for i, k := range keys {
		for j := 0; j < 3; j++ {
			if (int(k)+j)%len(r.instances) == inst {
				idx = append(idx, i)
			}
		}
	}
	return idx
}

// recordingIngester is a remote ingester that keeps the writes it receives, by tenant.
type recordingIngester struct {
	storepb.UnimplementedWriteableStoreServer
	mtx  sync.Mutex
	got  map[string]*storepb.WriteRequest
	tens map[string]string
}

func (r *recordingIngester) RemoteWrite(ctx context.Context, req *storepb.WriteRequest) (*storepb.WriteResponse, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	r.got[req.GetTenant()] = req
	r.tens[req.GetTenant()] = incomingOrgID(ctx)
	return &storepb.WriteResponse{}, nil
}

// TestRingPusherRemoteEncoded: RingPusher's writes to remote ingesters over gRPC carry, for each ingester,
// exactly the sub-request of the items the ring gives it; a replica still sending after Push returned (its
// send held back before marshalling, while another write reuses the pool and the caller its request) sends
// its own write's bytes.
func TestRingPusherRemoteEncoded(t *testing.T) {
	const n = 4
	r := &fakeRing{}
	var ings []*recordingIngester
	for i := 0; i < n; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		testutil.Ok(t, err)
		srv := grpc.NewServer()
		ing := &recordingIngester{got: map[string]*storepb.WriteRequest{}, tens: map[string]string{}}
		storepb.RegisterWriteableStoreServer(srv, ing)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		ings = append(ings, ing)
		r.instances = append(r.instances, dskitring.InstanceDesc{Id: fmt.Sprintf("ing-%d", i), Addr: lis.Addr().String()})
	}
	p := NewRingPusher(r, 5*time.Second, nil, log.NewNopLogger(), prometheus.NewRegistry())
	t.Cleanup(func() { _ = p.Close() })
	// The last ingester's sends wait before they marshal: past the quorum of the others.
	release := make(chan struct{})
	slow, err := grpc.NewClient(r.instances[n-1].Addr, append(store.DialOptions(), grpc.WithUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			<-release
			return invoker(ctx, method, req, reply, cc, opts...)
		}))...)
	testutil.Ok(t, err)
	p.conns[r.instances[n-1].Addr] = slow

	rng := rand.New(rand.NewSource(3))
	reqs := map[string]*storepb.WriteRequest{}
	for _, tenant := range []string{"first", "second"} {
		req := randomWrite(rng, 200, 3)
		reqs[tenant] = proto.Clone(req).(*storepb.WriteRequest)
		// Every series is on three of the four: two fast owners are a quorum for each.
		testutil.Ok(t, p.Push(context.Background(), tenant, req))
		// Once Push returned, the caller may reuse the request: the slow replica sends what was pushed.
		for _, s := range req.Timeseries {
			s.Labels[0].Value, s.Samples = "reused", nil
		}
	}
	close(release)

	for tenant, req := range reqs {
		var keys []uint32
		for _, s := range req.Timeseries {
			keys = append(keys, ShardKey(tenant, s.Labels))
		}
		keys = appendMetadataKeys(keys, tenant, req.Metadata)
		for i, ing := range ings {
			want := subRequest(tenant, req.Timeseries, req.Metadata, r.owned(keys, i))
			deadline := time.Now().Add(5 * time.Second)
			for {
				ing.mtx.Lock()
				got, tens := ing.got[tenant], ing.tens[tenant]
				ing.mtx.Unlock()
				if got != nil {
					testutil.Assert(t, proto.Equal(want, got), "ingester %d, tenant %s: got another write", i, tenant)
					testutil.Equals(t, tenant, tens)
					break
				}
				testutil.Assert(t, time.Now().Before(deadline), "ingester %d did not get tenant %s's write", i, tenant)
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// benchWrite is a remote write as the distributor forwards them: 2000 series of 11 labels, one sample each.
func benchWrite() *storepb.WriteRequest {
	req := &storepb.WriteRequest{}
	for i := 0; i < 2000; i++ {
		s := &prompb.TimeSeries{Labels: []*labelpb.Label{{Name: "__name__", Value: "http_requests_total"}}}
		for j := 0; j < 10; j++ {
			s.Labels = append(s.Labels, &labelpb.Label{Name: fmt.Sprintf("label_%d", j), Value: fmt.Sprintf("value-%d-%d", j, i)})
		}
		s.Samples = []*prompb.Sample{{Timestamp: 1700000000000 + int64(i), Value: float64(i)}}
		req.Timeseries = append(req.Timeseries, s)
	}
	return req
}

// BenchmarkEncodeForIngesters: what the distributor marshals for the three replicas of a write (replication
// factor 3 over three ingesters: each gets every series), through the gRPC codec as Invoke does. "subrequests"
// is the former path (three *storepb.WriteRequest, each sized and marshalled), "encoded" the present one (the
// series encoded once, three copies).
func BenchmarkEncodeForIngesters(b *testing.B) {
	codec := encoding.GetCodecV2("proto")
	req := benchWrite()
	idx := make([]int, len(req.Timeseries))
	for i := range idx {
		idx[i] = i
	}
	b.Run("subrequests", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for r := 0; r < 3; r++ {
				data, err := codec.Marshal(subRequest("tenant", req.Timeseries, req.Metadata, idx))
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		}
	})
	b.Run("encoded", func(b *testing.B) {
		b.ReportAllocs()
		var pool forwardPool
		for i := 0; i < b.N; i++ {
			s := pool.get()
			if err := s.encodeOnce(req.Timeseries, req.Metadata, nil); err != nil {
				b.Fatal(err)
			}
			for r := 0; r < 3; r++ {
				data, err := codec.Marshal(newEncodedWrite(s, len(req.Timeseries), idx, "tenant"))
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
			pool.put(s)
		}
	})
}

// incomingOrgID is the tenant header a gRPC request came with.
func incomingOrgID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(tenancy.MetadataOrgID); len(v) > 0 {
		return v[0]
	}
	return ""
}
