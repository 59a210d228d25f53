package main

import (
	"context"
	"net/http"
	"path/filepath"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// registerIngesterFlags registers the flags of the ingester (strata ingester, strata all).
func registerIngesterFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	b.String(cmd.Flag("ingester.id", "This ingester's ID in the ring (default: the hostname)."), &cfg.Ingester.Instance.ID)
	b.String(cmd.Flag("ingester.availability-zone", "This ingester's availability zone."), &cfg.Ingester.Instance.Zone)
	b.String(cmd.Flag("ingester.instance-addr", "host:port distributors reach this ingester's gRPC at (default: the gRPC address, 0.0.0.0 replaced by this host's address)."), &cfg.Ingester.Instance.Addr)
	b.Duration(cmd.Flag("tsdb.block-duration", "Time range of one block; blocks are cut and shipped at this pace (≥ 1m)."), &cfg.Ingester.BlockDuration)
	b.Duration(cmd.Flag("tsdb.retention", "How long blocks stay on local disk (only shipped blocks are deleted)."), &cfg.Ingester.Retention)
	b.Duration(cmd.Flag("tsdb.ship-interval", "How often new blocks are shipped to the bucket."), &cfg.Ingester.ShipInterval)
	b.Duration(cmd.Flag("ingester.close-idle-tsdb-timeout", "Close (and remove) a tenant's TSDB with no write for this long, once everything is shipped; 0 disables."), &cfg.Ingester.CloseIdleTSDBTimeout)
	b.Duration(cmd.Flag("ingester.metadata-retain-period", "How long remote-written metric metadata is kept after it was last received."), &cfg.Ingester.MetadataRetainPeriod)
	b.Duration(cmd.Flag("ingester.active-series-metrics-idle-timeout", "A series without a sample for this long is not counted by the cardinality API's count_method=active."), &cfg.Ingester.ActiveSeriesIdleTimeout)
	b.StringMap(cmd.Flag("ingester.external-label", "name=value added to every series and block of this ingester (repeatable)."), &cfg.Ingester.ExternalLabels)
}

// runIngester runs `strata ingester`: per-tenant TSDBs fed by distributors, served over the StoreAPI, shipped
// to the bucket, in the ingester ring.
func runIngester(p *process) error {
	return setupAll(p, setupServers, setupBucket, setupIngesterRing, setupIngester)
}

// setupIngester adds an ingester to the process (in p.ingesterRing.local, by its address in the ring).
// On SIGTERM it stops shipping, then receive.Ingester.Stop leaves the ring after flushing.
func setupIngester(p *process) error {
	g, r, bkt, discarded, cfg, reg := p.g, p.ingesterRing, p.bkt, p.discardedSamples(), p.cfg, p.reg
	logger := log.With(p.logger, "component", "ingester")
	inst, err := ringInstance(p, cfg.Ingester.Instance, "ingester")
	if err != nil {
		return err
	}
	ing := receive.NewIngester(cfg.Ingester, filepath.Join(cfg.DataDir, "tsdb"), p.overrides, discarded, logger, reg,
		receive.WithLimitShare(r.limitShare(cfg, p.overrides.IngestionTenantShardSize)), receive.WithShippers(newShipperFactory(bkt, logger)))
	lc, err := ring.NewLifecycler(cfg.IngesterRing, inst, r.kv, "ingester", ring.IngesterRingKey, logger, reg)
	if err != nil {
		return errSetup(err, "ingester ring membership")
	}
	st := store.NewTSDBStore(ing, logger, store.WithExternalLabels(ing.ExternalLabels()), store.WithComponentType(store.ComponentReceive))
	if p.storeAPI != nil {
		p.storeAPI.ingester = st
	} else {
		storepb.RegisterStoreServer(p.srv.GRPC(), st)
		infopb.RegisterInfoServer(p.srv.GRPC(), metadataInfo{st})
	}
	receive.RegisterWriteableStore(p.srv.GRPC(), ing)
	receive.RegisterCompressedWrites(p.srv.GRPC(), ing, cfg.Server.MaxRecvMsgSize())
	metadatapb.RegisterMetadataServer(p.srv.GRPC(), ing.MetadataServer())
	cardinalitypb.RegisterCardinalityServer(p.srv.GRPC(), ing.CardinalityServer())
	r.local = map[string]*receive.Ingester{inst.Addr: ing}
	p.srv.Handle("POST /ingester/flush", p.admin(flushHandler(ing, logger)))
	p.srv.Handle("GET /ingester/late_writes", p.admin(ing.LateWritesHandler())) // read by query-frontends' results caches
	p.srv.AddLinks("Ingester", server.Link{Path: "/ingester/flush", Desc: "POST: cut every head into blocks and ship them now"})

	ready := p.srv.Ready.Register("ingester")
	r.users.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		defer r.users.Done()
		start := time.Now()
		if err := ing.Open(); err != nil {
			return errSetup(err, "ingester TSDBs")
		}
		level.Info(logger).Log("msg", "TSDBs open", "tenants", len(ing.Tenants()), "took", time.Since(start))
		if err := ring.StartService(ctx, lc); err != nil {
			_ = ing.Close()
			if ctx.Err() != nil {
				return nil
			}
			return errSetup(err, "join the ingester ring")
		}
		ready()
		shipCtx, stopShipping := context.WithCancel(context.Background())
		shippingDone := make(chan struct{})
		go func() { ing.RunShipping(shipCtx); close(shippingDone) }()

		<-ctx.Done()
		stopShipping()
		<-shippingDone
		return ing.Stop(lc)
	}, func(error) { cancel() })
	return nil
}

func flushHandler(ing *receive.Ingester, logger log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := ing.Flush(r.Context()); err != nil {
			level.Error(logger).Log("msg", "flush failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// newShipperFactory ships each tenant's blocks into <tenant>/ of the bucket, with source "receive". The shipper's
// metrics go to the tenant's registerer the ingester gives (labelled with the tenant, dropped when it closes).
func newShipperFactory(bkt objstore.Bucket, logger log.Logger) receive.ShipperFactory {
	return func(tenant, dir string, lbls labels.Labels, tenantReg prometheus.Registerer) (receive.Shipper, error) {
		return block.NewShipper(log.With(logger, "tenant", tenant), tenantReg, dir, objstore.NewPrefixedBucket(bkt, tenant),
			func() labels.Labels { return lbls }, block.ReceiveSource), nil
	}
}
