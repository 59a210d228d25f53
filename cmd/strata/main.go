// Command strata runs one or all components of Strata. See DESIGN.md §1 for the components.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
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
	applyRuntime(cfg.Runtime, cmd, os.Getenv("GOGC"), logger)

	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector("strata"))
	server.RegisterProcessCollectors(reg)

	var g run.Group
	addSignalHandler(&g, logger)
	p := newProcess(&g, logger, reg, cfg)
	if err := runComponent(p); err != nil {
		level.Error(logger).Log("msg", "failed to set up "+cmd, "err", err)
		os.Exit(1)
	}
	err = g.Run()
	code := exitCode(err, p.oneShot)
	switch {
	case code != 0 && errors.As(err, new(signalError)):
		level.Error(logger).Log("msg", cmd+" interrupted before it finished; run it again to resume", "err", err)
	case code != 0:
		level.Error(logger).Log("msg", cmd+" stopped with an error", "err", err)
	default:
		level.Info(logger).Log("msg", "exiting")
	}
	os.Exit(code)
}

// signalError is what the signal handler's actor returns: the group ended on a signal.
type signalError struct{ sig os.Signal }

func (e signalError) Error() string { return "received signal " + e.sig.String() }

// exitCode is the exit code of a process whose group ended with err: 0 for a server stopped by a signal, 130
// (a shell's code for SIGINT) for a one-shot tool stopped by one before it finished, 1 for another error.
func exitCode(err error, oneShot bool) int {
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(signalError)):
		if oneShot {
			return 130
		}
		return 0
	default:
		return 1
	}
}

// applyRuntime sets the collector's target percentage of component from the config, unless the GOGC
// environment variable (envGOGC) is set, which the Go runtime has applied already.
func applyRuntime(cfg runtimeConfig, component, envGOGC string, logger log.Logger) {
	if envGOGC != "" {
		level.Info(logger).Log("msg", "GOGC environment variable set: runtime.gogc ignored", "GOGC", envGOGC)
		return
	}
	debug.SetGCPercent(cfg.gogc(component))
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

// addSignalHandler ends the group on SIGINT or SIGTERM with a signalError (see exitCode).
func addSignalHandler(g *run.Group, logger log.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(c)
		select {
		case s := <-c:
			level.Info(logger).Log("msg", "received signal, shutting down", "signal", s)
			return signalError{sig: s}
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
