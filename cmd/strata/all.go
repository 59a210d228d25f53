package main

import (
	"os"

	"github.com/go-kit/log"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/receive"
)

// runAll runs every component in one process, with a filesystem bucket under <data-dir>/bucket unless another
// bucket is configured. The distributor writes to the in-process ingester directly.
func runAll(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
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
	discarded := receive.NewDiscardedSamples(reg)
	ing, addr, err := setupIngester(g, p, r, bkt, discarded, cfg, logger, reg)
	if err != nil {
		return err
	}
	if err := setupDistributor(g, p, r, map[string]receive.Pusher{addr: ing}, discarded, cfg, logger, reg); err != nil {
		return err
	}
	gw, err := newGatewayRing(g, p, r, cfg, logger, reg)
	if err != nil {
		return err
	}
	local, err := setupStoreGateway(g, p, r, gw, bkt, true, cfg, logger, reg)
	if err != nil {
		return err
	}
	_, err = setupQuerier(g, p, r, gw, bkt, local, cfg, logger, reg)
	return err
}
