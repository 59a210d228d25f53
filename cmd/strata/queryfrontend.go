package main

import (
	"net"
	"net/http"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"

	"github.com/stratametrics/strata/pkg/query/frontend"
	"github.com/stratametrics/strata/pkg/server"
)

// registerQueryFrontendFlags registers the flags of the query-frontend (strata query-frontend, strata all).
func registerQueryFrontendFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config, standalone bool) {
	f := &cfg.QueryFrontend
	if standalone {
		b.Strings(cmd.Flag("query-frontend.downstream-url", "Base URL of a querier (http://host:port) the frontend forwards to; repeatable: each request goes to the one with the fewest in flight."), &f.DownstreamURLs)
	}
	b.Int(cmd.Flag("query-frontend.max-retries", "Times a request that failed with a 5xx or a network error is tried again (4xx never)."), &f.MaxRetries)
	b.Duration(cmd.Flag("query-frontend.split-queries-by-interval", "Split range queries at multiples of this interval (UTC days for 24h) and run the parts in parallel; 0 disables."), &f.SplitQueriesByInterval)
	b.Bool(cmd.Flag("query-frontend.align-queries-with-step", "Round range queries' start and end down to a multiple of their step."), &f.AlignQueriesWithStep)
	b.Int(cmd.Flag("query-frontend.max-outstanding-requests-per-tenant", "Requests of one tenant that may wait in the queue; beyond, 429."), &f.MaxOutstandingRequestsPerTenant)
	b.Int(cmd.Flag("query-frontend.max-concurrent", "Requests (all tenants) taken from the queue and run at once; tenants take turns."), &f.MaxConcurrent)
	b.Duration(cmd.Flag("query-frontend.log-queries-longer-than", "Log requests that took longer than this, with tenant, query, range and step (0: none)."), &f.LogQueriesLongerThan)
	registerResultsCacheFlags(cmd, b, cfg, standalone)
}

// runQueryFrontend runs `strata query-frontend`: the queriers' HTTP API in front of the queriers at
// --query-frontend.downstream-url.
func runQueryFrontend(p *process) error {
	if err := setupServers(p); err != nil {
		return err
	}
	if err := setupResultsCacheBucket(p); err != nil {
		return err
	}
	if len(p.cfg.QueryFrontend.DownstreamURLs) == 0 {
		return errSetup(errors.New("--query-frontend.downstream-url is required"), "query-frontend")
	}
	m := frontend.NewMetrics(p.reg)
	// A bounded dial: a querier whose host is gone (SYNs dropped) fails in seconds and the retry goes to another.
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	client := p.internalClient(p.cfg.QueryFrontend.DownstreamTimeout, &http.Transport{
		DialContext: dialer.DialContext, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		ResponseHeaderTimeout: p.cfg.QueryFrontend.DownstreamTimeout,
	})
	down, err := frontend.NewDownstream(p.cfg.QueryFrontend.DownstreamURLs, client, m)
	if err != nil {
		return errSetup(err, "query-frontend")
	}
	return setupQueryFrontend(p, down, m)
}

// setupQueryFrontend serves the Prometheus HTTP API under /api/v1/ and /prometheus/api/v1/ through the frontend,
// in front of down.
func setupQueryFrontend(p *process, down frontend.Handler, m *frontend.Metrics) error {
	rc, err := newResultsCache(p, log.With(p.logger, "component", "query-frontend"))
	if err != nil {
		return errSetup(err, "query-frontend")
	}
	f, err := frontend.New(p.cfg.QueryFrontend, frontend.Options{
		Auth: p.cfg.Auth, Limits: p.overrides, Downstream: down, Metrics: m, ResultsCache: rc,
		Logger: log.With(p.logger, "component", "query-frontend"), Now: time.Now,
	})
	if err != nil {
		return errSetup(err, "query-frontend")
	}
	p.srv.OnShutdown(f.Stop) // queued requests get a 503 when the process begins to stop
	p.srv.Handle("/api/v1/", f)
	p.srv.Handle("/prometheus/api/v1/", f)
	p.srv.AddLinks("Query-frontend",
		server.Link{Path: "/prometheus/api/v1/query?query=up", Desc: "Prometheus HTTP API through the query-frontend (also under /api/v1/); needs X-Scope-OrgID"})
	return nil
}
