package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

// TestOTLPMatchesPrometheus: the OpenTelemetry Go SDK records a gauge, a counter, an explicit-bucket histogram
// and an exponential histogram, and exports the same collected data with its OTLP/HTTP exporter to Strata
// (gzip) and to a real Prometheus with its OTLP receiver enabled, configured alike (metric name suffixes, one
// promoted resource attribute). The PromQL answers of both — every series' raw samples, target_info, rates and
// quantiles of the classic and native histograms — must be equal.
func TestOTLPMatchesPrometheus(t *testing.T) {
	prom := promTool(t, "prometheus")
	dir := t.TempDir()

	// Strata: suffixes as Prometheus adds them by default; promote one resource attribute.
	const tenant = "otel"
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte(`overrides:
  otel:
    otel_metric_suffixes_enabled: true
    promote_otel_resource_attributes: [deployment.environment]
`), 0o600))
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt)

	promAddr := freeAddr(t)
	testutil.Ok(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(`otlp:
  promote_resource_attributes: [deployment.environment]
`), 0o600))
	startProc(t, "", "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prom-data"), "--web.listen-address="+promAddr, "--web.enable-otlp-receiver")
	s.waitReady(t, 30*time.Second)
	waitUntil(t, 60*time.Second, "prometheus ready", func() bool {
		code, _ := httpGet("http://"+promAddr+"/-/ready", nil)
		return code == 200
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	toStrata, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(s.url("/otlp/v1/metrics")),
		otlpmetrichttp.WithHeaders(map[string]string{"X-Scope-OrgID": tenant}), otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression),
		otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))
	testutil.Ok(t, err)
	toProm, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL("http://"+promAddr+"/api/v1/otlp/v1/metrics"),
		otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))
	testutil.Ok(t, err)

	reader := sdkmetric.NewManualReader()
	res, err := resource.New(ctx, resource.WithAttributes(
		attribute.String("service.name", "checkout"), attribute.String("service.instance.id", "checkout-1"),
		attribute.String("deployment.environment", "e2e"), attribute.String("host.name", "box-1")))
	testutil.Ok(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "payload.size"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})))
	defer func() { testutil.Ok(t, mp.Shutdown(context.Background())) }()
	meter := mp.Meter("e2e")
	gauge, err := meter.Float64Gauge("queue.depth", metric.WithDescription("Items waiting."))
	testutil.Ok(t, err)
	counter, err := meter.Int64Counter("http.requests", metric.WithDescription("Requests served."))
	testutil.Ok(t, err)
	duration, err := meter.Float64Histogram("request.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.5, 1, 5))
	testutil.Ok(t, err)
	size, err := meter.Int64Histogram("payload.size", metric.WithUnit("By"))
	testutil.Ok(t, err)

	// Five collections a second apart, each exported to both.
	routes := []attribute.KeyValue{attribute.String("route", "/cart"), attribute.String("route", "/pay")}
	var last time.Time
	for round := range 5 {
		for i, route := range routes {
			attrs := metric.WithAttributes(route)
			gauge.Record(ctx, float64(10*round+i), attrs)
			counter.Add(ctx, int64(3+round*i), attrs)
			for k := range 4 + round {
				duration.Record(ctx, 0.003*float64((k+1)*(i+1)*(round+1)), attrs)
				size.Record(ctx, int64(100*(k+1)*(round+1)+i), attrs)
			}
		}
		var rm metricdata.ResourceMetrics
		testutil.Ok(t, reader.Collect(ctx, &rm))
		testutil.Ok(t, toStrata.Export(ctx, &rm))
		testutil.Ok(t, toProm.Export(ctx, &rm))
		last = time.Now()
		time.Sleep(time.Second) // the next collection's points a second later: rates over distinct timestamps
	}
	testutil.Ok(t, toStrata.Shutdown(ctx))
	testutil.Ok(t, toProm.Shutdown(ctx))

	strataAPI, promAPIBase := s.url(""), "http://"+promAddr
	at := last.Add(time.Second)
	start := at.Add(-10 * time.Second)

	// Every series Prometheus stored (all of Strata's too), with its raw samples.
	all := rawResult(t, promAPIBase, "", `{__name__=~".+"}`, at)
	testutil.Assert(t, len(all) >= 16, "prometheus holds %d series: %v", len(all), all)
	waitUntil(t, 20*time.Second, "strata holds the series", func() bool {
		return len(rawResult(t, strataAPI, tenant, `{__name__=~".+"}`, at)) == len(all)
	})
	for _, q := range []struct {
		query string
		step  time.Duration // 0: instant query at `at`; else a range query [start, at]
	}{
		{query: `{__name__=~".+"}`},
		{query: `{__name__=~".+"}[1m]`},
		{query: `{__name__=~".+"}`, step: time.Second},
		{query: `target_info`},
		{query: `queue_depth`},
		{query: `http_requests_total`},
		{query: `rate(http_requests_total[10s])`},
		{query: `histogram_quantile(0.9, sum by (le, route) (rate(request_duration_seconds_bucket[10s])))`},
		{query: `histogram_quantile(0.5, request_duration_seconds_bucket)`},
		{query: `payload_size_bytes`},
		{query: `histogram_quantile(0.9, payload_size_bytes)`},
		{query: `histogram_quantile(0.99, sum(rate(payload_size_bytes[10s])))`},
		{query: `histogram_count(payload_size_bytes)`},
		{query: `histogram_sum(payload_size_bytes)`},
		{query: `histogram_quantile(0.5, payload_size_bytes)`, step: time.Second},
	} {
		var want, got []map[string]any
		if q.step == 0 {
			want, got = rawResult(t, promAPIBase, "", q.query, at), rawResult(t, strataAPI, tenant, q.query, at)
		} else {
			want = rawRangeResult(t, promAPIBase, "", q.query, start, at, q.step)
			got = rawRangeResult(t, strataAPI, tenant, q.query, start, at, q.step)
		}
		testutil.Assert(t, len(want) > 0, "%s: prometheus answers nothing", q.query)
		testutil.Assert(t, reflect.DeepEqual(want, got), "%s (step %s):\nprometheus %v\nstrata     %v", q.query, q.step, want, got)
	}

	// Both named the metrics alike, with the promoted attribute and job/instance from the resource.
	var names []string
	for _, s := range all {
		m := s["metric"].(map[string]any)
		names = append(names, fmt.Sprint(m["__name__"]))
		testutil.Equals(t, "checkout", m["job"])
		testutil.Equals(t, "checkout-1", m["instance"])
		testutil.Equals(t, "e2e", m["deployment_environment"])
	}
	for _, want := range []string{"queue_depth", "http_requests_total", "request_duration_seconds_bucket", "payload_size_bytes", "target_info"} {
		testutil.Assert(t, slices.Contains(names, want), "no %s among %v", want, names)
	}
	// The exponential histogram is a native histogram in both.
	for _, s := range rawResult(t, strataAPI, tenant, `payload_size_bytes`, at) {
		_, ok := s["histogram"]
		testutil.Assert(t, ok, "payload_size_bytes is not a native histogram: %v", s)
	}
	// Strata keeps each family's metadata as the translator gives it (its type, description and unit).
	md := getMetadata(t, strataAPI, "/api/v1/metadata", tenant, nil)
	for family, want := range map[string]metaJSON{
		"http_requests_total":      {Type: "counter", Help: "Requests served."},
		"queue_depth":              {Type: "gauge", Help: "Items waiting."},
		"request_duration_seconds": {Type: "histogram", Unit: "seconds"},
		"payload_size_bytes":       {Type: "histogram", Unit: "bytes"},
		"target_info":              {Type: "gauge", Help: "Target metadata"},
	} {
		testutil.Equals(t, []metaJSON{want}, md[family], "metadata of %s: %v", family, md)
	}
	t.Logf("%d series, %d queries: the same answers from Prometheus and Strata", len(all), 15)
}

// rawResult runs an instant query at `at` and returns its result as decoded JSON, sorted by labels, so
// that two servers' answers compare as they are (float values, native histograms and timestamps alike).
func rawResult(t *testing.T, base, tenant, query string, at time.Time) []map[string]any {
	t.Helper()
	return rawQuery(t, base, tenant, "/api/v1/query", url.Values{"query": {query}, "time": {promTime(at)}})
}

// rawRangeResult is rawResult for a range query [start, end] by step.
func rawRangeResult(t *testing.T, base, tenant, query string, start, end time.Time, step time.Duration) []map[string]any {
	t.Helper()
	return rawQuery(t, base, tenant, "/api/v1/query_range", url.Values{"query": {query}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}})
}

func rawQuery(t *testing.T, base, tenant, path string, params url.Values) []map[string]any {
	t.Helper()
	code, r := promAPI(t, base, tenant, path, params)
	testutil.Equals(t, 200, code, "%s %s: %s %s", path, params.Get("query"), r.ErrorType, r.Error)
	var data struct {
		Result []map[string]any `json:"result"`
	}
	testutil.Ok(t, json.Unmarshal(r.Data, &data))
	sort.Slice(data.Result, func(i, j int) bool {
		return fmt.Sprint(data.Result[i]["metric"]) < fmt.Sprint(data.Result[j]["metric"])
	})
	return data.Result
}

func promTime(tm time.Time) string {
	return strconv.FormatFloat(float64(tm.UnixMilli())/1000, 'f', 3, 64)
}
