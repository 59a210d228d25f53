package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// TestPrometheusRemoteWrite: a real Prometheus scrapes itself every second and remote-writes into strata all,
// first with remote write 1.0, then 2.0, for a minute each. It must end with no failed, dropped or retried
// sample in its own prometheus_remote_storage_* metrics, and Strata must hold exactly the samples that
// Prometheus's own TSDB holds.
func TestPrometheusRemoteWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("two minutes of real remote write")
	}
	prom := promTool(t, "prometheus")
	s := startStrata(t, t.TempDir(), "all")
	s.waitReady(t, 30*time.Second)

	duration := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STRATA_E2E_RW_DURATION")); err == nil {
		duration = d
	}
	for _, tc := range []struct {
		name, message string
		metadata      bool // whether Prometheus sends metric metadata
	}{
		{name: "v1", message: "prometheus.WriteRequest", metadata: true},
		// Prometheus 3.15 sends 2.0 metadata (with the series) from metadata WAL records; even with
		// --enable-feature=metadata-wal-records its requests carry none (checked): TestRemoteWriteMetadata covers
		// 2.0 metadata.
		{name: "v2", message: "io.prometheus.write.v2.Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tenant := "prom-" + tc.name
			dir := t.TempDir()
			promAddr := freeAddr(t)
			cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  external_labels:
    cluster: e2e
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s
    protobuf_message: %s
    headers:
      X-Scope-OrgID: %s
    queue_config:
      batch_send_deadline: 1s
      max_shards: 2
    metadata_config:
      send: true
      send_interval: 1s
`, promAddr, s.url("/api/v1/push"), tc.message, tenant)
			testutil.Ok(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
			startProc(t, "", "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
				"--web.listen-address="+promAddr)
			waitUntil(t, 60*time.Second, "prometheus ready", func() bool {
				code, _ := httpGet("http://"+promAddr+"/-/ready", nil)
				return code == 200
			})
			time.Sleep(duration) // the point of the test: a minute of real traffic

			// Everything Prometheus stored up to T, from its own TSDB.
			T := time.Now().Add(-2 * time.Second).Truncate(time.Second)
			want := promRawSamples(t, promAddr, tenant, T, duration+time.Minute)
			testutil.Assert(t, len(want) > 100, "prometheus holds only %d series", len(want))

			// Strata catches up to T within seconds (the remote-write queue flushes every second).
			var (
				got  map[string]map[int64]float64
				miss string
			)
			deadline := time.Now().Add(60 * time.Second)
			for {
				got = readStore(t, s.grpcAddr, tenant)
				if miss = missing(want, got, T.UnixMilli()); miss == "" {
					break
				}
				if time.Now().After(deadline) {
					some := sortedKeys(got)
					if len(some) > 3 {
						some = some[:3]
					}
					t.Fatalf("strata lacks %s (strata has %d series, e.g. %v; prometheus %d)", miss, len(got), some, len(want))
				}
				time.Sleep(500 * time.Millisecond)
			}
			for series, samples := range want {
				g := got[series]
				for ts, v := range samples {
					testutil.Assert(t, g[ts] == v || (math.IsNaN(g[ts]) && math.IsNaN(v)), "%s at %d: strata %v, prometheus %v", series, ts, g[ts], v)
				}
			}

			// The metric metadata Prometheus holds (1.0: sent in requests of its own every second) is what Strata's
			// metadata API answers: the same families, types, help and units.
			if tc.metadata {
				checkPrometheusMetadata(t, promAddr, s, tenant)
			}

			// Prometheus's own account: nothing failed, dropped or retried.
			_, metrics := httpGet("http://"+promAddr+"/metrics", nil)
			sent := 0.0
			for _, line := range strings.Split(metrics, "\n") {
				if !strings.HasPrefix(line, "prometheus_remote_storage_") {
					continue
				}
				name, v := metricLine(line)
				switch {
				case strings.HasSuffix(name, "_failed_total"), strings.HasSuffix(name, "_dropped_total"), strings.HasSuffix(name, "_retried_total"):
					testutil.Equals(t, 0.0, v, line)
				case name == "prometheus_remote_storage_samples_total":
					sent += v
				}
			}
			testutil.Assert(t, sent > 1000, "prometheus sent only %v samples", sent)
			t.Logf("%s: %d series, %v samples sent, all present in strata", tc.name, len(want), sent)
		})
	}
}

// checkPrometheusMetadata asserts that Strata serves tenant the metric metadata the Prometheus at promAddr holds.
func checkPrometheusMetadata(t *testing.T, promAddr string, s *proc, tenant string) {
	t.Helper()
	var wantMeta map[string][]metaJSON
	promGet(t, "http://"+promAddr, "", "/api/v1/metadata", nil, &wantMeta)
	testutil.Assert(t, len(wantMeta) > 50, "prometheus holds metadata of only %d families", len(wantMeta))
	sortMeta(wantMeta)
	for deadline := time.Now().Add(30 * time.Second); ; {
		gotMeta := getMetadata(t, s.url(""), "/prometheus/api/v1/metadata", tenant, nil)
		sortMeta(gotMeta)
		if reflect.DeepEqual(wantMeta, gotMeta) {
			t.Logf("metadata of %d families served as prometheus holds it", len(gotMeta))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("strata's metadata differs from prometheus's: %s", metaDiff(wantMeta, gotMeta))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sortMeta orders each family's entries by type, help and unit.
func sortMeta(m map[string][]metaJSON) {
	for _, metas := range m {
		sort.Slice(metas, func(i, j int) bool {
			a, b := metas[i], metas[j]
			return a.Type+"\xff"+a.Help+"\xff"+a.Unit < b.Type+"\xff"+b.Help+"\xff"+b.Unit
		})
	}
}

// metaDiff describes up to 5 families that differ.
func metaDiff(want, got map[string][]metaJSON) string {
	var diffs []string
	for _, name := range sortedKeys(want) {
		if !reflect.DeepEqual(want[name], got[name]) {
			diffs = append(diffs, fmt.Sprintf("%s: want %v, got %v", name, want[name], got[name]))
		}
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %v", name, got[name]))
		}
	}
	n := len(diffs)
	if n > 5 {
		diffs = diffs[:5]
	}
	return fmt.Sprintf("%d families differ (want %d, got %d): %s", n, len(want), len(got), strings.Join(diffs, "; "))
}

var lineRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)`)

func metricLine(line string) (string, float64) {
	m := lineRE.FindStringSubmatch(line)
	if m == nil {
		return "", 0
	}
	v, _ := strconv.ParseFloat(m[3], 64)
	return m[1], v
}

// missing names a series or sample of want (up to T) that got lacks, or "".
func missing(want, got map[string]map[int64]float64, T int64) string {
	for series, samples := range want {
		g, ok := got[series]
		if !ok {
			return series
		}
		for ts := range samples {
			if ts > T {
				continue
			}
			if _, ok := g[ts]; !ok {
				return fmt.Sprintf("%s@%d", series, ts)
			}
		}
	}
	return ""
}

// promRawSamples returns every series Prometheus stored in (T-window, T], with its raw samples, as labels strings
// in Prometheus's own notation with the external labels remote write adds and the tenant_id Strata adds.
func promRawSamples(t *testing.T, addr, tenant string, T time.Time, window time.Duration) map[string]map[int64]float64 {
	t.Helper()
	v := url.Values{"query": {fmt.Sprintf(`{__name__=~".+"}[%ds]`, int(window.Seconds()))}, "time": {strconv.FormatInt(T.Unix(), 10)}}
	code, body := httpGet("http://"+addr+"/api/v1/query?"+v.Encode(), nil)
	testutil.Equals(t, 200, code, body)
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	testutil.Ok(t, json.Unmarshal([]byte(body), &resp))
	out := map[string]map[int64]float64{}
	for _, r := range resp.Data.Result {
		r.Metric["cluster"] = "e2e"
		r.Metric["tenant_id"] = tenant
		key := labelsString(r.Metric)
		samples := map[int64]float64{}
		for _, p := range r.Values {
			ts := int64(math.Round(p[0].(float64) * 1000))
			f, err := strconv.ParseFloat(p[1].(string), 64)
			testutil.Ok(t, err)
			samples[ts] = f
		}
		out[key] = samples
	}
	return out
}

func labelsString(m map[string]string) string {
	keys := sortedKeys(m)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
