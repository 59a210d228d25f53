package cache

import (
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values of strata_cache_operation_failures_total.
const (
	opFetch = "fetch"
	opStore = "store"
)

// metrics is the set of collectors shared by every cache created on one registerer; each cache uses the children
// labelled with its name and backend.
type metrics struct {
	requests      *prometheus.CounterVec
	hits          *prometheus.CounterVec
	items         *prometheus.GaugeVec
	sizeBytes     *prometheus.GaugeVec
	evicted       *prometheus.CounterVec
	failures      *prometheus.CounterVec
	fetchDuration *prometheus.HistogramVec
}

// newMetrics creates the metrics and registers them on reg (which may be nil). When reg already holds them (another
// cache was created on it before), the registered collectors are reused, so any number of caches can share reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"name", "backend"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cache_requests_total",
			Help: "Number of keys requested from the cache.",
		}, labels),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cache_hits_total",
			Help: "Number of keys requested from the cache that were found.",
		}, labels),
		items: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_cache_items",
			Help: "Number of items in the in-memory cache.",
		}, labels),
		sizeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_cache_size_bytes",
			Help: "Size of the keys and values held by the in-memory cache, in bytes.",
		}, labels),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cache_evicted_total",
			Help: "Number of items evicted from the in-memory cache to make room for new ones.",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cache_operation_failures_total",
			Help: "Number of failed cache operations (fetch, store); a failed fetch is a miss, a failed store is dropped.",
		}, []string{"name", "backend", "operation"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                           "strata_cache_fetch_duration_seconds",
			Help:                           "Duration of cache fetches.",
			Buckets:                        []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = registerOrGet(reg, m.requests); err != nil {
		return nil, err
	}
	if m.hits, err = registerOrGet(reg, m.hits); err != nil {
		return nil, err
	}
	if m.items, err = registerOrGet(reg, m.items); err != nil {
		return nil, err
	}
	if m.sizeBytes, err = registerOrGet(reg, m.sizeBytes); err != nil {
		return nil, err
	}
	if m.evicted, err = registerOrGet(reg, m.evicted); err != nil {
		return nil, err
	}
	if m.failures, err = registerOrGet(reg, m.failures); err != nil {
		return nil, err
	}
	if m.fetchDuration, err = registerOrGet(reg, m.fetchDuration); err != nil {
		return nil, err
	}
	return m, nil
}

// registerOrGet registers c on reg, or returns the equal collector registered there before.
func registerOrGet[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, errors.Wrap(err, "registering cache metrics")
}

// cacheMetrics are the children of metrics for one cache.
type cacheMetrics struct {
	requests, hits, evicted   prometheus.Counter
	items, sizeBytes          prometheus.Gauge
	fetchFailures, storeFails prometheus.Counter
	fetchDuration             prometheus.Observer
}

// forCache returns the children for one cache. The items, size and eviction metrics are only created (exported)
// for the in-memory backend and are nil otherwise.
func (m *metrics) forCache(name, backend string) cacheMetrics {
	cm := cacheMetrics{
		requests:      m.requests.WithLabelValues(name, backend),
		hits:          m.hits.WithLabelValues(name, backend),
		fetchFailures: m.failures.WithLabelValues(name, backend, opFetch),
		storeFails:    m.failures.WithLabelValues(name, backend, opStore),
		fetchDuration: m.fetchDuration.WithLabelValues(name, backend),
	}
	if backend == BackendInMemory {
		cm.evicted = m.evicted.WithLabelValues(name, backend)
		cm.items = m.items.WithLabelValues(name, backend)
		cm.sizeBytes = m.sizeBytes.WithLabelValues(name, backend)
	}
	return cm
}

// tolerantRegisterer passes registrations to a Registerer, treating collectors that are already registered as
// registered successfully. It is handed to dskit's memcached client, which registers its metrics with promauto,
// so that creating two clients of the same name on one registry does not panic (the second client's own metrics are
// then not exported; the strata_cache_* metrics are shared and unaffected).
type tolerantRegisterer struct {
	prometheus.Registerer
}

func (r tolerantRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}

func (r tolerantRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
