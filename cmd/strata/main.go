// Command strata runs one or all components of Strata. See DESIGN.md §1 for the components.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"

	"github.com/stratametrics/strata/pkg/server"
)

// component sets up one component (or several, for `all`) in the process's run group.
type component func(p *process) error

// components maps each subcommand to the function that runs it; registerComponents adds their flags.
func registerComponents(app *kingpin.Application, b *binder, cfg *Config) map[string]component {
	components := map[string]component{}
	allCmd := app.Command("all", "Run every component in one process (the default).").Default()
	registerIngesterFlags(allCmd, b, cfg)
	registerDistributorFlags(allCmd, b, cfg)
	registerQuerierFlags(allCmd, b, cfg)
	registerQueryFrontendFlags(allCmd, b, cfg, false)
	registerStoreGatewayFlags(allCmd, b, cfg)
	registerCompactorFlags(allCmd, b, cfg, false)
	components[allCmd.FullCommand()] = runAll

	distributorCmd := app.Command("distributor", "Accept remote write, validate, apply limits, and replicate over the ingester ring.")
	registerDistributorFlags(distributorCmd, b, cfg)
	components[distributorCmd.FullCommand()] = runDistributor

	ingesterCmd := app.Command("ingester", "Store recent samples in per-tenant TSDBs, serve them over the StoreAPI, ship blocks to the bucket.")
	registerIngesterFlags(ingesterCmd, b, cfg)
	components[ingesterCmd.FullCommand()] = runIngester

	querierCmd := app.Command("querier", "Evaluate PromQL over the ingesters and StoreAPI endpoints, with replica deduplication; Prometheus HTTP API.")
	registerQuerierFlags(querierCmd, b, cfg)
	components[querierCmd.FullCommand()] = runQuerier

	frontendCmd := app.Command("query-frontend", "Serve the queriers' HTTP API in front of them: per-tenant fair queue, range queries split by day and run in parallel, retries.")
	registerQueryFrontendFlags(frontendCmd, b, cfg, true)
	components[frontendCmd.FullCommand()] = runQueryFrontend

	gatewayCmd := app.Command("store-gateway", "Serve the bucket's blocks over the StoreAPI, sharded over the store-gateway ring.")
	registerStoreGatewayFlags(gatewayCmd, b, cfg)
	components[gatewayCmd.FullCommand()] = runStoreGateway

	sidecarCmd := app.Command("sidecar", "Run next to a Prometheus: serve its live data over the StoreAPI (remote read) and upload its blocks into <tenant>/ of the bucket.")
	registerSidecarFlags(sidecarCmd, b, cfg)
	components[sidecarCmd.FullCommand()] = runSidecar

	compactorCmd := app.Command("compactor", "Compact each tenant's blocks in the bucket (one copy of each sample, larger blocks), downsample, apply retention, delete marked blocks, write the bucket index.")
	registerCompactorFlags(compactorCmd, b, cfg, true)
	components[compactorCmd.FullCommand()] = runCompactor

	toolsCmd := app.Command("tools", "One-off tools; each runs and exits.")
	name, run := registerImportThanos(toolsCmd)
	components[name] = run
	return components
}

// parseArgs parses the command line and the config file it names into the effective config.
func parseArgs(args []string) (string, component, *Config, error) {
	app := kingpin.New("strata", "Strata: multi-tenant Prometheus storage that speaks Thanos and works like Mimir.")
	fillVersion()
	app.Version(version.Print("strata"))
	app.HelpFlag.Short('h')

	cfg := defaultConfig()
	b := &binder{}
	configFile := app.Flag("config.file", "YAML config file for every component; flags override it.").String()
	registerCommonFlags(app, b, &cfg)
	registerGatewayRingFlags(app, b, &cfg)
	components := registerComponents(app, b, &cfg)

	cmd, err := app.Parse(args)
	if err != nil {
		return "", nil, nil, errors.Wrap(err, "parse command line")
	}
	if err := loadConfig(&cfg, *configFile, b); err != nil {
		return "", nil, nil, err
	}
	return cmd, components[cmd], &cfg, nil
}

func main() {
	cmd, runComponent, cfg, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	logger := newLogger(cfg.Log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector("strata"))
	server.RegisterProcessCollectors(reg)

	var g run.Group
	addSignalHandler(&g, logger)
	if err := runComponent(newProcess(&g, logger, reg, cfg)); err != nil {
		level.Error(logger).Log("msg", "failed to set up "+cmd, "err", err)
		os.Exit(1)
	}
	if err := g.Run(); err != nil {
		level.Error(logger).Log("msg", cmd+" stopped with an error", "err", err)
		os.Exit(1)
	}
	level.Info(logger).Log("msg", "exiting")
}

func newLogger(cfg logConfig) log.Logger {
	var l log.Logger
	if cfg.Format == "json" {
		l = log.NewJSONLogger(log.NewSyncWriter(os.Stderr))
	} else {
		l = log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	}
	l = level.NewFilter(l, level.Allow(level.ParseDefault(cfg.Level, level.InfoValue())))
	return log.With(l, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
}

// addSignalHandler ends the group (and so the process, with exit code 0) on SIGINT or SIGTERM.
func addSignalHandler(g *run.Group, logger log.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(c)
		select {
		case s := <-c:
			level.Info(logger).Log("msg", "received signal, shutting down", "signal", s)
		case <-ctx.Done():
		}
		return nil
	}, func(error) { cancel() })
}

// addContextActor runs f in g with a context cancelled when g is interrupted.
func addContextActor(g *run.Group, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error { return f(ctx) }, func(error) { cancel() })
}

// errSetup wraps an error from setting up a part of a component.
func errSetup(err error, part string) error { return errors.Wrapf(err, "set up %s", part) }
