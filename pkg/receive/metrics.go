package receive

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Reasons a sample is discarded, the `reason` label of strata_discarded_samples_total. The values are Mimir's
// (cortex_discarded_samples_total), so dashboards and alerts written for Mimir read the same. These are the
// distributor's; the ingester adds its own (series limits, out of order, too old, duplicate) to the same metric.
const (
	// ReasonRateLimited: the tenant's request was over its ingestion_rate token bucket.
	ReasonRateLimited = "rate_limited"
	// ReasonMissingMetricName: the series has no __name__ label (or none with a value).
	ReasonMissingMetricName = "missing_metric_name"
	// ReasonLabelInvalid: a label name (or the metric name) does not follow Prometheus's legacy naming rules.
	ReasonLabelInvalid = "label_invalid"
	// ReasonDuplicateLabelNames: the series names one label twice.
	ReasonDuplicateLabelNames = "duplicate_label_names"
	// ReasonLabelsNotSorted: the series' labels are not sorted by name. Not reported any more: the validator
	// sorts such labels, as Mimir's distributor does (kept for dashboards that name it).
	ReasonLabelsNotSorted = "labels_not_sorted"
	// ReasonMaxLabelNamesPerSeries: the series has more labels than max_label_names_per_series.
	ReasonMaxLabelNamesPerSeries = "max_label_names_per_series"
	// ReasonLabelNameTooLong: a label name is longer than max_label_name_length.
	ReasonLabelNameTooLong = "label_name_too_long"
	// ReasonLabelValueTooLong: a label value is longer than max_label_value_length.
	ReasonLabelValueTooLong = "label_value_too_long"
	// ReasonTooFarInFuture: a sample is newer than now + creation_grace_period.
	ReasonTooFarInFuture = "too_far_in_future"
)

// DiscardedSamples counts rejected samples in strata_discarded_samples_total{tenant,reason}. A process creates
// one and shares it between the distributor's push handler and the ingester (registering the metric twice on
// one registry panics). It is safe for concurrent use.
type DiscardedSamples struct {
	total *prometheus.CounterVec
}

// NewDiscardedSamples registers strata_discarded_samples_total on reg (nil: not registered, for tests).
func NewDiscardedSamples(reg prometheus.Registerer) *DiscardedSamples {
	return &DiscardedSamples{
		total: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_discarded_samples_total",
			Help: "Samples (float and histogram) rejected, by tenant and reason. Reasons follow Mimir's cortex_discarded_samples_total.",
		}, []string{"tenant", "reason"}),
	}
}

// Add counts n samples of tenant discarded for reason (one of the Reason constants). n <= 0 is a no-op.
func (d *DiscardedSamples) Add(tenant, reason string, n int) {
	if n <= 0 {
		return
	}
	d.total.WithLabelValues(tenant, reason).Add(float64(n))
}

// pushMetrics are the push handler's own metrics.
type pushMetrics struct {
	receivedSamples *prometheus.CounterVec
	requests        *prometheus.CounterVec
	requestsByCode  map[int]prometheus.Counter // the statuses the handler answers with, created at 0 up front
	bodySize        *prometheus.HistogramVec
	compressedSize  prometheus.Observer
	decodedSize     prometheus.Observer
	// Requests refused by instance_limits, by limit (Mimir's cortex_distributor_instance_rejected_requests_total).
	rejectedInflight, rejectedInflightBytes prometheus.Counter
}

func newPushMetrics(reg prometheus.Registerer, l *inflight) *pushMetrics {
	codes := []int{
		http.StatusNoContent, http.StatusAccepted, http.StatusBadRequest, http.StatusUnauthorized,
		http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType,
		http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable,
	}
	m := &pushMetrics{
		receivedSamples: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_distributor_received_samples_total",
			Help: "Samples (float and histogram) that passed validation and the rate limit and were handed on to the ingesters, by tenant.",
		}, []string{"tenant"}),
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_distributor_requests_total",
			Help: "Remote write requests answered by the distributor, by HTTP status code.",
		}, []string{"code"}),
		requestsByCode: make(map[int]prometheus.Counter, len(codes)),
		bodySize: promauto.With(reg).NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "strata_distributor_request_body_size_bytes",
			Help:                        "Size of remote write request bodies, as received (stage=compressed) and after snappy decompression (stage=decoded).",
			Buckets:                     prometheus.ExponentialBuckets(1024, 4, 8), // 1KiB … 16MiB
			NativeHistogramBucketFactor: 1.1,
		}, []string{"stage"}),
	}
	rejected := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "strata_distributor_instance_rejected_requests_total",
		Help: "Push requests refused (503) because this distributor was at an instance limit, by the limit's name.",
	}, []string{"reason"})
	m.rejectedInflight = rejected.WithLabelValues("max_inflight_push_requests")
	m.rejectedInflightBytes = rejected.WithLabelValues("max_inflight_push_requests_bytes")
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_distributor_inflight_push_requests",
		Help: "Push requests this distributor is handling (limit: instance_limits.max_inflight_push_requests).",
	}, func() float64 { return float64(l.requests.Load()) })
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_distributor_inflight_push_requests_bytes",
		Help: "Memory the push requests this distributor is handling hold: bodies as received and decompressed, and what they decode into (estimated; limit: instance_limits.max_inflight_push_requests_bytes).",
	}, func() float64 { return float64(l.bytes.Load()) })
	for _, code := range codes {
		m.requestsByCode[code] = m.requests.WithLabelValues(strconv.Itoa(code))
	}
	m.compressedSize = m.bodySize.WithLabelValues("compressed")
	m.decodedSize = m.bodySize.WithLabelValues("decoded")
	return m
}

// observeStatus counts one answered request.
func (m *pushMetrics) observeStatus(code int) {
	if c, ok := m.requestsByCode[code]; ok {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}
