package frontend

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// frontendMetrics are the query-frontend's metrics, strata_query_frontend_*.
type frontendMetrics struct {
	requests          *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	splitQueries      *prometheus.CounterVec
	queueLength       *prometheus.GaugeVec
	queueDuration     prometheus.Histogram
	discarded         *prometheus.CounterVec
	retries           prometheus.Counter
	downstream        *prometheus.CounterVec
	downstreamRunning *prometheus.GaugeVec
	slowQueries       prometheus.Counter
}

func newFrontendMetrics(reg prometheus.Registerer) *frontendMetrics {
	f := promauto.With(reg)
	return &frontendMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_query_frontend_requests_total",
			Help: "Requests answered by the query-frontend, by tenant, endpoint (query_range, query, other) and HTTP status.",
		}, []string{"tenant", "endpoint", "status_code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_query_frontend_request_duration_seconds",
			Help:    "Time the query-frontend took to answer a request, queueing included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9),
		}, []string{"endpoint"}),
		splitQueries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_query_frontend_split_queries_total",
			Help: "Sub-queries the range queries were split into, by tenant (a query not split counts none).",
		}, []string{"tenant"}),
		queueLength: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_query_frontend_queue_length",
			Help: "Requests waiting in the query-frontend's queue, by tenant.",
		}, []string{"tenant"}),
		queueDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_query_frontend_queue_duration_seconds",
			Help:    "Time requests waited in the queue before running.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		discarded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_query_frontend_discarded_requests_total",
			Help: "Requests refused by the queue (429: the tenant had max_outstanding_requests_per_tenant waiting).",
		}, []string{"tenant"}),
		retries: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_query_frontend_retries_total",
			Help: "Downstream requests tried again after a 5xx or a network error.",
		}),
		downstream: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_query_frontend_downstream_requests_total",
			Help: "Requests sent to the queriers, by querier and HTTP status (\"error\": no answer).",
		}, []string{"downstream", "status_code"}),
		downstreamRunning: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_query_frontend_downstream_inflight_requests",
			Help: "Requests in flight to each querier.",
		}, []string{"downstream"}),
		slowQueries: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_query_frontend_slow_queries_total",
			Help: "Requests that took longer than log_queries_longer_than (each logged).",
		}),
	}
}
