package frontend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// blockingDownstream answers each request once the test releases it, recording the order requests started in.
type blockingDownstream struct {
	mtx     sync.Mutex
	started []string
	release chan struct{}
}

func (d *blockingDownstream) Do(ctx context.Context, r *Request) (*Response, error) {
	d.mtx.Lock()
	d.started = append(d.started, r.TenantHeader()+":"+r.Query)
	d.mtx.Unlock()
	select {
	case <-d.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return NewErrorResponse(http.StatusOK, "", "ok"), nil
}

func (d *blockingDownstream) startedList() []string {
	d.mtx.Lock()
	defer d.mtx.Unlock()
	return append([]string(nil), d.started...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueueFairnessAndLimit: with one request running at a time, tenant a queues 3 (its limit) behind its
// running one and gets 429 for a 5th; tenant b's request, queued after them, runs after at most one more of a's.
func TestQueueFairnessAndLimit(t *testing.T) {
	d := &blockingDownstream{release: make(chan struct{})}
	f, reg := newTestFrontend(t, func(*Metrics) Handler { return d }, func(c *Config) {
		c.MaxConcurrent, c.MaxOutstandingRequestsPerTenant = 1, 3
	})
	codes := make(chan string, 10)
	send := func(tenant, query string) {
		go func() {
			w := serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {query}}, tenant)
			codes <- fmt.Sprintf("%s:%s:%d", tenant, query, w.Code)
		}()
	}
	send("a", "1")
	waitFor(t, "a:1 to run", func() bool { return len(d.startedList()) == 1 })
	for i, qs := range []string{"2", "3", "4"} {
		send("a", qs)
		waitFor(t, "a's queue", func() bool {
			return promtestutil.ToFloat64(f.metrics.queueLength.WithLabelValues("a")) == float64(i+1)
		})
	}
	w := serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"5"}}, "a")
	testutil.Equals(t, http.StatusTooManyRequests, w.Code)
	testutil.Assert(t, strings.Contains(w.Body.String(), "too many outstanding requests") &&
		strings.Contains(w.Body.String(), "max_outstanding_requests_per_tenant) is 3"), w.Body.String())
	send("b", "1")
	waitFor(t, "b's queue", func() bool { return promtestutil.ToFloat64(f.metrics.queueLength.WithLabelValues("b")) == 1 })

	for i := range 5 {
		d.release <- struct{}{}
		<-codes
		if i < 4 {
			waitFor(t, "the next request", func() bool { return len(d.startedList()) == i+2 })
		}
	}
	testutil.Equals(t, []string{"a:1", "a:2", "b:1", "a:3", "a:4"}, d.startedList())
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.discarded.WithLabelValues("a")))
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.requests.WithLabelValues("a", "query", "429")))
	testutil.Equals(t, 4.0, promtestutil.ToFloat64(f.metrics.requests.WithLabelValues("a", "query", "200")))
	problems, err := promlint.NewWithMetricFamilies(mustGather(t, reg)).Lint()
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(problems), "%v", problems)
}

// TestQueueCanceledWhileWaiting: a request whose client goes away leaves the queue and frees its place.
func TestQueueCanceledWhileWaiting(t *testing.T) {
	d := &blockingDownstream{release: make(chan struct{})}
	f, _ := newTestFrontend(t, func(*Metrics) Handler { return d }, func(c *Config) { c.MaxConcurrent, c.MaxOutstandingRequestsPerTenant = 1, 1 })
	done := make(chan int, 2)
	go func() { done <- serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"1"}}, "a").Code }()
	waitFor(t, "a:1 to run", func() bool { return len(d.startedList()) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=2", nil).WithContext(ctx)
		r.Header.Set("X-Scope-OrgID", "a")
		w := httptest.NewRecorder()
		f.ServeHTTP(w, r)
		done <- w.Code
	}()
	waitFor(t, "a:2 queued", func() bool { return promtestutil.ToFloat64(f.metrics.queueLength.WithLabelValues("a")) == 1 })
	cancel()
	testutil.Equals(t, statusClientClosed, <-done)
	// Its place is free: a third request queues instead of getting 429.
	go func() { done <- serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"3"}}, "a").Code }()
	waitFor(t, "a:3 queued", func() bool { return promtestutil.ToFloat64(f.metrics.queueLength.WithLabelValues("a")) == 1 })
	d.release <- struct{}{}
	d.release <- struct{}{}
	testutil.Equals(t, 200, <-done)
	testutil.Equals(t, 200, <-done)
	testutil.Equals(t, []string{"a:1", "a:3"}, d.startedList())
}

// TestRetries: 5xx and network errors are tried again up to max_retries times, 4xx never.
func TestRetries(t *testing.T) {
	netErr := errors.New("connection refused")
	for _, tc := range []struct {
		name       string
		answers    []any // int status or error, the last repeated
		maxRetries int
		wantCalls  int
		wantStatus int
	}{
		{name: "success", answers: []any{200}, maxRetries: 5, wantCalls: 1, wantStatus: 200},
		{name: "4xx is not retried", answers: []any{422}, maxRetries: 5, wantCalls: 1, wantStatus: 422},
		{name: "429 is not retried", answers: []any{429}, maxRetries: 5, wantCalls: 1, wantStatus: 429},
		{name: "5xx then success", answers: []any{503, 500, 200}, maxRetries: 5, wantCalls: 3, wantStatus: 200},
		{name: "network error then success", answers: []any{netErr, 200}, maxRetries: 5, wantCalls: 2, wantStatus: 200},
		{name: "5xx forever", answers: []any{503}, maxRetries: 5, wantCalls: 6, wantStatus: 503},
		{name: "network error forever", answers: []any{netErr}, maxRetries: 2, wantCalls: 3, wantStatus: http.StatusBadGateway},
		{name: "no retries", answers: []any{500}, maxRetries: 0, wantCalls: 1, wantStatus: 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			down := HandlerFunc(func(context.Context, *Request) (*Response, error) {
				a := tc.answers[min(calls, len(tc.answers)-1)]
				calls++
				if err, ok := a.(error); ok {
					return nil, err
				}
				return NewErrorResponse(a.(int), "x", "answer"), nil
			})
			f, _ := newTestFrontend(t, func(*Metrics) Handler { return down }, func(c *Config) { c.MaxRetries = tc.maxRetries })
			w := serve(t, f, http.MethodGet, "/api/v1/labels", nil, "t")
			testutil.Equals(t, tc.wantStatus, w.Code)
			testutil.Equals(t, tc.wantCalls, calls)
			testutil.Equals(t, float64(tc.wantCalls-1), promtestutil.ToFloat64(f.metrics.retries))
		})
	}
}

// TestPassThrough: instant queries and metadata reach the querier with their method, prefix, tenant and every
// parameter as sent, and its answer (status, headers, body) comes back unchanged.
func TestPassThrough(t *testing.T) {
	var got *http.Request
	querier := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		testutil.Ok(t, r.ParseForm())
		got = r
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Answer", "1")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{ "status" : "success", "data": [1.50, "x"] }`))
	})
	f, _ := newTestFrontend(t, func(m *Metrics) Handler { return NewInProcessDownstream(querier, m) }, nil)
	for _, tc := range []struct {
		method, path string
		form         url.Values
	}{
		{http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}, "time": {"1.5"}, "dedup": {"false"}, "stats": {"all"}}},
		{http.MethodPost, "/prometheus/api/v1/query", url.Values{"query": {"up"}, "replicaLabels[]": {"a", "b"}, "lookback_delta": {"1m"}}},
		{http.MethodGet, "/prometheus/api/v1/labels", url.Values{"match[]": {"up", "down"}, "start": {"1"}}},
		{http.MethodPost, "/api/v1/series", url.Values{"match[]": {"up"}}},
		{http.MethodGet, "/api/v1/label/job/values", url.Values{}},
		{http.MethodGet, "/api/v1/status/buildinfo", url.Values{}},
		{http.MethodGet, "/api/v1/query_range", url.Values{"query": {"up"}, "start": {"x"}, "end": {"2"}, "step": {"1"}}},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			w := serve(t, f, tc.method, tc.path, tc.form, "team-a")
			testutil.Equals(t, tc.method, got.Method)
			testutil.Equals(t, tc.path, got.URL.Path)
			testutil.Equals(t, "team-a", got.Header.Get("X-Scope-OrgID"))
			testutil.Equals(t, tc.form, got.Form)
			testutil.Equals(t, http.StatusAccepted, w.Code)
			testutil.Equals(t, "1", w.Header().Get("X-Answer"))
			testutil.Equals(t, `{ "status" : "success", "data": [1.50, "x"] }`, w.Body.String())
		})
	}
}

// TestSubQueryErrorIsTheAnswer: when one day of a split query fails, its status and body are the answer.
func TestSubQueryErrorIsTheAnswer(t *testing.T) {
	base := int64(1_767_225_600_000)
	q := newEngineQuerier(t, testSeries(base-day, base+day))
	querier := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := r.FormValue("start"); s >= time.UnixMilli(base).UTC().Format(time.RFC3339) {
			writeRaw(w, http.StatusUnprocessableEntity, `{"status":"error","errorType":"execution","error":"day two failed"}`)
			return
		}
		q.ServeHTTP(w, r)
	})
	f, _ := newTestFrontend(t, func(m *Metrics) Handler { return NewInProcessDownstream(querier, m) }, func(c *Config) { c.MaxRetries = 0 })
	w := serve(t, f, http.MethodGet, "/api/v1/query_range", url.Values{
		"query": {"m"}, "start": {fmt.Sprint((base - day/2) / 1000)}, "end": {fmt.Sprint((base + day/2) / 1000)}, "step": {"60"},
	}, "t")
	testutil.Equals(t, http.StatusUnprocessableEntity, w.Code)
	testutil.Equals(t, `{"status":"error","errorType":"execution","error":"day two failed"}`, w.Body.String())
}

// TestTenantEdge: the tenant is checked once, as the querier checks it.
func TestTenantEdge(t *testing.T) {
	calls := 0
	down := HandlerFunc(func(context.Context, *Request) (*Response, error) {
		calls++
		return NewErrorResponse(200, "", ""), nil
	})
	f, _ := newTestFrontend(t, func(*Metrics) Handler { return down }, func(c *Config) { c.MaxBodyBytes = 100 })
	testutil.Equals(t, http.StatusUnauthorized, serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "").Code)
	testutil.Equals(t, http.StatusBadRequest, serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "a|../x").Code)
	testutil.Equals(t, http.StatusBadRequest, serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "../x").Code)
	testutil.Equals(t, http.StatusRequestEntityTooLarge, serve(t, f, http.MethodPost, "/api/v1/query", url.Values{"query": {strings.Repeat("x", 200)}}, "a").Code)
	testutil.Equals(t, 0, calls)
	testutil.Equals(t, http.StatusOK, serve(t, f, http.MethodPost, "/api/v1/query", url.Values{"query": {"up"}}, "a").Code)
	testutil.Equals(t, 1, calls)
}

// TestAlignQueriesWithStep: with align_queries_with_step the querier is asked for start and end rounded down to
// the step; without it, for the times as sent.
func TestAlignQueriesWithStep(t *testing.T) {
	for _, align := range []bool{false, true} {
		var got []*Request
		down := HandlerFunc(func(_ context.Context, r *Request) (*Response, error) {
			got = append(got, r)
			return &Response{StatusCode: 200, Status: "success", ResultType: "matrix"}, nil
		})
		f, _ := newTestFrontend(t, func(*Metrics) Handler { return down }, func(c *Config) { c.AlignQueriesWithStep = align })
		w := serve(t, f, http.MethodGet, "/api/v1/query_range", url.Values{"query": {"up"}, "start": {"1000.5"}, "end": {"1999"}, "step": {"60"}}, "a")
		testutil.Equals(t, 200, w.Code)
		testutil.Equals(t, 1, len(got))
		if align {
			testutil.Equals(t, []int64{960_000, 1_980_000}, []int64{got[0].Start, got[0].End})
		} else {
			testutil.Equals(t, []int64{1_000_500, 1_999_000}, []int64{got[0].Start, got[0].End})
		}
	}
}

func mustGather(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}) []*dto.MetricFamily {
	mfs, err := g.Gather()
	testutil.Ok(t, err)
	return mfs
}

// TestSlowQueryLog: a request slower than log_queries_longer_than is logged with its tenant, query, range and
// step; a faster one is not.
func TestSlowQueryLog(t *testing.T) {
	for _, tc := range []struct {
		took    time.Duration
		logged  bool
		minimum time.Duration
	}{{took: 3 * time.Second, logged: true, minimum: 2 * time.Second}, {took: time.Second, minimum: 2 * time.Second}, {took: time.Hour, minimum: 0}} {
		var buf strings.Builder
		var mtx sync.Mutex
		now := time.Unix(1_700_000_000, 0)
		clock := func() time.Time {
			mtx.Lock()
			defer mtx.Unlock()
			return now
		}
		down := HandlerFunc(func(context.Context, *Request) (*Response, error) {
			mtx.Lock()
			now = now.Add(tc.took)
			mtx.Unlock()
			return &Response{StatusCode: 200, Status: "success", ResultType: "matrix"}, nil
		})
		cfg := DefaultConfig()
		cfg.LogQueriesLongerThan = tc.minimum
		m := NewMetrics(prometheus.NewRegistry())
		f, err := New(cfg, Options{Auth: tenancy.DefaultConfig(), Limits: staticLimits{parallelism: 1}, Downstream: down, Metrics: m,
			Logger: log.NewLogfmtLogger(log.NewSyncWriter(&buf)), Now: clock})
		testutil.Ok(t, err)
		w := serve(t, f, http.MethodGet, "/api/v1/query_range", url.Values{"query": {`sum(up)`}, "start": {"1700000000"}, "end": {"1700003600"}, "step": {"30"}}, "team-a")
		testutil.Equals(t, 200, w.Code)
		if !tc.logged {
			testutil.Equals(t, "", buf.String())
			continue
		}
		for _, want := range []string{`msg="slow query"`, "tenant=team-a", `query=sum(up)`, "range=1h0m0s", "step=30s", "duration=" + tc.took.String(), "start=2023-11-14T22:13:20Z"} {
			testutil.Assert(t, strings.Contains(buf.String(), want), "%q not in %q", want, buf.String())
		}
	}
}

// TestDownstreamLeastOutstanding: requests go to the querier with the fewest in flight, round-robin among equals,
// with the tenant header and the API path.
func TestDownstreamLeastOutstanding(t *testing.T) {
	release := make(chan struct{})
	var mtx sync.Mutex
	hits := map[string]int{}
	handler := func(name string, block bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mtx.Lock()
			hits[name+" "+r.URL.Path+" "+r.Header.Get("X-Scope-OrgID")]++
			mtx.Unlock()
			if block {
				<-release
			}
			writeRaw(w, 200, `{"status":"success","data":[]}`)
		})
	}
	a, b := httptest.NewServer(handler("a", true)), httptest.NewServer(handler("b", false))
	defer a.Close()
	defer b.Close()
	d, err := NewDownstream([]string{a.URL, b.URL + "/base"}, &http.Client{Timeout: 10 * time.Second}, NewMetrics(prometheus.NewRegistry()))
	testutil.Ok(t, err)
	req := &Request{Method: http.MethodGet, Path: "/api/v1/labels", Tenants: []string{"t"}, Params: url.Values{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := d.Do(context.Background(), req) // round-robin starts with a, which holds it
		testutil.Ok(t, err)
		testutil.Equals(t, 200, resp.StatusCode)
	}()
	waitFor(t, "a to hold a request", func() bool {
		mtx.Lock()
		defer mtx.Unlock()
		return hits["a /api/v1/labels t"] == 1
	})
	for range 3 {
		resp, err := d.Do(context.Background(), req)
		testutil.Ok(t, err)
		testutil.Equals(t, `{"status":"success","data":[]}`, string(resp.Raw))
	}
	close(release)
	<-done
	testutil.Equals(t, map[string]int{"a /api/v1/labels t": 1, "b /base/api/v1/labels t": 3}, hits)
	// Idle again: round-robin between the two.
	for range 4 {
		_, err := d.Do(context.Background(), req)
		testutil.Ok(t, err)
	}
	testutil.Equals(t, map[string]int{"a /api/v1/labels t": 3, "b /base/api/v1/labels t": 5}, hits)
}

// TestDownstreamDeadQuerierUnderLoad: a querier that refuses connections has no requests in flight, so "fewest in
// flight" would pick it for every try while the live one is busy; after a network error it is passed over for a
// while, and the retry lands on the live querier.
func TestDownstreamDeadQuerierUnderLoad(t *testing.T) {
	release := make(chan struct{})
	var mtx sync.Mutex
	live := 0
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mtx.Lock()
		live++
		n := live
		mtx.Unlock()
		if n == 1 {
			<-release // the load: one request held on the live querier
		}
		writeRaw(w, 200, `{"status":"success","data":[]}`)
	}))
	defer b.Close()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // before b.Close, which waits for the held request
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connection refused from now on

	now := time.Unix(1000, 0)
	d, err := NewDownstream([]string{b.URL, deadURL}, &http.Client{Timeout: 10 * time.Second}, NewMetrics(prometheus.NewRegistry()))
	testutil.Ok(t, err)
	d.now = func() time.Time { return now }
	req := &Request{Method: http.MethodGet, Path: "/api/v1/labels", Tenants: []string{"t"}, Params: url.Values{}}
	held := make(chan struct{})
	go func() {
		defer close(held)
		resp, err := d.Do(context.Background(), req) // round-robin starts with b, which holds it
		testutil.Ok(t, err)
		testutil.Equals(t, 200, resp.StatusCode)
	}()
	waitFor(t, "the live querier to hold a request", func() bool {
		mtx.Lock()
		defer mtx.Unlock()
		return live == 1
	})
	h := retryMiddleware(2, NewMetrics(prometheus.NewRegistry()).m, log.NewNopLogger())(d)
	for i := range 5 {
		resp, err := h.Do(context.Background(), req)
		testutil.Ok(t, err, "request %d", i)
		testutil.Equals(t, 200, resp.StatusCode)
	}
	// Once the pause is over the dead querier is tried again (it may have come back).
	now = now.Add(time.Minute)
	_, err = d.Do(context.Background(), req)
	testutil.NotOk(t, err)
	unblock()
	<-held
}

// TestHungQueriersTimeOut: queriers that never answer (hung, or a host gone with its SYNs dropped) get a 504
// after downstream_timeout for the whole request, retries included, not a wait of (max_retries+1) timeouts or,
// in-process, forever; a request waiting in the queue behind them gets its 504 too.
func TestHungQueriersTimeOut(t *testing.T) {
	down := HandlerFunc(func(ctx context.Context, _ *Request) (*Response, error) {
		<-ctx.Done()
		return nil, errors.Join(errors.New("request to querier: i/o timeout"), ctx.Err())
	})
	f, _ := newTestFrontend(t, func(*Metrics) Handler { return down }, func(c *Config) {
		c.DownstreamTimeout = 200 * time.Millisecond
		c.MaxConcurrent = 1
	})
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			codes <- serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "t").Code
		}()
	}
	for range 2 {
		select {
		case code := <-codes:
			testutil.Equals(t, http.StatusGatewayTimeout, code)
		case <-time.After(5 * time.Second):
			t.Fatal("no answer 5s after a 200ms downstream_timeout")
		}
	}
}

// TestAllQueriersDown: with every querier refusing connections the client gets a 502 naming the failure within
// the retries' backoff (well under a second), not a hang.
func TestAllQueriersDown(t *testing.T) {
	var urls []string
	for range 2 {
		s := httptest.NewServer(http.NotFoundHandler())
		urls = append(urls, s.URL)
		s.Close()
	}
	f, _ := newTestFrontend(t, func(m *Metrics) Handler {
		d, err := NewDownstream(urls, &http.Client{Timeout: 10 * time.Second}, m)
		testutil.Ok(t, err)
		return d
	}, nil)
	start := time.Now()
	w := serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "t")
	testutil.Equals(t, http.StatusBadGateway, w.Code)
	testutil.Assert(t, strings.Contains(w.Body.String(), "connection refused"), w.Body.String())
	testutil.Assert(t, time.Since(start) < 3*time.Second, "took %s", time.Since(start))
}

// TestStopAnswersQueued: when the process begins to shut down, requests waiting in the queue and new ones get a
// 503 at once; the running one finishes with its answer.
func TestStopAnswersQueued(t *testing.T) {
	down := &blockingDownstream{release: make(chan struct{})}
	f, _ := newTestFrontend(t, func(*Metrics) Handler { return down }, func(c *Config) { c.MaxConcurrent = 1 })
	codes := make(chan int, 3)
	for i := range 3 {
		go func() {
			codes <- serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {fmt.Sprint(i)}}, "t").Code
		}()
		if i == 0 {
			waitFor(t, "the first request to run", func() bool { return len(down.startedList()) == 1 })
		}
	}
	waitFor(t, "two requests queued", func() bool { return promtestutil.ToFloat64(f.metrics.queueLength.WithLabelValues("t")) == 2 })
	f.Stop()
	for range 2 {
		select {
		case code := <-codes:
			testutil.Equals(t, http.StatusServiceUnavailable, code)
		case <-time.After(5 * time.Second):
			t.Fatal("a queued request was not answered at shutdown")
		}
	}
	testutil.Equals(t, http.StatusServiceUnavailable, serve(t, f, http.MethodGet, "/api/v1/query", url.Values{"query": {"up"}}, "t").Code)
	close(down.release)
	testutil.Equals(t, http.StatusOK, <-codes)
	testutil.Equals(t, 1, len(down.startedList()))
}

// TestFederationEdge: a federated read ("b|a") reaches the queriers with its tenants sorted and joined ("a|b"),
// queued under that joined ID; one naming more tenants than max_tenants is a 400 naming the key, never sent on.
func TestFederationEdge(t *testing.T) {
	var (
		mtx     sync.Mutex
		headers []string
	)
	down := HandlerFunc(func(_ context.Context, r *Request) (*Response, error) {
		mtx.Lock()
		defer mtx.Unlock()
		hr, err := r.HTTPRequest(context.Background(), &url.URL{Scheme: "http", Host: "querier"})
		if err != nil {
			return nil, err
		}
		headers = append(headers, hr.Header.Get("X-Scope-OrgID"))
		return NewErrorResponse(200, "", ""), nil
	})
	cfg := DefaultConfig()
	m := NewMetrics(prometheus.NewRegistry())
	f, err := New(cfg, Options{Auth: tenancy.DefaultConfig(), Limits: staticLimits{parallelism: 14, maxTenants: 2}, Downstream: down, Metrics: m})
	testutil.Ok(t, err)
	for _, tc := range []struct {
		tenants    string
		path       string
		wantCode   int
		wantHeader string
		wantBody   string
	}{
		{tenants: "b|a", path: "/api/v1/query", wantCode: 200, wantHeader: "a|b"},
		{tenants: "a|b|a", path: "/api/v1/labels", wantCode: 200, wantHeader: "a|b"},
		{tenants: "c", path: "/api/v1/series", wantCode: 200, wantHeader: "c"},
		{tenants: "a|b|c", path: "/api/v1/query", wantCode: 400, wantBody: "too many tenant IDs present in the request. max: 2 actual: 3"},
		{tenants: "a|b|c", path: "/api/v1/query_range", wantCode: 400, wantBody: "configure max_tenants"},
	} {
		headers = nil
		w := serve(t, f, http.MethodGet, tc.path, url.Values{"query": {"up"}, "start": {"0"}, "end": {"60"}, "step": {"15"}}, tc.tenants)
		testutil.Equals(t, tc.wantCode, w.Code, "%s %s: %s", tc.tenants, tc.path, w.Body.String())
		testutil.Assert(t, strings.Contains(w.Body.String(), tc.wantBody), "%s: body %q does not contain %q", tc.tenants, w.Body.String(), tc.wantBody)
		if tc.wantHeader == "" {
			testutil.Equals(t, 0, len(headers), "%s: sent downstream", tc.tenants)
			continue
		}
		testutil.Equals(t, []string{tc.wantHeader}, headers, tc.tenants)
	}
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.requests.WithLabelValues("a|b", "query", "200")), "counted under the joined tenant ID")
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.requests.WithLabelValues("a|b", "other", "200")), "counted under the joined tenant ID")
}
