package receive

import (
	"math"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IngesterInstanceLimits are an ingester's limits over all its tenants (Mimir's ingester.instance_limits, the same
// keys): what protects the process itself, whatever each tenant's own limits allow. Beyond any of them a write is
// answered Unavailable: the distributor counts it against that replica only (not as the client's error), so the
// quorum of the other replicas still acknowledges it, and a write refused by every replica is a 5xx its client
// retries. 0 means no limit.
type IngesterInstanceLimits struct {
	InstanceLimits `yaml:",inline"`
	// MaxIngestionRate: samples per second over all tenants (an exponentially weighted average of the samples
	// appended, updated every second, as Mimir's); at or beyond it, every write is refused until the average falls.
	MaxIngestionRate float64 `yaml:"max_ingestion_rate"`
	// MaxTenants: tenants with a TSDB open; a write of one more tenant is refused (the open ones still write).
	MaxTenants int `yaml:"max_tenants"`
	// MaxSeries: series in the heads of all tenants; at it, no series is created (samples of existing series are
	// still appended), and a write that had samples of new series is answered Unavailable.
	MaxSeries int `yaml:"max_series"`
}

// Validate checks that every limit is 0 or positive.
func (l IngesterInstanceLimits) Validate() error {
	if l.MaxInflightPushRequests < 0 || l.MaxInflightPushRequestsBytes < 0 || l.MaxTenants < 0 || l.MaxSeries < 0 ||
		l.MaxIngestionRate < 0 || math.IsNaN(l.MaxIngestionRate) || math.IsInf(l.MaxIngestionRate, 0) {
		return errors.Newf("ingester: instance_limits must be 0 (no limit) or positive, got max_inflight_push_requests %d, max_inflight_push_requests_bytes %d, max_ingestion_rate %g, max_tenants %d, max_series %d",
			l.MaxInflightPushRequests, l.MaxInflightPushRequestsBytes, l.MaxIngestionRate, l.MaxTenants, l.MaxSeries)
	}
	return nil
}

// Reasons of strata_ingester_instance_rejected_requests_total (Mimir's).
const (
	reasonInstanceMaxIngestionRate = "ingester_max_ingestion_rate"
	reasonInstanceMaxTenants       = "ingester_max_tenants"
	reasonInstanceMaxSeries        = "ingester_max_series"
)

// errInstanceMaxSeries is PreCreation's answer when the ingester holds instance_limits.max_series series.
var errInstanceMaxSeries = errors.New("ingester instance series limit reached")

func instanceMaxIngestionRateError(limit float64) error {
	return status.Errorf(codes.Unavailable, "the write request has been rejected because this ingester exceeded its samples ingestion rate limit of %g samples/s (ingester.instance_limits.max_ingestion_rate); retry later", limit)
}

func instanceMaxTenantsError(limit int) error {
	return status.Errorf(codes.Unavailable, "the write request has been rejected because this ingester already holds the TSDBs of %d tenants (ingester.instance_limits.max_tenants)", limit)
}

func instanceMaxSeriesError(limit int) error {
	return status.Errorf(codes.Unavailable, "the write request has been rejected because this ingester already holds %d series in memory (ingester.instance_limits.max_series): samples of new series were not appended", limit)
}

// seriesInMemory is the number of series in the heads of every tenant open.
func (i *Ingester) seriesInMemory() int {
	i.mtx.RLock()
	defer i.mtx.RUnlock()
	n := 0
	for _, u := range i.tsdbs {
		if u.db != nil {
			n += int(u.db.Head().NumSeries())
		}
	}
	return n
}

// ingestionRate is the average of the samples an ingester appends per second (limit_usage.go's ewmaRate, as
// Mimir's: alpha 0.2, a tick every second), safe for concurrent use.
type ingestionRate struct {
	mtx sync.Mutex
	r   ewmaRate
}

func (r *ingestionRate) add(now time.Time, n int) {
	r.mtx.Lock()
	r.r.add(now, n)
	r.mtx.Unlock()
}

func (r *ingestionRate) perSecond(now time.Time) float64 {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.r.perSecond(now)
}
