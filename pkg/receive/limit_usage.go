package receive

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// HeaderLimitWarning is the response header of a successful remote write when the tenant uses at least
// limits_warning_ratio of one of its limits: "<limit key>=<usage>" entries, comma-separated, the per-metric
// series limit with ";metric=<name>", e.g. "max_global_series_per_user=0.83, ingestion_rate=0.91".
const HeaderLimitWarning = "X-Strata-Limit-Warning"

// The limits with a usage, by config key (the label `limit` of strata_tenant_limit_usage_ratio). The label
// limits have none: they are per series, and only refuse.
const (
	limitSeriesPerUser   = "max_global_series_per_user"
	limitSeriesPerMetric = "max_global_series_per_metric"
	limitIngestionRate   = "ingestion_rate"
)

const (
	// The tenant's ingestion rate is an EWMA of the items (samples, histograms, exemplars, metadata) this
	// distributor takes from it, updated every second (Mimir's distributor rate).
	usageRateInterval = time.Second
	usageRateAlpha    = 0.2
	// usageReportTTL: an ingester's report older than this is forgotten (the ingester left, or the tenant's
	// series moved away from it).
	usageReportTTL = 5 * time.Minute
	// usageIdleTimeout: a tenant without writes for this long is forgotten, and its
	// strata_tenant_limit_usage_ratio series go (Mimir's inactive-tenant cleanup period).
	usageIdleTimeout   = 20 * time.Minute
	usageSweepInterval = time.Minute
	// usageLogInterval: at most one warning log line per tenant per interval.
	usageLogInterval = time.Minute
)

// ewmaRate is an exponentially weighted moving average of a count per second, ticked lazily (on use), so that
// it needs no goroutine and follows the injected clock. Not safe for concurrent use.
type ewmaRate struct {
	count float64 // since the last tick
	rate  float64
	init  bool
	last  time.Time // last tick
}

func (e *ewmaRate) add(now time.Time, n int) {
	e.advance(now)
	e.count += float64(n)
}

// advance applies the ticks due by now: the first with the count since the last, the others with 0.
func (e *ewmaRate) advance(now time.Time) {
	if e.last.IsZero() {
		e.last = now
		return
	}
	ticks := now.Sub(e.last) / usageRateInterval
	if ticks <= 0 {
		return
	}
	e.last = e.last.Add(ticks * usageRateInterval)
	instant := e.count / usageRateInterval.Seconds()
	e.count = 0
	if e.init {
		e.rate += usageRateAlpha * (instant - e.rate)
	} else {
		e.rate, e.init = instant, true
	}
	if ticks > 1 {
		if ticks > 200 {
			e.rate = 0 // (0.8)^200 ≈ 1e-20
		} else {
			e.rate *= math.Pow(1-usageRateAlpha, float64(ticks-1))
		}
	}
}

// perSecond is the rate at now; before the first tick, what was counted so far over one interval.
func (e *ewmaRate) perSecond(now time.Time) float64 {
	e.advance(now)
	if !e.init {
		return e.count / usageRateInterval.Seconds()
	}
	return e.rate
}

// ingesterReport is an ingester's last seriesUsage of a tenant, and when it came.
type ingesterReport struct {
	seriesUsage
	seen time.Time
}

// tenantUsage is what a distributor knows of one tenant's usage of its limits. Its fields are under mtx.
type tenantUsage struct {
	mtx       sync.Mutex
	lastWrite time.Time
	// received counts every item of the tenant's valid series (and metadata), accepted the ones the rate
	// limiter let through.
	received, accepted ewmaRate
	ingesters          map[string]*ingesterReport // by ingester ID
	lastLog            time.Time
}

// record counts a request's n items, as received, and as accepted when the rate limiter let them through.
func (t *tenantUsage) record(now time.Time, n int, accepted bool) {
	t.mtx.Lock()
	t.lastWrite = now
	t.received.add(now, n)
	if accepted {
		t.accepted.add(now, n)
	} else {
		t.accepted.advance(now)
	}
	t.mtx.Unlock()
}

// limitUse is a tenant's usage of one limit.
type limitUse struct {
	key    string
	limit  float64 // the limit's value (0: no limit)
	usage  float64 // 0..1 below the limit (0 when unknown or no limit)
	metric string  // max_global_series_per_metric: the metric nearest to it
}

// usageSnapshot is a tenant's usage as a distributor knows it at one moment.
type usageSnapshot struct {
	// series is the tenant's in-memory series: the sum over the ingesters that reported / the replication factor.
	series int64
	// acceptedRate and receivedRate are the tenant's items/s across all distributors (this one's × their count).
	acceptedRate, receivedRate float64
	uses                       [3]limitUse // per user, per metric, rate
}

// limitUsage keeps, per tenant, its ingestion rate at this distributor and the last reports of the ingesters it
// writes to (their series and usage of their share of the series limits, see seriesUsage), for the warnings
// of successful writes (X-Strata-Limit-Warning, a log line), strata_tenant_limit_usage_ratio and
// /api/v1/user_stats. The write path costs a map lookup and two short locks per request, and a header parse
// per ingester written to; nothing per sample. It is safe for concurrent use.
type limitUsage struct {
	overrides    *tenancy.Overrides
	now          func() time.Time
	distributors func() int
	logger       log.Logger
	desc         *prometheus.Desc
	// replication is the ingester ring's replication factor, set by a RingPusher (1 without one).
	replication func() int

	mtx       sync.RWMutex
	tenants   map[string]*tenantUsage
	lastSweep atomic.Int64 // unix nanoseconds
}

func newLimitUsage(overrides *tenancy.Overrides, now func() time.Time, distributors func() int, logger log.Logger, reg prometheus.Registerer) *limitUsage {
	u := &limitUsage{
		overrides: overrides, now: now, distributors: distributors, logger: logger,
		replication: func() int { return 1 },
		tenants:     map[string]*tenantUsage{},
		desc: prometheus.NewDesc("strata_tenant_limit_usage_ratio",
			"A tenant's usage of a limit (1 = at the limit; limit = its config key), present from limits_warning_ratio on, as the distributor knows it. Series of tenants without writes for 20m go.",
			[]string{"tenant", "limit"}, nil),
	}
	u.lastSweep.Store(now().UnixNano())
	if reg != nil {
		reg.MustRegister(u)
	}
	return u
}

// tenant returns the tenant's usage, created on its first write.
func (u *limitUsage) tenant(tenant string, now time.Time) *tenantUsage {
	u.maybeSweep(now)
	u.mtx.RLock()
	t := u.tenants[tenant]
	u.mtx.RUnlock()
	if t != nil {
		return t
	}
	u.mtx.Lock()
	defer u.mtx.Unlock()
	if t = u.tenants[tenant]; t == nil {
		t = &tenantUsage{lastWrite: now, ingesters: map[string]*ingesterReport{}}
		u.tenants[tenant] = t
	}
	return t
}

// lookup returns the tenant's usage, nil when it is not known.
func (u *limitUsage) lookup(tenant string) *tenantUsage {
	u.mtx.RLock()
	defer u.mtx.RUnlock()
	return u.tenants[tenant]
}

// observe keeps an ingester's report of a tenant.
func (u *limitUsage) observe(tenant, ingester string, su seriesUsage) {
	now := u.now()
	t := u.tenant(tenant, now)
	t.mtx.Lock()
	if r := t.ingesters[ingester]; r != nil {
		r.seriesUsage, r.seen = su, now
	} else {
		t.ingesters[ingester] = &ingesterReport{seriesUsage: su, seen: now}
	}
	t.mtx.Unlock()
}

// maybeSweep forgets idle tenants, at most once per usageSweepInterval.
func (u *limitUsage) maybeSweep(now time.Time) {
	last := u.lastSweep.Load()
	if now.UnixNano()-last < int64(usageSweepInterval) || !u.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	u.mtx.Lock()
	defer u.mtx.Unlock()
	for tenant, t := range u.tenants {
		t.mtx.Lock()
		idle := now.Sub(t.lastWrite) > usageIdleTimeout
		t.mtx.Unlock()
		if idle {
			delete(u.tenants, tenant)
		}
	}
}

// snapshot returns the tenant's usage at now; idle is true for a tenant without writes for usageIdleTimeout.
func (u *limitUsage) snapshot(t *tenantUsage, l *tenancy.Limits, now time.Time) (s usageSnapshot, idle bool) {
	distributors := max(1, u.distributors())
	var sum int64
	user, metric := limitUse{key: limitSeriesPerUser}, limitUse{key: limitSeriesPerMetric}
	t.mtx.Lock()
	idle = now.Sub(t.lastWrite) > usageIdleTimeout
	accepted, received := t.accepted.perSecond(now), t.received.perSecond(now)
	for id, r := range t.ingesters {
		if now.Sub(r.seen) > usageReportTTL {
			delete(t.ingesters, id)
			continue
		}
		sum += r.series
		user.usage = max(user.usage, r.perUser)
		if r.perMetric > metric.usage || (r.perMetric == metric.usage && metric.metric == "") {
			metric.usage, metric.metric = r.perMetric, r.topMetric
		}
	}
	t.mtx.Unlock()

	s.series = int64(math.Round(float64(sum) / float64(max(1, u.replication()))))
	s.acceptedRate, s.receivedRate = accepted*float64(distributors), received*float64(distributors)
	user.limit, metric.limit = float64(l.MaxGlobalSeriesPerUser), float64(l.MaxGlobalSeriesPerMetric)
	if user.limit <= 0 {
		user.usage = 0
	}
	if metric.limit <= 0 {
		metric.usage, metric.metric = 0, ""
	}
	rate := limitUse{key: limitIngestionRate, limit: l.IngestionRate}
	if rate.limit > 0 && rate.limit < math.MaxFloat64 && !math.IsInf(rate.limit, 1) {
		rate.usage = s.acceptedRate / rate.limit
	}
	s.uses = [3]limitUse{user, metric, rate}
	return s, idle
}

// warning returns the X-Strata-Limit-Warning of a successful write of the tenant ("" below
// limits_warning_ratio of every limit: no allocation), and logs it at most once per usageLogInterval.
func (u *limitUsage) warning(t *tenantUsage, tenant string, l *tenancy.Limits, now time.Time) string {
	ratio := l.LimitsWarningRatio
	if ratio <= 0 {
		return ""
	}
	s, _ := u.snapshot(t, l, now)
	var b []byte
	for _, use := range s.uses {
		if use.limit <= 0 || use.usage < ratio {
			continue
		}
		if b != nil {
			b = append(b, ", "...)
		}
		b = append(b, use.key...)
		b = append(b, '=')
		b = strconv.AppendFloat(b, use.usage, 'f', 2, 64)
		if use.metric != "" {
			b = append(b, ";metric="...)
			b = append(b, use.metric...)
		}
	}
	if b == nil {
		return ""
	}
	w := string(b)
	t.mtx.Lock()
	logNow := now.Sub(t.lastLog) >= usageLogInterval
	if logNow {
		t.lastLog = now
	}
	t.mtx.Unlock()
	if logNow {
		level.Warn(u.logger).Log("msg", "tenant is close to its limits (usage 1: new series or samples are refused)", "tenant", tenant, "usage", w, "warning_ratio", ratio)
	}
	return w
}

// receivedRate is the rate the tenant sends at, in items/s across all distributors.
func (u *limitUsage) receivedRate(t *tenantUsage, now time.Time) float64 {
	t.mtx.Lock()
	r := t.received.perSecond(now)
	t.mtx.Unlock()
	return r * float64(max(1, u.distributors()))
}

// Describe implements prometheus.Collector.
func (u *limitUsage) Describe(ch chan<- *prometheus.Desc) { ch <- u.desc }

// Collect implements prometheus.Collector: strata_tenant_limit_usage_ratio of each limit a tenant uses at
// least limits_warning_ratio of, computed now, so that idle tenants and usages that went down leave no series.
func (u *limitUsage) Collect(ch chan<- prometheus.Metric) {
	now := u.now()
	u.maybeSweep(now)
	type entry struct {
		tenant string
		t      *tenantUsage
	}
	u.mtx.RLock()
	entries := make([]entry, 0, len(u.tenants))
	for tenant, t := range u.tenants {
		entries = append(entries, entry{tenant, t})
	}
	u.mtx.RUnlock()
	for _, e := range entries {
		l := u.overrides.ForTenant(e.tenant)
		if l.LimitsWarningRatio <= 0 {
			continue
		}
		s, idle := u.snapshot(e.t, l, now)
		if idle {
			continue
		}
		for _, use := range s.uses {
			if use.limit > 0 && use.usage >= l.LimitsWarningRatio {
				ch <- prometheus.MustNewConstMetric(u.desc, prometheus.GaugeValue, use.usage, e.tenant, use.key)
			}
		}
	}
}

// usageReporter is a Pusher that reports what the ingesters said of a tenant's usage to a limitUsage.
type usageReporter interface{ reportUsageTo(u *limitUsage) }

// localUsage is an in-process ingester's view of a tenant's series usage (*Ingester).
type localUsage interface {
	seriesUsage(tenant string) (seriesUsage, bool)
}

// reportUsageTo implements usageReporter.
func (p *RingPusher) reportUsageTo(u *limitUsage) {
	p.usage = u
	u.replication = func() int {
		return max(1, min(p.ring.ReplicationFactor(), p.ring.InstancesCount()))
	}
}

// observeLocal keeps an in-process ingester's report of the tenant, after a write to it.
func (p *RingPusher) observeLocal(tenant, ingester string, local Pusher) {
	if p.usage == nil {
		return
	}
	if l, ok := local.(localUsage); ok {
		if su, ok := l.seriesUsage(tenant); ok {
			p.usage.observe(tenant, ingester, su)
		}
	}
}

// observeRemote keeps the report in a remote ingester's RemoteWrite response header, if any.
func (p *RingPusher) observeRemote(tenant, ingester string, hdr metadata.MD) {
	if p.usage == nil {
		return
	}
	if v := hdr.Get(usageMetadataKey); len(v) == 1 {
		if su, ok := parseSeriesUsage(v[0]); ok {
			p.usage.observe(tenant, ingester, su)
		}
	}
}
