package receive

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/kv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// HATrackerConfig is the distributor's HA tracker (the `ha_tracker` block of the distributor section; the keys
// are Mimir's distributor.ha_tracker ones). The tracker deduplicates HA pairs of Prometheus servers: for each
// tenant with accept_ha_samples and each cluster (the tenant's ha_cluster_label), it elects one replica (the
// ha_replica_label) and stores only that replica's samples, without the replica label. The elected replicas live
// in the KV store of the rings (memberlist gossip), so every distributor agrees on them.
type HATrackerConfig struct {
	// EnableHATracker turns the tracker on. Off, a tenant's accept_ha_samples still removes the replica label
	// and stores every replica's samples (Mimir's behaviour).
	EnableHATracker bool `yaml:"enable_ha_tracker"`
	// UpdateTimeout is how often (at most) a distributor writes to the KV store that the elected replica is
	// still sending; UpdateTimeoutJitterMax spreads those writes (each distributor adds a random part of it).
	UpdateTimeout          time.Duration `yaml:"ha_tracker_update_timeout"`
	UpdateTimeoutJitterMax time.Duration `yaml:"ha_tracker_update_timeout_jitter_max"`
	// FailoverTimeout (ha_tracker.failover_timeout) is how long the elected replica may send nothing, as the KV
	// store says, before a sample from another replica of its cluster elects that one. It must exceed the update
	// timeout and its jitter by at least a second.
	FailoverTimeout time.Duration `yaml:"ha_tracker_failover_timeout"`
}

// DefaultHATrackerConfig is Mimir's: disabled, 15s updates with up to 5s jitter, failover after 30s.
func DefaultHATrackerConfig() HATrackerConfig {
	return HATrackerConfig{UpdateTimeout: 15 * time.Second, UpdateTimeoutJitterMax: 5 * time.Second, FailoverTimeout: 30 * time.Second}
}

// Validate checks the timeouts (Mimir's rules).
func (c HATrackerConfig) Validate() error {
	switch {
	case c.UpdateTimeout <= 0:
		return errors.Newf("ha_tracker.ha_tracker_update_timeout must be positive, got %s", c.UpdateTimeout)
	case c.UpdateTimeoutJitterMax < 0:
		return errors.Newf("ha_tracker.ha_tracker_update_timeout_jitter_max must not be negative, got %s", c.UpdateTimeoutJitterMax)
	case c.FailoverTimeout < c.UpdateTimeout+c.UpdateTimeoutJitterMax+time.Second:
		return errors.Newf("ha_tracker.ha_tracker_failover_timeout (%s) must be at least 1s longer than the update timeout plus its maximum jitter (%s)",
			c.FailoverTimeout, c.UpdateTimeout+c.UpdateTimeoutJitterMax)
	}
	return nil
}

const (
	// haKeyPrefix is the KV prefix of the elected replicas: ha-tracker/<tenant>/<cluster> (a tenant ID has no '/').
	haKeyPrefix = "ha-tracker/"
	// haCleanupPeriod is how often a distributor looks for clusters that stopped sending (±20%, so that the
	// distributors do not all do it at once).
	haCleanupPeriod = 30 * time.Minute
	// haDeletionTimeout: a cluster without a sample for this long is marked deleted (it no longer counts against
	// ha_max_clusters, and its next sample elects a replica afresh); a mark this old is deleted from the KV store.
	haDeletionTimeout = 30 * time.Minute
)

// HATracker elects one replica per HA cluster and says whose samples to keep. It keeps the elected replicas of
// the KV store in memory, updated by a watch on the store, so that a request reads the store only to renew the
// elected replica's heartbeat (once per update timeout) or to fail over. It is safe for concurrent use; Run
// keeps it in sync with the store.
type HATracker struct {
	cfg    HATrackerConfig
	client kv.Client
	limits *tenancy.Overrides
	now    func() time.Time
	logger log.Logger
	// updateTimeout is cfg.UpdateTimeout plus this distributor's jitter.
	updateTimeout time.Duration
	metrics       *haMetrics

	mtx sync.RWMutex
	// elected are the live (not deleted) elected replicas as last seen: tenant → cluster → value.
	elected map[string]map[string]HAReplicaDesc
}

// HATrackerOption configures optional parts of an HATracker.
type HATrackerOption func(*HATracker)

// WithHAClock sets the tracker's clock (default time.Now).
func WithHAClock(now func() time.Time) HATrackerOption { return func(t *HATracker) { t.now = now } }

// NewHATracker returns a tracker over client, a KV client with HAReplicaCodec (see ring.KV.NewClient). Run it
// with Run.
func NewHATracker(cfg HATrackerConfig, client kv.Client, limits *tenancy.Overrides, logger log.Logger, reg prometheus.Registerer, opts ...HATrackerOption) *HATracker {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	t := &HATracker{
		cfg:           cfg,
		client:        client,
		limits:        limits,
		now:           time.Now,
		logger:        log.With(logger, "component", "ha-tracker"),
		updateTimeout: cfg.UpdateTimeout,
		metrics:       newHAMetrics(reg),
		elected:       map[string]map[string]HAReplicaDesc{},
	}
	if cfg.UpdateTimeoutJitterMax > 0 {
		t.updateTimeout += rand.N(cfg.UpdateTimeoutJitterMax)
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// haMetrics are the tracker's metrics (Mimir's cortex_ha_tracker_* and cortex_distributor_deduped_samples_total).
type haMetrics struct {
	deduped         *prometheus.CounterVec
	nonHA           *prometheus.CounterVec
	electedChanges  *prometheus.CounterVec
	electedReceived *prometheus.GaugeVec
	kvCAS           *prometheus.CounterVec
	cleanups        *prometheus.CounterVec
}

func newHAMetrics(reg prometheus.Registerer) *haMetrics {
	m := &haMetrics{
		deduped: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_distributor_deduped_samples_total",
			Help: "Samples (float and histogram) from a replica that is not its HA cluster's elected one: answered 202 and dropped.",
		}, []string{"tenant", "cluster"}),
		nonHA: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_distributor_non_ha_samples_received_total",
			Help: "Samples of tenants with accept_ha_samples whose requests carry not both the cluster and the replica label: stored as they are.",
		}, []string{"tenant"}),
		electedChanges: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ha_tracker_elected_replica_changes_total",
			Help: "Times this distributor saw the elected replica of an HA cluster change (the first election included).",
		}, []string{"tenant", "cluster"}),
		electedReceived: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_ha_tracker_elected_replica_timestamp_seconds",
			Help: "When the elected replica of an HA cluster was last seen sending, as the KV store says (renewed every update timeout).",
		}, []string{"tenant", "cluster"}),
		kvCAS: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ha_tracker_kv_store_cas_total",
			Help: "Compare-and-swap calls to the KV store for an HA cluster (heartbeats of the elected replica, elections).",
		}, []string{"tenant", "cluster"}),
		cleanups: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ha_tracker_replicas_cleanup_total",
			Help: "HA clusters the cleanup marked deleted (no sample for 30m) or deleted from the KV store, and failures.",
		}, []string{"outcome"}),
	}
	for _, o := range []string{"marked", "deleted", "failed"} {
		m.cleanups.WithLabelValues(o)
	}
	return m
}

// haKey is the KV key of a tenant's cluster.
func haKey(tenant, cluster string) string { return haKeyPrefix + tenant + "/" + cluster }

// parseHAKey splits a KV key into tenant and cluster.
func parseHAKey(key string) (tenant, cluster string, ok bool) {
	rest, ok := strings.CutPrefix(key, haKeyPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// haStatusError is an outcome of the HA tracker that is not a client's mistake, with its HTTP answer: 202 for
// deduplicated samples (Prometheus takes it as success and does not resend), 503 when the KV store failed
// (Prometheus retries).
type haStatusError struct {
	code int
	msg  string
}

func (e *haStatusError) Error() string { return e.msg }

// idTooManyHAClusters is Mimir's error id for ha_max_clusters.
const idTooManyHAClusters tenancy.ErrorID = "tenant-too-many-ha-clusters"

// ReasonTooManyHAClusters: the request's HA cluster would exceed the tenant's ha_max_clusters.
const ReasonTooManyHAClusters = "too_many_ha_clusters"

func tooManyHAClustersError(limit int) *tenancy.Error {
	return &tenancy.Error{ID: idTooManyHAClusters, Status: http.StatusBadRequest, Msg: idTooManyHAClusters.MessageWithLimit(
		fmt.Sprintf("the write request has been rejected because the maximum number of high-availability (HA) clusters has been reached for this tenant (limit: %d)", limit),
		"ha_max_clusters")}
}

// errNotElected is the 202 for a request from a replica that is not the elected one.
func errNotElected(cluster, replica, elected string) *haStatusError {
	return &haStatusError{code: http.StatusAccepted, msg: fmt.Sprintf(
		"samples deduplicated: replica %q of HA cluster %q is not the elected replica %q (they were accepted and dropped)", replica, cluster, elected)}
}

// check says whether to keep a request of tenant from replica of cluster: nil to keep it (replica is, or has
// just become, the elected one), a 202 *haStatusError to drop it, a 400 *tenancy.Error when the cluster would
// exceed ha_max_clusters, or a 503 *haStatusError when the KV store failed.
//
// The elected replica in memory decides when it is fresh: it is the requesting one and its heartbeat is younger
// than the update timeout (keep), or it is another one whose heartbeat is younger than the failover timeout
// (drop). Otherwise a compare-and-swap on the KV store renews the heartbeat, elects the requesting replica when
// the elected one has been silent for the failover timeout (or there is none), or finds that another
// distributor elected another replica meanwhile.
func (t *HATracker) check(ctx context.Context, tenant, cluster, replica string) error {
	now := t.now()
	t.mtx.RLock()
	e, known := t.elected[tenant][cluster]
	clusters := len(t.elected[tenant])
	t.mtx.RUnlock()
	if known {
		age := now.Sub(time.UnixMilli(e.ReceivedAt))
		if e.Replica == replica && age < t.updateTimeout {
			return nil
		}
		if e.Replica != replica && age < t.cfg.FailoverTimeout {
			return errNotElected(cluster, replica, e.Replica)
		}
	} else if limit := t.limits.ForTenant(tenant).HAMaxClusters; limit > 0 && clusters >= limit {
		return tooManyHAClustersError(limit)
	}

	// From here on the tracker keeps the names (in memory, in metrics): copies, as the request's strings share its
	// buffers.
	cluster, replica = strings.Clone(cluster), strings.Clone(replica)
	var seen *HAReplicaDesc // the KV store's value after the CAS
	nowMs := now.UnixMilli()
	t.metrics.kvCAS.WithLabelValues(tenant, cluster).Inc()
	err := t.client.CAS(ctx, haKey(tenant, cluster), func(in any) (any, bool, error) {
		cur, _ := in.(*HAReplicaDesc)
		if cur != nil && cur.DeletedAt == 0 {
			age := now.Sub(time.UnixMilli(cur.ReceivedAt))
			if (cur.Replica == replica && age < t.updateTimeout) || (cur.Replica != replica && age < t.cfg.FailoverTimeout) {
				c := *cur
				seen = &c
				return nil, false, nil // nothing to write
			}
		}
		next := &HAReplicaDesc{Replica: replica, ReceivedAt: nowMs, ElectedAt: nowMs, ElectedChanges: 1}
		switch {
		case cur != nil && cur.DeletedAt == 0 && cur.Replica == replica: // a heartbeat
			next.ElectedAt, next.ElectedChanges = cur.ElectedAt, cur.ElectedChanges
		case cur != nil: // a failover, or a new election after the cleanup
			next.ElectedChanges = cur.ElectedChanges + 1
		}
		c := *next
		seen = &c
		return next, true, nil
	})
	if err != nil {
		level.Warn(t.logger).Log("msg", "could not update the elected replica in the KV store", "tenant", tenant, "cluster", cluster, "err", err)
		return &haStatusError{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("HA tracker: update the elected replica of cluster %q in the KV store: %v", cluster, err)}
	}
	if seen == nil {
		return nil // not reached: the CAS calls the function at least once
	}
	t.observe(tenant, cluster, *seen)
	if seen.Replica != replica {
		return errNotElected(cluster, replica, seen.Replica)
	}
	return nil
}

// observe records a value of the KV store (from a CAS or the watch) if it is newer than the one in memory.
func (t *HATracker) observe(tenant, cluster string, d HAReplicaDesc) {
	t.mtx.Lock()
	defer t.mtx.Unlock()
	byCluster := t.elected[tenant]
	cur, known := byCluster[cluster]
	if known && !d.newerThan(&cur) {
		return
	}
	if d.DeletedAt != 0 {
		if known {
			delete(byCluster, cluster)
			if len(byCluster) == 0 {
				delete(t.elected, tenant)
			}
			t.metrics.electedChanges.DeleteLabelValues(tenant, cluster)
			t.metrics.electedReceived.DeleteLabelValues(tenant, cluster)
			t.metrics.deduped.DeleteLabelValues(tenant, cluster)
			t.metrics.kvCAS.DeleteLabelValues(tenant, cluster)
		}
		return
	}
	if byCluster == nil {
		byCluster = map[string]HAReplicaDesc{}
		t.elected[tenant] = byCluster
	}
	if !known || cur.Replica != d.Replica {
		t.metrics.electedChanges.WithLabelValues(tenant, cluster).Inc()
		level.Info(t.logger).Log("msg", "elected replica", "tenant", tenant, "cluster", cluster, "replica", d.Replica, "previous", cur.Replica)
	}
	byCluster[cluster] = d
	t.metrics.electedReceived.WithLabelValues(tenant, cluster).Set(float64(d.ReceivedAt) / 1000)
}

// Run keeps the tracker in sync with the KV store until ctx is done: it reads every elected replica, watches
// the store for changes (other distributors' elections and heartbeats), and every 30 minutes (±20%) marks
// deleted the clusters that sent nothing for 30 minutes and deletes the marks older than that.
func (t *HATracker) Run(ctx context.Context) error {
	t.load(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t.client.WatchPrefix(ctx, haKeyPrefix, func(key string, v any) bool {
			if tenant, cluster, ok := parseHAKey(key); ok {
				if d, ok := v.(*HAReplicaDesc); ok && d != nil {
					t.observe(tenant, cluster, *d)
				}
			}
			return true
		})
	})
	defer wg.Wait()
	for {
		timer := time.NewTimer(time.Duration(float64(haCleanupPeriod) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
			t.cleanup(ctx)
		}
	}
}

// load reads every elected replica of the KV store into memory.
func (t *HATracker) load(ctx context.Context) {
	keys, err := t.client.List(ctx, haKeyPrefix)
	if err != nil {
		level.Warn(t.logger).Log("msg", "could not list the elected replicas", "err", err)
		return
	}
	for _, key := range keys {
		tenant, cluster, ok := parseHAKey(key)
		if !ok {
			continue
		}
		if v, err := t.client.Get(ctx, key); err == nil {
			if d, ok := v.(*HAReplicaDesc); ok && d != nil {
				t.observe(tenant, cluster, *d)
			}
		}
	}
}

// cleanup marks deleted the clusters whose elected replica sent nothing for haDeletionTimeout, and deletes
// from the KV store the marks older than that. Every distributor runs it; the KV store's CAS makes marking
// idempotent, and deleting twice is harmless.
func (t *HATracker) cleanup(ctx context.Context) {
	deadline := t.now().Add(-haDeletionTimeout).UnixMilli()
	keys, err := t.client.List(ctx, haKeyPrefix)
	if err != nil {
		level.Warn(t.logger).Log("msg", "cleanup: could not list the elected replicas", "err", err)
		return
	}
	for _, key := range keys {
		if ctx.Err() != nil {
			return
		}
		v, err := t.client.Get(ctx, key)
		d, ok := v.(*HAReplicaDesc)
		if err != nil || !ok || d == nil {
			continue
		}
		switch {
		case d.DeletedAt != 0 && d.DeletedAt < deadline:
			if err := t.client.Delete(ctx, key); err != nil {
				t.metrics.cleanups.WithLabelValues("failed").Inc()
				level.Warn(t.logger).Log("msg", "cleanup: could not delete an HA cluster", "key", key, "err", err)
				continue
			}
			t.metrics.cleanups.WithLabelValues("deleted").Inc()
		case d.DeletedAt == 0 && d.ReceivedAt < deadline:
			var marked *HAReplicaDesc
			err := t.client.CAS(ctx, key, func(in any) (any, bool, error) {
				cur, _ := in.(*HAReplicaDesc)
				if cur == nil || cur.DeletedAt != 0 || cur.ReceivedAt >= deadline {
					return nil, false, nil // gone, marked or renewed meanwhile
				}
				next := *cur
				next.DeletedAt = max(t.now().UnixMilli(), next.ReceivedAt+1)
				m := next
				marked = &m
				return &next, true, nil
			})
			if err != nil {
				t.metrics.cleanups.WithLabelValues("failed").Inc()
				level.Warn(t.logger).Log("msg", "cleanup: could not mark an HA cluster deleted", "key", key, "err", err)
				continue
			}
			if marked != nil {
				t.metrics.cleanups.WithLabelValues("marked").Inc()
				if tenant, cluster, ok := parseHAKey(key); ok {
					t.observe(tenant, cluster, *marked)
				}
			}
		}
	}
}

// haDedup applies the HA tracker to one tenant's request before validation (as Mimir does): when the tenant has
// accept_ha_samples and the first series carries both the cluster and the replica label, the tracker decides
// whether to keep the request (all of it: a Prometheus sends one replica's series per request), and when kept
// the replica label is removed from every series, so that the elected replica's series and its successor's
// are the same series. It returns the tracker's error for a request not kept (see HATracker.check), having
// counted its samples.
//
// A request whose first series has only one of the two labels is kept as it is, as in Mimir; so is one whose
// cluster or replica value is longer than max_label_value_length (validation refuses it next) or 64 KiB.
func (d *Distributor) haDedup(ctx context.Context, tenant string, limits *tenancy.Limits, series []*prompb.TimeSeries) error {
	i := slices.IndexFunc(series, func(ts *prompb.TimeSeries) bool { return ts != nil })
	if i < 0 {
		return nil
	}
	cluster, replica := haLabels(series[i].Labels, limits.HAClusterLabel, limits.HAReplicaLabel)
	if cluster == "" || replica == "" {
		if d.ha != nil {
			d.ha.metrics.nonHA.WithLabelValues(tenant).Add(float64(countSamples(series)))
		}
		return nil
	}
	maxLen := maxHAReplicaNameBytes // what the KV store's codec takes
	if m := limits.MaxLabelValueLength; m > 0 {
		maxLen = min(maxLen, m)
	}
	if len(cluster) > maxLen || len(replica) > maxLen {
		return nil
	}
	if d.ha != nil {
		if err := d.ha.check(ctx, tenant, cluster, replica); err != nil {
			var terr *tenancy.Error
			if errors.As(err, &terr) {
				d.discarded.Add(tenant, ReasonTooManyHAClusters, countSamples(series))
			} else if herr := (*haStatusError)(nil); errors.As(err, &herr) && herr.code == http.StatusAccepted {
				// A copy: a new series of the metric would keep the request's string.
				d.ha.metrics.deduped.WithLabelValues(tenant, strings.Clone(cluster)).Add(float64(countSamples(series)))
			}
			return err
		}
	}
	for _, ts := range series {
		if ts != nil {
			ts.Labels = slices.DeleteFunc(ts.Labels, func(l *labelpb.Label) bool { return l != nil && l.Name == limits.HAReplicaLabel })
		}
	}
	return nil
}

// haLabels returns the values of the cluster and replica labels ("" when missing).
func haLabels(lbls []*labelpb.Label, clusterLabel, replicaLabel string) (cluster, replica string) {
	for _, l := range lbls {
		switch {
		case l == nil:
		case l.Name == clusterLabel:
			cluster = l.Value
		case l.Name == replicaLabel:
			replica = l.Value
		}
	}
	return cluster, replica
}

// countSamples counts the samples and histograms of a request's series.
func countSamples(series []*prompb.TimeSeries) int {
	n := 0
	for _, ts := range series {
		if ts != nil {
			n += len(ts.Samples) + len(ts.Histograms)
		}
	}
	return n
}
