package query

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const apiTestTenant = "team-a"

// newTestAPI returns the querier's HTTP API over the given stores, for tenants whose limits are limits (nil: the
// defaults).
func newTestAPI(t *testing.T, cfg APIConfig, limits *tenancy.Limits, stores ...store.StoreClient) http.Handler {
	t.Helper()
	defaults := tenancy.DefaultLimits()
	if limits != nil {
		defaults = *limits
	}
	overrides := tenancy.NewOverrides(defaults, nil)
	proxy := store.NewProxy(func() []store.StoreClient { return stores }, 0, log.NewNopLogger(), nil)
	q := NewQueryable(proxy, overrides, nil, nil)
	return tenancy.DefaultConfig().HTTPMiddleware(false)(NewAPI(q, overrides, cfg, log.NewNopLogger(), nil))
}

// serveWithin serves req on h in a goroutine and returns its answer, failing the test when there is none within
// wait: a handler that spins on hostile input must not pass.
func serveWithin(t *testing.T, h http.Handler, req *http.Request, wait time.Duration) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
		return rec
	case <-time.After(wait):
		t.Fatalf("%s %s: no answer within %s", req.Method, req.URL.Path, wait)
		return nil
	}
}

func apiRequest(ctx context.Context, method, path string, params url.Values) *http.Request {
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, path, strings.NewReader(params.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, path+"?"+params.Encode(), nil)
	}
	req.Header.Set(tenancy.HeaderOrgID, apiTestTenant)
	return req.WithContext(ctx)
}

func TestAPIHostileExpressions(t *testing.T) {
	deepAbs := strings.Repeat("abs(", 100_000) + "vector(1)" + strings.Repeat(")", 100_000) // 900 KB
	longSum := "1" + strings.Repeat("+1", 500_000)
	negations := strings.Repeat("-", 20_000) + "1"
	subqueries := "vector(1)" + strings.Repeat("[1m:1m]", 5_000)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name     string
		ctx      context.Context
		method   string
		path     string
		params   url.Values
		limits   *tenancy.Limits
		wantCode int
		wantBody string
	}{
		{name: "abs nested 100,000 deep", path: "/api/v1/query", params: url.Values{"query": {deepAbs}}, wantCode: 400, wantBody: "max_expression_depth"},
		{name: "abs nested 100,000 deep, POST range query", method: http.MethodPost, path: "/prometheus/api/v1/query_range",
			params: url.Values{"query": {deepAbs}, "start": {"0"}, "end": {"60"}, "step": {"15"}}, wantCode: 400, wantBody: "max_expression_depth"},
		{name: "abs nested 100,000 deep, format_query", path: "/api/v1/format_query", params: url.Values{"query": {deepAbs}}, wantCode: 400, wantBody: "max_expression_depth"},
		{name: "1+1+… with 500,000 terms", path: "/api/v1/query", params: url.Values{"query": {longSum}}, wantCode: 400, wantBody: "max_expression_tokens"},
		{name: "1+1+… with 500,000 terms, request already cancelled", ctx: cancelled, path: "/api/v1/query", params: url.Values{"query": {longSum}}, wantCode: 400, wantBody: "max_expression_tokens"},
		{name: "20,000 unary minus", path: "/api/v1/query", params: url.Values{"query": {negations}}, wantCode: 400, wantBody: "max_expression_tokens"},
		{name: "5,000 chained subqueries", path: "/api/v1/query", params: url.Values{"query": {subqueries}}, wantCode: 400, wantBody: "max_expression_tokens"},
		{name: "deep series matcher", path: "/api/v1/series", params: url.Values{"match[]": {deepAbs}}, wantCode: 400, wantBody: "max_expression_depth"},
		{name: "tenant's max_query_expression_size_bytes", path: "/api/v1/query", params: url.Values{"query": {"sum(rate(http_requests_total[5m]))"}},
			limits: &tenancy.Limits{MaxQueryExpressionSizeBytes: 16}, wantCode: 400, wantBody: "(query size: 34, limit: 16) (err-mimir-max-query-expression-size-bytes)"},
		{name: "a query within the limits is answered", path: "/api/v1/query", params: url.Values{"query": {"abs(abs(vector(1)))+1+1"}, "time": {"100"}},
			wantCode: 200, wantBody: `"value":[100,"3"]`},
		{name: "a lexing error is the parser's to report", path: "/api/v1/query", params: url.Values{"query": {`foo{a="`}}, wantCode: 400, wantBody: "unterminated quoted string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, method := tc.ctx, tc.method
			if ctx == nil {
				ctx = context.Background()
			}
			if method == "" {
				method = http.MethodGet
			}
			h := newTestAPI(t, APIConfig{Engine: DefaultEngineConfig()}, tc.limits)
			rec := serveWithin(t, h, apiRequest(ctx, method, tc.path, tc.params), time.Minute)
			body := rec.Body.String()
			if len(body) > 1000 {
				body = body[:1000]
			}
			testutil.Equals(t, tc.wantCode, rec.Code, "body: %s", body)
			testutil.Assert(t, strings.Contains(body, tc.wantBody), "body %q does not contain %q", body, tc.wantBody)
			if tc.wantCode != 200 {
				testutil.Assert(t, strings.Contains(body, `"errorType":"bad_data"`), "body %q is not bad_data", body)
			}
		})
	}
}

func TestAPIMaxSamplesNamesTheLimit(t *testing.T) {
	cfg := APIConfig{Engine: DefaultEngineConfig()}
	cfg.Engine.MaxSamples = 100
	for _, tc := range []struct {
		name   string
		limits *tenancy.Limits
		want   string
	}{
		{name: "querier's --query.max-samples", want: "(limit: 100 samples)"},
		{name: "tenant's max_samples", limits: &tenancy.Limits{MaxSamples: 50}, want: "(limit: 50 samples)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestAPI(t, cfg, tc.limits)
			params := url.Values{"query": {"count_over_time(vector(1)[1h:1s])"}, "time": {"3600"}}
			rec := serveWithin(t, h, apiRequest(context.Background(), http.MethodGet, "/api/v1/query", params), time.Minute)
			body := rec.Body.String()
			testutil.Equals(t, http.StatusUnprocessableEntity, rec.Code, "body: %s", body)
			for _, want := range []string{tc.want, "(err-mimir-max-samples-per-query)", "max_samples", "--query.max-samples", `"errorType":"execution"`} {
				testutil.Assert(t, strings.Contains(body, want), "body %q does not contain %q", body, want)
			}
		})
	}
}

// blockingStore is a StoreAPI whose Series answers only when its caller gives up.
type blockingStore struct {
	storepb.StoreClient
	started chan struct{}
}

func (s *blockingStore) Series(ctx context.Context, _ *storepb.SeriesRequest, _ ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	close(s.started)
	<-ctx.Done()
	return nil, ctx.Err()
}
func (*blockingStore) LabelSets() []labels.Labels { return nil }
func (*blockingStore) TimeRange() (int64, int64)  { return math.MinInt64, math.MaxInt64 }
func (*blockingStore) String() string             { return "blocking" }

func TestAPIQueryStopsWhenRequestIsCancelled(t *testing.T) {
	st := &blockingStore{started: make(chan struct{})}
	h := newTestAPI(t, APIConfig{Engine: DefaultEngineConfig()}, nil, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, apiRequest(ctx, http.MethodGet, "/api/v1/query", url.Values{"query": {"sum(up)"}}))
		done <- rec
	}()
	select {
	case <-st.started:
	case <-time.After(time.Minute):
		t.Fatal("the query never reached the store")
	}
	cancel()
	select {
	case rec := <-done:
		testutil.Assert(t, rec.Code != http.StatusOK, "a cancelled query answered 200: %s", rec.Body.String())
	case <-time.After(time.Minute):
		t.Fatal("the query did not stop within a minute of its request being cancelled")
	}
}
