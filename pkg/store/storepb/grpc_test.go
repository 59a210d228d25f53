package storepb_test

import (
	"context"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storetest"
)

// testStoreServer echoes its requests back, so tests can check what crossed
// the wire.
type testStoreServer struct {
	storepb.UnimplementedStoreServer
}

// Series sends one series per matcher (labelled name=value), then a warning.
func (testStoreServer) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	for _, m := range req.GetMatchers() {
		s := &storepb.Series{Labels: []*labelpb.Label{{Name: m.GetName(), Value: m.GetValue()}}}
		if err := srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: s}}); err != nil {
			return err
		}
	}
	return srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: "done"}})
}

func (testStoreServer) LabelNames(_ context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	resp := &storepb.LabelNamesResponse{}
	for _, m := range req.GetMatchers() {
		resp.Names = append(resp.Names, m.GetName())
	}
	return resp, nil
}

func (testStoreServer) LabelValues(_ context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	return &storepb.LabelValuesResponse{Values: []string{req.GetLabel()}}, nil
}

type testWriteableStoreServer struct {
	storepb.UnimplementedWriteableStoreServer
}

func (testWriteableStoreServer) RemoteWrite(context.Context, *storepb.WriteRequest) (*storepb.WriteResponse, error) {
	return &storepb.WriteResponse{}, nil
}

type testInfoServer struct {
	infopb.UnimplementedInfoServer
}

func (testInfoServer) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	return &infopb.InfoResponse{ComponentType: "store", Store: &infopb.StoreInfo{MinTime: 1, MaxTime: 2}}, nil
}

// methodRecorder records the full method names the server dispatched.
type methodRecorder struct {
	mu      sync.Mutex
	methods []string
}

func (r *methodRecorder) add(m string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.methods = append(r.methods, m)
}

func (r *methodRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.methods
	r.methods = nil
	return out
}

func (r *methodRecorder) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	r.add(info.FullMethod)
	return h(ctx, req)
}

func (r *methodRecorder) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	r.add(info.FullMethod)
	return h(srv, ss)
}

// payloadStats is what a stats handler saw of one received message.
type payloadStats struct {
	length, compressedLength int
}

// statsRecorder is a stats.Handler recording the grpc-encoding of received
// headers and the sizes of received messages.
type statsRecorder struct {
	mu          sync.Mutex
	compression []string
	payloads    []payloadStats
}

func (s *statsRecorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (s *statsRecorder) HandleRPC(_ context.Context, st stats.RPCStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := st.(type) {
	case *stats.InHeader:
		s.compression = append(s.compression, v.Compression)
	case *stats.InPayload:
		s.payloads = append(s.payloads, payloadStats{length: v.Length, compressedLength: v.CompressedLength})
	}
}

func (s *statsRecorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (s *statsRecorder) HandleConn(context.Context, stats.ConnStats) {}

func (s *statsRecorder) take() ([]string, []payloadStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p := s.compression, s.payloads
	s.compression, s.payloads = nil, nil
	return c, p
}

type testEnv struct {
	addr        string
	methods     *methodRecorder
	serverStats *statsRecorder
}

// startTestServer serves Store, WriteableStore and Info on 127.0.0.1.
func startTestServer(t *testing.T) *testEnv {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)

	env := &testEnv{addr: lis.Addr().String(), methods: &methodRecorder{}, serverStats: &statsRecorder{}}
	srv := grpc.NewServer(
		grpc.StatsHandler(env.serverStats),
		grpc.UnaryInterceptor(env.methods.unary),
		grpc.StreamInterceptor(env.methods.stream),
		grpc.MaxRecvMsgSize(math.MaxInt32),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	storepb.RegisterStoreServer(srv, testStoreServer{})
	storepb.RegisterWriteableStoreServer(srv, testWriteableStoreServer{})
	infopb.RegisterInfoServer(srv, testInfoServer{})

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		testutil.Ok(t, <-served)
	})
	return env
}

func (e *testEnv) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+e.addr, opts...)
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recvAll drains a Series stream.
func recvAll(stream storepb.Store_SeriesClient) ([]*storepb.SeriesResponse, error) {
	got, err := storetest.DrainSeries(stream)
	return got.Responses, err
}

// TestGRPC_FullMethodNames checks the method paths Thanos clients call: the
// generated constants, the paths our generated clients use, and that a
// server built from our descriptors serves calls made with the literal
// Thanos paths.
func TestGRPC_FullMethodNames(t *testing.T) {
	env := startTestServer(t)
	conn := env.dial(t)
	ctx := testContext(t)

	for _, tc := range []struct {
		want     string
		constant string
		// generated calls the method with our generated client.
		generated func() error
		// literal calls the method by its literal path, as a Thanos client does.
		literal func() error
	}{
		{
			want:     "/thanos.Store/Series",
			constant: storepb.Store_Series_FullMethodName,
			generated: func() error {
				s, err := storepb.NewStoreClient(conn).Series(ctx, &storepb.SeriesRequest{})
				if err != nil {
					return err
				}
				_, err = recvAll(s)
				return err
			},
			literal: func() error {
				desc := &grpc.StreamDesc{StreamName: "Series", ServerStreams: true}
				s, err := conn.NewStream(ctx, desc, "/thanos.Store/Series")
				if err != nil {
					return err
				}
				if err := s.SendMsg(&storepb.SeriesRequest{}); err != nil {
					return err
				}
				if err := s.CloseSend(); err != nil {
					return err
				}
				for {
					if err := s.RecvMsg(&storepb.SeriesResponse{}); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
				}
			},
		},
		{
			want:     "/thanos.Store/LabelNames",
			constant: storepb.Store_LabelNames_FullMethodName,
			generated: func() error {
				_, err := storepb.NewStoreClient(conn).LabelNames(ctx, &storepb.LabelNamesRequest{})
				return err
			},
			literal: func() error {
				return conn.Invoke(ctx, "/thanos.Store/LabelNames", &storepb.LabelNamesRequest{}, &storepb.LabelNamesResponse{})
			},
		},
		{
			want:     "/thanos.Store/LabelValues",
			constant: storepb.Store_LabelValues_FullMethodName,
			generated: func() error {
				_, err := storepb.NewStoreClient(conn).LabelValues(ctx, &storepb.LabelValuesRequest{})
				return err
			},
			literal: func() error {
				return conn.Invoke(ctx, "/thanos.Store/LabelValues", &storepb.LabelValuesRequest{}, &storepb.LabelValuesResponse{})
			},
		},
		{
			want:     "/thanos.WriteableStore/RemoteWrite",
			constant: storepb.WriteableStore_RemoteWrite_FullMethodName,
			generated: func() error {
				_, err := storepb.NewWriteableStoreClient(conn).RemoteWrite(ctx, &storepb.WriteRequest{})
				return err
			},
			literal: func() error {
				return conn.Invoke(ctx, "/thanos.WriteableStore/RemoteWrite", &storepb.WriteRequest{}, &storepb.WriteResponse{})
			},
		},
		{
			want:     "/thanos.info.Info/Info",
			constant: infopb.Info_Info_FullMethodName,
			generated: func() error {
				_, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
				return err
			},
			literal: func() error {
				return conn.Invoke(ctx, "/thanos.info.Info/Info", &infopb.InfoRequest{}, &infopb.InfoResponse{})
			},
		},
	} {
		t.Run(tc.want, func(t *testing.T) {
			testutil.Equals(t, tc.want, tc.constant)

			testutil.Ok(t, tc.generated())
			testutil.Equals(t, []string{tc.want}, env.methods.take(), "method called by the generated client")

			testutil.Ok(t, tc.literal())
			testutil.Equals(t, []string{tc.want}, env.methods.take(), "method served for the literal path")
		})
	}
}

// TestGRPC_ServiceDescriptors checks the service and method names in the
// registered descriptors (what gRPC reflection would expose).
func TestGRPC_ServiceDescriptors(t *testing.T) {
	for _, tc := range []struct {
		desc    grpc.ServiceDesc
		service string
		unary   []string
		streams []string
	}{
		{desc: storepb.Store_ServiceDesc, service: "thanos.Store", unary: []string{"LabelNames", "LabelValues"}, streams: []string{"Series"}},
		{desc: storepb.WriteableStore_ServiceDesc, service: "thanos.WriteableStore", unary: []string{"RemoteWrite"}},
		{desc: infopb.Info_ServiceDesc, service: "thanos.info.Info", unary: []string{"Info"}},
	} {
		t.Run(tc.service, func(t *testing.T) {
			testutil.Equals(t, tc.service, tc.desc.ServiceName)
			var unary, streams []string
			for _, m := range tc.desc.Methods {
				unary = append(unary, m.MethodName)
			}
			for _, s := range tc.desc.Streams {
				testutil.Assert(t, s.ServerStreams && !s.ClientStreams, "%s must be server-streaming only", s.StreamName)
				streams = append(streams, s.StreamName)
			}
			testutil.Equals(t, tc.unary, unary)
			testutil.Equals(t, tc.streams, streams)
		})
	}
}

// TestGRPC_RoundTrip sends each RPC with realistic payloads (including
// native histograms) over a real connection, with and without snappy.
func TestGRPC_RoundTrip(t *testing.T) {
	env := startTestServer(t)
	for _, compressor := range []string{"", storepb.SnappyCompressorName} {
		t.Run("compressor="+compressor, func(t *testing.T) {
			var opts []grpc.DialOption
			if compressor != "" {
				opts = append(opts, grpc.WithDefaultCallOptions(grpc.UseCompressor(compressor)))
			}
			conn := env.dial(t, opts...)
			ctx := testContext(t)

			s, err := storepb.NewStoreClient(conn).Series(ctx, &storepb.SeriesRequest{Matchers: []*storepb.LabelMatcher{
				{Name: "a", Value: "1"}, {Name: "b", Value: "2"},
			}})
			testutil.Ok(t, err)
			got, err := recvAll(s)
			testutil.Ok(t, err)
			want := []*storepb.SeriesResponse{
				{Result: &storepb.SeriesResponse_Series{Series: &storepb.Series{Labels: []*labelpb.Label{{Name: "a", Value: "1"}}}}},
				{Result: &storepb.SeriesResponse_Series{Series: &storepb.Series{Labels: []*labelpb.Label{{Name: "b", Value: "2"}}}}},
				{Result: &storepb.SeriesResponse_Warning{Warning: "done"}},
			}
			testutil.Equals(t, len(want), len(got))
			for i := range want {
				testutil.Assert(t, proto.Equal(want[i], got[i]), "frame %d: %v, want %v", i, got[i], want[i])
			}

			names, err := storepb.NewStoreClient(conn).LabelNames(ctx, &storepb.LabelNamesRequest{Matchers: []*storepb.LabelMatcher{{Name: "job"}}})
			testutil.Ok(t, err)
			testutil.Equals(t, []string{"job"}, names.GetNames())

			values, err := storepb.NewStoreClient(conn).LabelValues(ctx, &storepb.LabelValuesRequest{Label: "instance"})
			testutil.Ok(t, err)
			testutil.Equals(t, []string{"instance"}, values.GetValues())

			_, err = storepb.NewWriteableStoreClient(conn).RemoteWrite(ctx, &storepb.WriteRequest{
				Tenant:     "t",
				Timeseries: []*prompb.TimeSeries{testTimeSeries()},
			})
			testutil.Ok(t, err)

			info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
			testutil.Ok(t, err)
			testutil.Equals(t, "store", info.GetComponentType())
			testutil.Equals(t, int64(2), info.GetStore().GetMaxTime())

			compression, _ := env.serverStats.take()
			testutil.Equals(t, []string{compressor, compressor, compressor, compressor, compressor}, compression, "grpc-encoding of requests")
		})
	}
}
