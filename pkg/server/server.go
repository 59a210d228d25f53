// Package server runs the HTTP and gRPC servers every Strata component shares: one of each per process, with
// readiness, metrics, the effective config and an index of the components in the process.
package server

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Config holds the addresses both servers listen on.
type Config struct {
	HTTPAddress string `yaml:"http_address"`
	GRPCAddress string `yaml:"grpc_address"`
	// GracefulShutdownTimeout bounds how long in-flight requests may take once the process is told to stop.
	GracefulShutdownTimeout time.Duration `yaml:"graceful_shutdown_timeout"`
	// GRPCServerMaxRecvMsgSize is the largest gRPC message the server accepts, in bytes: a larger one is refused
	// with ResourceExhausted before it is read into memory. Mimir's name and default (100 MiB).
	GRPCServerMaxRecvMsgSize int `yaml:"grpc_server_max_recv_msg_size"`
	// GRPCServerMaxSendMsgSize is the largest gRPC message the server sends, in bytes. Mimir's name and default.
	GRPCServerMaxSendMsgSize int `yaml:"grpc_server_max_send_msg_size"`
	// TLS of the HTTP and gRPC servers and of the connections to other components (tls.go).
	TLS TLSConfig `yaml:",inline"`
}

// DefaultGRPCMaxMsgSize is Mimir's default bound of a gRPC message, either way: 100 MiB.
const DefaultGRPCMaxMsgSize = 100 << 20

// DefaultConfig listens on :8080 (HTTP) and :9095 (gRPC), the ports DESIGN.md fixes.
func DefaultConfig() Config {
	return Config{HTTPAddress: "0.0.0.0:8080", GRPCAddress: "0.0.0.0:9095", GracefulShutdownTimeout: 10 * time.Second,
		GRPCServerMaxRecvMsgSize: DefaultGRPCMaxMsgSize, GRPCServerMaxSendMsgSize: DefaultGRPCMaxMsgSize}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.HTTPAddress == "" || c.GRPCAddress == "" {
		return errors.New("server: http_address and grpc_address must be set")
	}
	if c.GracefulShutdownTimeout <= 0 {
		return errors.Newf("server: graceful_shutdown_timeout must be positive, got %s", c.GracefulShutdownTimeout)
	}
	if c.GRPCServerMaxRecvMsgSize <= 0 || c.GRPCServerMaxSendMsgSize <= 0 {
		return errors.Newf("server: grpc_server_max_recv_msg_size and grpc_server_max_send_msg_size must be positive, got %d and %d",
			c.GRPCServerMaxRecvMsgSize, c.GRPCServerMaxSendMsgSize)
	}
	return c.TLS.Validate()
}

// MaxRecvMsgSize is the largest message the gRPC server receives (GRPCServerMaxRecvMsgSize, or its default).
func (c Config) MaxRecvMsgSize() int {
	if c.GRPCServerMaxRecvMsgSize <= 0 {
		return DefaultGRPCMaxMsgSize
	}
	return c.GRPCServerMaxRecvMsgSize
}

// GRPCMsgSizeOptions bound the messages a gRPC server of this config receives and sends (a size left 0 in a
// Config built in code is the default).
func (c Config) GRPCMsgSizeOptions() []grpc.ServerOption {
	send := c.GRPCServerMaxSendMsgSize
	if send <= 0 {
		send = DefaultGRPCMaxMsgSize
	}
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(c.MaxRecvMsgSize()), grpc.MaxSendMsgSize(send)}
}

// Flow-control windows and read buffer of the gRPC servers. gRPC's defaults (a 64 KiB window grown by its
// bandwidth-delay estimate, 32 KiB reads) suit many small messages over a WAN; the write path sends messages of
// a megabyte or more (a distributor's share of a remote write) between hosts of one network, which under them
// take dozens of read syscalls and window updates, the sender waiting on each. The windows bound what a peer may
// send ahead per stream and per connection; the read buffer is per connection.
const (
	grpcStreamWindow = 4 << 20
	grpcConnWindow   = 8 << 20
	grpcReadBuffer   = 256 << 10
)

// GRPCTransportOptions are the gRPC servers' flow-control windows and read buffer (see grpcStreamWindow).
func GRPCTransportOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(grpcStreamWindow), grpc.InitialConnWindowSize(grpcConnWindow), grpc.ReadBufferSize(grpcReadBuffer),
	}
}

type serverMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	return &serverMetrics{
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_http_requests_total",
			Help: "HTTP requests served, by handler, method and status code.",
		}, []string{"handler", "method", "code"}),
		duration: promauto.With(reg).NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "strata_http_request_duration_seconds",
			Help:                        "Time spent serving HTTP requests, by handler, method and status code.",
			Buckets:                     prometheus.DefBuckets,
			NativeHistogramBucketFactor: 1.1,
		}, []string{"handler", "method", "code"}),
	}
}

// Server is a process's HTTP and gRPC servers. Create it with New (which binds both ports, so a port in use
// fails at start and tests can ask for port 0), register handlers and services, then Run it.
type Server struct {
	cfg     Config
	logger  log.Logger
	metrics *serverMetrics

	httpListener net.Listener
	grpcListener net.Listener
	mux          *http.ServeMux
	httpServer   *http.Server
	grpcServer   *grpc.Server
	health       *health.Server

	Ready *Prober
	index *index

	// admin guards /debug/pprof/ (and /metrics with adminMetrics); see SetAdminMiddleware.
	admin        func(http.Handler) http.Handler
	adminMetrics bool
}

// New binds the listeners and builds both servers. The gRPC server takes and sends messages up to
// grpc_server_max_recv_msg_size / grpc_server_max_send_msg_size (a StoreAPI Series response is a stream of
// messages, one per series or batch; clients still accept MaxInt32, see store.DialOptions) and serves the
// standard health service, NOT_SERVING until Ready says so.
func New(cfg Config, logger log.Logger, reg prometheus.Registerer, grpcOpts ...grpc.ServerOption) (*Server, error) {
	httpL, err := net.Listen("tcp", cfg.HTTPAddress)
	if err != nil {
		return nil, errors.Wrapf(err, "listen for HTTP on %s", cfg.HTTPAddress)
	}
	grpcL, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		_ = httpL.Close()
		return nil, errors.Wrapf(err, "listen for gRPC on %s", cfg.GRPCAddress)
	}
	s := &Server{
		cfg:          cfg,
		logger:       logger,
		metrics:      newServerMetrics(reg),
		httpListener: httpL,
		grpcListener: grpcL,
		mux:          http.NewServeMux(),
		health:       health.NewServer(),
		index:        &index{},
	}
	tlsOpts, err := cfg.TLS.grpcServerOptions()
	if err != nil {
		_, _ = httpL.Close(), grpcL.Close()
		return nil, errors.Wrap(err, "gRPC TLS")
	}
	s.grpcServer = grpc.NewServer(append(append(append(cfg.GRPCMsgSizeOptions(), GRPCTransportOptions()...), tlsOpts...), grpcOpts...)...)
	healthpb.RegisterHealthServer(s.grpcServer, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.Ready = newProber(func() { s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) })
	s.httpServer = &http.Server{Handler: s.mux, ReadHeaderTimeout: 30 * time.Second}

	if gatherer, ok := reg.(prometheus.Gatherer); ok {
		s.Handle("GET /metrics", s.guard(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}), true))
	}
	s.Handle("GET /ready", s.Ready)
	// Go's profiler, as Thanos and Mimir expose it.
	s.mux.Handle("/debug/pprof/", s.guard(http.HandlerFunc(pprof.Index), false))
	s.mux.Handle("/debug/pprof/cmdline", s.guard(http.HandlerFunc(pprof.Cmdline), false))
	s.mux.Handle("/debug/pprof/profile", s.guard(http.HandlerFunc(pprof.Profile), false))
	s.mux.Handle("/debug/pprof/symbol", s.guard(http.HandlerFunc(pprof.Symbol), false))
	s.mux.Handle("/debug/pprof/trace", s.guard(http.HandlerFunc(pprof.Trace), false))
	s.Handle("GET /{$}", s.index)
	s.AddLinks("Server", Link{"/ready", "Readiness"}, Link{"/metrics", "Metrics"}, Link{"/debug/pprof/", "Go profiles"})
	return s, nil
}

// SetAdminMiddleware guards the server's own pages with mw: Go's profiles always, /metrics when metrics is
// true. Call it before Run.
func (s *Server) SetAdminMiddleware(mw func(http.Handler) http.Handler, metrics bool) {
	s.admin, s.adminMetrics = mw, metrics
}

// guard serves h through the admin middleware set at the time of the request (none: h as is).
func (s *Server) guard(h http.Handler, metrics bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.admin == nil || metrics && !s.adminMetrics {
			h.ServeHTTP(w, r)
			return
		}
		s.admin(h).ServeHTTP(w, r)
	})
}

// RegisterProcessCollectors adds the Go runtime and process collectors to reg, as every Prometheus exporter does.
func RegisterProcessCollectors(reg prometheus.Registerer) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// HTTPAddr and GRPCAddr are the bound addresses (useful when the config asked for port 0).
func (s *Server) HTTPAddr() string { return s.httpListener.Addr().String() }
func (s *Server) GRPCAddr() string { return s.grpcListener.Addr().String() }

// GRPC returns the gRPC server for registering services; register before Run.
func (s *Server) GRPC() *grpc.Server { return s.grpcServer }

// Handle registers an HTTP handler for a Go ServeMux pattern ("GET /ready", "/api/v1/push"), instrumented
// with strata_http_requests_total and strata_http_request_duration_seconds labelled by the pattern.
func (s *Server) Handle(pattern string, h http.Handler) {
	labels := prometheus.Labels{"handler": pattern}
	h = promhttp.InstrumentHandlerDuration(s.metrics.duration.MustCurryWith(labels),
		promhttp.InstrumentHandlerCounter(s.metrics.requests.MustCurryWith(labels), h))
	s.mux.Handle(pattern, h)
}

// OnShutdown registers f to be called (in its own goroutine) as soon as the HTTP server begins its graceful
// shutdown, e.g. to answer queued requests instead of letting them wait for the shutdown timeout.
func (s *Server) OnShutdown(f func()) { s.httpServer.RegisterOnShutdown(f) }

// AddLinks lists pages of a component on the index page.
func (s *Server) AddLinks(component string, links ...Link) { s.index.add(component, links...) }

// Run adds the HTTP and gRPC servers to g. Both stop when g is interrupted: in-flight requests get up to
// GracefulShutdownTimeout, then connections are closed.
func (s *Server) Run(g interface {
	Add(execute func() error, interrupt func(error))
}) {
	g.Add(func() error {
		level.Info(s.logger).Log("msg", "listening for HTTP", "address", s.HTTPAddr())
		// exporter-toolkit serves plain HTTP without a web config file, and TLS (reloaded per connection) with one.
		webCfg := s.cfg.TLS.WebConfigFile
		if err := web.Serve(s.httpListener, s.httpServer, &web.FlagConfig{WebConfigFile: &webCfg}, Slog(s.logger)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return errors.Wrap(err, "serve HTTP")
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.GracefulShutdownTimeout)
		defer cancel()
		if err := s.httpServer.Shutdown(ctx); err != nil {
			level.Warn(s.logger).Log("msg", "HTTP server did not shut down gracefully", "err", err)
			_ = s.httpServer.Close()
		}
	})
	g.Add(func() error {
		level.Info(s.logger).Log("msg", "listening for gRPC", "address", s.GRPCAddr())
		if err := s.grpcServer.Serve(s.grpcListener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return errors.Wrap(err, "serve gRPC")
		}
		return nil
	}, func(error) {
		s.health.Shutdown()
		done := make(chan struct{})
		go func() { s.grpcServer.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.cfg.GracefulShutdownTimeout):
			level.Warn(s.logger).Log("msg", "gRPC server did not shut down gracefully; closing connections")
			s.grpcServer.Stop()
		}
	})
}
