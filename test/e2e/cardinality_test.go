package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/prompb"
)

// knownCardinalitySeries are metric card_a with x in 5 values × y in 4 values (20 series) and metric card_b with
// z in 3 values (3 series): 23 series, one sample each at t.
func knownCardinalitySeries(t int64) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for x := 0; x < 5; x++ {
		for y := 0; y < 4; y++ {
			out = append(out, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "card_a"}, {Name: "x", Value: fmt.Sprint("x", x)}, {Name: "y", Value: fmt.Sprint("y", y)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: t}},
			})
		}
	}
	for z := 0; z < 3; z++ {
		out = append(out, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "card_b"}, {Name: "z", Value: fmt.Sprint(z)}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: t}},
		})
	}
	return out
}

type labelNamesCardinality struct {
	LabelValuesCountTotal int `json:"label_values_count_total"`
	LabelNamesCount       int `json:"label_names_count"`
	Cardinality           []struct {
		LabelName        string `json:"label_name"`
		LabelValuesCount int    `json:"label_values_count"`
	} `json:"cardinality"`
}

type labelValuesCardinality struct {
	SeriesCountTotal int `json:"series_count_total"`
	Labels           []struct {
		LabelName        string `json:"label_name"`
		LabelValuesCount int    `json:"label_values_count"`
		SeriesCount      int    `json:"series_count"`
		Cardinality      []struct {
			LabelValue  string `json:"label_value"`
			SeriesCount int    `json:"series_count"`
		} `json:"cardinality"`
	} `json:"labels"`
}

type tsdbStatJSON struct {
	Name  string `json:"name"`
	Value int    `json:"value"`
}

type tsdbStatus struct {
	HeadStats struct {
		NumSeries     int   `json:"numSeries"`
		NumLabelPairs int   `json:"numLabelPairs"`
		ChunkCount    int   `json:"chunkCount"`
		MinTime       int64 `json:"minTime"`
		MaxTime       int64 `json:"maxTime"`
	} `json:"headStats"`
	SeriesCountByMetricName     []tsdbStatJSON `json:"seriesCountByMetricName"`
	LabelValueCountByLabelName  []tsdbStatJSON `json:"labelValueCountByLabelName"`
	MemoryInBytesByLabelName    []tsdbStatJSON `json:"memoryInBytesByLabelName"`
	SeriesCountByLabelValuePair []tsdbStatJSON `json:"seriesCountByLabelValuePair"`
}

// getJSON GETs base+path as tenant, requires a 200 and decodes the body into out.
func getJSON(t *testing.T, base, path, tenant string, params url.Values, out any) {
	t.Helper()
	code, body := httpGet(base+path+"?"+params.Encode(), map[string]string{"X-Scope-OrgID": tenant})
	testutil.Equals(t, http.StatusOK, code, "%s: %s", path, body)
	testutil.Ok(t, json.Unmarshal([]byte(body), out), body)
}

// checkKnownCardinality checks that the cardinality endpoints under base (with the /prometheus prefix and without)
// count exactly knownCardinalitySeries for tenant, pushed at pushedAt, and nothing for a tenant that pushed none.
func checkKnownCardinality(t *testing.T, base, tenant string, pushedAt int64) {
	t.Helper()
	for _, prefix := range []string{"/prometheus", ""} {
		var names labelNamesCardinality
		getJSON(t, base, prefix+"/api/v1/cardinality/label_names", tenant, nil, &names)
		testutil.Equals(t, 14, names.LabelValuesCountTotal, "label_values_count_total")
		testutil.Equals(t, 4, names.LabelNamesCount, "label_names_count")
		got := map[string]int{}
		var order []string
		for _, c := range names.Cardinality {
			got[c.LabelName] = c.LabelValuesCount
			order = append(order, c.LabelName)
		}
		testutil.Equals(t, map[string]int{"x": 5, "y": 4, "z": 3, "__name__": 2}, got)
		testutil.Equals(t, []string{"x", "y", "z", "__name__"}, order, "sorted by label_values_count")

		getJSON(t, base, prefix+"/api/v1/cardinality/label_names", tenant, url.Values{"selector": {`{__name__="card_b"}`}, "limit": {"1"}}, &names)
		testutil.Equals(t, 4, names.LabelValuesCountTotal, "card_b: label_values_count_total")
		testutil.Equals(t, 2, names.LabelNamesCount, "card_b: label_names_count")
		testutil.Equals(t, 1, len(names.Cardinality))
		testutil.Equals(t, "z", names.Cardinality[0].LabelName)

		for _, method := range []string{"inmemory", "active"} {
			var values labelValuesCardinality
			getJSON(t, base, prefix+"/api/v1/cardinality/label_values", tenant,
				url.Values{"label_names[]": {"x", "y", "__name__"}, "count_method": {method}}, &values)
			testutil.Equals(t, 23, values.SeriesCountTotal, "series_count_total")
			perName := map[string]map[string]int{}
			for _, l := range values.Labels {
				perName[l.LabelName] = map[string]int{}
				total := 0
				for _, c := range l.Cardinality {
					perName[l.LabelName][c.LabelValue] = c.SeriesCount
					total += c.SeriesCount
				}
				testutil.Equals(t, total, l.SeriesCount, "series_count of %s", l.LabelName)
				testutil.Equals(t, len(l.Cardinality), l.LabelValuesCount, "label_values_count of %s", l.LabelName)
			}
			testutil.Equals(t, map[string]map[string]int{
				"__name__": {"card_a": 20, "card_b": 3},
				"x":        {"x0": 4, "x1": 4, "x2": 4, "x3": 4, "x4": 4},
				"y":        {"y0": 5, "y1": 5, "y2": 5, "y3": 5},
			}, perName, method)
		}

		var values labelValuesCardinality
		getJSON(t, base, prefix+"/api/v1/cardinality/label_values", tenant,
			url.Values{"label_names[]": {"y"}, "selector": {`{x=~"x[012]"}`}, "limit": {"2"}}, &values)
		testutil.Equals(t, 1, len(values.Labels))
		testutil.Equals(t, 12, values.Labels[0].SeriesCount, "series of y among x0..x2")
		testutil.Equals(t, 4, values.Labels[0].LabelValuesCount)
		testutil.Equals(t, 2, len(values.Labels[0].Cardinality), "limit 2")
		testutil.Equals(t, 3, values.Labels[0].Cardinality[0].SeriesCount)

		var st struct {
			Status string     `json:"status"`
			Data   tsdbStatus `json:"data"`
		}
		getJSON(t, base, prefix+"/api/v1/status/tsdb", tenant, url.Values{"limit": {"20"}}, &st)
		testutil.Equals(t, "success", st.Status)
		testutil.Equals(t, 23, st.Data.HeadStats.NumSeries, "numSeries")
		testutil.Equals(t, 14, st.Data.HeadStats.NumLabelPairs, "numLabelPairs")
		testutil.Equals(t, 23, st.Data.HeadStats.ChunkCount, "chunkCount")
		testutil.Equals(t, pushedAt, st.Data.HeadStats.MinTime)
		testutil.Equals(t, pushedAt, st.Data.HeadStats.MaxTime)
		testutil.Equals(t, 2, len(st.Data.SeriesCountByMetricName))
		testutil.Equals(t, "card_a", st.Data.SeriesCountByMetricName[0].Name)
		testutil.Equals(t, 20, st.Data.SeriesCountByMetricName[0].Value)
		testutil.Equals(t, "card_b", st.Data.SeriesCountByMetricName[1].Name)
		testutil.Equals(t, 3, st.Data.SeriesCountByMetricName[1].Value)
		testutil.Equals(t, 4, len(st.Data.LabelValueCountByLabelName))
		testutil.Equals(t, 14, len(st.Data.SeriesCountByLabelValuePair))
		testutil.Equals(t, "__name__=card_a", st.Data.SeriesCountByLabelValuePair[0].Name)
		testutil.Equals(t, 20, st.Data.SeriesCountByLabelValuePair[0].Value)

		// Another tenant sees none of it.
		getJSON(t, base, prefix+"/api/v1/status/tsdb", "card-nobody", nil, &st)
		testutil.Equals(t, 0, st.Data.HeadStats.NumSeries)
		testutil.Equals(t, 0, len(st.Data.SeriesCountByMetricName))
		getJSON(t, base, prefix+"/api/v1/cardinality/label_names", "card-nobody", nil, &names)
		testutil.Equals(t, 0, names.LabelNamesCount)
	}
	for _, tc := range []struct {
		path   string
		params url.Values
		tenant string
		want   int
	}{
		{path: "/api/v1/cardinality/label_values", tenant: tenant, want: http.StatusBadRequest},
		{path: "/api/v1/cardinality/label_names", params: url.Values{"limit": {"501"}}, tenant: tenant, want: http.StatusBadRequest},
		{path: "/api/v1/status/tsdb", params: url.Values{"limit": {"0"}}, tenant: tenant, want: http.StatusBadRequest},
		{path: "/api/v1/cardinality/label_names", params: url.Values{"selector": {"up{"}}, tenant: tenant, want: http.StatusBadRequest},
		{path: "/api/v1/cardinality/label_names", want: http.StatusUnauthorized},
	} {
		headers := map[string]string{}
		if tc.tenant != "" {
			headers["X-Scope-OrgID"] = tc.tenant
		}
		code, body := httpGet(base+tc.path+"?"+tc.params.Encode(), headers)
		testutil.Equals(t, tc.want, code, "%s %v: %s", tc.path, tc.params, body)
	}
}

// TestLocalClusterCardinality: in the local cluster (distributor, 3 ingesters with RF 3, querier, query-frontend)
// the cardinality endpoints, asked of the querier and through the query-frontend, count exactly the series a
// tenant pushed: each ingester holds every series, the querier deduplicates the replicas.
func TestLocalClusterCardinality(t *testing.T) {
	c := &cluster{dir: t.TempDir(), off: freePortOffset(t)}
	c.env = append(os.Environ(), "STRATA_BIN="+strataBin, fmt.Sprintf("STRATA_PORT_OFFSET=%d", c.off))
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"distributor", "ingester-a", "ingester-b", "ingester-c", "querier", "query-frontend"} {
				b, _ := os.ReadFile(filepath.Join(c.dir, n+".log"))
				t.Logf("%s.log (tail):\n%s", n, tail(string(b), 30))
			}
		}
		_ = exec.Command("bash", filepath.Join(repoRoot(), "examples/local-cluster/stop.sh"), c.dir).Run()
	})
	c.run(t, "start.sh", "ingester-a", "ingester-b", "ingester-c", "distributor", "querier", "query-frontend")

	now := time.Now().UnixMilli()
	code, body := pushV1(t, c.url(8080, "/api/v1/push"), "card-team", knownCardinalitySeries(now))
	testutil.Equals(t, http.StatusOK, code/100*100, body)
	for _, port := range []int{8087, 8090} { // querier, query-frontend
		checkKnownCardinality(t, c.url(port, ""), "card-team", now)
	}
}

// TestAllCardinality: `strata all` answers the cardinality endpoints from its in-process ingester.
func TestAllCardinality(t *testing.T) {
	p := startStrata(t, t.TempDir(), "all")
	p.waitReady(t, 20*time.Second)
	now := time.Now().UnixMilli()
	code, body := pushV1(t, p.url("/api/v1/push"), "card-team", knownCardinalitySeries(now))
	testutil.Equals(t, http.StatusOK, code/100*100, body)
	checkKnownCardinality(t, p.url(""), "card-team", now)
}
