package main

import (
	"context"
	"os"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/server"
)

// runAll runs every component in one process, with a filesystem bucket under <data-dir>/bucket unless another
// bucket is configured. Components join it as they land (DESIGN.md §1).
func runAll(g *run.Group, logger log.Logger, reg *prometheus.Registry, cfg *Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return errSetup(err, "data directory "+cfg.DataDir)
	}
	p, err := newProcess(g, logger, reg, cfg)
	if err != nil {
		return err
	}
	bkt, err := block.NewBucket(cfg.Objstore, cfg.DataDir, logger, reg)
	if err != nil {
		return errSetup(err, "bucket")
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
	return nil
}
