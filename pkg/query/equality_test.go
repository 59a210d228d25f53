package query

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// eqBase is the time of the dataset's first scrape; the data covers eqSteps scrape intervals (6h) after it.
var eqBase = time.Unix(1700000000, 0)

const (
	eqInterval = 15 * time.Second
	eqSteps    = 1440 // 6h at 15s
	eqStopStep = 720  // the batch targets b-0 and b-1 disappear after 3h
)

// eqQuery is one row of the equality table. wantErr rows must fail on the reference (and so on Strata) in at
// least one evaluation (those that select no data may not); the others must never fail. A row with skip set
// documents a known Strata bug.
type eqQuery struct {
	name    string
	query   string
	wantErr bool
	skip    string
}

// TestPromQLEquality runs a table of PromQL queries, as range queries at several steps and as instant queries,
// on Prometheus's engine over a reference TSDB and on the querier's engine over Strata's read path holding
// the same data (two TSDBStores over gRPC, the Proxy and the Queryable), and requires identical answers:
// same series, same timestamps, floats bit for bit, histograms by FloatHistogram.Equals (up to empty buckets,
// see histogramCompare), both failing or neither. It runs against two
// layouts of the Strata side: two full copies of the data (RF copies, merged), and two time-split copies that
// overlap (chained).
func TestPromQLEquality(t *testing.T) {
	data := eqDataset()
	queries := eqQueries()
	evals := eqEvals()
	testutil.Assert(t, len(queries) >= 110, "the table has %d queries", len(queries))
	names := map[string]bool{}
	for _, q := range queries {
		testutil.Assert(t, !names[q.name], "duplicate row name %q", q.name)
		names[q.name] = true
	}
	nSamples := 0
	for _, s := range data {
		nSamples += len(s.samples)
	}
	t.Logf("dataset: %d series, %d samples; %d queries × %d evaluations (%d range, %d instant)",
		len(data), nSamples, len(queries), len(evals), countEvals(evals, false), countEvals(evals, true))

	for _, layout := range []harnessLayout{layoutFullCopies, layoutSplitOverlap, layoutBucket, layoutShippingBoundary} {
		t.Run(layout.String(), func(t *testing.T) {
			start := time.Now()
			h := newPromQLHarness(t, data, layout)
			setup := time.Since(start)

			var (
				compared, mismatched, nonEmptyRows, ranRows, nonEmptyEvals, layoutOnly atomic.Int64
				emptyMtx                                                               sync.Mutex
				emptyRows                                                              []string
			)
			eqCheckDataset(t, h)
			t.Run("q", func(t *testing.T) {
				for _, q := range queries {
					t.Run(q.name, func(t *testing.T) {
						if q.skip != "" {
							t.Skip(q.skip)
						}
						t.Parallel()
						keepOrder := strings.HasPrefix(q.query, "sort(") || strings.HasPrefix(q.query, "sort_desc(")
						points, refErrs := 0, 0
						for _, ev := range evals {
							c := h.compare(q.query, ev, keepOrder)
							diff, n, refErr := c.diff, c.refPoints, c.refErr
							compared.Add(1)
							layoutOnly.Add(int64(c.layoutOnly))
							points += n
							if n > 0 {
								nonEmptyEvals.Add(1)
							}
							if refErr != nil {
								refErrs++
							}
							if !q.wantErr && refErr != nil {
								t.Errorf("%s: the reference failed on %s: %v", ev.name, q.query, refErr)
							}
							if diff != "" {
								mismatched.Add(1)
								t.Errorf("%s (%s): %s\n  query: %s", ev.name, evalString(ev), diff, q.query)
							}
						}
						if q.wantErr && refErrs == 0 {
							t.Errorf("the reference never failed on %s", q.query)
						}
						ranRows.Add(1)
						if points > 0 {
							nonEmptyRows.Add(1)
						} else {
							emptyMtx.Lock()
							emptyRows = append(emptyRows, q.name)
							emptyMtx.Unlock()
						}
					})
				}
			})
			rows, nonEmpty := ranRows.Load(), nonEmptyRows.Load()
			t.Logf("%s: %d rows run (%d skipped), %d query evaluations compared, %d mismatched, %d evaluations non-empty; %d/%d rows returned points on the reference; %d histogram points equal only up to empty buckets; setup %v, total %v",
				layout, rows, len(queries)-int(rows), compared.Load(), mismatched.Load(), nonEmptyEvals.Load(), nonEmpty, rows, layoutOnly.Load(), setup.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			slices.Sort(emptyRows)
			t.Logf("%s: rows without any point on the reference: %v", layout, emptyRows)
			testutil.Assert(t, rows > 0 && float64(nonEmpty) >= 0.9*float64(rows),
				"only %d of %d rows returned any point on the reference: the table is too vacuous", nonEmpty, rows)
		})
	}
}

// eqCheckDataset checks, on the reference, that the dataset has what the table relies on: counter resets in
// floats and native histograms, a histogram schema change, staleness with and without markers.
func eqCheckDataset(t *testing.T, h *promqlHarness) {
	t.Helper()
	afterStop := harnessEval{instant: true, start: eqBase.Add(3*time.Hour + 2*time.Minute)}
	end := harnessEval{instant: true, start: eqBase.Add(6 * time.Hour)}
	for _, c := range []struct {
		query string
		ev    harnessEval
		want  float64 // -1: at least one
	}{
		{`sum(resets(http_requests_total[6h]))`, end, -1},
		{`sum(resets(request_duration_seconds_count[6h]))`, end, -1},
		{`sum(resets(rpc_latency_seconds{instance!="r-2"}[6h]))`, end, -1},
		{`count(count_over_time(rpc_latency_seconds{instance="r-2"}[6h]))`, end, 1},
		{`count(job_up{instance="b-0"})`, afterStop, 0}, // marker: gone at once
		{`count(job_up{instance="b-1"})`, afterStop, 1}, // no marker: still there within the lookback
		{`count(batch_duration_seconds{instance="b-0"})`, afterStop, 0},
		{`count(batch_duration_seconds{instance="b-1"})`, afterStop, 1},
		{`count(job_up{instance="b-2"})`, afterStop, 1},
		{`count(http_requests_total{job="db"} unless on (job) http_requests_total{job="api"})`, end, 30},
	} {
		qry, res := h.run(h.refEngine, h.refDB, c.query, c.ev)
		testutil.Ok(t, res.Err, c.query)
		got := 0.0
		if v, err := res.Vector(); err == nil && len(v) > 0 {
			got = v[0].F
		}
		qry.Close()
		if c.want < 0 {
			testutil.Assert(t, got >= 1, "dataset check %s: got %v, want at least 1", c.query, got)
			continue
		}
		testutil.Assert(t, got == c.want, "dataset check %s: got %v, want %v", c.query, got, c.want)
	}
}

func countEvals(evals []harnessEval, instant bool) int {
	n := 0
	for _, ev := range evals {
		if ev.instant == instant {
			n++
		}
	}
	return n
}

func evalString(ev harnessEval) string {
	if ev.instant {
		return fmt.Sprintf("instant @%d", ev.start.UnixMilli())
	}
	return fmt.Sprintf("range [%d, %d] step %v", ev.start.UnixMilli(), ev.end.UnixMilli(), ev.step)
}

// eqEvals are the evaluations of every query: range queries at four steps over windows at the start of the
// data, around the batch targets' disappearance, at the end and past it, and over all of it; instants at the
// first sample, early, just after the disappearance, in the middle, at the last sample, within the lookback
// after the end, and well past it.
func eqEvals() []harnessEval {
	at := func(d time.Duration) time.Time { return eqBase.Add(d) }
	return []harnessEval{
		{name: "range-start-15s", start: at(-10 * time.Minute), end: at(60 * time.Minute), step: 15 * time.Second},
		{name: "range-middle-37s", start: at(2*time.Hour + 30*time.Minute + 123*time.Millisecond), end: at(3*time.Hour + 30*time.Minute), step: 37 * time.Second},
		{name: "range-end-60s", start: at(5 * time.Hour), end: at(6*time.Hour + 30*time.Minute), step: time.Minute},
		{name: "range-full-5m", start: at(-30 * time.Minute), end: at(6*time.Hour + 30*time.Minute), step: 5 * time.Minute},
		{name: "instant-first-sample", instant: true, start: at(0)},
		{name: "instant-early", instant: true, start: at(7*time.Minute + 500*time.Millisecond)},
		{name: "instant-after-stop", instant: true, start: at(3*time.Hour + 2*time.Minute)},
		{name: "instant-middle", instant: true, start: at(4*time.Hour + 17*time.Minute + 3*time.Second)},
		{name: "instant-last-sample", instant: true, start: at(6*time.Hour - eqInterval)},
		{name: "instant-past-end-lookback", instant: true, start: at(6*time.Hour + 3*time.Minute)},
		{name: "instant-past-end", instant: true, start: at(7 * time.Hour)},
	}
}

func eqQueries() []eqQuery {
	return []eqQuery{
		// Counters (with resets; db targets jittered, i-4 scraped every 30s).
		{name: "rate", query: `rate(http_requests_total[5m])`},
		{name: "rate-1m-jitter", query: `rate(http_requests_total{job="db"}[1m])`},
		{name: "rate-1m-30s-target", query: `rate(http_requests_total{instance="i-4"}[1m])`},
		{name: "irate", query: `irate(http_requests_total[5m])`},
		{name: "increase", query: `increase(http_requests_total[10m])`},
		{name: "increase-1h", query: `increase(http_requests_total{code="500"}[1h])`},
		{name: "resets", query: `resets(http_requests_total[30m])`},
		{name: "changes", query: `changes(http_requests_total[15m])`},
		{name: "changes-up", query: `changes(up[1h])`},
		{name: "delta", query: `delta(node_memory_bytes[10m])`},
		{name: "idelta", query: `idelta(node_memory_bytes[5m])`},
		{name: "deriv", query: `deriv(node_memory_bytes[10m])`},
		{name: "predict-linear", query: `predict_linear(node_memory_bytes[30m], 3600)`},
		{name: "rate-container", query: `rate(container_cpu_usage_seconds_total[2m])`},
		{name: "sum-by-rate", query: `sum by (job) (rate(http_requests_total[5m]))`},
		{name: "sum-without-rate", query: `sum without (instance) (rate(http_requests_total[5m]))`},
		{name: "avg-by-irate", query: `avg by (code) (irate(http_requests_total[2m]))`},
		{name: "rate-offset", query: `rate(http_requests_total[5m] offset 10m)`},
		{name: "rate-negative-offset", query: `rate(http_requests_total[5m] offset -10m)`},
		{name: "rate-at-start", query: `rate(http_requests_total[5m] @ start())`},
		{name: "rate-at-end", query: `rate(http_requests_total[5m] @ end())`},
		{name: "selector-at-ts", query: `http_requests_total @ 1700010000`},
		{name: "sum-offset-1h", query: `sum(http_requests_total offset 1h)`},

		// Classic histograms.
		{name: "classic-quantile-sum-by-le", query: `histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))`},
		{name: "classic-quantile-by-job", query: `histogram_quantile(0.5, sum by (job, le) (rate(request_duration_seconds_bucket[5m])))`},
		{name: "classic-quantile-per-series", query: `histogram_quantile(0.99, rate(request_duration_seconds_bucket[10m]))`},
		{name: "classic-quantile-increase", query: `histogram_quantile(0.75, sum by (le, instance) (increase(request_duration_seconds_bucket[15m])))`},
		{name: "classic-avg", query: `rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])`},
		{name: "classic-avg-by-job", query: `sum by (job) (rate(request_duration_seconds_sum[5m])) / sum by (job) (rate(request_duration_seconds_count[5m]))`},
		{name: "classic-fraction", query: `histogram_fraction(0, 0.1, sum by (le) (rate(request_duration_seconds_bucket[5m])))`},
		{name: "classic-bucket-raw", query: `request_duration_seconds_bucket{instance="i-1", le=~"0.0.*|\\+Inf"}`},

		// Native histograms: integer counters with resets (r-1 with negative buckets, r-2 changing schema, r-3
		// scraped every 30s), a float counter (r-f), float gauges (queue_size_distribution).
		{name: "native-raw", query: `rpc_latency_seconds`},
		{name: "native-quantile-sum", query: `histogram_quantile(0.9, sum(rate(rpc_latency_seconds[5m])))`},
		{name: "native-quantile", query: `histogram_quantile(0.5, rate(rpc_latency_seconds[5m]))`},
		{name: "native-quantile-raw", query: `histogram_quantile(0.25, rpc_latency_seconds)`},
		{name: "native-count", query: `histogram_count(rate(rpc_latency_seconds[5m]))`},
		{name: "native-sum", query: `histogram_sum(rate(rpc_latency_seconds[5m]))`},
		{name: "native-fraction", query: `histogram_fraction(0, 0.1, rate(rpc_latency_seconds[5m]))`},
		{name: "native-avg", query: `histogram_avg(rate(rpc_latency_seconds[5m]))`},
		{name: "native-stddev", query: `histogram_stddev(rate(rpc_latency_seconds[5m]))`},
		{name: "native-stdvar", query: `histogram_stdvar(rpc_latency_seconds)`},
		{name: "native-increase", query: `increase(rpc_latency_seconds[10m])`},
		{name: "native-irate", query: `irate(rpc_latency_seconds[5m])`},
		{name: "native-sum-by-rate", query: `sum by (job) (rate(rpc_latency_seconds[5m]))`},
		{name: "native-resets", query: `resets(rpc_latency_seconds[1h])`},
		{name: "native-count-raw", query: `histogram_count(rpc_latency_seconds)`},
		{name: "native-max-count", query: `max by (instance) (histogram_count(rate(rpc_latency_seconds[2m])))`},
		{name: "native-last-over-time", query: `last_over_time(rpc_latency_seconds[5m])`},
		{name: "native-count-over-time", query: `count_over_time(rpc_latency_seconds[5m])`},
		{name: "native-increase-neg-offset", query: `increase(rpc_latency_seconds[10m] offset -5m)`},
		{name: "native-gauge-raw", query: `queue_size_distribution`},
		{name: "native-gauge-quantile", query: `histogram_quantile(0.5, queue_size_distribution)`},
		{name: "native-gauge-avg", query: `avg(queue_size_distribution)`},
		{name: "native-gauge-delta", query: `delta(queue_size_distribution[10m])`},
		{name: "native-gauge-sum-over-time", query: `histogram_sum(sum_over_time(queue_size_distribution[10m]))`},
		{name: "native-gauge-avg-over-time", query: `avg_over_time(queue_size_distribution[5m])`},

		// Aggregations.
		{name: "sum", query: `sum(node_memory_bytes)`},
		{name: "avg-by", query: `avg by (room) (temperature_celsius)`},
		{name: "min", query: `min(temperature_celsius)`},
		{name: "max-without", query: `max without (instance) (node_memory_bytes)`},
		{name: "count-by", query: `count by (job) (up)`},
		{name: "count-without", query: `count without (code, method) (http_requests_total)`},
		{name: "stddev", query: `stddev(temperature_celsius)`},
		{name: "stdvar-by", query: `stdvar by (room) (temperature_celsius)`},
		{name: "group-by", query: `group by (namespace) (kube_pod_info)`},
		{name: "topk", query: `topk(3, rate(http_requests_total[5m]))`},
		{name: "topk-by", query: `topk by (job) (1, http_requests_total)`},
		{name: "topk-ties", query: `topk(2, up)`},
		{name: "bottomk", query: `bottomk(2, node_memory_bytes)`},
		{name: "quantile", query: `quantile(0.75, node_memory_bytes)`},
		{name: "quantile-by", query: `quantile by (job) (0.3, rate(http_requests_total[5m]))`},
		{name: "count-values", query: `count_values("v", round(temperature_celsius))`},
		{name: "limitk-experimental", query: `limitk(2, http_requests_total)`, wantErr: true},
		{name: "sum-histograms-regex", query: `sum by (job) ({__name__=~"rpc_latency_seconds|queue_size_distribution"})`},

		// Offsets and @.
		{name: "offset", query: `node_memory_bytes offset 30m`},
		{name: "negative-offset", query: `node_memory_bytes offset -30m`},
		{name: "at-start", query: `node_memory_bytes @ start()`},
		{name: "at-end", query: `node_memory_bytes @ end()`},
		{name: "at-ts-over-time", query: `sum_over_time(node_memory_bytes[10m] @ 1700005000)`},
		{name: "offset-and-at", query: `avg_over_time(temperature_celsius[15m] offset 5m @ end())`},
		{name: "at-ts-past-end", query: `last_over_time(node_memory_bytes[1h] @ 1700025000)`},

		// Subqueries.
		{name: "subquery", query: `max_over_time(rate(http_requests_total[1m])[30m:1m])`},
		{name: "subquery-default-step", query: `max_over_time(rate(http_requests_total[1m])[30m:])`},
		{name: "subquery-agg", query: `avg_over_time(sum by (job) (rate(http_requests_total[5m]))[1h:5m])`},
		{name: "subquery-odd-step-offset", query: `min_over_time(deriv(node_memory_bytes[5m])[20m:37s] offset 3m)`},
		{name: "subquery-native", query: `max_over_time(histogram_count(rate(rpc_latency_seconds[1m]))[30m:1m])`},
		{name: "subquery-quantile", query: `quantile_over_time(0.9, rate(http_requests_total{job="api"}[2m])[1h:2m])`},
		{name: "subquery-at-end", query: `max_over_time(rate(http_requests_total{job="web"}[1m])[30m:1m] @ end())`},
		{name: "subquery-nested", query: `max_over_time(max_over_time(avg_over_time(node_memory_bytes[5m])[20m:1m])[30m:2m])`},
		{name: "subquery-rate-of-subquery", query: `rate(sum by (job) (http_requests_total)[10m:30s])`},

		// absent and presence.
		{name: "absent-missing", query: `absent(nonexistent_metric{job="x"})`},
		{name: "absent-present", query: `absent(http_requests_total{job="api"})`},
		{name: "absent-stopped", query: `absent(job_up{instance="b-1"})`},
		{name: "absent-over-time-stopped", query: `absent_over_time(job_up{instance="b-0"}[10m])`},
		{name: "absent-over-time-missing", query: `absent_over_time(nonexistent_metric[5m])`},
		{name: "present-over-time", query: `present_over_time(job_up[10m])`},

		// Label manipulation.
		{name: "label-replace", query: `label_replace(http_requests_total, "svc", "$1", "job", "(.*)")`},
		{name: "label-replace-rate", query: `label_replace(rate(http_requests_total[5m]), "n", "$1", "instance", "i-([0-9]+)")`},
		{name: "label-replace-nomatch", query: `label_replace(up, "job", "x", "job", "nomatch")`},
		{name: "label-join", query: `label_join(kube_pod_info, "ns_pod", "/", "namespace", "pod")`},

		// Binary operations.
		{name: "group-left-on", query: `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])) * on (namespace, pod) group_left (node) kube_pod_info`},
		{name: "group-left-zone", query: `kube_pod_info * on (node) group_left (zone) kube_node_labels`},
		{name: "group-right", query: `kube_node_labels * on (node) group_right (zone) kube_pod_info`},
		{name: "ignoring-group-left", query: `container_memory_bytes / ignoring (container) group_left sum without (container) (container_memory_bytes)`},
		{name: "ignoring-ratio", query: `rate(http_requests_total[5m]) / ignoring (code) group_left sum without (code) (rate(http_requests_total[5m]))`},
		{name: "many-to-many-error", query: `http_requests_total * on (job) up`, wantErr: true},
		{name: "compare", query: `http_requests_total > 3000`},
		{name: "compare-bool", query: `http_requests_total > bool 3000`},
		{name: "compare-eq", query: `up == 1`},
		{name: "compare-group-left", query: `rate(http_requests_total[5m]) > on (job, instance) group_left sum by (job, instance) (rate(http_requests_total[5m])) * 0.2`},
		{name: "and-on", query: `up and on (job, instance) (rate(http_requests_total{code="500"}[5m]) > 0.035)`},
		{name: "or", query: `node_memory_bytes or temperature_celsius`},
		{name: "unless", query: `http_requests_total unless http_requests_total{code="500"}`},
		{name: "unless-on", query: `http_requests_total{method="GET"} unless on (job, instance, code) http_requests_total{method="POST"} > 3000`},
		{name: "scalar-arith", query: `2 * node_memory_bytes + 1`},
		{name: "scalar-func", query: `scalar(sum(up)) * up`},
		{name: "vector-minus-vector", query: `sum(up) - vector(5)`},
		{name: "div-scalar-max", query: `node_memory_bytes / scalar(max(node_memory_bytes))`},
		{name: "unary-minus", query: `-temperature_celsius`},
		{name: "mod-pow", query: `(temperature_celsius % 7) ^ 2`},
		{name: "atan2", query: `temperature_celsius atan2 on (job, instance, room) temperature_celsius`},
		{name: "histogram-times-scalar", query: `rpc_latency_seconds * 2`},
		{name: "histogram-plus-histogram", query: `queue_size_distribution + on (instance) queue_size_distribution`},

		// Over time.
		{name: "last-over-time", query: `last_over_time(node_memory_bytes[5m])`},
		{name: "quantile-over-time", query: `quantile_over_time(0.5, temperature_celsius[30m])`},
		{name: "avg-over-time", query: `avg_over_time(temperature_celsius[10m])`},
		{name: "min-over-time", query: `min_over_time(node_memory_bytes[10m])`},
		{name: "max-over-time", query: `max_over_time(node_memory_bytes[10m])`},
		{name: "sum-over-time", query: `sum_over_time(container_memory_bytes[5m])`},
		{name: "count-over-time-jitter", query: `count_over_time(http_requests_total{job="db"}[1m])`},
		{name: "stddev-over-time", query: `stddev_over_time(temperature_celsius[20m])`},
		{name: "stdvar-over-time", query: `stdvar_over_time(node_memory_bytes[20m])`},
		{name: "first-over-time-window-edge", query: `count_over_time(temperature_celsius[1m])`},

		// Timestamps, time, vector, math, sort.
		{name: "timestamp-jitter", query: `timestamp(http_requests_total{job="db", code="200"})`},
		{name: "timestamp-age", query: `time() - timestamp(up)`},
		{name: "time", query: `time()`},
		{name: "vector-time", query: `vector(time())`},
		{name: "vector-1", query: `vector(1)`},
		{name: "hour-minute", query: `hour(timestamp(up{job="node"})) * 60 + minute(timestamp(up{job="node"}))`},
		{name: "day-of-week", query: `day_of_week()`},
		{name: "math", query: `abs(ceil(temperature_celsius)) + floor(sqrt(abs(temperature_celsius))) + round(temperature_celsius, 0.5)`},
		{name: "clamp", query: `clamp(temperature_celsius, -5, 25)`},
		{name: "clamp-min-max", query: `clamp_max(clamp_min(rate(http_requests_total[5m]), 1), 10)`},
		{name: "ln-log2", query: `ln(node_memory_bytes) + log2(node_memory_bytes)`},
		{name: "exp", query: `exp(temperature_celsius{room="r-c"} / 10)`},
		{name: "sgn", query: `sgn(temperature_celsius)`},
		{name: "sort", query: `sort(node_memory_bytes)`},
		{name: "sort-desc", query: `sort_desc(rate(http_requests_total[5m]))`},
		{name: "sort-desc-ties", query: `sort_desc(up)`},

		// Staleness: b-0 stopped after 3h with staleness markers, b-1 stopped without any, b-2 goes on.
		{name: "stale-selector", query: `job_up`},
		{name: "stale-marker", query: `job_up{instance="b-0"}`},
		{name: "stale-no-marker", query: `job_up{instance="b-1"}`},
		{name: "stale-count-over-time", query: `count_over_time(job_up[10m])`},
		{name: "stale-last-over-time", query: `last_over_time(job_up[10m])`},
		{name: "stale-up", query: `up{job="batch"}`},
		{name: "stale-histogram", query: `batch_duration_seconds`},
		{name: "stale-histogram-rate", query: `rate(batch_duration_seconds[5m])`},
		{name: "stale-histogram-count-over-time", query: `count_over_time(batch_duration_seconds[10m])`},
		{name: "stale-timestamp", query: `timestamp(job_up)`},

		// Name and regex selections.
		{name: "all-series", query: `{__name__=~".+"}`},
		{name: "count-all", query: `count({__name__=~".+"})`},
		{name: "count-by-name", query: `count by (__name__) ({__name__=~".+"})`},
		{name: "name-regex-alternation", query: `{__name__=~"node_.*|temperature_.*"}`},
		{name: "nameless-regex", query: `{job=~"a.*|w.*", __name__!~"request_.*"}`},
		{name: "regex-and-negative-regex", query: `http_requests_total{instance=~"i-[0-2]", code!~"5.."}`},
		{name: "name-eq-and-neq", query: `{__name__="up", job!="api"}`},
		{name: "rate-name-regex", query: `rate({__name__=~"http_requests_total|container_cpu_usage_seconds_total"}[5m])`},
		{name: "regex-empty-match", query: `http_requests_total{nolabel=~"|x", job="web"}`},
		{name: "neq-empty", query: `container_memory_bytes{container!=""}`},
		{name: "duplicate-labelset-error", query: `count_over_time({__name__=~"job_up|up", job="batch"}[5m])`, wantErr: true},
		{name: "empty-selection", query: `http_requests_total{job="nope"}`},
		{name: "neq-empty-name", query: `count({__name__!=""})`},
		{name: "utf8-names", query: `{"rpc.calls.total", "http.status"="200"}`},
		{name: "utf8-rate-by", query: `sum by ("http.status") (rate({"rpc.calls.total"}[5m]))`},

		// tenant_id: the stores add it and the querier drops it, so users must see a label their series lack.
		{name: "tenant-id-empty", query: `up{tenant_id=""}`},
		{name: "tenant-id-neq", query: `up{tenant_id!="team-a"}`},
		{name: "tenant-id-eq", query: `absent(up{tenant_id="team-a"})`},
		{name: "tenant-id-regex-empty", query: `up{tenant_id=~"team-.*|"}`},
		{name: "tenant-id-nregex", query: `{__name__=~"up|job_up", tenant_id!~"team-.*"}`},
		{name: "tenant-id-by", query: `count by (tenant_id) (up)`},

		// A series that changes type: floats for 2h, then integer native histograms.
		{name: "mixed-raw", query: `mixed_type`},
		{name: "mixed-rate", query: `rate(mixed_type[5m])`},
		{name: "mixed-count-over-time", query: `count_over_time(mixed_type[10m])`},
		{name: "mixed-last-over-time", query: `last_over_time(mixed_type[10m])`},

		// Ranges longer than the data, offsets before it.
		{name: "increase-1d", query: `increase(http_requests_total{job="api"}[1d])`},
		{name: "max-over-time-6h", query: `max_over_time(node_memory_bytes[6h])`},
		{name: "offset-before-data", query: `node_memory_bytes offset 5h`},
		{name: "native-offset-1h", query: `histogram_count(rpc_latency_seconds offset 1h)`},
		{name: "native-timestamp", query: `timestamp(rpc_latency_seconds)`},
	}
}

// eqGen builds the dataset deterministically.
type eqGen struct {
	r   *rand.Rand
	out []harnessSeries
}

// eqDataset returns the series of TestPromQLEquality: ~330 series over 6h, scraped every 15s unless said
// otherwise.
func eqDataset() []harnessSeries {
	g := &eqGen{r: rand.New(rand.NewPCG(20240611, 42))}

	// HTTP counters: 3 jobs × 5 instances × 2 methods × 3 codes. db is scraped with jitter, i-4 every 30s.
	for _, job := range []string{"api", "web", "db"} {
		for inst := range 5 {
			every, jitter := 1, time.Duration(0)
			if inst == 4 {
				every = 2
			}
			if job == "db" {
				jitter = 2 * time.Second
			}
			ts := g.scrapeTimes(every, jitter, eqSteps)
			instance := fmt.Sprintf("i-%d", inst)
			g.add(labels.FromStrings("__name__", "up", "job", job, "instance", instance), g.up(ts))
			for _, method := range []string{"GET", "POST"} {
				for _, code := range []string{"200", "404", "500"} {
					perStep := map[string]float64{"200": 50, "404": 5, "500": 1}[code]
					g.add(labels.FromStrings("__name__", "http_requests_total", "job", job, "instance", instance, "method", method, "code", code),
						g.counter(ts, perStep, 300))
				}
			}
		}
	}

	// Node memory gauges: n-5… scraped with a little jitter.
	for inst := range 10 {
		jitter := time.Duration(0)
		if inst >= 5 {
			jitter = 500 * time.Millisecond
		}
		ts := g.scrapeTimes(1, jitter, eqSteps)
		instance := fmt.Sprintf("n-%d", inst)
		g.add(labels.FromStrings("__name__", "up", "job", "node", "instance", instance), g.up(ts))
		g.add(labels.FromStrings("__name__", "node_memory_bytes", "job", "node", "instance", instance), g.gauge(ts, 8e9+float64(inst)*1e8, 1e7))
	}

	// Temperatures every 60s, some below zero.
	for inst := range 4 {
		ts := g.scrapeTimes(4, 0, eqSteps)
		for _, room := range []string{"r-a", "r-b", "r-c"} {
			level := map[string]float64{"r-a": 21, "r-b": 4, "r-c": -18}[room]
			g.add(labels.FromStrings("__name__", "temperature_celsius", "job", "sensors", "instance", fmt.Sprintf("s-%d", inst), "room", room),
				g.gauge(ts, level, 0.7))
		}
	}

	// Classic histograms.
	les := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, math.Inf(1)}
	for _, job := range []string{"api", "web"} {
		for inst := range 3 {
			g.classicHistogram(job, fmt.Sprintf("i-%d", inst), les, g.scrapeTimes(1, 0, eqSteps))
		}
	}

	// Native histograms.
	for inst := range 4 {
		every := 1
		if inst == 3 {
			every = 2
		}
		ts := g.scrapeTimes(every, 0, eqSteps)
		schemaChange := -1
		if inst == 2 {
			schemaChange = 900
		}
		hs := g.nativeCounter(ts, 3, inst == 1, schemaChange)
		g.add(labels.FromStrings("__name__", "rpc_latency_seconds", "job", "rpc", "instance", fmt.Sprintf("r-%d", inst)), hs)
	}
	floatCounter := g.nativeCounter(g.scrapeTimes(1, 0, eqSteps), 3, false, -1)
	for i := range floatCounter {
		fh := floatCounter[i].h.ToFloat(nil)
		fh.Mul(0.5)
		floatCounter[i] = harnessSample{t: floatCounter[i].t, fh: fh}
	}
	g.add(labels.FromStrings("__name__", "rpc_latency_seconds", "job", "rpc", "instance", "r-f"), floatCounter)
	for inst := range 3 {
		g.add(labels.FromStrings("__name__", "queue_size_distribution", "job", "queue", "instance", fmt.Sprintf("q-%d", inst)),
			g.nativeGauge(g.scrapeTimes(1, 0, eqSteps)))
	}

	// A batch job: b-0 disappears after 3h (Prometheus writes staleness markers), b-1 too but without markers
	// (as if the server stopped), b-2 goes on.
	for inst := range 3 {
		instance := fmt.Sprintf("b-%d", inst)
		ts := g.scrapeTimes(1, 0, eqSteps)
		series := map[string][]harnessSample{
			"up":                     g.up(ts),
			"job_up":                 g.gauge(ts, 1, 0.1),
			"batch_duration_seconds": g.nativeCounter(ts, 0, false, -1),
		}
		for _, name := range []string{"up", "job_up", "batch_duration_seconds"} {
			samples := series[name]
			if inst < 2 {
				stopT := ts[eqStopStep]
				samples = slices.DeleteFunc(samples, func(s harnessSample) bool { return s.t > stopT })
				if inst == 0 {
					samples = append(samples, harnessSample{t: ts[eqStopStep+1], f: math.Float64frombits(value.StaleNaN)})
				}
			}
			g.add(labels.FromStrings("__name__", name, "job", "batch", "instance", instance), samples)
		}
	}

	// UTF-8 metric and label names.
	for _, code := range []string{"200", "503"} {
		g.add(labels.FromStrings("__name__", "rpc.calls.total", "job", "utf8", "http.status", code), g.counter(g.scrapeTimes(1, 0, eqSteps), 4, 600))
	}

	// A series that is a float gauge for 2h, then an integer native histogram.
	ts := g.scrapeTimes(1, 0, eqSteps)
	mixed := g.gauge(ts[:480], 10, 1)
	mixed = append(mixed, g.nativeCounter(ts[480:], 2, false, -1)...)
	g.add(labels.FromStrings("__name__", "mixed_type", "job", "mix"), mixed)

	// Kubernetes-like series for joins: pods on nodes in zones, containers in pods.
	for node := range 5 {
		g.add(labels.FromStrings("__name__", "kube_node_labels", "job", "ksm", "node", fmt.Sprintf("node-%d", node), "zone", []string{"z-a", "z-b"}[node%2]),
			g.constant(g.scrapeTimes(1, 0, eqSteps), 1))
	}
	for ns := range 4 {
		for p := range 5 {
			namespace, pod := fmt.Sprintf("ns-%d", ns), fmt.Sprintf("pod-%d-%d", ns, p)
			ts := g.scrapeTimes(1, 0, eqSteps)
			g.add(labels.FromStrings("__name__", "kube_pod_info", "job", "ksm", "namespace", namespace, "pod", pod, "node", fmt.Sprintf("node-%d", (ns+p)%5)),
				g.constant(ts, 1))
			for _, container := range []string{"app", "sidecar"} {
				l := func(name string) labels.Labels {
					return labels.FromStrings("__name__", name, "job", "cadvisor", "namespace", namespace, "pod", pod, "container", container)
				}
				g.add(l("container_cpu_usage_seconds_total"), g.counter(ts, 3, 500))
				g.add(l("container_memory_bytes"), g.gauge(ts, 2e8, 1e6))
			}
		}
	}
	return g.out
}

func (g *eqGen) add(lset labels.Labels, samples []harnessSample) {
	g.out = append(g.out, harnessSeries{lset: lset, samples: samples})
}

// scrapeTimes returns the timestamps of a target scraped every `every` intervals for n intervals, each
// moved by up to ±jitter.
func (g *eqGen) scrapeTimes(every int, jitter time.Duration, n int) []int64 {
	base := eqBase.UnixMilli()
	var ts []int64
	for i := 0; i < n; i += every {
		t := base + int64(i)*eqInterval.Milliseconds()
		if j := jitter.Milliseconds(); j > 0 {
			t += g.r.Int64N(2*j+1) - j
		}
		ts = append(ts, t)
	}
	return ts
}

func (g *eqGen) up(ts []int64) []harnessSample {
	out := make([]harnessSample, len(ts))
	for i, t := range ts {
		v := 1.0
		if g.r.IntN(200) == 0 {
			v = 0
		}
		out[i] = harnessSample{t: t, f: v}
	}
	return out
}

func (g *eqGen) constant(ts []int64, v float64) []harnessSample {
	out := make([]harnessSample, len(ts))
	for i, t := range ts {
		out[i] = harnessSample{t: t, f: v}
	}
	return out
}

// counter increases by up to perStep a scrape and resets about once in resetEvery scrapes.
func (g *eqGen) counter(ts []int64, perStep float64, resetEvery int) []harnessSample {
	out := make([]harnessSample, len(ts))
	v := g.r.Float64() * perStep * 100
	for i, t := range ts {
		if g.r.IntN(resetEvery) == 0 {
			v = g.r.Float64() * perStep
		} else {
			v += g.r.Float64() * perStep
		}
		out[i] = harnessSample{t: t, f: v}
	}
	return out
}

// gauge is a random walk around level.
func (g *eqGen) gauge(ts []int64, level, step float64) []harnessSample {
	out := make([]harnessSample, len(ts))
	v := level
	for i, t := range ts {
		v += (g.r.Float64()*2 - 1) * step
		v += (level - v) * 0.01
		out[i] = harnessSample{t: t, f: v}
	}
	return out
}

// classicHistogram adds the _bucket, _sum and _count series of one target's classic histogram.
func (g *eqGen) classicHistogram(job, instance string, les []float64, ts []int64) {
	buckets := make([][]harnessSample, len(les))
	var sums, counts []harnessSample
	cum := make([]float64, len(les))
	sum := 0.0
	for _, t := range ts {
		if g.r.IntN(400) == 0 {
			clear(cum)
			sum = 0
		}
		for range g.r.IntN(25) {
			obs := g.r.ExpFloat64() * 0.08
			sum += obs
			for k, le := range les {
				if obs <= le {
					cum[k]++
				}
			}
		}
		for k := range les {
			buckets[k] = append(buckets[k], harnessSample{t: t, f: cum[k]})
		}
		sums = append(sums, harnessSample{t: t, f: sum})
		counts = append(counts, harnessSample{t: t, f: cum[len(les)-1]})
	}
	for k, le := range les {
		leStr := strconv.FormatFloat(le, 'f', -1, 64)
		if math.IsInf(le, 1) {
			leStr = "+Inf"
		}
		g.add(labels.FromStrings("__name__", "request_duration_seconds_bucket", "job", job, "instance", instance, "le", leStr), buckets[k])
	}
	g.add(labels.FromStrings("__name__", "request_duration_seconds_sum", "job", job, "instance", instance), sums)
	g.add(labels.FromStrings("__name__", "request_duration_seconds_count", "job", job, "instance", instance), counts)
}

// nativeCounter is an integer native histogram counter: buckets fill in over time (gaps between spans close),
// it resets about once in 500 scrapes (and, if schemaChange ≥ 0, at that scrape, going from schema 3 to 1).
// With negative, observations below zero fill negative buckets too. zeroEvery > 0 puts an observation in the
// zero bucket about once in that many scrapes.
func (g *eqGen) nativeCounter(ts []int64, zeroEvery int, negative bool, schemaChange int) []harnessSample {
	var (
		schema   int32 = 3
		zero     uint64
		sum      float64
		pos, neg = map[int32]uint64{}, map[int32]uint64{}
		out      = make([]harnessSample, len(ts))
	)
	for i, t := range ts {
		if i == schemaChange || g.r.IntN(500) == 0 {
			zero, sum = 0, 0
			clear(pos)
			clear(neg)
			if i == schemaChange {
				schema = 1
			}
		}
		if zeroEvery > 0 && g.r.IntN(zeroEvery) == 0 {
			zero++
		}
		// Early on, indexes 2, 3 and 7… stay empty: two spans with a gap, which later merge.
		allowed := []int32{-3, -2, -1, 0, 1, 4, 5, 6}
		if i > len(ts)/3 {
			allowed = append(allowed, 2, 3, 7, 8, 9)
		}
		for range g.r.IntN(6) {
			idx := allowed[g.r.IntN(len(allowed))]
			n := uint64(1 + g.r.IntN(4))
			pos[idx] += n
			sum += float64(n) * math.Exp2(float64(idx)/math.Exp2(float64(schema)))
			if negative && g.r.IntN(3) == 0 {
				neg[idx] += n
				sum -= float64(n) * math.Exp2(float64(idx)/math.Exp2(float64(schema)))
			}
		}
		out[i] = harnessSample{t: t, h: intHistogram(schema, zero, sum, pos, neg)}
	}
	return out
}

func intHistogram(schema int32, zero uint64, sum float64, pos, neg map[int32]uint64) *histogram.Histogram {
	h := &histogram.Histogram{Schema: schema, ZeroThreshold: 0.001, ZeroCount: zero, Sum: sum}
	var pc, nc uint64
	h.PositiveSpans, h.PositiveBuckets, pc = intBuckets(pos)
	h.NegativeSpans, h.NegativeBuckets, nc = intBuckets(neg)
	h.Count = zero + pc + nc
	return h
}

// intBuckets encodes bucket counts by index as spans and deltas.
func intBuckets(m map[int32]uint64) ([]histogram.Span, []int64, uint64) {
	var (
		spans  []histogram.Span
		deltas []int64
		prev   int64
		total  uint64
		last   int32
	)
	for i, k := range sortedKeys(m) {
		switch {
		case i == 0:
			spans = append(spans, histogram.Span{Offset: k, Length: 1})
		case k == last+1:
			spans[len(spans)-1].Length++
		default:
			spans = append(spans, histogram.Span{Offset: k - last - 1, Length: 1})
		}
		c := int64(m[k])
		deltas = append(deltas, c-prev)
		prev, last, total = c, k, total+m[k]
	}
	return spans, deltas, total
}

func sortedKeys[V any](m map[int32]V) []int32 { return slices.Sorted(maps.Keys(m)) }

// nativeGauge is a float gauge histogram whose buckets go up and down, appear and disappear.
func (g *eqGen) nativeGauge(ts []int64) []harnessSample {
	out := make([]harnessSample, len(ts))
	counts := map[int32]float64{}
	zero := 0.0
	for i, t := range ts {
		for range 1 + g.r.IntN(4) {
			idx := int32(g.r.IntN(8)) - 2
			counts[idx] = max(0, counts[idx]+float64(g.r.IntN(9)-4)*0.25)
			if counts[idx] == 0 && g.r.IntN(2) == 0 {
				delete(counts, idx)
			}
		}
		zero = max(0, zero+float64(g.r.IntN(3)-1)*0.5)
		fh := &histogram.FloatHistogram{CounterResetHint: histogram.GaugeType, Schema: 0, ZeroThreshold: 0.001, ZeroCount: zero}
		total, sum, last := zero, 0.0, int32(0)
		for j, k := range sortedKeys(counts) {
			switch {
			case j == 0:
				fh.PositiveSpans = append(fh.PositiveSpans, histogram.Span{Offset: k, Length: 1})
			case k == last+1:
				fh.PositiveSpans[len(fh.PositiveSpans)-1].Length++
			default:
				fh.PositiveSpans = append(fh.PositiveSpans, histogram.Span{Offset: k - last - 1, Length: 1})
			}
			fh.PositiveBuckets = append(fh.PositiveBuckets, counts[k])
			total += counts[k]
			sum += counts[k] * math.Exp2(float64(k)-0.5)
			last = k
		}
		fh.Count, fh.Sum = total, sum
		out[i] = harnessSample{t: t, fh: fh}
	}
	return out
}
