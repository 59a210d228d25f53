package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
)

// TestAllUnsortedLabels: a series with its labels in the order Mimir's continuous test sends them (`__name__,
// series_id, hash_extra`) is written through `strata all`, stored with its labels sorted and read back through
// the querier; a series naming a label twice is still a 400.
func TestAllUnsortedLabels(t *testing.T) {
	p := startStrata(t, t.TempDir(), "all")
	p.waitReady(t, 30*time.Second)
	now := time.Now().UnixMilli()

	code, body := pushV1(t, p.url("/api/v1/push"), "team-a", []prompb.TimeSeries{{
		Labels: []prompb.Label{
			{Name: "__name__", Value: "mimir_continuous_test_sine_wave_v2"},
			{Name: "series_id", Value: "7"},
			{Name: "hash_extra", Value: "0"},
		},
		Samples: []prompb.Sample{{Timestamp: now, Value: 0.5}},
	}})
	testutil.Equals(t, http.StatusNoContent, code, body)

	res := instantQuery(t, p.url(""), "team-a", `mimir_continuous_test_sine_wave_v2{series_id="7"}`, now)
	testutil.Equals(t, 1, len(res))
	testutil.Equals(t, map[string]string{"__name__": "mimir_continuous_test_sine_wave_v2", "hash_extra": "0", "series_id": "7"}, res[0].Metric)
	testutil.Equals(t, 0.5, sampleFloat(t, res[0].Value))
	// The stored series (the ingester's StoreAPI, labels in stored order) is sorted.
	stored := readStore(t, p.grpcAddr, "team-a")
	testutil.Equals(t, []string{`{__name__="mimir_continuous_test_sine_wave_v2", hash_extra="0", series_id="7", tenant_id="team-a"}`}, sortedKeys(stored))

	code, body = pushV1(t, p.url("/api/v1/push"), "team-a", []prompb.TimeSeries{{
		Labels: []prompb.Label{
			{Name: "__name__", Value: "dup"}, {Name: "series_id", Value: "1"}, {Name: "hash_extra", Value: "0"}, {Name: "series_id", Value: "2"},
		},
		Samples: []prompb.Sample{{Timestamp: now, Value: 1}},
	}})
	testutil.Equals(t, http.StatusBadRequest, code, body)
	testutil.Assert(t, strings.Contains(body, "err-mimir-duplicate-label-names"), body)
}

// TestAllPushMethodNotAllowed: in `strata all` (where the querier serves /api/v1/) remote write's paths answer
// other methods 405 with Allow: POST, as the distributor alone does, not the querier's 404.
func TestAllPushMethodNotAllowed(t *testing.T) {
	p := startStrata(t, t.TempDir(), "all")
	p.waitReady(t, 30*time.Second)
	for _, path := range []string{"/api/v1/push", "/api/v1/receive"} {
		for _, method := range []string{http.MethodGet, http.MethodPut} {
			req, err := http.NewRequest(method, p.url(path), nil)
			testutil.Ok(t, err)
			req.Header.Set("X-Scope-OrgID", "team-a")
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			testutil.Ok(t, err)
			_ = resp.Body.Close()
			testutil.Equals(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s", method, path)
			testutil.Equals(t, http.MethodPost, resp.Header.Get("Allow"), "%s %s", method, path)
		}
	}
}
