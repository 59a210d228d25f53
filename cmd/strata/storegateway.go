package main

import (
	"context"
	"path/filepath"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store/gateway"
)

// registerStoreGatewayFlags registers the flags of the store-gateway (strata store-gateway, strata all).
func registerStoreGatewayFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	sg := &cfg.StoreGateway
	b.Duration(cmd.Flag("sync-interval", "How often the store-gateway scans the bucket for new and deleted blocks."), &sg.SyncInterval)
	b.Duration(cmd.Flag("store-gateway.index-header-idle-timeout", "Unload a block's index-header from memory after this long without a query (0: never)."), &sg.IndexHeaderIdleTimeout)
	b.String(cmd.Flag("store-gateway.id", "This store-gateway's ID in the store-gateway ring (default: the hostname)."), &sg.Instance.ID)
	b.String(cmd.Flag("store-gateway.availability-zone", "This store-gateway's availability zone."), &sg.Instance.Zone)
	b.String(cmd.Flag("store-gateway.instance-addr", "host:port queriers reach this store-gateway's gRPC at (default: the gRPC address, 0.0.0.0 replaced by this host's address)."), &sg.Instance.Addr)
	b.String(cmd.Flag("store-gateway.index-cache.backend", "Index cache (postings, series): inmemory, memcached or none."), &sg.IndexCache.Backend)
	b.Strings(cmd.Flag("store-gateway.index-cache.memcached.addresses", "host:port of a memcached server of the index cache (repeatable)."), &sg.IndexCache.Memcached.Addresses)
	b.String(cmd.Flag("store-gateway.chunks-cache.backend", "Chunks cache: inmemory, memcached or none."), &sg.ChunksCache.Backend)
	b.Strings(cmd.Flag("store-gateway.chunks-cache.memcached.addresses", "host:port of a memcached server of the chunks cache (repeatable)."), &sg.ChunksCache.Memcached.Addresses)
}

// registerGatewayRingFlags registers the flags of the store-gateway ring and the store-gateway settings queriers
// read too.
func registerGatewayRingFlags(app *kingpin.Application, b *binder, cfg *Config) {
	r := &cfg.StoreGatewayRing
	b.Int(app.Flag("store-gateway.ring.replication-factor", "Store-gateways each block is served by (capped at the number of store-gateways)."), &r.ReplicationFactor)
	b.Bool(app.Flag("store-gateway.zone-awareness-enabled", "Place the replicas of a block in distinct availability zones."), &r.ZoneAwarenessEnabled)
	b.Duration(app.Flag("store-gateway.ring.heartbeat-period", "How often a store-gateway heartbeats into the ring."), &r.HeartbeatPeriod)
	b.Duration(app.Flag("store-gateway.ignore-deletion-marks-delay", "Blocks marked for deletion are still served by the store-gateways and queried by the queriers until their mark is older than this (Mimir's -blocks-storage.bucket-store.ignore-deletion-marks-delay). 0: dropped at once."), &cfg.StoreGateway.IgnoreDeletionMarkDelay)
	b.Duration(app.Flag("store-gateway.ring.heartbeat-timeout", "After this long without a heartbeat a store-gateway is unhealthy."), &r.HeartbeatTimeout)
}

// runStoreGateway runs `strata store-gateway`: the bucket's blocks over the StoreAPI, sharded over its ring.
func runStoreGateway(p *process) error {
	// mkDataDir: the ring tokens are kept there, so a restarted gateway owns the same blocks.
	return setupAll(p, (*process).mkDataDir, setupServers, setupBucket, setupIngesterRing, setupGatewayRing, setupStoreGateway)
}

// setupStoreGateway adds a store-gateway (gateway.Gateway) to the process, with its pages. In `strata all`
// (p.storeAPI set, the gRPC port serving the ingester's store) its StoreAPI is served in process for the
// querier of the process (p.localGateway); otherwise on the process's gRPC server.
func setupStoreGateway(p *process) error {
	cfg := p.cfg
	logger := log.With(p.logger, "component", "store-gateway")
	sgCfg := cfg.StoreGateway
	inst, err := ringInstance(p, sgCfg.Instance, "store-gateway")
	if err != nil {
		return err
	}
	sgCfg.Instance = inst
	gw, err := gateway.New(sgCfg, filepath.Join(cfg.DataDir, "store-gateway"), p.bkt, cfg.StoreGatewayRing, p.ingesterRing.kv, p.gatewayRing, p.overrides, logger, p.reg)
	if err != nil {
		return err
	}
	if p.storeAPI != nil {
		local := gw.ServeLocal(append(cfg.Server.GRPCMsgSizeOptions(),
			grpc.ChainUnaryInterceptor(cfg.Auth.UnaryServerInterceptor(grpcTenantExempt)),
			grpc.ChainStreamInterceptor(cfg.Auth.StreamServerInterceptor(grpcTenantExempt)),
		)...)
		p.g.Add(local.Serve, func(error) { local.Stop() })
		p.localGateway = local
	} else {
		gw.Register(p.srv.GRPC())
	}
	p.gateway = gw
	p.srv.Handle("GET /store-gateway/tenants", p.admin(gw.Store().TenantsHandler()))
	p.srv.Handle("GET /store-gateway/tenant/{tenant}/blocks", p.admin(gw.Store().BlocksHandler()))
	p.srv.AddLinks("Store-gateway", server.Link{Path: "/store-gateway/tenants", Desc: "Tenants and blocks served"})

	ready := p.srv.Ready.Register("store-gateway")
	r := p.ingesterRing
	r.users.Add(1) // leaving the ring needs gossip
	ctx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error {
		defer r.users.Done()
		return gw.Run(ctx, ready)
	}, func(error) { cancel() })
	return nil
}
