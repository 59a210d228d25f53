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
	"strings"
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
// quantiles of the classic and native histograms — must be equal. A second service exports delta temporality:
// Strata converts it for a tenant with otel_convert_delta_to_cumulative as Prometheus's otlp-deltatocumulative
// does, with the same answers.
func TestOTLPMatchesPrometheus(t *testing.T) {
	prom := promTool(t, "prometheus")
	dir := t.TempDir()

	// Strata: suffixes as Prometheus adds them by default; promote one resource attribute.
	rt := filepath.Join(dir, "runtime.yaml")
	testutil.Ok(t, os.WriteFile(rt, []byte(`overrides:
  otel:
    otel_metric_suffixes_enabled: true
    promote_otel_resource_attributes: [deployment.environment]
  otel-delta:
    otel_metric_suffixes_enabled: true
    promote_otel_resource_attributes: [deployment.environment]
    otel_convert_delta_to_cumulative: true
`), 0o600))
	s := startStrata(t, dir, "all", "--runtime-config.file="+rt)

	promAddr := freeAddr(t)
	testutil.Ok(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(`otlp:
  promote_resource_attributes: [deployment.environment]
`), 0o600))
	startProc(t, "", "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prom-data"), "--web.listen-address="+promAddr, "--web.enable-otlp-receiver",
		"--enable-feature=otlp-deltatocumulative")
	s.waitReady(t, 30*time.Second)
	waitUntil(t, 60*time.Second, "prometheus ready", func() bool {
		code, _ := httpGet("http://"+promAddr+"/-/ready", nil)
		return code == 200
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newExporter := func(url string, headers map[string]string, opts ...otlpmetrichttp.Option) *otlpmetrichttp.Exporter {
		e, err := otlpmetrichttp.New(ctx, append(opts, otlpmetrichttp.WithEndpointURL(url), otlpmetrichttp.WithHeaders(headers),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))...)
		testutil.Ok(t, err)
		return e
	}
	toProm := newExporter("http://"+promAddr+"/api/v1/otlp/v1/metrics", nil)
	services := []*otlpService{
		newOTLPService(t, "checkout", metricdata.CumulativeTemporality,
			newExporter(s.url("/otlp/v1/metrics"), map[string]string{"X-Scope-OrgID": "otel"}, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))),
		newOTLPService(t, "billing", metricdata.DeltaTemporality,
			newExporter(s.url("/otlp/v1/metrics"), map[string]string{"X-Scope-OrgID": "otel-delta"})),
	}

	// Five collections a second apart, each exported to Strata and Prometheus.
	var last time.Time
	for round := range 5 {
		for _, svc := range services {
			svc.record(ctx, round)
			var rm metricdata.ResourceMetrics
			testutil.Ok(t, svc.reader.Collect(ctx, &rm))
			testutil.Ok(t, svc.toStrata.Export(ctx, &rm))
			testutil.Ok(t, toProm.Export(ctx, &rm))
		}
		last = time.Now()
		time.Sleep(time.Second) // the next collection's points a second later: rates over distinct timestamps
	}
	testutil.Ok(t, toProm.Shutdown(ctx))

	strataAPI, promAPIBase := s.url(""), "http://"+promAddr
	at := last.Add(time.Second)
	start := at.Add(-10 * time.Second)
	for _, tc := range []struct{ tenant, job string }{{"otel", "checkout"}, {"otel-delta", "billing"}} {
		t.Run(tc.tenant, func(t *testing.T) {
			job := `job="` + tc.job + `"`
			// Every series Prometheus stored for the service (all of Strata's too), with its raw samples.
			all := rawResult(t, promAPIBase, "", `{`+job+`}`, at)
			testutil.Assert(t, len(all) >= 16, "prometheus holds %d series: %v", len(all), all)
			waitUntil(t, 20*time.Second, "strata holds the series", func() bool {
				return len(rawResult(t, strataAPI, tc.tenant, `{`+job+`}`, at)) == len(all)
			})
			queries := []struct {
				query string
				step  time.Duration // 0: instant query at `at`; else a range query [start, at]
			}{
				{query: `{J}`},
				{query: `{J}[1m]`},
				{query: `{J}`, step: time.Second},
				{query: `target_info{J}`},
				{query: `queue_depth{J}`},
				{query: `http_requests_total{J}`},
				{query: `rate(http_requests_total{J}[10s])`},
				{query: `histogram_quantile(0.9, sum by (le, route) (rate(request_duration_seconds_bucket{J}[10s])))`},
				{query: `histogram_quantile(0.5, request_duration_seconds_bucket{J})`},
				{query: `payload_size_bytes{J}`},
				{query: `histogram_quantile(0.9, payload_size_bytes{J})`},
				{query: `histogram_quantile(0.99, sum(rate(payload_size_bytes{J}[10s])))`},
				{query: `histogram_count(payload_size_bytes{J})`},
				{query: `histogram_sum(payload_size_bytes{J})`},
				{query: `histogram_quantile(0.5, payload_size_bytes{J})`, step: time.Second},
			}
			for _, q := range queries {
				query := strings.ReplaceAll(q.query, "J", job)
				var want, got []map[string]any
				if q.step == 0 {
					want, got = rawResult(t, promAPIBase, "", query, at), rawResult(t, strataAPI, tc.tenant, query, at)
				} else {
					want = rawRangeResult(t, promAPIBase, "", query, start, at, q.step)
					got = rawRangeResult(t, strataAPI, tc.tenant, query, start, at, q.step)
				}
				testutil.Assert(t, len(want) > 0, "%s: prometheus answers nothing", query)
				testutil.Assert(t, reflect.DeepEqual(want, got), "%s (step %s):\nprometheus %v\nstrata     %v", query, q.step, want, got)
			}

			// Both named the metrics alike, with the promoted attribute and job/instance from the resource.
			var names []string
			for _, s := range all {
				m := s["metric"].(map[string]any)
				names = append(names, fmt.Sprint(m["__name__"]))
				testutil.Equals(t, tc.job+"-1", m["instance"])
				testutil.Equals(t, "e2e", m["deployment_environment"])
			}
			for _, want := range []string{"queue_depth", "http_requests_total", "request_duration_seconds_bucket", "payload_size_bytes", "target_info"} {
				testutil.Assert(t, slices.Contains(names, want), "no %s among %v", want, names)
			}
			// Counters are cumulative in both (the delta service's too): 3+4+5+6+7 on /pay over the five rounds.
			pay := rawResult(t, strataAPI, tc.tenant, `http_requests_total{route="/pay"}`, at)
			testutil.Equals(t, 1, len(pay), "%v", pay)
			testutil.Equals(t, "25", pay[0]["value"].([]any)[1], "%v", pay)
			// The exponential histogram is a native histogram in both.
			for _, s := range rawResult(t, strataAPI, tc.tenant, `payload_size_bytes`, at) {
				_, ok := s["histogram"]
				testutil.Assert(t, ok, "payload_size_bytes is not a native histogram: %v", s)
			}
			// Strata keeps each family's metadata as the translator gives it (its type, description and unit).
			md := getMetadata(t, strataAPI, "/api/v1/metadata", tc.tenant, nil)
			for family, want := range map[string]metaJSON{
				"http_requests_total":      {Type: "counter", Help: "Requests served."},
				"queue_depth":              {Type: "gauge", Help: "Items waiting."},
				"request_duration_seconds": {Type: "histogram", Unit: "seconds"},
				"payload_size_bytes":       {Type: "histogram", Unit: "bytes"},
				"target_info":              {Type: "gauge", Help: "Target metadata"},
			} {
				testutil.Equals(t, []metaJSON{want}, md[family], "metadata of %s: %v", family, md)
			}
			t.Logf("%d series, %d queries: the same answers from Prometheus and Strata", len(all), len(queries))
		})
	}
}

// otlpService is an instrumented service of TestOTLPMatchesPrometheus: an SDK meter provider with a manual
// reader of the given temporality, its instruments, and its exporter to Strata.
type otlpService struct {
	reader   *sdkmetric.ManualReader
	toStrata *otlpmetrichttp.Exporter
	gauge    metric.Float64Gauge
	counter  metric.Int64Counter
	duration metric.Float64Histogram
	size     metric.Int64Histogram
}

func newOTLPService(t *testing.T, name string, temporality metricdata.Temporality, toStrata *otlpmetrichttp.Exporter) *otlpService {
	t.Helper()
	svc := &otlpService{
		reader: sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(func(sdkmetric.InstrumentKind) metricdata.Temporality {
			return temporality
		})),
		toStrata: toStrata,
	}
	res, err := resource.New(context.Background(), resource.WithAttributes(
		attribute.String("service.name", name), attribute.String("service.instance.id", name+"-1"),
		attribute.String("deployment.environment", "e2e"), attribute.String("host.name", "box-1")))
	testutil.Ok(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(svc.reader), sdkmetric.WithResource(res),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "payload.size"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})))
	t.Cleanup(func() {
		testutil.Ok(t, mp.Shutdown(context.Background()))
		testutil.Ok(t, toStrata.Shutdown(context.Background()))
	})
	meter := mp.Meter("e2e")
	svc.gauge, err = meter.Float64Gauge("queue.depth", metric.WithDescription("Items waiting."))
	testutil.Ok(t, err)
	svc.counter, err = meter.Int64Counter("http.requests", metric.WithDescription("Requests served."))
	testutil.Ok(t, err)
	svc.duration, err = meter.Float64Histogram("request.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.5, 1, 5))
	testutil.Ok(t, err)
	svc.size, err = meter.Int64Histogram("payload.size", metric.WithUnit("By"))
	testutil.Ok(t, err)
	return svc
}

// record makes round's measurements, on two routes.
func (svc *otlpService) record(ctx context.Context, round int) {
	for i, route := range []attribute.KeyValue{attribute.String("route", "/cart"), attribute.String("route", "/pay")} {
		attrs := metric.WithAttributes(route)
		svc.gauge.Record(ctx, float64(10*round+i), attrs)
		svc.counter.Add(ctx, int64(3+round*i), attrs)
		for k := range 4 + round {
			svc.duration.Record(ctx, 0.003*float64((k+1)*(i+1)*(round+1)), attrs)
			svc.size.Record(ctx, int64(100*(k+1)*(round+1)+i), attrs)
		}
	}
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
