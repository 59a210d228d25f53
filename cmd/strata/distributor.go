package main

import (
	"context"

	"github.com/go-kit/log"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/server"
)

// runDistributor runs `strata distributor`: remote write in, validated, limited, sharded and replicated over
// the ingester ring.
func runDistributor(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
	p, err := newProcess(g, logger, reg, cfg)
	if err != nil {
		return err
	}
	r, err := newIngesterRing(g, p, cfg, logger, reg)
	if err != nil {
		return err
	}
	return setupDistributor(g, p, r, nil, receive.NewDiscardedSamples(reg), cfg, logger, reg)
}

// setupDistributor serves POST /api/v1/push and /api/v1/receive (remote write 1.0 and 2.0). local maps ring
// addresses of ingesters in this process to them, so writes to those skip the network.
func setupDistributor(g *run.Group, p *process, r *ingesterRing, local map[string]receive.Pusher, discarded *receive.DiscardedSamples, cfg *Config, logger log.Logger, reg prometheus.Registerer) error {
	logger = log.With(logger, "component", "distributor")
	pusher := receive.NewRingPusher(r.client, cfg.Distributor.RemoteTimeout, local, logger, reg)
	h := cfg.Auth.HTTPMiddleware(false)(receive.NewPushHandler(cfg.Distributor.PushConfig, p.overrides, pusher, logger, reg, receive.WithDiscardedSamples(discarded)))
	p.srv.Handle("POST /api/v1/push", h)
	p.srv.Handle("POST /api/v1/receive", h)
	p.srv.AddLinks("Distributor", server.Link{Path: "/api/v1/push", Desc: "POST: Prometheus remote write (1.0 and 2.0)"})
	addContextActor(g, func(ctx context.Context) error {
		<-ctx.Done()
		return pusher.Close()
	})
	return nil
}
