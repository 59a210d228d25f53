package main

import (
	"context"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// runIngester runs `strata ingester`: per-tenant TSDBs fed by distributors, served over the StoreAPI, shipped
// to the bucket, in the ingester ring.
func runIngester(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
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
	_, _, err = setupIngester(g, p, r, bkt, receive.NewDiscardedSamples(reg), cfg, logger, reg)
	return err
}

// setupIngester adds an ingester to the process and returns it with its address in the ring.
// On SIGTERM it stops shipping, then receive.Ingester.Stop leaves the ring after flushing.
func setupIngester(g *run.Group, p *process, r *ingesterRing, bkt objstore.Bucket, discarded *receive.DiscardedSamples, cfg *Config, logger log.Logger, reg prometheus.Registerer) (*receive.Ingester, string, error) {
	logger = log.With(logger, "component", "ingester")
	inst := cfg.Ingester.Instance
	if inst.Addr == "" {
		addr, err := ring.AdvertiseAddr(p.srv.GRPCAddr(), hostAddr())
		if err != nil {
			return nil, "", errSetup(err, "ingester address")
		}
		inst.Addr = addr
	}
	if inst.TokensFile == "" {
		inst.TokensFile = filepath.Join(cfg.DataDir, "ingester-tokens.json")
	}
	ing := receive.NewIngester(cfg.Ingester.IngesterConfig, filepath.Join(cfg.DataDir, "tsdb"), p.overrides, discarded, logger, reg,
		receive.WithLimitShare(r.limitShare(cfg)), receive.WithShippers(newShipperFactory(bkt, logger)))
	lc, err := ring.NewLifecycler(cfg.IngesterRing, inst, r.kv, "ingester", ring.IngesterRingKey, logger, reg)
	if err != nil {
		return nil, "", errSetup(err, "ingester ring membership")
	}
	st := store.NewTSDBStore(ing, logger, store.WithExternalLabels(ing.ExternalLabels()), store.WithComponentType(store.ComponentReceive))
	if p.storeAPI != nil {
		p.storeAPI.ingester = st
	} else {
		storepb.RegisterStoreServer(p.srv.GRPC(), st)
		infopb.RegisterInfoServer(p.srv.GRPC(), metadataInfo{st})
	}
	storepb.RegisterWriteableStoreServer(p.srv.GRPC(), ing)
	metadatapb.RegisterMetadataServer(p.srv.GRPC(), ing.MetadataServer())
	r.local = map[string]*receive.Ingester{inst.Addr: ing}
	p.srv.Handle("POST /ingester/flush", flushHandler(ing, logger))
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
	return ing, inst.Addr, nil
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
