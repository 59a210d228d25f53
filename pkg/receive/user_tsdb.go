package receive

import (
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/server"
)

// userTSDB is one tenant's TSDB. It is the TSDB's series lifecycle callback, which enforces the series limits.
type userTSDB struct {
	tenant  string
	db      *tsdb.DB
	shipper Shipper
	ing     *Ingester
	// reg holds the tenant's own collectors (its shipper's), unregistered when the TSDB is closed.
	reg *tenantRegisterer

	// replaying is true while the WAL is replayed: series that existed are never refused.
	replaying bool
	// oooWindow is the out-of-order window (ms) the TSDB runs with; see ApplyLimits.
	oooWindow atomic.Int64
	// lastWrite is the unix nanoseconds of the last push.
	lastWrite atomic.Int64
	// closeMtx: pushes hold it shared; closing an idle TSDB holds it exclusively, and sets closed.
	closeMtx sync.RWMutex
	// appendMtx: pushes that append to existing series hold it shared; a push that creates series, exclusively.
	appendMtx sync.RWMutex
	// sharedAppends counts the pushes holding appendMtx shared: while there are any, PreCreation refuses.
	sharedAppends atomic.Int32
	commitMtx     sync.Mutex
	// refs are the references of series by their labels as received (appendRequest).
	refs      *seriesRefs
	closed    bool
	mtx       sync.Mutex
	perMetric map[string]int
	// top is the metric with the most series in perMetric (ingester_usage.go), under mtx.
	top topMetric
}

// refsLimit is how many series refs may know: as many again as the head has (see seriesRefs.add).
func (u *userTSDB) refsLimit() int {
	return 2*int(u.db.Head().NumSeries()) + 4096
}

func (u *userTSDB) localLimit(global int) int {
	if global <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(float64(global)*u.ing.limitShare(u.tenant))))
}

var (
	errPerUserSeriesLimit   = errors.New("per-user series limit reached")
	errPerMetricSeriesLimit = errors.New("per-metric series limit reached")
)

// PreCreation implements tsdb.SeriesLifecycleCallback: it refuses a new series beyond the tenant's limits.
func (u *userTSDB) PreCreation(lset labels.Labels) error {
	if u.replaying {
		return nil
	}
	if u.sharedAppends.Load() > 0 {
		return errSeriesNeedsExclusive // a shared push appends to existing series only: it is redone alone
	}
	// Over all tenants: the series of every head, summed when a series is about to be created (off by default).
	if limit := u.ing.cfg.InstanceLimits.MaxSeries; limit > 0 && u.ing.seriesInMemory() >= limit {
		return errInstanceMaxSeries
	}
	if limit := u.localLimit(u.ing.overrides.MaxGlobalSeriesPerUser(u.tenant)); limit > 0 && int(u.db.Head().NumSeries()) >= limit {
		return errPerUserSeriesLimit
	}
	if limit := u.localLimit(u.ing.overrides.MaxGlobalSeriesPerMetric(u.tenant)); limit > 0 {
		u.mtx.Lock()
		n := u.perMetric[lset.Get(model.MetricNameLabel)]
		u.mtx.Unlock()
		if n >= limit {
			return errPerMetricSeriesLimit
		}
	}
	return nil
}

// PostCreation implements tsdb.SeriesLifecycleCallback.
func (u *userTSDB) PostCreation(lset labels.Labels) {
	u.mtx.Lock()
	name := lset.Get(model.MetricNameLabel)
	n := u.perMetric[name] + 1
	u.perMetric[name] = n
	u.top.created(name, n)
	u.mtx.Unlock()
}

// PostDeletion implements tsdb.SeriesLifecycleCallback.
func (u *userTSDB) PostDeletion(deleted map[chunks.HeadSeriesRef]labels.Labels) {
	u.mtx.Lock()
	defer u.mtx.Unlock()
	for _, lset := range deleted {
		name := lset.Get(model.MetricNameLabel)
		if u.perMetric[name]--; u.perMetric[name] <= 0 {
			delete(u.perMetric, name)
		}
	}
	u.top.recompute(u.perMetric)
}

func (i *Ingester) get(tenant string) *userTSDB {
	i.mtx.RLock()
	defer i.mtx.RUnlock()
	return i.tsdbs[tenant]
}

// getOrOpen returns a tenant's TSDB, opening (or creating) it the first time. tenant must be valid. With
// maxTenants > 0, a TSDB is not opened while that many are (instance_limits.max_tenants: a write's limit, not the
// startup's).
func (i *Ingester) getOrOpen(tenant string, maxTenants int) (*userTSDB, error) {
	if u := i.get(tenant); u != nil {
		return u, nil
	}
	i.creating.Lock()
	defer i.creating.Unlock()
	if u := i.get(tenant); u != nil {
		return u, nil
	}
	i.mtx.RLock()
	closed, open := i.closed, len(i.tsdbs)
	i.mtx.RUnlock()
	if closed {
		return nil, status.Error(codes.Unavailable, "ingester is shutting down")
	}
	if maxTenants > 0 && open >= maxTenants {
		i.metrics.rejectedMaxTenants.Inc()
		return nil, instanceMaxTenantsError(maxTenants)
	}

	dir := filepath.Join(i.dir, tenant)
	u := &userTSDB{tenant: tenant, ing: i, replaying: true, perMetric: map[string]int{}, reg: newTenantRegisterer(i.reg, tenant), refs: newSeriesRefs()}
	u.lastWrite.Store(i.now().UnixNano())
	opts := tsdb.DefaultOptions()
	opts.MinBlockDuration = i.cfg.BlockDuration.Milliseconds()
	opts.MaxBlockDuration = i.cfg.BlockDuration.Milliseconds() // no local compaction: the compactor merges
	opts.RetentionDuration = i.cfg.Retention.Milliseconds()
	opts.OutOfOrderTimeWindow = i.overrides.OutOfOrderTimeWindow(tenant).Milliseconds()
	opts.EnableOverlappingCompaction = false
	opts.IsolationDisabled = !i.cfg.IsolationEnabled
	opts.StripeSize = i.cfg.StripeSize
	if opts.StripeSize == 0 {
		opts.StripeSize = DefaultStripeSize
	}
	opts.SeriesLifecycleCallback = u
	if i.shippers != nil {
		// Retention deletes only blocks already in the bucket: a block that could not be shipped stays.
		opts.BlocksToDelete = func(blocks []*tsdb.Block) map[ulid.ULID]struct{} {
			if u.db == nil {
				return nil // called while opening: nothing is deleted before the TSDB is up
			}
			candidates := tsdb.DefaultBlocksToDelete(u.db)(blocks)
			shipped, err := block.ReadShipperMeta(dir)
			if err != nil {
				return nil
			}
			out := map[ulid.ULID]struct{}{}
			for _, id := range shipped.Uploaded {
				if _, ok := candidates[id]; ok {
					out[id] = struct{}{}
				}
			}
			return out
		}
	}
	start := time.Now()
	db, err := tsdb.Open(dir, server.Slog(log.With(i.logger, "tenant", tenant)), nil, opts, nil)
	if err != nil {
		return nil, errors.Wrapf(err, "open TSDB of tenant %s", tenant)
	}
	u.db = db
	u.replaying = false
	u.oooWindow.Store(opts.OutOfOrderTimeWindow)
	i.metrics.walReplay.WithLabelValues(tenant).Set(time.Since(start).Seconds())
	if i.shippers != nil {
		s, err := i.shippers(tenant, dir, i.tenantLabels(tenant), u.reg)
		if err != nil {
			u.reg.unregisterAll()
			_ = db.Close()
			return nil, errors.Wrapf(err, "create shipper of tenant %s", tenant)
		}
		u.shipper = s
	}
	level.Info(i.logger).Log("msg", "opened TSDB", "tenant", tenant, "dir", dir, "series", db.Head().NumSeries(), "took", time.Since(start))

	i.mtx.Lock()
	i.tsdbs[tenant] = u
	i.metrics.tsdbs.Set(float64(len(i.tsdbs)))
	i.mtx.Unlock()
	return u, nil
}
