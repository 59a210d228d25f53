package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestProber(t *testing.T) {
	var serving int
	p := newProber(func() { serving++ })
	testutil.Equals(t, []string{"(nothing registered)"}, p.NotReady())

	a := p.Register("a")
	b := p.Register("b")
	testutil.Equals(t, []string{"a", "b"}, p.NotReady())
	b()
	testutil.Equals(t, []string{"a"}, p.NotReady())
	testutil.Equals(t, 0, serving)
	a()
	testutil.Equals(t, 0, len(p.NotReady()))
	testutil.Equals(t, 1, serving)

	c := p.Register("c") // a part registered later makes the process not ready again
	testutil.Equals(t, []string{"c"}, p.NotReady())
	c()
	c()
	testutil.Equals(t, 0, len(p.NotReady()))
}

func TestMarshalMasked(t *testing.T) {
	type objstore struct {
		Type   string         `yaml:"type"`
		Config map[string]any `yaml:"config"`
	}
	cfg := struct {
		Objstore objstore `yaml:"objstore"`
		Ring     struct {
			NumTokens int `yaml:"num_tokens"`
		} `yaml:"ring"`
		Password string `yaml:"basic_auth_password"`
		Empty    string `yaml:"secret_empty"`
	}{
		Objstore: objstore{Type: "S3", Config: map[string]any{
			"bucket": "b", "access_key": "AKIA", "secret_key": "s3cr3t",
			"http_config": map[string]any{"tls_config": map[string]any{"key_file": "/k.pem"}},
			"sse_config":  map[string]any{"kms_key_id": "id"},
			"list":        []any{map[string]any{"sas_token": "t0k3n"}},
		}},
		Password: "hunter2",
	}
	cfg.Ring.NumTokens = 128
	out, err := MarshalMasked(cfg)
	testutil.Ok(t, err)
	s := string(out)
	for _, secret := range []string{"AKIA", "s3cr3t", "hunter2", "t0k3n"} {
		testutil.Assert(t, !strings.Contains(s, secret), "secret %q not masked:\n%s", secret, s)
	}
	for _, kept := range []string{"bucket: b", "num_tokens: 128", "key_file: /k.pem", "kms_key_id: id", `secret_empty: ""`} {
		testutil.Assert(t, strings.Contains(s, kept), "%q missing:\n%s", kept, s)
	}
	testutil.Equals(t, 4, strings.Count(s, masked))
}

// TestServer runs a server on loopback port 0: /ready is 503 until every part is ready, gRPC health follows it,
// /metrics serves the registry, and interrupting the group stops both servers.
func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterProcessCollectors(reg)
	s, err := New(Config{HTTPAddress: "127.0.0.1:0", GRPCAddress: "127.0.0.1:0", GracefulShutdownTimeout: 5 * time.Second}, log.NewNopLogger(), reg)
	testutil.Ok(t, err)
	markReady := s.Ready.Register("part")

	stop := runServer(s)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.HTTPAddr() + path)
		testutil.Ok(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		testutil.Ok(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/ready")
	testutil.Equals(t, 503, code)
	testutil.Assert(t, strings.Contains(body, "waiting for part"), body)

	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Ok(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.Status)

	markReady()
	code, _ = get("/ready")
	testutil.Equals(t, 200, code)
	resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	testutil.Ok(t, err)
	testutil.Equals(t, healthpb.HealthCheckResponse_SERVING, resp.Status)

	code, body = get("/metrics")
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.Contains(body, `strata_http_requests_total{code="200",handler="GET /ready",method="get"} 1`), body)
	testutil.Assert(t, strings.Contains(body, "go_goroutines"), "go collector missing")
	code, body = get("/")
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.Contains(body, `<a href="/metrics">`), body)
	code, _ = get("/nope")
	testutil.Equals(t, 404, code)

	select {
	case err := <-stop():
		testutil.Ok(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("servers did not stop within 15s")
	}
}

// runServer runs s's servers in a run group until the returned stop is called; stop's channel then yields the
// group's error.
func runServer(s *Server) (stop func() <-chan error) {
	var g run.Group
	s.Run(&g)
	quit := make(chan struct{})
	g.Add(func() error { <-quit; return nil }, func(error) {})
	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	return func() <-chan error { close(quit); return done }
}

func TestNewFailsOnPortInUse(t *testing.T) {
	s, err := New(Config{HTTPAddress: "127.0.0.1:0", GRPCAddress: "127.0.0.1:0", GracefulShutdownTimeout: time.Second}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	defer s.httpListener.Close()
	defer s.grpcListener.Close()
	_, err = New(Config{HTTPAddress: s.HTTPAddr(), GRPCAddress: "127.0.0.1:0", GracefulShutdownTimeout: time.Second}, log.NewNopLogger(), prometheus.NewRegistry())
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "listen for HTTP on "+s.HTTPAddr()), err.Error())
}

// TestServerGRPCMessageSizeBound: a gRPC message over grpc_server_max_recv_msg_size is refused with
// ResourceExhausted, and the server goes on serving; the same message under the default bound is read.
func TestServerGRPCMessageSizeBound(t *testing.T) {
	big := &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 2<<20)} // 2 MiB
	for _, tc := range []struct {
		name    string
		maxRecv int
		want    codes.Code
	}{
		{name: "1 MiB bound", maxRecv: 1 << 20, want: codes.ResourceExhausted},
		{name: "default bound (100 MiB)", maxRecv: DefaultConfig().GRPCServerMaxRecvMsgSize, want: codes.NotFound}, // read: no such service
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{HTTPAddress: "127.0.0.1:0", GRPCAddress: "127.0.0.1:0", GracefulShutdownTimeout: time.Second,
				GRPCServerMaxRecvMsgSize: tc.maxRecv, GRPCServerMaxSendMsgSize: DefaultGRPCMaxMsgSize}
			testutil.Ok(t, cfg.Validate())
			s, err := New(cfg, log.NewNopLogger(), prometheus.NewRegistry())
			testutil.Ok(t, err)
			stop := runServer(s)
			defer func() { testutil.Ok(t, <-stop()) }()

			conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			testutil.Ok(t, err)
			defer func() { _ = conn.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			hc := healthpb.NewHealthClient(conn)
			_, err = hc.Check(ctx, big)
			testutil.Equals(t, tc.want, status.Code(err), "error: %v", err)
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}) // still serving
			testutil.Ok(t, err)
			testutil.Equals(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.Status)
		})
	}
	testutil.NotOk(t, Config{HTTPAddress: "a", GRPCAddress: "b", GracefulShutdownTimeout: time.Second, GRPCServerMaxSendMsgSize: 1}.Validate())
}
