package main

import (
	"context"
	"errors"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/services"

	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
)

// registerDistributorFlags registers the flags of the distributor (strata distributor, strata all).
func registerDistributorFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	b.String(cmd.Flag("distributor.id", "This distributor's ID in the distributor ring, which shares each tenant's ingestion rate among the distributors (default: the hostname)."), &cfg.Distributor.InstanceID)
	b.Int(cmd.Flag("distributor.max-recv-msg-size", "Largest remote-write request body accepted, in bytes (413 beyond)."), &cfg.Distributor.MaxRecvMsgSize)
	b.Duration(cmd.Flag("distributor.remote-timeout", "Timeout of one write to one ingester."), &cfg.Distributor.RemoteTimeout)
	b.Int(cmd.Flag("distributor.validated-series-cache-size", "Series, over all tenants, remembered as having valid labels, which are then not checked again (11-21 bytes each; 0: check every series). Unused with an in-process ingester (strata all), which knows its series by their bytes."), &cfg.Distributor.ValidatedSeriesCacheSize)
	b.Int(cmd.Flag("distributor.instance-limits.max-inflight-push-requests", "Push requests this distributor handles at once; 503 beyond (0: no limit)."), &cfg.Distributor.InstanceLimits.MaxInflightPushRequests)
	registerHATrackerFlags(cmd, b, cfg)
	b.Int(cmd.Flag("distributor.instance-limits.max-inflight-push-requests-bytes", "Memory the push requests this distributor handles at once may hold: bodies as received and decompressed, and what they decode into (estimated before decoding); 503 beyond (0: no limit)."), &cfg.Distributor.InstanceLimits.MaxInflightPushRequestsBytes)
}

// runDistributor runs `strata distributor`: remote write in, validated, limited, sharded and replicated over
// the ingester ring.
func runDistributor(p *process) error {
	return setupAll(p, setupServers, setupIngesterRing, setupDistributor)
}

// setupDistributor serves POST /api/v1/push and /api/v1/receive (remote write 1.0 and 2.0) and
// /otlp/v1/metrics (OTLP/HTTP metrics). Writes to the ingesters of this process (p.ingesterRing.local, strata
// all) skip the network.
func setupDistributor(p *process) error {
	cfg := p.cfg
	logger := log.With(p.logger, "component", "distributor")
	distributors, err := joinDistributorRing(p, logger)
	if err != nil {
		return err
	}
	var local map[string]receive.Pusher
	for addr, ing := range p.ingesterRing.local {
		if local == nil {
			local = map[string]receive.Pusher{}
		}
		local[addr] = ing
	}
	ha, err := setupHATracker(p, logger)
	if err != nil {
		return err
	}
	pusher := receive.NewRingPusher(p.ingesterRing.client, cfg.Distributor.RemoteTimeout, local, logger, p.reg).
		WithShuffleSharding(p.overrides.IngestionTenantShardSize).WithDialOptions(p.dialOpts...)
	dcfg := cfg.Distributor
	if local != nil {
		dcfg.ValidatedSeriesCacheSize = 0 // the in-process ingester knows its series by their bytes (seriesRefs)
	}
	d := receive.NewDistributor(dcfg, p.overrides, pusher, logger, p.reg,
		receive.WithDiscardedSamples(p.discardedSamples()), receive.WithDistributorCount(distributors.Get), receive.WithHATracker(ha))
	h := cfg.Auth.HTTPMiddleware(false)(receive.NewPushHandler(d))
	// Method-less patterns: the handler answers other methods 405 with Allow: POST itself. "POST /api/v1/push"
	// would leave GET /api/v1/push to the querier's "/api/v1/" in `strata all` (a 404).
	p.srv.Handle("/api/v1/push", h)
	p.srv.Handle("/api/v1/receive", h)
	p.srv.AddLinks("Distributor", server.Link{Path: "/api/v1/push", Desc: "POST: Prometheus remote write (1.0 and 2.0)"})
	p.srv.Handle("GET /api/v1/user_stats", cfg.Auth.HTTPMiddleware(false)(d.UserStatsHandler()))
	otlp := receive.NewOTLPHandler(d, p.reg)
	p.srv.Handle("/otlp/v1/metrics", cfg.Auth.HTTPMiddleware(false)(otlp))
	p.srv.AddLinks("Distributor", server.Link{Path: "/otlp/v1/metrics", Desc: "POST: OTLP/HTTP metrics (protobuf, JSON)"})
	addContextActor(p.g, func(ctx context.Context) error {
		<-ctx.Done()
		return errors.Join(otlp.Close(), pusher.Close())
	})
	return nil
}

// joinDistributorRing registers this distributor in the distributor ring and counts the healthy distributors
// (every 5s), so each admits 1/N of a tenant's ingestion rate. Page: /distributor/ring.
func joinDistributorRing(p *process, logger log.Logger) (*ring.HealthyCount, error) {
	g, r, cfg, reg := p.g, p.ingesterRing, p.cfg, p.reg
	addr, err := ring.AdvertiseAddr(p.srv.GRPCAddr(), hostAddr())
	if err != nil {
		return nil, errSetup(err, "distributor address")
	}
	rcfg := cfg.IngesterRing
	rcfg.NumTokens = 1 // the ring only counts distributors
	lc, err := ring.NewLifecycler(rcfg, ring.InstanceConfig{ID: cfg.Distributor.InstanceID, Addr: addr}, r.kv, "distributor", ring.DistributorRingKey, logger, reg)
	if err != nil {
		return nil, errSetup(err, "distributor ring membership")
	}
	client, err := ring.NewClient(rcfg, r.kv, "distributor", ring.DistributorRingKey, logger, reg)
	if err != nil {
		return nil, errSetup(err, "distributor ring client")
	}
	p.srv.Handle("/distributor/ring", p.admin(client))
	p.srv.AddLinks("Distributor", server.Link{Path: "/distributor/ring", Desc: "Distributors in the ring"})
	count := ring.NewHealthyCount(client)
	ready := p.srv.Ready.Register("distributor-ring")
	r.users.Add(1) // leaving the ring needs gossip
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		defer r.users.Done()
		for _, svc := range []services.Service{lc, client} {
			if err := ring.StartService(ctx, svc); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return errSetup(err, "join the distributor ring")
			}
		}
		count.Refresh()
		ready()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				count.Refresh()
			case <-ctx.Done():
				_ = services.StopAndAwaitTerminated(context.Background(), client)
				return ring.Leave(lc, logger)
			}
		}
	}, func(error) { cancel() })
	return count, nil
}
