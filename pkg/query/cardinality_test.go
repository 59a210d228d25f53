package query

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// fakeCardinalityReader answers as an ingester holding series (of the API test tenant) would, or fails with err.
type fakeCardinalityReader struct {
	series []labels.Labels
	err    error
	// got is the last request.
	got *cardinalitypb.CardinalityRequest
}

func (f *fakeCardinalityReader) ReadCardinality(ctx context.Context, req *cardinalitypb.CardinalityRequest) (*cardinalitypb.CardinalityResponse, error) {
	f.got = req
	if f.err != nil {
		return nil, f.err
	}
	if tenant, err := tenancy.TenantFromContext(ctx); err != nil || tenant != apiTestTenant {
		return nil, errors.Newf("unexpected tenant %q (%v)", tenant, err)
	}
	ms, err := store.MatchersFromPB(req.GetMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res := &cardinalitypb.CardinalityResponse{TotalSeries: uint64(len(f.series)), MinTime: 1000, MaxTime: 2000}
	counts := map[string]map[string]uint64{}
	for _, s := range f.series {
		ok := true
		for _, m := range ms {
			ok = ok && m.Matches(s.Get(m.Name))
		}
		if !ok {
			continue
		}
		res.Series++
		res.Chunks++
		s.Range(func(l labels.Label) {
			if len(req.GetLabelNames()) > 0 && !contains(req.GetLabelNames(), l.Name) {
				return
			}
			if counts[l.Name] == nil {
				counts[l.Name] = map[string]uint64{}
			}
			counts[l.Name][l.Value]++
		})
	}
	for name, vs := range counts {
		lv := &cardinalitypb.LabelValueCounts{Name: name}
		for v, n := range vs {
			lv.Values = append(lv.Values, &cardinalitypb.ValueCount{Value: v, Series: n})
		}
		res.Labels = append(res.Labels, lv)
	}
	return res, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// knownSeries are metric a with x in 5 values × y in 4 values (20 series) and metric b with z in 3 values.
func knownSeries() []labels.Labels {
	var out []labels.Labels
	for x := 0; x < 5; x++ {
		for y := 0; y < 4; y++ {
			out = append(out, labels.FromStrings("__name__", "a", "x", fmt.Sprint("x", x), "y", fmt.Sprint("y", y)))
		}
	}
	for z := 0; z < 3; z++ {
		out = append(out, labels.FromStrings("__name__", "b", "z", fmt.Sprint(z)))
	}
	return out
}

// cardinalityCluster returns n fake ingesters holding knownSeries with replication factor rf (series i on
// ingesters i … i+rf-1, mod n).
func cardinalityCluster(n, rf int) map[string]*fakeCardinalityReader {
	out := map[string]*fakeCardinalityReader{}
	for i := 0; i < n; i++ {
		out[fmt.Sprint("i", i)] = &fakeCardinalityReader{}
	}
	for i, s := range knownSeries() {
		for r := 0; r < min(rf, n); r++ {
			ing := out[fmt.Sprint("i", (i+r)%n)]
			ing.series = append(ing.series, s)
		}
	}
	return out
}

func newCardinalityAPI(t *testing.T, cfg CardinalityConfig, ingesters map[string]*fakeCardinalityReader, rf, maxErrors int) http.Handler {
	t.Helper()
	var addrs []string
	for a := range ingesters {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	q := NewCardinalityQuerier(cfg, func() (MetadataReplicas, error) {
		return MetadataReplicas{Addrs: addrs, MaxErrors: maxErrors}, nil
	}, rf, func(addr string) (CardinalityReader, error) { return ingesters[addr], nil })
	return newTestAPI(t, APIConfig{Engine: DefaultEngineConfig(), Cardinality: q}, nil)
}

func TestCardinalityAPICounts(t *testing.T) {
	xs := []LabelValueCardinality{{"x0", 4}, {"x1", 4}, {"x2", 4}, {"x3", 4}, {"x4", 4}}
	names := &LabelNamesCardinality{LabelValuesCountTotal: 14, LabelNamesCount: 4, Cardinality: []LabelNameCardinality{
		{"x", 5}, {"y", 4}, {"z", 3}, {"__name__", 2},
	}}
	for _, tc := range []struct {
		name      string
		n, rf     int
		failing   []string
		maxErrors int
		path      string
		params    url.Values
		want      any // decoded into a value of the same type
	}{
		{name: "label_names, 3 ingesters RF 3", n: 3, rf: 3, path: "/api/v1/cardinality/label_names", want: names},
		{name: "label_names, 4 ingesters RF 2", n: 4, rf: 2, path: "/api/v1/cardinality/label_names", want: names},
		{name: "label_names, 1 ingester (strata all)", n: 1, rf: 3, path: "/api/v1/cardinality/label_names", want: names},
		{
			name: "label_names: distinct values are exact with a failed ingester", n: 3, rf: 3, failing: []string{"i1"}, maxErrors: 1,
			path: "/api/v1/cardinality/label_names", want: names,
		},
		{
			name: "label_names with selector and limit", n: 3, rf: 3, path: "/prometheus/api/v1/cardinality/label_names",
			params: url.Values{"selector": {`{__name__="a"}`}, "limit": {"2"}},
			want:   &LabelNamesCardinality{LabelValuesCountTotal: 10, LabelNamesCount: 3, Cardinality: []LabelNameCardinality{{"x", 5}, {"y", 4}}},
		},
		{
			name: "label_names limit 0: totals only", n: 3, rf: 3, path: "/api/v1/cardinality/label_names", params: url.Values{"limit": {"0"}},
			want: &LabelNamesCardinality{LabelValuesCountTotal: 14, LabelNamesCount: 4, Cardinality: []LabelNameCardinality{}},
		},
		{
			name: "label_values, 4 ingesters RF 2", n: 4, rf: 2, path: "/api/v1/cardinality/label_values",
			params: url.Values{"label_names[]": {"x", "__name__", "missing"}},
			want: &LabelValuesCardinality{SeriesCountTotal: 23, Labels: []LabelValuesCardinalityItem{
				{LabelName: "__name__", LabelValuesCount: 2, SeriesCount: 23, Cardinality: []LabelValueCardinality{{"a", 20}, {"b", 3}}},
				{LabelName: "x", LabelValuesCount: 5, SeriesCount: 20, Cardinality: xs},
				{LabelName: "missing", Cardinality: []LabelValueCardinality{}},
			}},
		},
		{
			name: "label_values with selector and limit", n: 3, rf: 3, path: "/api/v1/cardinality/label_values",
			params: url.Values{"label_names[]": {"y"}, "selector": {`{x=~"x[01]"}`}, "limit": {"3"}},
			want: &LabelValuesCardinality{SeriesCountTotal: 23, Labels: []LabelValuesCardinalityItem{
				{LabelName: "y", LabelValuesCount: 4, SeriesCount: 8, Cardinality: []LabelValueCardinality{{"y0", 2}, {"y1", 2}, {"y2", 2}}},
			}},
		},
		{
			name: "status/tsdb, 3 ingesters RF 3", n: 3, rf: 3, path: "/api/v1/status/tsdb", params: url.Values{"limit": {"3"}},
			want: &tsdbStatusEnvelope{Status: "success", Data: TSDBStatus{
				HeadStats:                   TSDBHeadStats{NumSeries: 23, NumLabelPairs: 14, ChunkCount: 23, MinTime: 1000, MaxTime: 2000},
				SeriesCountByMetricName:     []TSDBStat{{"a", 20}, {"b", 3}},
				LabelValueCountByLabelName:  []TSDBStat{{"x", 5}, {"y", 4}, {"z", 3}},
				MemoryInBytesByLabelName:    memoryByLabelName(3),
				SeriesCountByLabelValuePair: []TSDBStat{{"__name__=a", 20}, {"y=y0", 5}, {"y=y1", 5}},
			}},
		},
		{
			name: "status/tsdb, 4 ingesters RF 2, default limit", n: 4, rf: 2, path: "/api/v1/status/tsdb",
			want: &tsdbStatusEnvelope{Status: "success", Data: TSDBStatus{
				HeadStats:                   TSDBHeadStats{NumSeries: 23, NumLabelPairs: 14, ChunkCount: 23, MinTime: 1000, MaxTime: 2000},
				SeriesCountByMetricName:     []TSDBStat{{"a", 20}, {"b", 3}},
				LabelValueCountByLabelName:  []TSDBStat{{"x", 5}, {"y", 4}, {"z", 3}, {"__name__", 2}},
				MemoryInBytesByLabelName:    memoryByLabelName(10),
				SeriesCountByLabelValuePair: []TSDBStat{{"__name__=a", 20}, {"y=y0", 5}, {"y=y1", 5}, {"y=y2", 5}, {"y=y3", 5}, {"x=x0", 4}, {"x=x1", 4}, {"x=x2", 4}, {"x=x3", 4}, {"x=x4", 4}},
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ingesters := cardinalityCluster(tc.n, tc.rf)
			for _, f := range tc.failing {
				ingesters[f].err = status.Error(codes.Unavailable, "down")
			}
			h := newCardinalityAPI(t, DefaultCardinalityConfig(), ingesters, tc.rf, tc.maxErrors)
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				rec := serveWithin(t, h, apiRequest(context.Background(), method, tc.path, tc.params), 5*time.Second)
				testutil.Equals(t, http.StatusOK, rec.Code, rec.Body.String())
				got := newOfSameType(tc.want)
				testutil.Ok(t, json.Unmarshal(rec.Body.Bytes(), got))
				testutil.Equals(t, tc.want, got)
			}
		})
	}
}

type tsdbStatusEnvelope struct {
	Status string     `json:"status"`
	Data   TSDBStatus `json:"data"`
}

func newOfSameType(v any) any {
	switch v.(type) {
	case *LabelNamesCardinality:
		return &LabelNamesCardinality{}
	case *LabelValuesCardinality:
		return &LabelValuesCardinality{}
	}
	return &tsdbStatusEnvelope{}
}

// memoryByLabelName is memoryInBytesByLabelName of knownSeries, as Prometheus computes it, its first limit.
func memoryByLabelName(limit int) []TSDBStat {
	size := map[string]uint64{}
	counts := map[string]map[string]uint64{}
	for _, s := range knownSeries() {
		s.Range(func(l labels.Label) {
			if counts[l.Name] == nil {
				counts[l.Name] = map[string]uint64{}
			}
			counts[l.Name][l.Value]++
		})
	}
	var out []TSDBStat
	for name, vs := range counts {
		for v, n := range vs {
			size[name] += labels.SizeOfLabels(name, v, n)
		}
		out = append(out, TSDBStat{Name: name, Value: size[name]})
	}
	return topStats(out, limit)
}

func TestCardinalityAPIErrors(t *testing.T) {
	manyNames := url.Values{}
	for i := 0; i < 4; i++ {
		manyNames.Add("label_names[]", fmt.Sprint("n", i))
	}
	cfg := DefaultCardinalityConfig()
	cfg.MaxLabelNamesPerRequest = 3
	disabled := DefaultCardinalityConfig()
	disabled.Enabled = false
	small := DefaultCardinalityConfig()
	small.MaxLabelValues = 13 // knownSeries have 14 name and value pairs
	for _, tc := range []struct {
		name      string
		cfg       *CardinalityConfig
		method    string
		path      string
		params    url.Values
		noTenant  bool
		failing   map[string]error
		maxErrors int
		wantCode  int
		wantErr   string
	}{
		{name: "label_values without label_names[]", path: "/api/v1/cardinality/label_values", wantCode: 400, wantErr: "label_names[] is required"},
		{name: "label_values with an empty label name", path: "/api/v1/cardinality/label_values", params: url.Values{"label_names[]": {""}}, wantCode: 400, wantErr: "invalid label name"},
		{name: "label_values with a label name that is not UTF-8", path: "/api/v1/cardinality/label_values", params: url.Values{"label_names[]": {"\xff"}}, wantCode: 400, wantErr: "invalid label name"},
		{name: "label_values with a huge label name", path: "/api/v1/cardinality/label_values", params: url.Values{"label_names[]": {strings.Repeat("n", 2000)}}, wantCode: 400, wantErr: "invalid label name"},
		{name: "too many label_names[]", path: "/api/v1/cardinality/label_values", params: manyNames, wantCode: 400, wantErr: "more than the 3 allowed"},
		{name: "limit above 500", path: "/api/v1/cardinality/label_names", params: url.Values{"limit": {"501"}}, wantCode: 400, wantErr: "between 0 and 500"},
		{name: "negative limit", path: "/api/v1/cardinality/label_values", params: url.Values{"label_names[]": {"x"}, "limit": {"-1"}}, wantCode: 400, wantErr: "between 0 and 500"},
		{name: "limit not a number", path: "/api/v1/cardinality/label_names", params: url.Values{"limit": {"ten"}}, wantCode: 400, wantErr: "between 0 and 500"},
		{name: "bad count_method", path: "/api/v1/cardinality/label_names", params: url.Values{"count_method": {"all"}}, wantCode: 400, wantErr: "invalid count_method"},
		{name: "bad selector", path: "/api/v1/cardinality/label_names", params: url.Values{"selector": {"up{"}}, wantCode: 400, wantErr: "invalid selector"},
		{name: "selector that is an expression", path: "/api/v1/cardinality/label_names", params: url.Values{"selector": {"sum(up)"}}, wantCode: 400, wantErr: "invalid selector"},
		{name: "hostile selector", path: "/api/v1/cardinality/label_names", params: url.Values{"selector": {strings.Repeat("{", 100_000)}}, wantCode: 400},
		{name: "status/tsdb limit 0", path: "/api/v1/status/tsdb", params: url.Values{"limit": {"0"}}, wantCode: 400, wantErr: "between 1 and 10000"},
		{name: "status/tsdb limit above 10000", path: "/api/v1/status/tsdb", params: url.Values{"limit": {"10001"}}, wantCode: 400, wantErr: "between 1 and 10000"},
		{name: "no tenant", path: "/api/v1/status/tsdb", noTenant: true, wantCode: 401},
		{name: "wrong method", method: http.MethodDelete, path: "/api/v1/cardinality/label_names", wantCode: 405},
		{name: "disabled", cfg: &disabled, path: "/api/v1/cardinality/label_names", wantCode: 400, wantErr: "disabled"},
		{name: "unknown cardinality path", path: "/api/v1/cardinality/series", wantCode: 404},
		{
			name: "an ingester over max_label_values", path: "/api/v1/cardinality/label_names",
			failing: map[string]error{"i0": status.Error(codes.ResourceExhausted, "too many label values")}, maxErrors: 1,
			wantCode: 422, wantErr: "too many label values",
		},
		{
			name: "the merged answer over max_label_values", cfg: &small, path: "/api/v1/status/tsdb",
			wantCode: 422, wantErr: "more than 13 label values",
		},
		{
			name: "more failed ingesters than tolerated", path: "/api/v1/status/tsdb",
			failing:   map[string]error{"i0": status.Error(codes.Unavailable, "down"), "i1": status.Error(codes.Unavailable, "down")},
			maxErrors: 1, wantCode: 503, wantErr: "more than the replication tolerates",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg != nil {
				c = *tc.cfg
			}
			ingesters := cardinalityCluster(3, 3)
			for addr, err := range tc.failing {
				ingesters[addr].err = err
			}
			h := newCardinalityAPI(t, c, ingesters, 3, tc.maxErrors)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := apiRequest(context.Background(), method, tc.path, tc.params)
			if tc.noTenant {
				req.Header.Del(tenancy.HeaderOrgID)
			}
			rec := serveWithin(t, h, req, 5*time.Second)
			testutil.Equals(t, tc.wantCode, rec.Code, rec.Body.String())
			testutil.Assert(t, strings.Contains(rec.Body.String(), tc.wantErr), "body %q lacks %q", rec.Body.String(), tc.wantErr)
		})
	}
}

func TestCardinalityRequestBounds(t *testing.T) {
	ingesters := cardinalityCluster(3, 3)
	cfg := DefaultCardinalityConfig()
	cfg.MaxLabelValues = 1234
	h := newCardinalityAPI(t, cfg, ingesters, 3, 1)
	rec := serveWithin(t, h, apiRequest(context.Background(), http.MethodGet, "/api/v1/cardinality/label_values",
		url.Values{"label_names[]": {"x", "x", "y"}, "selector": {`{__name__="a"}`}, "count_method": {"active"}}), 5*time.Second)
	testutil.Equals(t, http.StatusOK, rec.Code, rec.Body.String())
	got := ingesters["i0"].got
	testutil.Equals(t, int64(1234), got.GetMaxLabelValues())
	testutil.Equals(t, []string{"x", "y"}, got.GetLabelNames()) // deduplicated
	testutil.Equals(t, cardinalitypb.CountMethod_ACTIVE, got.GetCountMethod())
	testutil.Equals(t, 1, len(got.GetMatchers()))
}
