package main

import (
	"context"
	"net/http"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"

	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/sidecar"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// registerSidecarFlags registers the flags of `strata sidecar` (Thanos's sidecar flags where they apply).
func registerSidecarFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	sc := &cfg.Sidecar
	b.String(cmd.Flag("prometheus.url", "URL of the Prometheus next to the sidecar (its HTTP API and remote-read endpoint)."), &sc.PrometheusURL)
	b.Duration(cmd.Flag("prometheus.ready_timeout", "How long to wait at start for Prometheus to answer with its external labels."), &sc.PrometheusReadyTimeout)
	b.String(cmd.Flag("tsdb.path", "Prometheus's data directory (its --storage.tsdb.path): its blocks are uploaded, and thanos.shipper.json there records them."), &sc.TSDBPath)
	b.String(cmd.Flag("tenant", "Tenant the Prometheus's data belongs to (required): blocks go to <tenant>/ of the bucket, series carry tenant_id=<tenant>."), &sc.Tenant)
	b.Bool(cmd.Flag("shipper.upload-compacted", "Also upload blocks Prometheus compacted (level > 1), e.g. the history it kept before the sidecar ran."), &sc.UploadCompacted)
	b.Duration(cmd.Flag("shipper.sync-interval", "How often new blocks are looked for and uploaded (also once at shutdown)."), &sc.ShipInterval)
}

// runSidecar runs `strata sidecar`: next to one Prometheus, its live data over the StoreAPI and its blocks
// uploaded into <tenant>/ of the bucket (--objstore.config-file).
func runSidecar(p *process) error {
	if err := p.cfg.Sidecar.Validate(); err != nil {
		return err
	}
	return setupAll(p, setupServers, setupBucket, setupSidecar)
}

// setupSidecar adds a sidecar.Sidecar: its StoreAPI on the gRPC server, Thanos's /-/ready and /-/healthy, and
// its loop (external labels, shipping) in the run group. It is ready once Prometheus's external labels are read.
func setupSidecar(p *process) error {
	logger := log.With(p.logger, "component", "sidecar")
	sc, err := sidecar.New(p.cfg.Sidecar, p.bkt, logger, p.reg, sidecar.WithOverrides(p.overrides))
	if err != nil {
		return errSetup(err, "sidecar")
	}
	storepb.RegisterStoreServer(p.srv.GRPC(), sc.Store())
	infopb.RegisterInfoServer(p.srv.GRPC(), sc.Store())

	p.srv.Handle("GET /-/ready", p.srv.Ready)
	p.srv.Handle("GET /-/healthy", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("healthy\n"))
	}))
	p.srv.AddLinks("Sidecar", server.Link{Path: "/-/ready", Desc: "Ready once Prometheus's external labels are read (Thanos's path)"},
		server.Link{Path: "/-/healthy", Desc: "Healthy while the process runs (Thanos's path)"})

	ready := p.srv.Ready.Register("sidecar")
	addContextActor(p.g, func(ctx context.Context) error { return sc.Run(ctx, ready) })
	return nil
}
