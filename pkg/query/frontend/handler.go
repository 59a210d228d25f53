package frontend

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// statusClientClosed is the status logged and counted for a request whose client went away (nginx's 499).
const statusClientClosed = 499

// Frontend is the query-frontend's HTTP handler: the querier's API paths, in front of a chain of Middlewares.
type Frontend struct {
	cfg     Config
	edge    http.Handler // the tenant check, then serve
	handler Handler
	queue   *queue
	limits  Limits
	logger  log.Logger
	now     func() time.Time
	metrics *frontendMetrics
}

// Options are what New needs besides the config.
type Options struct {
	// Auth finds the tenants of a request: one, or several for a federated read ("a|b", at most the tenants'
	// max_tenants), passed on to the queriers as received.
	Auth   tenancy.Config
	Limits Limits
	// Downstream answers the requests the chain passes on (NewDownstream / NewInProcessDownstream, with the
	// same Metrics).
	Downstream Handler
	// ResultsCache, if set, is inserted between the split and the retry (it sees each part of a split query).
	ResultsCache Middleware
	Logger       log.Logger
	Now          func() time.Time
	Metrics      *Metrics
}

// Metrics are the frontend's metrics, shared by the frontend and its downstream.
type Metrics struct{ m *frontendMetrics }

// NewMetrics registers the strata_query_frontend_* metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics { return &Metrics{newFrontendMetrics(reg)} }

// New returns the frontend. The chain of a request, outermost first:
//
//	queue (per-tenant fair queue, max_outstanding_requests_per_tenant, max_concurrent)
//	→ step alignment (align_queries_with_step only)
//	→ split by interval (query_range; max_query_parallelism parts at once; merge)
//	→ results cache (Options.ResultsCache, per part)
//	→ retry (5xx and network errors, max_retries)
//	→ downstream (the queriers)
//
// Requests other than range queries go through the same chain; the alignment, the split (and the cache) pass
// them on unchanged.
func New(cfg Config, o Options) (*Frontend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Downstream == nil || o.Limits == nil || o.Metrics == nil {
		return nil, errors.New("query-frontend: Downstream, Limits and Metrics are required")
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := o.Metrics.m
	q := newQueue(cfg.MaxOutstandingRequestsPerTenant, cfg.MaxConcurrent, o.Now, m)
	ms := []Middleware{q.middleware}
	if cfg.AlignQueriesWithStep {
		ms = append(ms, stepAlignMiddleware)
	}
	ms = append(ms, splitMiddleware(cfg.SplitQueriesByInterval, o.Limits, m))
	if o.ResultsCache != nil {
		ms = append(ms, o.ResultsCache)
	}
	ms = append(ms, retryMiddleware(cfg.MaxRetries, m, o.Logger))
	f := &Frontend{cfg: cfg, handler: Chain(o.Downstream, ms...), queue: q, limits: o.Limits, logger: o.Logger, now: o.Now, metrics: m}
	f.edge = o.Auth.HTTPMiddleware(true)(http.HandlerFunc(f.serve))
	return f, nil
}

// Stop is called when the process begins to shut down: requests waiting in the queue, and any arriving later,
// are answered 503 at once (not cut off with their connection when the graceful shutdown times out); running
// requests finish.
func (f *Frontend) Stop() { f.queue.stop() }

// ServeHTTP serves /api/v1/… and /prometheus/api/v1/… as the querier does.
func (f *Frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.edge.ServeHTTP(w, r)
}

func (f *Frontend) serve(w http.ResponseWriter, r *http.Request) {
	start := f.now()
	tenants, _ := tenancy.TenantsFromContext(r.Context())
	r.Body = http.MaxBytesReader(w, r.Body, f.cfg.MaxBodyBytes)
	if err := tenancy.CheckMaxTenants(tenants, f.limits.MaxTenants); err != nil {
		f.finish(w, &Request{Path: r.URL.Path, Tenants: tenants}, NewErrorResponse(err.Status, "bad_data", err.Error()), start)
		return
	}
	req, err := ParseRequest(r, tenants)
	if err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		f.finish(w, &Request{Path: r.URL.Path, Tenants: tenants}, NewErrorResponse(status, "bad_data", err.Error()), start)
		return
	}
	ctx := WithSnapshotScope(r.Context()) // one data generation per request (results cache)
	if f.cfg.DownstreamTimeout > 0 {
		// The whole request (queue, parts, retries) is bounded: hung queriers give a 504, not (retries+1) waits.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.cfg.DownstreamTimeout)
		defer cancel()
	}
	resp, err := f.handler.Do(ctx, req)
	if err != nil {
		switch {
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			resp = NewErrorResponse(statusClientClosed, "canceled", "the client closed the request")
		case errors.Is(err, context.DeadlineExceeded):
			resp = NewErrorResponse(http.StatusGatewayTimeout, "timeout", err.Error())
		default:
			level.Warn(f.logger).Log("msg", "query-frontend request failed", "path", req.Path, "err", err)
			resp = NewErrorResponse(http.StatusBadGateway, "unavailable", err.Error())
		}
	}
	f.finish(w, req, resp, start)
}

func (f *Frontend) finish(w http.ResponseWriter, req *Request, resp *Response, start time.Time) {
	resp.WriteTo(w)
	took := f.now().Sub(start)
	endpoint := endpointOf(req.Path)
	f.metrics.requests.WithLabelValues(req.TenantHeader(), endpoint, strconv.Itoa(resp.StatusCode)).Inc()
	f.metrics.duration.WithLabelValues(endpoint).Observe(took.Seconds())
	if f.cfg.LogQueriesLongerThan > 0 && took > f.cfg.LogQueriesLongerThan {
		f.metrics.slowQueries.Inc()
		kv := []any{"msg", "slow query", "tenant", req.TenantHeader(), "path", req.Path, "query", req.Query,
			"status", resp.StatusCode, "duration", took}
		if req.IsRange {
			kv = append(kv, "start", time.UnixMilli(req.Start).UTC().Format(time.RFC3339Nano),
				"end", time.UnixMilli(req.End).UTC().Format(time.RFC3339Nano),
				"range", time.Duration(req.End-req.Start)*time.Millisecond, "step", time.Duration(req.Step)*time.Millisecond)
		}
		level.Info(f.logger).Log(kv...)
	}
}

func endpointOf(path string) string {
	switch path {
	case PathQueryRange:
		return "query_range"
	case PathQuery:
		return "query"
	}
	if strings.HasPrefix(path, "/api/v1/") {
		return "other"
	}
	return "unknown"
}
