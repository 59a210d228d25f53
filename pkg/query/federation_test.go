package query

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// fedDBs are the TenantDBs of a store holding several tenants.
type fedDBs map[string]store.TenantDB

func (m fedDBs) DB(t string) store.TenantDB { return m[t] }
func (m fedDBs) Tenants() []string {
	var out []string
	for t := range m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// fedLimits are per-tenant overrides.
type fedLimits map[string]*tenancy.Limits

func (l fedLimits) ByTenant(t string) *tenancy.Limits       { return l[t] }
func (l fedLimits) AllByTenant() map[string]*tenancy.Limits { return l }

// tenantRecorder is a store that records the tenants of each Series call's context, to show that a federated read
// asks the stores one tenant at a time.
type tenantRecorder struct {
	store.StoreClient
	mtx   sync.Mutex
	calls []string
}

func (r *tenantRecorder) Series(ctx context.Context, req *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	r.mtx.Lock()
	r.calls = append(r.calls, strings.Join(md.Get(tenancy.MetadataOrgID), ","))
	r.mtx.Unlock()
	return r.StoreClient.Series(ctx, req, opts...)
}

const fedT = 1000 // the samples' timestamp (ms)

// newFedQueryable serves three tenants from one TSDB store:
//
//	a: m{job="x"} 1, m{job="y", __tenant_id__="orig"} 2
//	b: m{job="x"} 10, other{job="z"} 20
//	c: m{job="x"} 100
func newFedQueryable(t *testing.T, limits fedLimits) (*Queryable, *tenancy.Overrides, *tenantRecorder) {
	t.Helper()
	db := func(series ...harnessSeries) store.TenantDB {
		return harnessOpenDB(t, series, func(int64) bool { return true })
	}
	one := func(v float64, kv ...string) harnessSeries {
		return harnessSeries{lset: labels.FromStrings(kv...), samples: []harnessSample{{t: fedT, f: v}}}
	}
	dbs := fedDBs{
		"a": db(one(1, "__name__", "m", "job", "x"), one(2, "__name__", "m", "job", "y", FederationTenantLabel, "orig")),
		"b": db(one(10, "__name__", "m", "job", "x"), one(20, "__name__", "other", "job", "z")),
		"c": db(one(100, "__name__", "m", "job", "x")),
	}
	st := store.NewTSDBStore(dbs, log.NewNopLogger())
	rec := &tenantRecorder{StoreClient: harnessServeStore(t, st, st)}
	overrides := tenancy.NewOverrides(tenancy.DefaultLimits(), limits)
	proxy := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{rec} }, 0, log.NewNopLogger(), nil)
	return NewQueryable(proxy, overrides, nil, nil), overrides, rec
}

func fedCtx(tenants ...string) context.Context {
	return WithRequestOptions(tenancy.WithTenants(context.Background(), tenants), RequestOptions{Dedup: true})
}

// selectStrings runs a Select and returns each series as "labels value".
func selectStrings(t *testing.T, q storage.Querier, ctx context.Context, ms ...*labels.Matcher) ([]string, error) {
	t.Helper()
	set := q.Select(ctx, true, &storage.SelectHints{Start: 0, End: 2 * fedT}, ms...)
	out := []string{}
	for set.Next() {
		s := set.At()
		it := s.Iterator(nil)
		v := "none"
		if it.Next() != 0 {
			_, f := it.At()
			v = fmt.Sprint(f)
		}
		out = append(out, s.Labels().String()+" "+v)
	}
	return out, set.Err()
}

func TestFederatedSelect(t *testing.T) {
	eq := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchEqual, n, v) }
	re := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchRegexp, n, v) }
	m := eq("__name__", "m")
	for _, tc := range []struct {
		name      string
		tenants   []string
		matchers  []*labels.Matcher
		want      []string
		wantCalls []string
	}{
		{
			name: "one tenant: no __tenant_id__ added, the series' own kept", tenants: []string{"a"}, matchers: []*labels.Matcher{m},
			want:      []string{`{__name__="m", __tenant_id__="orig", job="y"} 2`, `{__name__="m", job="x"} 1`},
			wantCalls: []string{"a"},
		},
		{
			name: "a|b: the union, each series with its tenant, a's own __tenant_id__ renamed", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{m},
			want: []string{
				`{__name__="m", __tenant_id__="a", job="x"} 1`,
				`{__name__="m", __tenant_id__="a", job="y", original___tenant_id__="orig"} 2`,
				`{__name__="m", __tenant_id__="b", job="x"} 10`,
			},
			wantCalls: []string{"a", "b"},
		},
		{
			name: "matcher on __tenant_id__ chooses the tenants asked", tenants: []string{"a", "b", "c"}, matchers: []*labels.Matcher{m, re(FederationTenantLabel, "b|c")},
			want:      []string{`{__name__="m", __tenant_id__="b", job="x"} 10`, `{__name__="m", __tenant_id__="c", job="x"} 100`},
			wantCalls: []string{"b", "c"},
		},
		{
			name: "negative matcher on __tenant_id__", tenants: []string{"a", "b", "c"}, matchers: []*labels.Matcher{m, labels.MustNewMatcher(labels.MatchNotEqual, FederationTenantLabel, "a")},
			want:      []string{`{__name__="m", __tenant_id__="b", job="x"} 10`, `{__name__="m", __tenant_id__="c", job="x"} 100`},
			wantCalls: []string{"b", "c"},
		},
		{
			name: "no tenant matches: nothing asked", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{m, eq(FederationTenantLabel, "zzz")},
			want: []string{},
		},
		{
			name: "only a matcher on __tenant_id__: every series of the tenant", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{eq(FederationTenantLabel, "b")},
			want:      []string{`{__name__="m", __tenant_id__="b", job="x"} 10`, `{__name__="other", __tenant_id__="b", job="z"} 20`},
			wantCalls: []string{"b"},
		},
		{
			name: "matcher on original___tenant_id__ selects on the series' own label", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{m, eq(FederationOriginalTenantLabel, "orig")},
			want:      []string{`{__name__="m", __tenant_id__="a", job="y", original___tenant_id__="orig"} 2`},
			wantCalls: []string{"a", "b"},
		},
		{
			name: "other matchers apply within each tenant", tenants: []string{"a", "b", "c"}, matchers: []*labels.Matcher{re("__name__", ".+"), eq("job", "z")},
			want:      []string{`{__name__="other", __tenant_id__="b", job="z"} 20`},
			wantCalls: []string{"a", "b", "c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _, rec := newFedQueryable(t, nil)
			qr, err := q.Querier(0, 2*fedT)
			testutil.Ok(t, err)
			got, err := selectStrings(t, qr, fedCtx(tc.tenants...), tc.matchers...)
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, got)
			calls := slices.Sorted(slices.Values(rec.calls))
			if tc.wantCalls == nil {
				tc.wantCalls = []string{}
			}
			testutil.Equals(t, tc.wantCalls, append([]string{}, calls...), "each store call names one tenant")
		})
	}
}

func TestFederatedLabels(t *testing.T) {
	eq := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchEqual, n, v) }
	q, _, _ := newFedQueryable(t, nil)
	qr, err := q.Querier(0, 2*fedT)
	testutil.Ok(t, err)
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		tenants  []string
		label    string // "": label names
		matchers []*labels.Matcher
		limit    int
		want     []string
	}{
		{name: "names of one tenant", tenants: []string{"a"}, want: []string{"__name__", FederationTenantLabel, "job"}},
		{name: "names of a|b", tenants: []string{"a", "b"}, want: []string{"__name__", FederationTenantLabel, "job", FederationOriginalTenantLabel}},
		{name: "names of b|c", tenants: []string{"b", "c"}, want: []string{"__name__", FederationTenantLabel, "job"}},
		{name: "names of a|b with a matcher on __tenant_id__", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{eq(FederationTenantLabel, "b")}, want: []string{"__name__", FederationTenantLabel, "job"}},
		{name: "names of a|b, no tenant matches", tenants: []string{"a", "b"}, matchers: []*labels.Matcher{eq(FederationTenantLabel, "c")}, want: []string{}},
		{name: "names with a limit", tenants: []string{"a", "b"}, limit: 2, want: []string{"__name__", FederationTenantLabel}},
		{name: "job of a|b|c", tenants: []string{"a", "b", "c"}, label: "job", want: []string{"x", "y", "z"}},
		{name: "job of a|b|c for m", tenants: []string{"a", "b", "c"}, label: "job", matchers: []*labels.Matcher{eq("__name__", "other")}, want: []string{"z"}},
		{name: "__tenant_id__ of a|b|c", tenants: []string{"a", "b", "c"}, label: FederationTenantLabel, want: []string{"a", "b", "c"}},
		{name: "__tenant_id__ of a|b|c, matched", tenants: []string{"a", "b", "c"}, label: FederationTenantLabel, matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, FederationTenantLabel, "a|c")}, want: []string{"a", "c"}},
		{name: "__tenant_id__ of one tenant: its own label's values", tenants: []string{"a"}, label: FederationTenantLabel, want: []string{"orig"}},
		{name: "original___tenant_id__ of a|b", tenants: []string{"a", "b"}, label: FederationOriginalTenantLabel, want: []string{"orig"}},
		{name: "tenant_id stays hidden", tenants: []string{"a", "b"}, label: tenancy.TenantIDLabel, want: []string{}},
		{name: "job of a|b with a limit", tenants: []string{"a", "b", "c"}, label: "job", limit: 1, want: []string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := WithRequestOptions(tenancy.WithTenants(ctx, tc.tenants), RequestOptions{Dedup: true})
			hints := &storage.LabelHints{Limit: tc.limit}
			var (
				got []string
				err error
			)
			if tc.label == "" {
				got, _, err = qr.LabelNames(ctx, hints, tc.matchers...)
			} else {
				got, _, err = qr.LabelValues(ctx, tc.label, hints, tc.matchers...)
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, append([]string{}, got...))
		})
	}
}

// TestFederatedLimits: each tenant's own per-query limits apply to its part of a federated read; request-wide
// limits are the smallest of the tenants'; max_tenants refuses a request naming too many.
func TestFederatedLimits(t *testing.T) {
	limit := func(f func(*tenancy.Limits)) *tenancy.Limits {
		l := tenancy.DefaultLimits()
		f(&l)
		return &l
	}
	limits := fedLimits{
		"a": limit(func(l *tenancy.Limits) { l.MaxFetchedSeriesPerQuery = 2; l.MaxTenants = 0 }),
		"b": limit(func(l *tenancy.Limits) { l.MaxFetchedSeriesPerQuery = 1; l.MaxQueryExpressionSizeBytes = 31 }),
		"c": limit(func(l *tenancy.Limits) { l.MaxTenants = 2; l.MaxQueryLength = 3600e9; l.MaxSamples = 50 }),
	}
	q, overrides, _ := newFedQueryable(t, limits)
	h := tenancy.DefaultConfig().HTTPMiddleware(true)(NewAPI(q, overrides, APIConfig{Engine: DefaultEngineConfig()}, log.NewNopLogger(), nil))
	for _, tc := range []struct {
		name     string
		tenants  string
		path     string
		params   url.Values
		wantCode int
		want     string
	}{
		{name: "a's 2 series within a's limit of 2, c's 1 too (3 together)", tenants: "a|c", path: "/api/v1/query", params: url.Values{"query": {`{__name__=~".+"}`}, "time": {"1"}}, wantCode: 200, want: `"__tenant_id__":"c"`},
		{name: "b's 2 series over b's limit of 1", tenants: "a|b", path: "/api/v1/query", params: url.Values{"query": {`{__name__=~".+"}`}, "time": {"1"}}, wantCode: 422, want: "max_fetched_series_per_query"},
		{name: "b alone over its limit", tenants: "b", path: "/api/v1/query", params: url.Values{"query": {`{__name__=~".+"}`}, "time": {"1"}}, wantCode: 422, want: "max_fetched_series_per_query"},
		{name: "b's part within its limit", tenants: "a|b", path: "/api/v1/query", params: url.Values{"query": {`m`}, "time": {"1"}}, wantCode: 200, want: `"__tenant_id__":"b"`},
		{name: "expression size: b's 31 bytes apply to a|b", tenants: "a|b", path: "/api/v1/query", params: url.Values{"query": {`m{job=~"x|y|zzzzzzzzzzzzzzzzzz"}`}, "time": {"1"}}, wantCode: 400, want: "max_query_expression_size_bytes"},
		{name: "expression size: a alone has no limit", tenants: "a", path: "/api/v1/query", params: url.Values{"query": {`m{job=~"x|y|zzzzzzzzzzzzzzzzzz"}`}, "time": {"1"}}, wantCode: 200, want: `"success"`},
		{name: "query length: c's 1h applies to a|c", tenants: "a|c", path: "/api/v1/query_range", params: url.Values{"query": {"m"}, "start": {"0"}, "end": {"7200"}, "step": {"60"}}, wantCode: 400, want: "max_query_length"},
		{name: "query length: a|b has none", tenants: "a|b", path: "/api/v1/query_range", params: url.Values{"query": {"m"}, "start": {"0"}, "end": {"7200"}, "step": {"60"}}, wantCode: 200, want: `"success"`},
		{name: "max_samples: c's 50 apply to a|c", tenants: "a|c", path: "/api/v1/query", params: url.Values{"query": {"sum_over_time(vector(1)[1h:1s])"}, "time": {"3600"}}, wantCode: 422, want: "(limit: 50 samples)"},
		{name: "max_samples: a|b has the querier's", tenants: "a|b", path: "/api/v1/query", params: url.Values{"query": {"sum_over_time(vector(1)[1h:1s])"}, "time": {"3600"}}, wantCode: 200, want: `"success"`},
		{name: "max_tenants: c's 2 refuse a|b|c", tenants: "a|b|c", path: "/api/v1/labels", wantCode: 400, want: "too many tenant IDs present in the request. max: 2 actual: 3"},
		{name: "max_tenants names its key", tenants: "a|b|c", path: "/api/v1/query", params: url.Values{"query": {"m"}}, wantCode: 400, want: "max_tenants"},
		{name: "max_tenants: a|c within c's 2", tenants: "a|c", path: "/api/v1/labels", wantCode: 200, want: `"__tenant_id__"`},
		{name: "max_tenants: metadata too", tenants: "a|b|c", path: "/api/v1/metadata", wantCode: 400, want: "max_tenants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.path+"?"+tc.params.Encode(), nil)
			req.Header.Set(tenancy.HeaderOrgID, tc.tenants)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			testutil.Equals(t, tc.wantCode, rec.Code, "body: %s", rec.Body.String())
			testutil.Assert(t, strings.Contains(rec.Body.String(), tc.want), "body %q does not contain %q", rec.Body.String(), tc.want)
		})
	}
}

// TestFederatedAPIEqualsUnion: through the HTTP API, the answers for a|b are those for a and for b, each series
// with __tenant_id__ (a series' own one renamed original___tenant_id__), for query, query_range, series, labels
// and label values.
func TestFederatedAPIEqualsUnion(t *testing.T) {
	q, overrides, _ := newFedQueryable(t, nil)
	h := tenancy.DefaultConfig().HTTPMiddleware(true)(NewAPI(q, overrides, APIConfig{Engine: DefaultEngineConfig()}, log.NewNopLogger(), nil))
	get := func(tenants, path string, params url.Values) json.RawMessage {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path+"?"+params.Encode(), nil)
		req.Header.Set(tenancy.HeaderOrgID, tenants)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		testutil.Equals(t, 200, rec.Code, "%s %s: %s", tenants, path, rec.Body.String())
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		testutil.Ok(t, json.Unmarshal(rec.Body.Bytes(), &env))
		return env.Data
	}
	relabel := func(m map[string]string, tenant string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if k == FederationTenantLabel {
				k = FederationOriginalTenantLabel
			}
			out[k] = v
		}
		out[FederationTenantLabel] = tenant
		return out
	}
	key := func(m map[string]string) string { return labels.FromMap(m).String() }

	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value,omitempty"`
		Values [][]any           `json:"values,omitempty"`
	}
	for _, tc := range []struct {
		path   string
		params url.Values
		n      int // series in the answer
	}{
		{path: "/api/v1/query", params: url.Values{"query": {`{__name__=~"m|other"}`}, "time": {"1.5"}}, n: 4},
		{path: "/api/v1/query", params: url.Values{"query": {`m * 2`}, "time": {"1.5"}}, n: 3},
		{path: "/api/v1/query_range", params: url.Values{"query": {`{__name__=~".+"}`}, "start": {"0"}, "end": {"120"}, "step": {"15"}}, n: 4},
	} {
		var want []sample
		for _, tenant := range []string{"a", "b"} {
			var res struct{ Result []sample }
			testutil.Ok(t, json.Unmarshal(get(tenant, tc.path, tc.params), &res))
			for _, s := range res.Result {
				s.Metric = relabel(s.Metric, tenant)
				want = append(want, s)
			}
		}
		var got struct{ Result []sample }
		testutil.Ok(t, json.Unmarshal(get("a|b", tc.path, tc.params), &got))
		sort.Slice(want, func(i, j int) bool { return key(want[i].Metric) < key(want[j].Metric) })
		sort.Slice(got.Result, func(i, j int) bool { return key(got.Result[i].Metric) < key(got.Result[j].Metric) })
		testutil.Equals(t, tc.n, len(want), "%s %s: the data", tc.path, tc.params.Get("query"))
		testutil.Equals(t, want, got.Result, "%s %s", tc.path, tc.params.Get("query"))
	}

	// series
	var wantSeries []map[string]string
	params := url.Values{"match[]": {`{__name__=~".+"}`}, "start": {"0"}, "end": {"2"}}
	for _, tenant := range []string{"a", "b"} {
		var res []map[string]string
		testutil.Ok(t, json.Unmarshal(get(tenant, "/api/v1/series", params), &res))
		for _, m := range res {
			wantSeries = append(wantSeries, relabel(m, tenant))
		}
	}
	var gotSeries []map[string]string
	testutil.Ok(t, json.Unmarshal(get("a|b", "/api/v1/series", params), &gotSeries))
	sort.Slice(wantSeries, func(i, j int) bool { return key(wantSeries[i]) < key(wantSeries[j]) })
	testutil.Equals(t, 4, len(wantSeries))
	testutil.Equals(t, wantSeries, gotSeries)

	// labels and label values
	union := func(path string, rename func(string) string, extra ...string) []string {
		out := extra
		for _, tenant := range []string{"a", "b"} {
			var vs []string
			testutil.Ok(t, json.Unmarshal(get(tenant, path, nil), &vs))
			for _, v := range vs {
				out = append(out, rename(v))
			}
		}
		return slices.Compact(slices.Sorted(slices.Values(out)))
	}
	same := func(s string) string { return s }
	renameTenant := func(s string) string {
		if s == FederationTenantLabel {
			return FederationOriginalTenantLabel
		}
		return s
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{path: "/api/v1/labels", want: union("/api/v1/labels", renameTenant, FederationTenantLabel)},
		{path: "/api/v1/label/job/values", want: union("/api/v1/label/job/values", same)},
		{path: "/api/v1/label/__name__/values", want: union("/api/v1/label/__name__/values", same)},
		{path: "/api/v1/label/__tenant_id__/values", want: []string{"a", "b"}},
	} {
		var got []string
		testutil.Ok(t, json.Unmarshal(get("b|a", tc.path, nil), &got))
		testutil.Equals(t, tc.want, got, tc.path)
	}
}
