package main

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// grpcTenantExempt are the gRPC methods callable without a tenant: health checks, and Thanos's Info, which a
// stock Thanos querier calls before it knows any tenant.
// RemoteWrite carries its tenant in the request (Thanos's forward RPC), which the ingester validates.
var grpcTenantExempt = tenancy.GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/", "/thanos.WriteableStore/RemoteWrite"}

// process is what every component shares in one process: the servers, the config pages and the limits.
type process struct {
	srv       *server.Server
	overrides *tenancy.Overrides
	// storeAPI, set by runAll, collects the stores of the process's components for the merged StoreAPI of the
	// gRPC port; nil: each component registers its own store there.
	storeAPI *allStoreAPI
}

// newProcess builds the servers and the per-tenant overrides for cfg, and adds them to g.
func newProcess(g *run.Group, logger log.Logger, reg prometheus.Registerer, cfg *Config) (*process, error) {
	srv, err := server.New(cfg.Server, logger, reg,
		grpc.ChainUnaryInterceptor(cfg.Auth.UnaryServerInterceptor(grpcTenantExempt)),
		grpc.ChainStreamInterceptor(cfg.Auth.StreamServerInterceptor(grpcTenantExempt)),
	)
	if err != nil {
		return nil, errSetup(err, "servers")
	}
	rtm, err := tenancy.NewRuntimeOverridesManager(cfg.RuntimeConfig, cfg.Limits, logger, reg)
	if err != nil {
		return nil, errSetup(err, "runtime config")
	}
	overrides := tenancy.NewOverrides(cfg.Limits, rtm)

	srv.Handle("GET /config", server.ConfigHandler(func() any { return cfg }))
	srv.Handle("GET /runtime_config", overrides.Handler())
	srv.Handle("GET /api/v1/user_limits", cfg.Auth.HTTPMiddleware(false)(overrides.UserLimitsHandler()))
	srv.AddLinks("Server", server.Link{Path: "/config", Desc: "Effective configuration"},
		server.Link{Path: "/runtime_config", Desc: "Per-tenant overrides in force"},
		server.Link{Path: "/api/v1/user_limits", Desc: "Limits of the requesting tenant (needs X-Scope-OrgID)"})

	runtimeReady := srv.Ready.Register("runtime-config")
	addContextActor(g, func(ctx context.Context) error { return rtm.Run(ctx, runtimeReady) })
	srv.Run(g)
	return &process{srv: srv, overrides: overrides}, nil
}

// newBucket builds the bucket (filesystem under <data-dir>/bucket by default) and closes it on shutdown.
func newBucket(g *run.Group, p *process, cfg *Config, logger log.Logger, reg prometheus.Registerer) (objstore.Bucket, error) {
	bkt, err := block.NewBucket(cfg.Objstore, cfg.DataDir, logger, reg)
	if err != nil {
		return nil, errSetup(err, "bucket")
	}
	p.srv.AddLinks("Bucket", server.Link{Path: "/metrics", Desc: bkt.Name() + " (strata_objstore_bucket_* metrics)"})
	bucketReady := p.srv.Ready.Register("bucket")
	addContextActor(g, func(ctx context.Context) error {
		bucketReady()
		<-ctx.Done()
		if err := bkt.Close(); err != nil {
			level.Warn(logger).Log("msg", "closing the bucket client", "err", err)
		}
		return nil
	})
	return bkt, nil
}
