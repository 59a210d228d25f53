// Package gateway is the store-gateway: a BucketStore that serves the blocks a store-gateway ring gives it,
// kept in sync with the bucket and the ring.
package gateway

import (
	"context"
	"net"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/stratametrics/strata/pkg/cache"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Gateway is one store-gateway: it joins the store-gateway ring, serves the blocks the ring gives it (over the
// StoreAPI, on a gRPC server or in process) and syncs them on start, every sync interval and when the ring's
// membership changes.
type Gateway struct {
	cfg    Config
	ring   dskitring.ReadRing
	lc     *dskitring.BasicLifecycler
	store  *store.BucketStore
	caches []cache.Cache
	logger log.Logger
}

// New builds a store-gateway over the bucket: its caches, its BucketStore (index-headers under dir) and its
// membership of the store-gateway ring (ringCfg, in kv) as cfg.Instance, which must have its address and tokens
// file set. ringClient is the process's client of that ring, which decides which blocks it owns.
func New(cfg Config, dir string, bkt objstore.Bucket, ringCfg ring.Config, kv *ring.KV, ringClient dskitring.ReadRing, overrides *tenancy.Overrides, logger log.Logger, reg prometheus.Registerer) (*Gateway, error) {
	indexCache, err := cache.New("index", cfg.IndexCache, logger, reg)
	if err != nil {
		return nil, errors.Wrap(err, "set up index cache")
	}
	chunksCache, err := cache.New("chunks", cfg.ChunksCache, logger, reg)
	if err != nil {
		return nil, errors.Wrap(err, "set up chunks cache")
	}
	g := &Gateway{cfg: cfg, ring: ringClient, caches: []cache.Cache{indexCache, chunksCache}, logger: logger}
	bcfg := store.BucketStoreConfig{
		Dir:                     dir,
		IndexHeaderIdleTimeout:  cfg.IndexHeaderIdleTimeout,
		IgnoreDeletionMarkDelay: cfg.IgnoreDeletionMarkDelay,
		MetaSyncConcurrency:     cfg.MetaSyncConcurrency,
		BlockQueryConcurrency:   cfg.BlockQueryConcurrency,
	}
	g.store = store.NewBucketStore(bkt, bcfg, asStoreCache(indexCache), asStoreCache(chunksCache), g.owns, overrides, logger, reg, time.Now)
	g.lc, err = ring.NewLifecycler(ringCfg, cfg.Instance, kv, "store-gateway", ring.StoreGatewayRingKey, logger, reg)
	if err != nil {
		return nil, errors.Wrap(err, "set up store-gateway ring membership")
	}
	return g, nil
}

// Store is the gateway's BucketStore (its StoreAPI and pages).
func (g *Gateway) Store() *store.BucketStore { return g.store }

// Register serves the gateway's StoreAPI and Info on s.
func (g *Gateway) Register(s grpc.ServiceRegistrar) {
	storepb.RegisterStoreServer(s, g.store)
	infopb.RegisterInfoServer(s, g.store)
}

// owns tells whether the ring gives this gateway the block (to hold it, BlocksOwnerSync: a joining or leaving
// gateway keeps its blocks until its replacement serves them).
func (g *Gateway) owns(_ string, id ulid.ULID) (bool, error) {
	owners, err := ring.BlockOwners(g.ring, id, ring.BlocksOwnerSync)
	if err != nil {
		return false, err
	}
	for _, a := range owners {
		if a == g.cfg.Instance.Addr {
			return true, nil
		}
	}
	return false, nil
}

// Run joins the ring, syncs the blocks and keeps them in sync until ctx ends; then it leaves the ring and closes
// the store and the caches. ready is called once the gateway knows its blocks (index-headers are built on first
// use, so it serves while it warms).
func (g *Gateway) Run(ctx context.Context, ready func()) error {
	for _, c := range g.caches {
		defer cache.Close(c)
	}
	defer func() { _ = g.store.Close() }()
	if err := ring.StartService(ctx, g.lc); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return errors.Wrap(err, "set up join the store-gateway ring")
	}
	defer func() {
		if err := ring.Leave(g.lc, g.logger); err != nil {
			level.Warn(g.logger).Log("msg", "leaving the store-gateway ring", "err", err)
		}
	}()
	ring.WaitForInstance(ctx, g.ring, g.cfg.Instance.Addr, 10*time.Second)
	g.runSync(ctx, ready)
	return nil
}

// runSync syncs the blocks now and then every interval, when the ring's membership changes, and unloads idle
// index-headers, until ctx ends.
func (g *Gateway) runSync(ctx context.Context, ready func()) {
	sync := func() {
		start := time.Now()
		if err := g.store.SyncBlocks(ctx); err != nil && ctx.Err() == nil {
			level.Warn(g.logger).Log("msg", "block sync failed", "err", err)
			return
		}
		n := 0
		for _, t := range g.store.Tenants() {
			n += len(g.store.Blocks(t))
		}
		level.Debug(g.logger).Log("msg", "blocks synced", "blocks", n, "took", time.Since(start))
	}
	sync()
	ready()
	last := ring.MembershipState(g.ring)
	syncTick := time.NewTicker(g.cfg.SyncInterval)
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
			if s := ring.MembershipState(g.ring); s != last {
				last = s
				level.Info(g.logger).Log("msg", "store-gateway ring changed, syncing blocks")
				sync()
			}
			g.store.UnloadIdle()
		}
	}
}

// Local is a gateway's StoreAPI served in process, on an in-memory listener: a querier of the same process
// (strata all, whose gRPC port serves the ingester's store) reaches the gateway's ring address through Dial
// instead of the network.
type Local struct {
	// Addr is the gateway's address in the ring.
	Addr string
	lis  *bufconn.Listener
	srv  *grpc.Server
}

// ServeLocal returns the gateway's StoreAPI on a gRPC server with opts over an in-memory listener; it serves
// once Serve runs.
func (g *Gateway) ServeLocal(opts ...grpc.ServerOption) *Local {
	l := &Local{Addr: g.cfg.Instance.Addr, lis: bufconn.Listen(1 << 20), srv: grpc.NewServer(opts...)}
	g.Register(l.srv)
	return l
}

// Serve serves until Stop.
func (l *Local) Serve() error { return l.srv.Serve(l.lis) }

// Stop stops the server.
func (l *Local) Stop() { l.srv.Stop() }

// Dial connects to the in-memory listener, whatever the address (a grpc.WithContextDialer).
func (l *Local) Dial(ctx context.Context, _ string) (net.Conn, error) { return l.lis.DialContext(ctx) }

// asStoreCache adapts a possibly nil cache ("none") to the store's.
func asStoreCache(c cache.Cache) store.Cache {
	if c == nil {
		return nil
	}
	return c
}
