package receive

import (
	"math"

	"github.com/grafana/dskit/limiter"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// ingestionRateStrategy is Mimir's "global" ingestion rate strategy: a tenant's ingestion_rate is the limit
// across all distributors, so each of the N distributors allows rate/N; the burst is not divided (as in Mimir,
// so that ingestion_burst_size means the same whatever N is, and a request of up to burst samples can always
// pass one distributor). Limits are read on every call, so runtime overrides apply at once.
type ingestionRateStrategy struct {
	overrides    *tenancy.Overrides
	distributors func() int
}

// Limit implements limiter.RateLimiterStrategy: the tenant's samples per second on this distributor.
func (s ingestionRateStrategy) Limit(tenant string) float64 {
	limit := s.overrides.IngestionRate(tenant)
	if math.IsInf(limit, 1) || limit >= math.MaxFloat64 {
		// golang.org/x/time/rate's "no limit" is MaxFloat64 exactly; +Inf or a fraction of it would be taken
		// literally and break its token arithmetic.
		return math.MaxFloat64
	}
	n := s.distributors()
	if n < 1 {
		// No healthy distributor counted (e.g. a ring not yet joined): this one is alone.
		n = 1
	}
	return limit / float64(n)
}

// Burst implements limiter.RateLimiterStrategy: the tenant's token bucket size, in samples.
func (s ingestionRateStrategy) Burst(tenant string) int {
	return s.overrides.IngestionBurstSize(tenant)
}

// newIngestionRateLimiter returns the per-tenant token buckets of one distributor. Tokens are samples,
// histograms and exemplars. The recheck period is 0: every request re-reads the tenant's limits and the
// distributor count (a few map lookups under the limiter's lock, per request, not per sample), so a changed
// runtime override or a distributor joining or leaving applies to the next request, without restart.
func newIngestionRateLimiter(overrides *tenancy.Overrides, distributors func() int) *limiter.RateLimiter {
	return limiter.NewRateLimiter(ingestionRateStrategy{overrides: overrides, distributors: distributors}, 0)
}
