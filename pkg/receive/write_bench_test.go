package receive

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/services"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Allocation benchmarks of the write path (issue 17): the ingester's gRPC write handler and the distributor's
// split. They reach the code only through APIs that optimizations of the write path leave alone (the RemoteWrite
// RPC, RingPusher.Push), so the same file measures the baseline and the optimized code. Run them with
// `make bench-write-allocs`. Each reports allocs/sample, B/sample and ns/sample of the timed part only (the
// requests are built with the timer stopped), next to -benchmem's per-request figures.

const (
	benchSeriesPerRequest = 2000
	// benchSeriesPool series are cycled through, benchSeriesPerRequest at a time, so that successive requests differ.
	benchSeriesPool = 20_000
	benchTenant     = "tenant-a"
)

// benchPool returns benchSeriesPool label sets of 11 labels (__name__ and 10 others) with values as a
// Kubernetes fleet has them (after pkg/loadgen's synthetic fleet: 200 metrics per target), sorted by name, in a
// fixed pseudo-random order so one request mixes many targets as a Prometheus remote-write shard does.
func benchPool() [][]*labelpb.Label { return benchPoolN(benchSeriesPool) }

// benchPoolN is benchPool of n label sets.
func benchPoolN(n int) [][]*labelpb.Label {
	jobs := []string{"api-gateway", "frontend", "checkout", "payments", "cart", "catalog", "search", "recommendations",
		"auth", "notifications", "inventory", "shipping"}
	namespaces := []string{"edge", "web", "shop", "shop", "shop", "shop", "search", "search", "identity", "messaging",
		"warehouse", "warehouse"}
	clusters := []string{"prod-eu-west-1", "prod-us-east-1", "prod-ap-southeast-1", "staging-eu-west-1"}
	regions := []string{"eu-west-1", "us-east-1", "ap-southeast-1", "eu-west-1"}
	subsystems := []string{"http_server", "grpc_server", "http_client", "db_client", "cache", "queue", "process", "go",
		"kafka_consumer", "jvm"}
	names := []string{"requests_total", "request_duration_seconds_sum", "request_duration_seconds_count",
		"errors_total", "request_size_bytes_sum", "response_size_bytes_sum", "inflight_requests", "connections_open",
		"connections_opened_total", "retries_total", "timeouts_total", "latency_seconds_max", "queue_length",
		"bytes_read_total", "bytes_written_total", "operations_total", "memory_bytes", "threads",
		"last_success_timestamp_seconds", "up_seconds"}
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	chars := func(h uint64, n int) string {
		b := make([]byte, n)
		for k := range b {
			b[k] = alphabet[h%uint64(len(alphabet))]
			h = splitmix(h)
		}
		return string(b)
	}
	perTarget := len(subsystems) * len(names)
	out := make([][]*labelpb.Label, n)
	for i := range out {
		t, m := i/perTarget, i%perTarget
		h := splitmix(uint64(t))
		j, c := t%len(jobs), (t/len(jobs))%len(clusters)
		ls := []*labelpb.Label{
			{Name: "__name__", Value: subsystems[m/len(names)] + "_" + names[m%len(names)]},
			{Name: "cluster", Value: clusters[c]},
			{Name: "container", Value: jobs[j]},
			{Name: "instance", Value: "10." + strconv.Itoa(c*16) + "." + strconv.Itoa((t>>8)&255) + "." + strconv.Itoa(t&255) + ":8080"},
			{Name: "job", Value: jobs[j]},
			{Name: "namespace", Value: namespaces[j]},
			{Name: "node", Value: "ip-10-" + strconv.Itoa(int(h>>40)%256) + "-" + strconv.Itoa(int(h>>32)%40) + "-" +
				strconv.Itoa(int(h>>48)%256) + "." + regions[c] + ".compute.internal"},
			{Name: "pod", Value: jobs[j] + "-" + chars(splitmix(uint64(j)), 10) + "-" + chars(h, 5)},
			{Name: "region", Value: regions[c]},
			{Name: "service", Value: jobs[j]},
			{Name: "zone", Value: regions[c] + string(rune('a'+h%3))},
		}
		sort.Slice(ls, func(a, b int) bool { return ls[a].Name < ls[b].Name })
		out[i] = ls
	}
	for i := len(out) - 1; i > 0; i-- { // Fisher–Yates, deterministic.
		k := int(splitmix(uint64(i)) % uint64(i+1))
		out[i], out[k] = out[k], out[i]
	}
	return out
}

// splitmix is SplitMix64's output function: deterministic pseudo-random label values and order.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// benchRequest returns a new request of the n-th batch of the pool (cycling), one sample at tMs per series. Every
// object is new, labels included: the code under test may modify the request.
func benchRequest(pool [][]*labelpb.Label, n int, tMs int64) *storepb.WriteRequest {
	batches := len(pool) / benchSeriesPerRequest
	first := (n % batches) * benchSeriesPerRequest
	req := &storepb.WriteRequest{Timeseries: make([]*prompb.TimeSeries, 0, benchSeriesPerRequest)}
	for _, src := range pool[first : first+benchSeriesPerRequest] {
		ls := make([]*labelpb.Label, len(src))
		for k, l := range src {
			ls[k] = &labelpb.Label{Name: l.Name, Value: l.Value}
		}
		req.Timeseries = append(req.Timeseries, &prompb.TimeSeries{Labels: ls,
			Samples: []*prompb.Sample{{Timestamp: tMs, Value: float64(tMs) / 1000}}})
	}
	return req
}

// benchTimes returns the time of the warm-up samples and the step between iterations: iteration i writes at
// first + (i+1)*step, the last at most now, so the ingester's creation grace period never refuses a sample and
// its head (3h before it compacts) spans at most an hour. The step is a scrape interval's, shorter for large b.N.
func benchTimes(n int) (first, step int64) {
	step = min(int64(15_000), max(1, int64(time.Hour/time.Millisecond)/int64(n+1)))
	return time.Now().UnixMilli() - int64(n+1)*step, step
}

// allocMeter counts the allocations and time of the timed parts of a benchmark, as -benchmem does, to report
// them per sample.
type allocMeter struct {
	ms             runtime.MemStats
	mallocs, bytes uint64
	ns             time.Duration
	m0, b0         uint64
	t0             time.Time
}

func (m *allocMeter) start(b *testing.B) {
	b.StartTimer()
	runtime.ReadMemStats(&m.ms)
	m.m0, m.b0, m.t0 = m.ms.Mallocs, m.ms.TotalAlloc, time.Now()
}

func (m *allocMeter) stop(b *testing.B) {
	m.ns += time.Since(m.t0)
	runtime.ReadMemStats(&m.ms)
	m.mallocs += m.ms.Mallocs - m.m0
	m.bytes += m.ms.TotalAlloc - m.b0
	b.StopTimer()
}

func (m *allocMeter) report(b *testing.B, samples int) {
	b.ReportMetric(float64(m.mallocs)/float64(samples), "allocs/sample")
	b.ReportMetric(float64(m.bytes)/float64(samples), "B/sample")
	b.ReportMetric(float64(m.ns.Nanoseconds())/float64(samples), "ns/sample")
}

// settledGoroutines returns how many goroutines the process has when idle (the least of a few looks).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 10 {
		time.Sleep(10 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// awaitGoroutines waits, without allocating, until the goroutines of the request just made ended: the server's
// stream goroutine outlives the client's call, and the distributor's Push returns at the quorum while its last
// replica is still being sent. Their work belongs to the request and must fall in its timed part.
func awaitGoroutines(b *testing.B, idle int) {
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > idle {
		if time.Now().After(deadline) {
			b.Fatalf("%d goroutines 10s after the request, %d when idle", runtime.NumGoroutine(), idle)
		}
		runtime.Gosched()
	}
}

// rawMessage is a pre-encoded message: the storepb codec marshals it with a copy, so the benchmark's client adds
// nothing of its own protobuf encoding to the ingester's figures.
type rawMessage struct{ b []byte }

func (r *rawMessage) SizeVT() int                                  { return len(r.b) }
func (r *rawMessage) MarshalToSizedBufferVT(d []byte) (int, error) { return copy(d, r.b), nil }
func (r *rawMessage) UnmarshalVT([]byte) error                     { return errors.New("rawMessage is only sent") }

// BenchmarkIngesterRemoteWrite: the ingester's gRPC write handler (decode, validation, append to the TSDB) in
// the steady state: every series already exists, each request brings one new sample to 2000 of them.
func BenchmarkIngesterRemoteWrite(b *testing.B) {
	conn := serveIngester(b, benchIngester(b))

	pool := benchPool()
	first, step := benchTimes(b.N)
	// As the distributor sends it: the tenant in the request and in gRPC metadata.
	ctx := tenancy.OutgoingContext(context.Background(), benchTenant)
	raw := &rawMessage{}
	encode := func(n int, tMs int64) {
		req := benchRequest(pool, n, tMs)
		req.Tenant = benchTenant
		raw.b = raw.b[:0]
		raw.b = append(raw.b, make([]byte, req.SizeVT())...)
		if _, err := req.MarshalToSizedBufferVT(raw.b); err != nil {
			b.Fatal(err)
		}
	}
	write := func() {
		if err := conn.Invoke(ctx, "/thanos.WriteableStore/RemoteWrite", raw, &storepb.WriteResponse{}); err != nil {
			b.Fatal(err)
		}
	}
	for n := range benchSeriesPool / benchSeriesPerRequest { // every series into the head
		encode(n, first)
		write()
	}
	timeWrites(b, func(i int) { encode(i, first+int64(i+1)*step) }, func(int) { write() })
}

// BenchmarkIngesterRemoteWriteCompressed: BenchmarkIngesterRemoteWrite's writes as a distributor sends a request
// it did not change: the client's snappy-compressed body (RemoteWriteCompressed), decompressed by the ingester.
func BenchmarkIngesterRemoteWriteCompressed(b *testing.B) {
	conn := serveIngester(b, benchIngester(b))

	pool := benchPool()
	first, step := benchTimes(b.N)
	ctx := tenancy.OutgoingContext(context.Background(), benchTenant)
	var raw []byte
	msg := &compressedWrite{tenant: benchTenant}
	encode := func(n int, tMs int64) {
		req := benchRequest(pool, n, tMs) // no tenant: a prometheus.WriteRequest's bytes
		raw = append(raw[:0], make([]byte, req.SizeVT())...)
		if _, err := req.MarshalToSizedBufferVT(raw); err != nil {
			b.Fatal(err)
		}
		msg.body = snappy.Encode(msg.body[:cap(msg.body)], raw)
	}
	write := func() {
		if err := conn.Invoke(ctx, RemoteWriteCompressedFullMethodName, msg, &storepb.WriteResponse{}); err != nil {
			b.Fatal(err)
		}
	}
	for n := range benchSeriesPool / benchSeriesPerRequest { // every series into the head
		encode(n, first)
		write()
	}
	timeWrites(b, func(i int) { encode(i, first+int64(i+1)*step) }, func(int) { write() })
}

// timeWrites runs b.N writes of benchSeriesPerRequest samples, each after its untimed prepare, and reports
// allocs/sample, B/sample and ns/sample of the writes alone, each timed until the goroutines it started ended.
func timeWrites(b *testing.B, prepare, write func(i int)) {
	idle := settledGoroutines()
	var m allocMeter
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		prepare(i)
		m.start(b)
		write(i)
		awaitGoroutines(b, idle)
		m.stop(b)
	}
	m.report(b, b.N*benchSeriesPerRequest)
}

// benchIngester returns an open ingester with the default config, closed when the benchmark ends.
func benchIngester(b *testing.B) *Ingester {
	reg := prometheus.NewRegistry()
	ing := NewIngester(DefaultIngesterConfig(), b.TempDir(), tenancy.NewOverrides(tenancy.DefaultLimits(), nil),
		NewDiscardedSamples(reg), log.NewNopLogger(), reg)
	if err := ing.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ing.Close() })
	return ing
}

// serveIngester serves ing's write RPC as cmd/strata does (with the tenancy interceptor, which lets RemoteWrite
// through to check the tenant itself) and returns a connection to it.
func serveIngester(b *testing.B, ing *Ingester) *grpc.ClientConn {
	srv := grpc.NewServer(append(server.Config{}.GRPCMsgSizeOptions(), grpc.ChainUnaryInterceptor(
		tenancy.DefaultConfig().UnaryServerInterceptor(tenancy.GRPCExempt{"/thanos.WriteableStore/RemoteWrite", RemoteWriteCompressedFullMethodName})))...)
	RegisterWriteableStore(srv, ing) // as cmd/strata/ingester.go; at 87d2b64: storepb.RegisterWriteableStoreServer
	RegisterCompressedWrites(srv, ing, server.Config{}.MaxRecvMsgSize())
	return serveBench(b, srv)
}

// serveBench serves srv on a loopback port until the benchmark (or test) ends and returns a connection to it.
func serveBench(b testing.TB, srv *grpc.Server) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), store.DialOptions()...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// nullIngester is an ingester's RemoteWrite that reads nothing: the distributor benchmark's ingesters add no
// allocation of their own to the process (gRPC's server side still does, the same before and after any change of
// the distributor).
type nullIngester struct {
	requests, bytes atomic.Int64
	resp            *storepb.WriteResponse
}

// UnmarshalVT makes the ingester its own request message: the codec hands it the bytes, which it only counts.
func (f *nullIngester) UnmarshalVT(d []byte) error {
	f.requests.Add(1)
	f.bytes.Add(int64(len(d)))
	return nil
}
func (f *nullIngester) SizeVT() int                                { return 0 }
func (f *nullIngester) MarshalToSizedBufferVT([]byte) (int, error) { return 0, nil }

func (f *nullIngester) remoteWrite(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	if err := dec(f); err != nil {
		return nil, err
	}
	return f.resp, nil
}

// BenchmarkDistributorSplit: the distributor's RingPusher sharding 2000 series over a ring of ingesters in 3
// zones with replication factor 3 and sending them over gRPC to ingesters that only count the bytes. With 3
// ingesters each gets every series (one replication set for the whole request: one marshalled request each);
// with 6 (2 per zone) each series is sharded on its own and each ingester gets its share.
//
// "compressed": the request as the distributor has it after an HTTP push it did not change (the client's body,
// its frames), pushed with PushFrames: with 3 ingesters each is sent the compressed body (RemoteWriteCompressed).
func BenchmarkDistributorSplit(b *testing.B) {
	for _, n := range []int{3, 6} {
		b.Run(fmt.Sprintf("ingesters=%d", n), func(b *testing.B) { benchmarkDistributorSplit(b, n, false) })
	}
	b.Run("ingesters=3/compressed", func(b *testing.B) { benchmarkDistributorSplit(b, 3, true) })
}

func benchmarkDistributorSplit(b *testing.B, ingesters int, compressed bool) {
	kv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	cfg := ring.DefaultConfig() // RF 3, 128 tokens per ingester
	cfg.ZoneAwarenessEnabled = true
	key := fmt.Sprintf("bench-split-%d", time.Now().UnixNano())
	ctx := context.Background()
	var ings []*nullIngester
	for i := range ingesters {
		f := &nullIngester{resp: &storepb.WriteResponse{}}
		ings = append(ings, f)
		srv := grpc.NewServer(server.Config{}.GRPCMsgSizeOptions()...)
		srv.RegisterService(&grpc.ServiceDesc{ServiceName: "thanos.WriteableStore", HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "RemoteWrite", Handler: f.remoteWrite}}}, f)
		srv.RegisterService(&grpc.ServiceDesc{ServiceName: ingesterServiceName, HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "RemoteWriteCompressed", Handler: f.remoteWrite}}}, f)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		b.Cleanup(srv.Stop)

		inst := ring.InstanceConfig{ID: fmt.Sprintf("ingester-%d", i), Addr: lis.Addr().String(), Zone: string(rune('a' + i%3))}
		lkv, err := ring.NewKV(ring.MemberlistConfig{}, log.NewNopLogger(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		lc, err := ring.NewLifecycler(cfg, inst, lkv, "ingester", key, log.NewNopLogger(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		if err := services.StartAndAwaitRunning(ctx, lc); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, lc) })
	}
	client, err := ring.NewClient(cfg, kv, "ingester", key, log.NewNopLogger(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(ctx, client); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, client) })
	for deadline := time.Now().Add(10 * time.Second); client.InstancesCount() < ingesters; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the ring did not see %d ingesters", ingesters)
		}
	}
	p := NewRingPusher(client, 5*time.Second, nil, log.NewNopLogger(), prometheus.NewRegistry())
	b.Cleanup(func() { _ = p.Close() })

	pool := benchPool()
	first, step := benchTimes(b.N)
	const warmups = 3 // connections to every ingester, gRPC's buffers
	for n := range warmups {
		if err := p.Push(ctx, benchTenant, benchRequest(pool, n, first)); err != nil {
			b.Fatal(err)
		}
	}
	var (
		req    *storepb.WriteRequest
		frames [][]byte
		body   []byte
	)
	prepare := func(i int) {
		req = benchRequest(pool, i, first+int64(i+1)*step)
		if !compressed {
			return
		}
		// As the push handler has it: the series decoded from the body, their frames, the body.
		raw, err := req.MarshalVT()
		if err != nil {
			b.Fatal(err)
		}
		o := remotewrite.Options{KeepFrames: true}
		if req.Timeseries, err = remotewrite.DecodeV1(raw, &o); err != nil {
			b.Fatal(err)
		}
		frames, body = o.Frames(), snappy.Encode(nil, raw)
	}
	timeWrites(b, prepare, func(int) {
		var err error
		if compressed {
			err = p.PushFrames(ctx, benchTenant, req, frames, nil, body, func() {})
		} else {
			err = p.Push(ctx, benchTenant, req)
		}
		if err != nil {
			b.Fatal(err)
		}
	})
	for k, f := range ings {
		if got, want := f.requests.Load(), int64(b.N+warmups); got != want {
			b.Fatalf("ingester %d got %d requests, want %d", k, got, want)
		}
	}
}
