package e2e

import (
	"encoding/json"
	"net/url"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

// promResponse is the Prometheus HTTP API's envelope.
type promResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Data      json.RawMessage `json:"data"`
}

// promSample is one series of an instant vector (value) or a matrix (values).
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

// promAPI calls a Prometheus API endpoint as a tenant and returns the HTTP status and the decoded envelope.
func promAPI(t *testing.T, base, tenant, path string, params url.Values) (int, promResponse) {
	t.Helper()
	headers := map[string]string{}
	if tenant != "" {
		headers["X-Scope-OrgID"] = tenant
	}
	code, body := httpGet(base+path+"?"+params.Encode(), headers)
	var r promResponse
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%s: %d %q is not a Prometheus API answer: %v", path, code, body, err)
	}
	return code, r
}

// promGet calls a Prometheus API endpoint as a tenant, requires a 200 answer and decodes its data into out.
func promGet(t *testing.T, base, tenant, path string, params url.Values, out any) {
	t.Helper()
	code, r := promAPI(t, base, tenant, path, params)
	testutil.Equals(t, 200, code, "%s: %s %s", path, r.ErrorType, r.Error)
	testutil.Ok(t, json.Unmarshal(r.Data, out))
}

// labelValues returns the values of a label as a tenant sees them.
func labelValues(t *testing.T, base, tenant, name string) []string {
	t.Helper()
	var values []string
	promGet(t, base, tenant, "/api/v1/label/"+name+"/values", nil, &values)
	return values
}

// instantQuery runs an instant query at ts (ms) and returns its vector, sorted by labels.
func instantQuery(t *testing.T, base, tenant, query string, ts int64) []promSample {
	t.Helper()
	res, _ := promQuery(t, base, tenant, query, time.UnixMilli(ts), time.UnixMilli(ts), 0, nil)
	return res
}

// rangeQuery runs a range query [start, end] (ms) by step (a duration: "15s") and returns its matrix.
func rangeQuery(t *testing.T, base, tenant, query string, start, end int64, step string, extra url.Values) []promSample {
	t.Helper()
	d, err := time.ParseDuration(step)
	testutil.Ok(t, err)
	res, _ := promQuery(t, base, tenant, query, time.UnixMilli(start), time.UnixMilli(end), d, extra)
	return res
}

// sortSamples sorts samples by their label sets (the order of an instant vector is not part of the API).
func sortSamples(s []promSample) {
	for i := range s {
		if s[i].Metric == nil {
			s[i].Metric = map[string]string{}
		}
	}
	sort.SliceStable(s, func(i, j int) bool {
		return labels.Compare(labels.FromMap(s[i].Metric), labels.FromMap(s[j].Metric)) < 0
	})
}

// promQuery runs query against a Prometheus HTTP API under base as tenant: an instant query at start when step is
// 0, else a range query [start, end] by step, and returns the result (vector, matrix or scalar) sorted by labels
// in refQuery's shape, with the response's warnings (infos included). It fails the test on a non-200 answer.
func promQuery(t *testing.T, base, tenant, query string, start, end time.Time, step time.Duration, extra url.Values) ([]promSample, []string) {
	t.Helper()
	sec := func(tm time.Time) string { return strconv.FormatFloat(float64(tm.UnixMilli())/1000, 'f', 3, 64) }
	params := url.Values{"query": {query}}
	path := "/api/v1/query"
	if step == 0 {
		params.Set("time", sec(start))
	} else {
		path = "/api/v1/query_range"
		params.Set("start", sec(start))
		params.Set("end", sec(end))
		params.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	}
	for k, v := range extra {
		params[k] = v
	}
	code, r := promAPI(t, base, tenant, path, params)
	testutil.Equals(t, 200, code, "%s %s: %s %s", path, query, r.ErrorType, r.Error)
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &data))
	out := []promSample{}
	switch data.ResultType {
	case "vector", "matrix":
		testutil.Ok(t, json.Unmarshal(data.Result, &out))
	case "scalar":
		var v [2]any
		testutil.Ok(t, json.Unmarshal(data.Result, &v))
		out = append(out, promSample{Metric: map[string]string{}, Value: v})
	default:
		t.Fatalf("%s: unexpected result type %q", query, data.ResultType)
	}
	sortSamples(out)
	return out, r.Warnings
}

// sampleFloat reads the value of a [time, "value"] pair.
func sampleFloat(t *testing.T, v [2]any) float64 {
	t.Helper()
	s, ok := v[1].(string)
	testutil.Assert(t, ok, "value %v is not a string", v[1])
	f, err := strconv.ParseFloat(s, 64)
	testutil.Ok(t, err)
	return f
}
