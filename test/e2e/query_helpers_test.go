package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"

	"github.com/efficientgo/core/testutil"
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

// instantQuery runs an instant query at ts (ms) and returns its vector.
func instantQuery(t *testing.T, base, tenant, query string, ts int64) []promSample {
	t.Helper()
	code, r := promAPI(t, base, tenant, "/api/v1/query", url.Values{"query": {query}, "time": {fmt.Sprintf("%.3f", float64(ts)/1000)}})
	testutil.Equals(t, 200, code, "query %s: %s %s", query, r.ErrorType, r.Error)
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &data))
	testutil.Equals(t, "vector", data.ResultType)
	return data.Result
}

// rangeQuery runs a range query [start, end] (ms) and returns its matrix.
func rangeQuery(t *testing.T, base, tenant, query string, start, end int64, step string, extra url.Values) []promSample {
	t.Helper()
	params := url.Values{"query": {query}, "start": {fmt.Sprintf("%.3f", float64(start)/1000)}, "end": {fmt.Sprintf("%.3f", float64(end)/1000)}, "step": {step}}
	for k, v := range extra {
		params[k] = v
	}
	code, r := promAPI(t, base, tenant, "/api/v1/query_range", params)
	testutil.Equals(t, 200, code, "query_range %s: %s %s", query, r.ErrorType, r.Error)
	var data struct {
		Result []promSample `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &data))
	return data.Result
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
