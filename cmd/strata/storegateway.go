package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/run"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

type storeGatewayConfig struct {
	// SyncInterval is how often the bucket is scanned for new and deleted blocks (and on every ring change).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// IndexHeaderIdleTimeout unloads an index-header from memory after this long without a query (0: never).
	IndexHeaderIdleTimeout time.Duration `yaml:"index_header_idle_timeout"`
	// IgnoreDeletionMarkDelay: a block marked for deletion is still served by the store-gateways, and queried by
	// the queriers, until its mark is older than this (Mimir's ignore_deletion_mark_delay). Keep it well below
	// the compactor's deletion delay.
	IgnoreDeletionMarkDelay time.Duration       `yaml:"ignore_deletion_mark_delay"`
	MetaSyncConcurrency     int                 `yaml:"meta_sync_concurrency"`
	BlockQueryConcurrency   int                 `yaml:"block_query_concurrency"`
	IndexCache              cache.Config        `yaml:"index_cache"`
	ChunksCache             cache.Config        `yaml:"chunks_cache"`
	Instance                ring.InstanceConfig `yaml:"ring"`
}

func defaultStoreGatewayConfig() storeGatewayConfig {
	d := store.DefaultBucketStoreConfig()
	return storeGatewayConfig{
		SyncInterval:            15 * time.Minute,
		IndexHeaderIdleTimeout:  d.IndexHeaderIdleTimeout,
		IgnoreDeletionMarkDelay: d.IgnoreDeletionMarkDelay,
		MetaSyncConcurrency:     d.MetaSyncConcurrency,
		BlockQueryConcurrency:   d.BlockQueryConcurrency,
		IndexCache:              cache.Config{Backend: "inmemory", InMemory: cache.InMemoryConfig{MaxSizeBytes: 256 << 20}},
		ChunksCache:             cache.Config{Backend: "inmemory", InMemory: cache.InMemoryConfig{MaxSizeBytes: 512 << 20}},
		Instance:                ring.InstanceConfig{ID: ring.DefaultInstanceID()},
	}
}

// Validate checks the store-gateway's config.
func (c storeGatewayConfig) Validate() error {
	if c.SyncInterval <= 0 {
		return errors.New("store_gateway: sync_interval must be positive")
	}
	if c.IgnoreDeletionMarkDelay < 0 {
		return errors.Newf("store_gateway: ignore_deletion_mark_delay must not be negative; got %s", c.IgnoreDeletionMarkDelay)
	}
	if err := c.IndexCache.Validate(); err != nil {
		return errors.Wrap(err, "store_gateway.index_cache")
	}
	return errors.Wrap(c.ChunksCache.Validate(), "store_gateway.chunks_cache")
}

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
func runStoreGateway(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
	// The ring tokens are kept there, so a restarted gateway owns the same blocks.
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return errSetup(err, "data directory "+cfg.DataDir)
	}
	p, err := newProcess(g, logger, reg, cfg)
	if err != nil {
		return err
	}
	bkt, err := newBucket(g, p, cfg, logger, reg)
	if err != nil {
		return err
	}
	r, err := newIngesterRing(g, p, cfg, logger, reg)
	if err != nil {
		return err
	}
	gw, err := newGatewayRing(g, p, r, cfg, logger, reg)
	if err != nil {
		return err
	}
	_, err = setupStoreGateway(g, p, r, gw, bkt, false, cfg, logger, reg)
	return err
}

// localGateway is a store-gateway served in process (strata all, whose gRPC port serves the ingester's store):
// the querier reaches the gateway's address through this dialer instead of the network.
type localGateway struct {
	addr string
	dial func(ctx context.Context, addr string) (net.Conn, error)
	info infopb.InfoServer
}

// newGatewayRing watches the store-gateway ring (in the KV store of the ingester ring); its page is
// /store-gateway/ring.
func newGatewayRing(g *run.Group, p *process, r *ingesterRing, cfg *Config, logger log.Logger, reg prometheus.Registerer) (*dskitring.Ring, error) {
	client, err := ring.NewGatewayClient(cfg.StoreGatewayRing, r.kv, logger, reg)
	if err != nil {
		return nil, errSetup(err, "store-gateway ring client")
	}
	ready := p.srv.Ready.Register("store-gateway-ring")
	addContextActor(g, func(ctx context.Context) error { return ring.RunService(ctx, client, ready, nil) })
	p.srv.Handle("/store-gateway/ring", client)
	p.srv.AddLinks("Store-gateway ring", server.Link{Path: "/store-gateway/ring", Desc: "Store-gateways in the ring (JSON with Accept: application/json)"})
	return client, nil
}

// setupStoreGateway adds a store-gateway to the process: it joins the ring, syncs its blocks on start, every
// sync interval and when the ring changes, and serves them. It is ready once it knows its blocks; index-headers
// are built on first use, so it serves while it warms. With inProcess its StoreAPI is served on an in-memory
// listener, returned for the querier of the same process, instead of the process's gRPC server.
func setupStoreGateway(g *run.Group, p *process, r *ingesterRing, gw *dskitring.Ring, bkt objstore.Bucket, inProcess bool, cfg *Config, logger log.Logger, reg prometheus.Registerer) (*localGateway, error) {
	logger = log.With(logger, "component", "store-gateway")
	sg := cfg.StoreGateway
	inst := sg.Instance
	if inst.Addr == "" {
		addr, err := ring.AdvertiseAddr(p.srv.GRPCAddr(), hostAddr())
		if err != nil {
			return nil, errSetup(err, "store-gateway address")
		}
		inst.Addr = addr
	}
	if inst.TokensFile == "" {
		inst.TokensFile = filepath.Join(cfg.DataDir, "store-gateway-tokens.json")
	}
	indexCache, err := cache.New("index", sg.IndexCache, logger, reg)
	if err != nil {
		return nil, errSetup(err, "index cache")
	}
	chunksCache, err := cache.New("chunks", sg.ChunksCache, logger, reg)
	if err != nil {
		return nil, errSetup(err, "chunks cache")
	}
	owns := func(_ string, id ulid.ULID) (bool, error) {
		owners, err := ring.BlockOwners(gw, id, ring.BlocksOwnerSync)
		if err != nil {
			return false, err
		}
		for _, a := range owners {
			if a == inst.Addr {
				return true, nil
			}
		}
		return false, nil
	}
	bcfg := store.BucketStoreConfig{
		Dir:                     filepath.Join(cfg.DataDir, "store-gateway"),
		IndexHeaderIdleTimeout:  sg.IndexHeaderIdleTimeout,
		IgnoreDeletionMarkDelay: sg.IgnoreDeletionMarkDelay,
		MetaSyncConcurrency:     sg.MetaSyncConcurrency,
		BlockQueryConcurrency:   sg.BlockQueryConcurrency,
	}
	bs := store.NewBucketStore(bkt, bcfg, asStoreCache(indexCache), asStoreCache(chunksCache), owns, p.overrides, logger, reg, time.Now)
	var local *localGateway
	if inProcess {
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer(append(cfg.Server.GRPCMsgSizeOptions(),
			grpc.ChainUnaryInterceptor(cfg.Auth.UnaryServerInterceptor(grpcTenantExempt)),
			grpc.ChainStreamInterceptor(cfg.Auth.StreamServerInterceptor(grpcTenantExempt)),
		)...)
		storepb.RegisterStoreServer(srv, bs)
		infopb.RegisterInfoServer(srv, bs)
		g.Add(func() error { return srv.Serve(lis) }, func(error) { srv.Stop() })
		local = &localGateway{addr: inst.Addr, dial: func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }, info: bs}
	} else {
		storepb.RegisterStoreServer(p.srv.GRPC(), bs)
		infopb.RegisterInfoServer(p.srv.GRPC(), bs)
	}
	p.srv.Handle("GET /store-gateway/tenants", bs.TenantsHandler())
	p.srv.Handle("GET /store-gateway/tenant/{tenant}/blocks", bs.BlocksHandler())
	p.srv.AddLinks("Store-gateway", server.Link{Path: "/store-gateway/tenants", Desc: "Tenants and blocks served"})

	lc, err := ring.NewLifecycler(cfg.StoreGatewayRing, inst, r.kv, "store-gateway", ring.StoreGatewayRingKey, logger, reg)
	if err != nil {
		return nil, errSetup(err, "store-gateway ring membership")
	}
	ready := p.srv.Ready.Register("store-gateway")
	r.users.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		defer r.users.Done()
		defer cache.Close(indexCache)
		defer cache.Close(chunksCache)
		defer func() { _ = bs.Close() }()
		if err := ring.StartService(ctx, lc); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return errSetup(err, "join the store-gateway ring")
		}
		defer func() {
			if err := ring.Leave(lc, logger); err != nil {
				level.Warn(logger).Log("msg", "leaving the store-gateway ring", "err", err)
			}
		}()
		ring.WaitForInstance(ctx, gw, inst.Addr, 10*time.Second)
		runGatewaySync(ctx, bs, gw, sg, ready, logger)
		return nil
	}, func(error) { cancel() })
	return local, nil
}

// runGatewaySync syncs the blocks now and then every interval, when the ring's membership changes, and unloads
// idle index-headers, until ctx ends.
func runGatewaySync(ctx context.Context, bs *store.BucketStore, gw *dskitring.Ring, sg storeGatewayConfig, ready func(), logger log.Logger) {
	sync := func() {
		start := time.Now()
		if err := bs.SyncBlocks(ctx); err != nil && ctx.Err() == nil {
			level.Warn(logger).Log("msg", "block sync failed", "err", err)
			return
		}
		n := 0
		for _, t := range bs.Tenants() {
			n += len(bs.Blocks(t))
		}
		level.Debug(logger).Log("msg", "blocks synced", "blocks", n, "took", time.Since(start))
	}
	sync()
	ready()
	last := ring.MembershipState(gw)
	syncTick := time.NewTicker(sg.SyncInterval)
	defer syncTick.Stop()
	ringTick := time.NewTicker(5 * time.Second)
	defer ringTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-syncTick.C:
			sync()
		case <-ringTick.C:
			if s := ring.MembershipState(gw); s != last {
				last = s
				level.Info(logger).Log("msg", "store-gateway ring changed, syncing blocks")
				sync()
			}
			bs.UnloadIdle()
		}
	}
}

// asStoreCache adapts a possibly nil cache ("none") to the store's.
func asStoreCache(c cache.Cache) store.Cache {
	if c == nil {
		return nil
	}
	return c
}
