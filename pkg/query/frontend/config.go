package frontend

import (
	"net/url"
	"time"

	"github.com/efficientgo/core/errors"
)

// Config is the query-frontend's configuration (the `query_frontend:` section). Per-tenant limits it applies
// (max_query_parallelism, max_query_length) are in tenancy.Limits.
type Config struct {
	// DownstreamURLs are the queriers' base URLs (http://host:port, optionally with a path prefix). Requests are
	// sent to the one with the fewest in flight, ties broken round-robin. Empty in `strata all`, where the
	// in-process querier answers.
	DownstreamURLs []string `yaml:"downstream_urls"`
	// MaxRetries is how many times a request that failed with a 5xx or a network error is tried again.
	MaxRetries int `yaml:"max_retries"`
	// SplitQueriesByInterval splits range queries at multiples of this interval (UTC) (0: no split).
	SplitQueriesByInterval time.Duration `yaml:"split_queries_by_interval"`
	// AlignQueriesWithStep moves a range query's start and end down to a multiple of its step (changes the
	// answer's timestamps; off by default, as in Mimir).
	AlignQueriesWithStep bool `yaml:"align_queries_with_step"`
	// MaxOutstandingRequestsPerTenant is how many of a tenant's requests may wait in the queue; beyond, 429.
	MaxOutstandingRequestsPerTenant int `yaml:"max_outstanding_requests_per_tenant"`
	// MaxConcurrent is how many requests (of all tenants) are taken from the queue and run at once.
	MaxConcurrent int `yaml:"max_concurrent"`
	// LogQueriesLongerThan logs every request that took longer (0: none).
	LogQueriesLongerThan time.Duration `yaml:"log_queries_longer_than"`
	// MaxBodyBytes bounds a request's body (its form); larger ones are refused with 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// DownstreamTimeout bounds a client's request from its arrival to its answer: the wait in the queue, its
	// parts and their retries (504 beyond; 0: no bound). A remote querier's HTTP client has the same timeout.
	DownstreamTimeout time.Duration `yaml:"downstream_timeout"`
	// ResultsCache is the results cache of range queries' split parts (results_cache.go).
	ResultsCache ResultsCacheConfig `yaml:"results_cache"`
}

// DefaultConfig returns Mimir's defaults where Mimir has the setting.
func DefaultConfig() Config {
	return Config{
		MaxRetries:                      5,
		SplitQueriesByInterval:          24 * time.Hour,
		MaxOutstandingRequestsPerTenant: 100,
		MaxConcurrent:                   16,
		MaxBodyBytes:                    10 << 20,
		DownstreamTimeout:               5 * time.Minute,
		ResultsCache:                    DefaultResultsCacheConfig(),
	}
}

// Validate rejects settings that can never work.
func (c Config) Validate() error {
	for _, u := range c.DownstreamURLs {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return errors.Newf("query_frontend.downstream_urls: %q is not an http(s)://host:port URL", u)
		}
	}
	if err := c.ResultsCache.Validate(); err != nil {
		return errors.Wrap(err, "query_frontend")
	}
	switch {
	case c.MaxRetries < 0:
		return errors.Newf("query_frontend.max_retries must not be negative, got %d", c.MaxRetries)
	case c.SplitQueriesByInterval < 0:
		return errors.New("query_frontend.split_queries_by_interval must not be negative")
	case c.SplitQueriesByInterval > 0 && c.SplitQueriesByInterval%time.Millisecond != 0:
		return errors.New("query_frontend.split_queries_by_interval must be a whole number of milliseconds")
	case c.MaxOutstandingRequestsPerTenant < 1:
		return errors.Newf("query_frontend.max_outstanding_requests_per_tenant must be at least 1, got %d", c.MaxOutstandingRequestsPerTenant)
	case c.MaxConcurrent < 1:
		return errors.Newf("query_frontend.max_concurrent must be at least 1, got %d", c.MaxConcurrent)
	case c.LogQueriesLongerThan < 0, c.DownstreamTimeout < 0:
		return errors.New("query_frontend durations must not be negative")
	case c.MaxBodyBytes < 1:
		return errors.New("query_frontend.max_body_bytes must be positive")
	}
	return nil
}
