package query

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/grafana/regexp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/route"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/features"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// EngineConfig configures the PromQL engine of the querier.
type EngineConfig struct {
	LookbackDelta time.Duration `yaml:"lookback_delta"`
	MaxSamples    int           `yaml:"max_samples"`
	Timeout       time.Duration `yaml:"timeout"`
	// DefaultEvaluationInterval is the step of a subquery that names none (Prometheus's global
	// evaluation_interval).
	DefaultEvaluationInterval time.Duration `yaml:"default_evaluation_interval"`
	// Expression bounds every query expression before it is parsed.
	Expression ExpressionLimits `yaml:",inline"`
}

// DefaultEngineConfig is Prometheus's defaults (Mimir's for max samples).
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{
		LookbackDelta: 5 * time.Minute, MaxSamples: 50_000_000, Timeout: 2 * time.Minute, DefaultEvaluationInterval: time.Minute,
		Expression: DefaultExpressionLimits(),
	}
}

// EngineOpts are the promql.EngineOpts the querier uses: `@`, negative offsets and native histograms on, as in
// Thanos and Mimir.
func EngineOpts(cfg EngineConfig, logger log.Logger, reg prometheus.Registerer) promql.EngineOpts {
	interval := cfg.DefaultEvaluationInterval.Milliseconds()
	return promql.EngineOpts{
		Logger:                   server.Slog(logger),
		Reg:                      reg,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return interval },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnablePerStepStats:       true,
		EnableDelayedNameRemoval: false,
		// count_over_time counts raw samples over downsampled data too (see countSamplesLabel); an engine with
		// this parser must query a Queryable of this package.
		Parser: newCountOverTimeParser(),
	}
}

// tenantEngines is a promql.QueryEngine that applies the tenant's max_samples: the default engine, or one per
// distinct override (without metrics of its own).
type tenantEngines struct {
	opts      promql.EngineOpts
	def       *promql.Engine
	overrides *tenancy.Overrides

	mtx   sync.Mutex
	byMax map[int]*promql.Engine
}

func newTenantEngines(opts promql.EngineOpts, overrides *tenancy.Overrides) *tenantEngines {
	return &tenantEngines{opts: opts, def: promql.NewEngine(opts), overrides: overrides, byMax: map[int]*promql.Engine{}}
}

// engine returns the engine for the request's tenant and the max samples it applies (a federated read: the
// smallest of its tenants').
func (e *tenantEngines) engine(ctx context.Context) (*promql.Engine, int) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return e.def, e.opts.MaxSamples
	}
	maxSamples := tenancy.SmallestLimit(tenants, e.overrides.MaxSamples)
	if maxSamples == 0 || maxSamples == e.opts.MaxSamples {
		return e.def, e.opts.MaxSamples
	}
	e.mtx.Lock()
	defer e.mtx.Unlock()
	eng, ok := e.byMax[maxSamples]
	if !ok {
		opts := e.opts
		opts.MaxSamples, opts.Reg = maxSamples, nil
		eng = promql.NewEngine(opts)
		e.byMax[maxSamples] = eng
	}
	return eng, maxSamples
}

func (e *tenantEngines) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	eng, maxSamples := e.engine(ctx)
	qry, err := eng.NewInstantQuery(ctx, q, opts, qs, ts)
	if err != nil {
		return nil, err
	}
	return &limitedQuery{Query: qry, maxSamples: maxSamples}, nil
}

func (e *tenantEngines) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	eng, maxSamples := e.engine(ctx)
	qry, err := eng.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil {
		return nil, err
	}
	return &limitedQuery{Query: qry, maxSamples: maxSamples}, nil
}

// limitedQuery answers PromQL's "too many samples" with the error that names the limit and how to raise it.
type limitedQuery struct {
	promql.Query
	maxSamples int
}

func (q *limitedQuery) Exec(ctx context.Context) *promql.Result {
	res := q.Query.Exec(ctx)
	var tooMany promql.ErrTooManySamples
	if res.Err != nil && errors.As(res.Err, &tooMany) {
		res.Err = tenancy.NewMaxSamplesPerQueryError(q.maxSamples)
	}
	return res
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	Engine EngineConfig
	// PartialResponse is the default of the `partial_response` parameter.
	PartialResponse bool
	// AutoDownsampling makes a request without `max_source_resolution` choose it from the step (Thanos's
	// --query.auto-downsampling).
	AutoDownsampling bool
	// Metadata answers /metadata (metadata.go); without it the answer is empty.
	Metadata *MetadataQuerier
	// Cardinality answers /cardinality/label_names, /cardinality/label_values and /status/tsdb (cardinality.go);
	// without it they are 404.
	Cardinality *CardinalityQuerier
}

// apiPaths are the Prometheus API endpoints the querier serves (the rest of Prometheus's API — targets, rules,
// admin — has no meaning here and is 404).
var apiPaths = map[string]bool{
	"/query": true, "/query_range": true, "/query_exemplars": true, "/format_query": true, "/parse_query": true,
	"/labels": true, "/series": true, "/status/buildinfo": true,
}

// openAPIOptions limit the OpenAPI documents Prometheus's API renders when it is built (and keeps: 10.5 MB of
// YAML for its whole API, in every querier) to the endpoints served here. /openapi.yaml itself is not served.
func openAPIOptions() v1.OpenAPIOptions {
	paths := []string{"/label/"}
	for p := range apiPaths {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return v1.OpenAPIOptions{IncludePaths: paths}
}

// NewAPI returns the Prometheus-compatible HTTP API under /api/v1/ and /prometheus/api/v1/. It expects the
// tenant in the request context (tenancy's HTTP middleware in front of it). Prometheus's own web/api/v1 does
// the parsing and the JSON, so that answers and errors are exactly Prometheus's.
func NewAPI(q *Queryable, overrides *tenancy.Overrides, cfg APIConfig, logger log.Logger, reg prometheus.Registerer) http.Handler {
	engines := newTenantEngines(EngineOpts(cfg.Engine, logger, reg), overrides)
	buildInfo := &v1.PrometheusVersion{
		Version: version.Version, Revision: version.Revision, Branch: version.Branch,
		BuildUser: version.BuildUser, BuildDate: version.BuildDate, GoVersion: version.GoVersion,
	}
	api := v1.NewAPI(engines, q, nil, nil, emptyExemplars{},
		nil, nil, nil,
		func() config.Config { return config.Config{} }, nil, v1.GlobalURLOptions{},
		func(f http.HandlerFunc) http.HandlerFunc { return f },
		nil, "", false, false, 0,
		server.Slog(logger), nil, 0, 0, 0, false,
		regexp.MustCompile(".*"), nil, buildInfo, nil, nil,
		prometheus.NewRegistry(), prometheus.NewRegistry(), nil,
		false, nil, false, false, false, false,
		cfg.Engine.LookbackDelta, false, false,
		errorCodes(), features.NewRegistry(), openAPIOptions(), parser.NewParser(parser.Options{}),
	)
	mux := http.NewServeMux()
	for _, prefix := range []string{"/api/v1", "/prometheus/api/v1"} {
		r := route.New()
		api.Register(r.WithPrefix(prefix))
		h := &apiHandler{prefix: prefix, router: r, overrides: overrides, partialResponse: cfg.PartialResponse, expression: cfg.Engine.Expression,
			metadata: cfg.Metadata, cardinality: cfg.Cardinality, autoDownsampling: cfg.AutoDownsampling}
		mux.Handle(prefix+"/", h)
	}
	return mux
}

type apiHandler struct {
	prefix          string
	router          http.Handler
	overrides       *tenancy.Overrides
	partialResponse bool
	// autoDownsampling is the default of max_source_resolution: auto rather than raw.
	autoDownsampling bool
	expression       ExpressionLimits
	metadata         *MetadataQuerier
	cardinality      *CardinalityQuerier
}

func (h *apiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, h.prefix)
	tenants, ok := tenancy.TenantsFromContext(r.Context())
	if !ok {
		writeJSON(w, http.StatusUnauthorized, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, tenancy.ErrNoTenant.Error()))
		return
	}
	if err := tenancy.CheckMaxTenants(tenants, h.overrides.MaxTenants); err != nil {
		writeJSON(w, err.Status, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, err.Error()))
		return
	}
	switch {
	case path == "/metadata" && h.metadata != nil:
		h.metadata.ServeHTTP(w, r)
		return
	case path == "/metadata":
		writeJSON(w, http.StatusOK, `{"status":"success","data":{}}`)
		return
	case IsCardinalityPath(path) && h.cardinality != nil:
		h.cardinality.Serve(w, r, path, func(sel string) *tenancy.Error {
			tenant, _ := tenancy.TenantFromContext(r.Context())
			return checkExpression(sel, h.overrides.MaxQueryExpressionSizeBytes(tenant), h.expression)
		})
		return
	case apiPaths[path], strings.HasPrefix(path, "/label/") && strings.HasSuffix(path, "/values"):
	default:
		writeJSON(w, http.StatusNotFound, fmt.Sprintf(`{"status":"error","errorType":"not_found","error":%q}`, "unknown API endpoint "+r.URL.Path))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, err.Error()))
		return
	}
	opts, err := h.options(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, err.Error()))
		return
	}
	if err := h.checkExpressions(r, tenants); err != nil {
		writeJSON(w, err.Status, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, err.Error()))
		return
	}
	if path == "/query_range" {
		if err := checkQueryLength(r, tenancy.SmallestLimit(tenants, h.overrides.MaxQueryLength)); err != nil {
			writeJSON(w, err.Status, fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, err.Error()))
			return
		}
	}
	h.router.ServeHTTP(w, r.WithContext(WithRequestOptions(r.Context(), opts)))
}

// checkExpressions bounds every expression of the request (query, match[]) before Prometheus's parser sees it
// (a federated read: by the smallest max_query_expression_size_bytes of its tenants).
func (h *apiHandler) checkExpressions(r *http.Request, tenants []string) *tenancy.Error {
	maxBytes := tenancy.SmallestLimit(tenants, h.overrides.MaxQueryExpressionSizeBytes)
	for _, qs := range r.Form["query"] {
		if err := checkExpression(qs, maxBytes, h.expression); err != nil {
			return err
		}
	}
	for _, m := range r.Form["match[]"] {
		if err := checkExpression(m, 0, h.expression); err != nil {
			return err
		}
	}
	return nil
}

// options reads Thanos's query parameters: dedup, partial_response, replicaLabels[] and max_source_resolution.
func (h *apiHandler) options(r *http.Request) (RequestOptions, error) {
	o := RequestOptions{Dedup: true, PartialResponse: h.partialResponse, ReplicaLabels: r.Form["replicaLabels[]"]}
	for name, dst := range map[string]*bool{"dedup": &o.Dedup, "partial_response": &o.PartialResponse} {
		if v := r.FormValue(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, errors.Newf("invalid parameter %q: %q is not a boolean", name, v)
			}
			*dst = b
		}
	}
	v := r.FormValue("max_source_resolution")
	switch {
	case v == "auto" || v == "" && h.autoDownsampling:
		o.AutoDownsampling = true
	case v != "":
		d, err := parseDuration(v)
		if err != nil || d < 0 {
			return o, errors.Newf("invalid parameter \"max_source_resolution\": %q is not a duration (0s, 5m, 1h) nor auto", v)
		}
		o.MaxSourceResolution = d
	}
	return o, nil
}

// parseDuration reads a duration as Prometheus's API does: seconds as a float, or a PromQL duration.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > float64(math.MaxInt64/int64(time.Second)) {
			return 0, errors.Newf("%q is out of range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

// checkQueryLength refuses a range query longer than the tenant's max_query_length.
func checkQueryLength(r *http.Request, limit time.Duration) *tenancy.Error {
	if limit <= 0 {
		return nil
	}
	start, err1 := parseTime(r.FormValue("start"))
	end, err2 := parseTime(r.FormValue("end"))
	if err1 != nil || err2 != nil {
		return nil // Prometheus's handler answers bad times with its own error
	}
	if length := end.Sub(start); length > limit {
		return tenancy.NewMaxQueryLengthError(length, limit)
	}
	return nil
}

// parseTime reads a time parameter as Prometheus does: Unix seconds (with fraction) or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// errorCodes maps Strata's errors to their HTTP status in Prometheus's API: a tenant limit keeps its status (400
// or 422), a failure of the stores is 503 so clients retry. Prometheus's OverrideErrorCode takes an unexported
// first parameter, hence the reflection.
func errorCodes() v1.OverrideErrorCode {
	var zero v1.OverrideErrorCode
	typ := reflect.TypeOf(zero)
	fn := reflect.MakeFunc(typ, func(args []reflect.Value) []reflect.Value {
		code, ok := statusOf(args[1].Interface())
		return []reflect.Value{reflect.ValueOf(code), reflect.ValueOf(ok)}
	})
	return fn.Interface().(v1.OverrideErrorCode)
}

func statusOf(v any) (int, bool) {
	err, ok := v.(error)
	if !ok || err == nil {
		return 0, false
	}
	var te *tenancy.Error
	if errors.As(err, &te) {
		return te.Status, true
	}
	var se *StorageError
	if errors.As(err, &se) {
		return http.StatusServiceUnavailable, true
	}
	return 0, false
}

// emptyExemplars answers query_exemplars: exemplars are not stored yet.
type emptyExemplars struct{}

func (emptyExemplars) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return emptyExemplars{}, nil
}

func (emptyExemplars) Select(int64, int64, ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return []exemplar.QueryResult{}, nil
}
