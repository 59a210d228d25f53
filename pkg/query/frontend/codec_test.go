package frontend

import (
	"context"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	v1 "github.com/prometheus/prometheus/web/api/v1"
)

// TestResponseCodecIsPrometheusExact encodes matrices with Prometheus's own API codec, decodes them and encodes
// them again: the bytes must be the same (floats in both notations, NaN, ±Inf, negative and sub-second times,
// labels needing escapes, native histograms, warnings, infos).
func TestResponseCodecIsPrometheusExact(t *testing.T) {
	h := &histogram.FloatHistogram{
		Schema: 0, Count: 12.5, Sum: -3.25, ZeroThreshold: 0.001, ZeroCount: 2,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		PositiveBuckets: []float64{4, 6.5},
	}
	for _, tc := range []struct {
		name     string
		matrix   promql.Matrix
		warnings []string
		infos    []string
	}{
		{name: "empty", matrix: promql.Matrix{}},
		{
			name: "floats",
			matrix: promql.Matrix{
				{Metric: labels.FromStrings("__name__", "up", "job", `a"b<c>&d`+"\u2028é"), Floats: []promql.FPoint{
					{T: -1500, F: 1}, {T: 0, F: math.NaN()}, {T: 1, F: math.Inf(1)}, {T: 10, F: math.Inf(-1)},
					{T: 1700000000123, F: 1e-7}, {T: 1700000001000, F: 1.5e21}, {T: 1700000002050, F: 0.1 + 0.2},
				}},
				{Metric: labels.FromStrings("x", "y"), Floats: []promql.FPoint{{T: 5, F: -0}}},
			},
			warnings: []string{"PromQL warning: w1", "w2 \"quoted\""},
			infos:    []string{"PromQL info: i"},
		},
		{
			name: "histograms and floats",
			matrix: promql.Matrix{
				{Metric: labels.FromStrings("a", "1"), Floats: []promql.FPoint{{T: 1000, F: 3}}, Histograms: []promql.HPoint{{T: 2000, H: h}, {T: 3001, H: h}}},
				{Metric: labels.EmptyLabels(), Histograms: []promql.HPoint{{T: 2000, H: h}}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := v1.JSONCodec{}.Encode(&v1.Response{
				Status: "success", Data: &v1.QueryData{ResultType: parser.ValueTypeMatrix, Result: tc.matrix},
				Warnings: tc.warnings, Infos: tc.infos,
			})
			testutil.Ok(t, err)
			resp, err := DecodeResponse(&Request{IsRange: true}, http.StatusOK, nil, want)
			testutil.Ok(t, err)
			testutil.Equals(t, len(tc.matrix), len(resp.Matrix))
			testutil.Assert(t, resp.Raw == nil, "a range answer is decoded")
			testutil.Equals(t, string(want), string(resp.Encode()))
		})
	}
}

func TestParseRequest(t *testing.T) {
	day := int64(24 * time.Hour / time.Millisecond)
	for _, tc := range []struct {
		name    string
		path    string
		form    url.Values
		isRange bool
		start   int64
		end     int64
		step    int64
		params  url.Values
	}{
		{
			name: "range, unix seconds", path: "/api/v1/query_range",
			form:    url.Values{"query": {"up"}, "start": {"86400"}, "end": {"172800.5"}, "step": {"15"}, "dedup": {"false"}, "replicaLabels[]": {"a", "b"}},
			isRange: true, start: day, end: 2*day + 500, step: 15000,
			params: url.Values{"dedup": {"false"}, "replicaLabels[]": {"a", "b"}},
		},
		{
			name: "range, RFC 3339 and duration step, prometheus prefix", path: "/prometheus/api/v1/query_range",
			form:    url.Values{"query": {"up"}, "start": {"1970-01-02T00:00:00Z"}, "end": {"1970-01-03T00:00:00.25Z"}, "step": {"1m30s"}},
			isRange: true, start: day, end: 2*day + 250, step: 90000, params: url.Values{},
		},
		{name: "end before start passes through", path: "/api/v1/query_range", form: url.Values{"query": {"up"}, "start": {"10"}, "end": {"5"}, "step": {"1"}}},
		{name: "zero step passes through", path: "/api/v1/query_range", form: url.Values{"query": {"up"}, "start": {"1"}, "end": {"5"}, "step": {"0"}}},
		{name: "sub-ms step passes through", path: "/api/v1/query_range", form: url.Values{"query": {"up"}, "start": {"1"}, "end": {"5"}, "step": {"0.0005"}}},
		{name: "two queries pass through", path: "/api/v1/query_range", form: url.Values{"query": {"up", "down"}, "start": {"1"}, "end": {"5"}, "step": {"1"}}},
		{name: "bad time passes through", path: "/api/v1/query_range", form: url.Values{"query": {"up"}, "start": {"yesterday"}, "end": {"5"}, "step": {"1"}}},
		{name: "instant", path: "/api/v1/query", form: url.Values{"query": {"up"}, "time": {"5"}}},
		{name: "labels", path: "/api/v1/labels", form: url.Values{"match[]": {"up"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				var hr *http.Request
				if method == http.MethodGet {
					hr = httptest.NewRequest(method, tc.path+"?"+tc.form.Encode(), nil)
				} else {
					hr = httptest.NewRequest(method, tc.path, strings.NewReader(tc.form.Encode()))
					hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				req, err := ParseRequest(hr, []string{"t1"})
				testutil.Ok(t, err)
				testutil.Equals(t, tc.isRange, req.IsRange)
				testutil.Equals(t, strings.TrimPrefix(tc.path, "/prometheus"), req.Path)
				if !tc.isRange {
					testutil.Equals(t, tc.form, req.Params)
					testutil.Equals(t, tc.form, req.Form())
					continue
				}
				testutil.Equals(t, []int64{tc.start, tc.end, tc.step}, []int64{req.Start, req.End, req.Step})
				testutil.Equals(t, tc.params, req.Params)
				testutil.Equals(t, tc.form, req.Form(), "an unchanged request is forwarded as received")

				// A rewritten request reads back as the same times.
				sub := req.WithStartEnd(req.Start+req.Step, req.End)
				down, err := sub.HTTPRequest(context.Background(), &url.URL{Scheme: "http", Host: "q:1", Path: "/base/"})
				testutil.Ok(t, err)
				testutil.Equals(t, "/base"+tc.path, down.URL.Path)
				testutil.Equals(t, "t1", down.Header.Get("X-Scope-OrgID"))
				if method == http.MethodPost {
					b, err := io.ReadAll(down.Body)
					testutil.Ok(t, err)
					down.URL.RawQuery = string(b)
				}
				back, err := ParseRequest(httptest.NewRequest(http.MethodGet, tc.path+"?"+down.URL.RawQuery, nil), []string{"t1"})
				testutil.Ok(t, err)
				testutil.Equals(t, []int64{req.Start + req.Step, req.End, req.Step}, []int64{back.Start, back.End, back.Step})
				testutil.Equals(t, tc.params, back.Params)
			}
		})
	}
}

func TestParseJSONTimestamp(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1000, "1.5": 1500, "1.500": 1500, "1.05": 1050, "1.005": 1005, "-1.5": -1500, "-0.001": -1,
		"1700000000.123": 1700000000123, "1e3": 1000000,
	} {
		got, err := parseJSONTimestamp([]byte(in))
		testutil.Ok(t, err)
		testutil.Equals(t, want, got, in)
	}
}

// TestParseRequestMultipart: a multipart form (Prometheus's API accepts one) keeps every parameter.
func TestParseRequestMultipart(t *testing.T) {
	var body strings.Builder
	mw := multipart.NewWriter(&body)
	testutil.Ok(t, mw.WriteField("query", "up"))
	testutil.Ok(t, mw.WriteField("time", "5"))
	testutil.Ok(t, mw.Close())
	hr := httptest.NewRequest(http.MethodPost, "/api/v1/query?dedup=false", strings.NewReader(body.String()))
	hr.Header.Set("Content-Type", mw.FormDataContentType())
	req, err := ParseRequest(hr, []string{"t"})
	testutil.Ok(t, err)
	testutil.Equals(t, url.Values{"query": {"up"}, "time": {"5"}, "dedup": {"false"}}, req.Form())
}
