package receive

import (
	"encoding/json"
	"net/http"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// UserStats is the answer of /api/v1/user_stats: Mimir's fields, and Strata's usage of each limit.
type UserStats struct {
	// NumSeries is the tenant's in-memory series: the sum of the series of the ingesters this distributor
	// writes the tenant's series to (as they last reported) / the replication factor.
	NumSeries uint64 `json:"numSeries"`
	// IngestionRate is the tenant's accepted items per second across all distributors (this distributor's
	// EWMA × the distributors' count); every item comes through the API (no ruler): RuleIngestionRate is 0.
	IngestionRate     float64 `json:"ingestionRate"`
	APIIngestionRate  float64 `json:"APIIngestionRate"`
	RuleIngestionRate float64 `json:"RuleIngestionRate"`
	// LimitsWarningRatio is the tenant's limits_warning_ratio.
	LimitsWarningRatio float64 `json:"limitsWarningRatio"`
	// Limits is the usage of each limit with one, by config key.
	Limits map[string]LimitUsage `json:"limits"`
}

// LimitUsage is a tenant's usage of one limit.
type LimitUsage struct {
	// Limit is the limit's value (0: no limit).
	Limit float64 `json:"limit"`
	// Usage is the fraction of the limit used (1: at the limit): for the series limits, of the share of the
	// ingester nearest to it.
	Usage float64 `json:"usage"`
	// Metric is, for max_global_series_per_metric, the metric nearest to it.
	Metric string `json:"metric,omitempty"`
	// Warning: the usage is at least limits_warning_ratio.
	Warning bool `json:"warning"`
}

// UserStats returns the tenant's stats (zeros for a tenant this distributor has not written for).
func (d *Distributor) UserStats(tenant string) UserStats {
	l := d.overrides.ForTenant(tenant)
	var s usageSnapshot
	if t := d.usage.lookup(tenant); t != nil {
		s, _ = d.usage.snapshot(t, l, d.now())
	} else {
		s.uses = [3]limitUse{
			{key: limitSeriesPerUser, limit: float64(l.MaxGlobalSeriesPerUser)},
			{key: limitSeriesPerMetric, limit: float64(l.MaxGlobalSeriesPerMetric)},
			{key: limitIngestionRate, limit: l.IngestionRate},
		}
	}
	out := UserStats{
		NumSeries: uint64(max(0, s.series)), IngestionRate: s.acceptedRate, APIIngestionRate: s.acceptedRate,
		LimitsWarningRatio: l.LimitsWarningRatio, Limits: make(map[string]LimitUsage, len(s.uses)),
	}
	for _, use := range s.uses {
		out.Limits[use.key] = LimitUsage{
			Limit: use.limit, Usage: use.usage, Metric: use.metric,
			Warning: l.LimitsWarningRatio > 0 && use.limit > 0 && use.usage >= l.LimitsWarningRatio,
		}
	}
	return out
}

// UserStatsHandler serves GET /api/v1/user_stats for the tenant of the request (Mimir's endpoint): mount it
// behind tenancy.Config.HTTPMiddleware(false).
func (d *Distributor) UserStatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, err := tenancy.TenantFromContext(r.Context())
		if err != nil {
			http.Error(w, err.Error(), tenancy.HTTPStatus(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.UserStats(tenant))
	})
}
