// Package loadgen is a Prometheus remote-write load generator for benchmarking Strata's write path
// (`make bench-write`). It pushes synthetic series shaped like a Kubernetes fleet scraped by Prometheus: every
// round sends one fresh sample per series, stamped with the current time, in requests of a fixed set of series.
//
// The generator is built to cost the sender little, so that on a small machine shared with the server it is not the
// bottleneck: each series' labels (v1) or symbol references (v2) are encoded once, up front; a request then only
// appends the sample bytes and the protobuf framing to a reused buffer and snappy-compresses it into another.
package loadgen

import (
	"net/url"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Protocol is the remote-write protocol version the generator speaks.
type Protocol string

const (
	// ProtocolV1 sends prometheus.WriteRequest (remote write 1.0).
	ProtocolV1 Protocol = "v1"
	// ProtocolV2 sends io.prometheus.write.v2.Request (remote write 2.0), with one symbol table per request.
	ProtocolV2 Protocol = "v2"
)

// Bounds of Config, checked by Validate.
const (
	MinLabelsPerSeries = 10
	MaxLabelsPerSeries = 20
	// MaxSeries keeps the pre-encoded payloads in memory within a few GiB.
	MaxSeries = 10_000_000
	// MaxExtraLabels bounds Config.ExtraLabels.
	MaxExtraLabels = 10
)

// Config is what one load-generation run does. It is plain data; DefaultConfig gives the defaults.
type Config struct {
	// URL is the remote-write endpoint, e.g. http://127.0.0.1:8080/api/v1/push.
	URL string
	// Tenant is sent as X-Scope-OrgID; empty sends no tenant header.
	Tenant string
	// Series is the number of distinct series; each round sends one sample for each.
	Series int
	// LabelsPerSeries counts every label, __name__ included (MinLabelsPerSeries to MaxLabelsPerSeries).
	LabelsPerSeries int
	// SeriesPerRequest is how many series (so samples) one request carries, like Prometheus's
	// queue_config.max_samples_per_send (whose default is 2000).
	SeriesPerRequest int
	// Concurrency is the number of requests in flight at once (Prometheus: shards).
	Concurrency int
	// Duration is how long new requests are started; requests in flight at the end are waited for.
	Duration time.Duration
	// RoundInterval paces rounds like a scrape interval: round r of a sender starts no earlier than
	// r × RoundInterval after the start. 0 sends rounds back to back, as fast as the server acknowledges.
	RoundInterval time.Duration
	// RequestTimeout bounds one request. A request that fails or times out is counted, never retried.
	RequestTimeout time.Duration
	// MaxFailures stops the run early once this many requests failed (0: never), so that a wrong URL or a
	// server that refuses everything does not keep a benchmark busy for its whole duration.
	MaxFailures int
	// Protocol is ProtocolV1 or ProtocolV2.
	Protocol Protocol
	// ExtraLabels are constant labels added to every series, like a Prometheus's external labels (e.g. an HA
	// pair's cluster and __replica__); one replaces a generated label of the same name.
	ExtraLabels []labels.Label
}

// DefaultConfig returns the defaults of the benchmark: 100k series of 15 labels, 2000 series per request,
// 4 requests in flight, 60s, remote write 1.0, no URL.
func DefaultConfig() Config {
	return Config{
		Tenant:           "loadgen",
		Series:           100_000,
		LabelsPerSeries:  15,
		SeriesPerRequest: 2000,
		Concurrency:      4,
		Duration:         60 * time.Second,
		RequestTimeout:   30 * time.Second,
		Protocol:         ProtocolV1,
	}
}

// Validate rejects a config that cannot run.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return errors.Wrapf(err, "parse url %q", c.URL)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return errors.Newf("url must be an absolute http(s) URL, got %q", c.URL)
	case c.Series < 1 || c.Series > MaxSeries:
		return errors.Newf("series must be between 1 and %d, got %d", MaxSeries, c.Series)
	case c.LabelsPerSeries < MinLabelsPerSeries || c.LabelsPerSeries > MaxLabelsPerSeries:
		return errors.Newf("labels per series must be between %d and %d, got %d",
			MinLabelsPerSeries, MaxLabelsPerSeries, c.LabelsPerSeries)
	case c.SeriesPerRequest < 1:
		return errors.Newf("series per request must be at least 1, got %d", c.SeriesPerRequest)
	case c.Concurrency < 1:
		return errors.Newf("concurrency must be at least 1, got %d", c.Concurrency)
	case c.Duration <= 0:
		return errors.Newf("duration must be positive, got %v", c.Duration)
	case c.RoundInterval < 0:
		return errors.Newf("round interval must not be negative, got %v", c.RoundInterval)
	case c.RequestTimeout <= 0:
		return errors.Newf("request timeout must be positive, got %v", c.RequestTimeout)
	case c.MaxFailures < 0:
		return errors.Newf("max failures must not be negative, got %d", c.MaxFailures)
	case c.Protocol != ProtocolV1 && c.Protocol != ProtocolV2:
		return errors.Newf("protocol must be %q or %q, got %q", ProtocolV1, ProtocolV2, c.Protocol)
	case len(c.ExtraLabels) > MaxExtraLabels:
		return errors.Newf("at most %d extra labels, got %d", MaxExtraLabels, len(c.ExtraLabels))
	}
	seen := map[string]bool{}
	for _, l := range c.ExtraLabels {
		switch {
		case !model.LegacyValidation.IsValidLabelName(l.Name) || l.Name == model.MetricNameLabel:
			return errors.Newf("extra label name %q is not a valid label name (or is __name__)", l.Name)
		case l.Value == "":
			return errors.Newf("extra label %q has an empty value", l.Name)
		case seen[l.Name]:
			return errors.Newf("extra label %q given twice", l.Name)
		}
		seen[l.Name] = true
	}
	return nil
}
