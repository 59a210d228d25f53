package main

import (
	"context"
	"net/http"
	"os"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/gateway"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// grpcTenantExempt are the gRPC methods callable without a tenant: health checks, and Thanos's Info, which a
// stock Thanos querier calls before it knows any tenant.
// RemoteWrite (Thanos's forward RPC) and RemoteWriteCompressed carry their tenant in the request, which the
// ingester validates.
var grpcTenantExempt = tenancy.GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/", "/thanos.WriteableStore/RemoteWrite", receive.RemoteWriteCompressedFullMethodName}

// process is what the components of one process share. main fills the first block; each setupX(p) adds a
// part, and the parts a later setup needs are set by an earlier one (the runX functions call them in order).
type process struct {
	g      *run.Group
	logger log.Logger
	reg    *prometheus.Registry
	cfg    *Config

	// Set by setupServers: the HTTP and gRPC servers and the per-tenant overrides.
	srv       *server.Server
	overrides *tenancy.Overrides
	// storeAPI, set by runAll, collects the stores of the process's components for the merged StoreAPI of the
	// gRPC port; nil: each component registers its own store there.
	storeAPI *allStoreAPI

	bkt          objstore.Bucket  // setupBucket
	ingesterRing *ingesterRing    // setupIngesterRing
	gatewayRing  *dskitring.Ring  // setupGatewayRing
	gateway      *gateway.Gateway // setupStoreGateway
	localGateway *gateway.Local   // setupStoreGateway with storeAPI set: the gateway served in process
	proxy        *store.Proxy     // setupQuerier: the merged view of the querier's stores
	// querierAPI is the querier's HTTP API (setupQuerier). With frontInProcess (set by runAll) it is not served on
	// the HTTP port: the in-process query-frontend is, and calls it.
	querierAPI     http.Handler
	frontInProcess bool
	discarded      *receive.DiscardedSamples // discardedSamples(), on first use
	// oneShot: the component is a tool that runs to an end; stopped by a signal before, it exits non-zero.
	oneShot bool
	// dialOpts are the options of gRPC connections to other components (TLS, cluster secret), secretDialOpts those
	// to in-process servers (cluster secret only); set by setupAuth.
	dialOpts, secretDialOpts []grpc.DialOption
}

// newProcess returns the process of a component: nothing runs until its setups add to g.
func newProcess(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) *process {
	return &process{g: g, logger: logger, reg: reg, cfg: cfg}
}

// mkDataDir creates the data directory.
func (p *process) mkDataDir() error {
	if err := os.MkdirAll(p.cfg.DataDir, 0o750); err != nil {
		return errSetup(err, "data directory "+p.cfg.DataDir)
	}
	return nil
}

// discardedSamples is the process's counter of discarded samples, shared by its ingester and distributor.
func (p *process) discardedSamples() *receive.DiscardedSamples {
	if p.discarded == nil {
		p.discarded = receive.NewDiscardedSamples(p.reg)
	}
	return p.discarded
}

// setupServers builds the servers and the per-tenant overrides, and adds them to the group.
func setupServers(p *process) error {
	cfg, logger := p.cfg, p.logger
	if err := setupAuth(p); err != nil {
		return err
	}
	srv, err := server.New(cfg.Server, logger, p.reg,
		grpc.ChainUnaryInterceptor(cfg.Auth.UnaryServerInterceptor(grpcTenantExempt)),
		grpc.ChainStreamInterceptor(cfg.Auth.StreamServerInterceptor(grpcTenantExempt)),
	)
	if err != nil {
		return errSetup(err, "servers")
	}
	rtm, err := tenancy.NewRuntimeOverridesManager(cfg.RuntimeConfig, cfg.Limits, logger, p.reg)
	if err != nil {
		return errSetup(err, "runtime config")
	}
	overrides := tenancy.NewOverrides(cfg.Limits, rtm)

	srv.Handle("GET /config", server.ConfigHandler(func() any { return cfg }))
	srv.SetAdminMiddleware(cfg.Auth.AdminMiddleware(), cfg.Auth.MetricsRequireAuth)
	srv.Handle("GET /runtime_config", p.admin(overrides.Handler()))
	srv.Handle("GET /api/v1/user_limits", cfg.Auth.HTTPMiddleware(false)(overrides.UserLimitsHandler()))
	srv.AddLinks("Server", server.Link{Path: "/config", Desc: "Effective configuration"},
		server.Link{Path: "/runtime_config", Desc: "Per-tenant overrides in force"},
		server.Link{Path: "/api/v1/user_limits", Desc: "Limits of the requesting tenant (needs X-Scope-OrgID)"})

	runtimeReady := srv.Ready.Register("runtime-config")
	addContextActor(p.g, func(ctx context.Context) error { return rtm.Run(ctx, runtimeReady) })
	srv.Run(p.g)
	p.srv, p.overrides = srv, overrides
	return nil
}

// setupBucket builds the bucket (filesystem under <data-dir>/bucket by default) and closes it on shutdown.
func setupBucket(p *process) error {
	bkt, err := block.NewBucket(p.cfg.Objstore, p.cfg.DataDir, p.logger, p.reg)
	if err != nil {
		return errSetup(err, "bucket")
	}
	p.srv.AddLinks("Bucket", server.Link{Path: "/metrics", Desc: bkt.Name() + " (strata_objstore_bucket_* metrics)"})
	bucketReady := p.srv.Ready.Register("bucket")
	addContextActor(p.g, func(ctx context.Context) error {
		bucketReady()
		<-ctx.Done()
		if err := bkt.Close(); err != nil {
			level.Warn(p.logger).Log("msg", "closing the bucket client", "err", err)
		}
		return nil
	})
	p.bkt = bkt
	return nil
}

// setupAll runs the setups in order, stopping at the first error.
func setupAll(p *process, setups ...func(*process) error) error {
	for _, s := range setups {
		if err := s(p); err != nil {
			return err
		}
	}
	return nil
}
