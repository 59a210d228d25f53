package receive

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// DefaultMetadataRetainPeriod is how long the ingester keeps a metadata entry after it was last received
// (Mimir's -ingester.metadata-retain-period): Prometheus sends each family's metadata every minute (1.0) or with
// every sample (2.0), so entries of metrics that are gone expire.
const DefaultMetadataRetainPeriod = 10 * time.Minute

// metadataResponseBatch is how many metric families one MetricMetadataResponse carries, to bound its size.
const metadataResponseBatch = 1000

// metaEntry is one distinct metadata of a metric family.
type metaEntry struct {
	typ        prompb.MetricMetadata_MetricType
	help, unit string
}

// tenantMetadata is one tenant's metric metadata: for each family, its distinct entries with the time (Unix
// nanoseconds) each was last received.
type tenantMetadata struct {
	mtx      sync.Mutex
	families map[string]map[metaEntry]int64
	n        int  // entries over all families
	removed  bool // purged from the store: an add that still holds it must start again
}

// ingesterMetadata is the ingester's in-memory metric metadata store (Mimir keeps metadata in the ingesters,
// not in the TSDB): bounded per tenant by max_global_metadata_per_user (families, this ingester's share) and
// max_global_metadata_per_metric (entries of one family; every entry of a family is sent to the same
// ingesters, so the limit applies whole), expired metadata_retain_period after it was last received. It is not
// persisted: after a restart it fills again from the senders. It is safe for concurrent use.
type ingesterMetadata struct {
	overrides  *tenancy.Overrides
	limitShare func(tenant string) float64
	retain     func() time.Duration
	now        func() time.Time
	discarded  *DiscardedMetadata
	// entries is strata_ingester_memory_metadata{tenant}: metadata entries held (Mimir's
	// cortex_ingester_memory_metadata, per tenant).
	entries *prometheus.GaugeVec

	mtx     sync.RWMutex
	tenants map[string]*tenantMetadata
}

func newIngesterMetadata(i *Ingester, discarded *DiscardedMetadata, reg prometheus.Registerer) *ingesterMetadata {
	return &ingesterMetadata{
		overrides:  i.overrides,
		limitShare: func(tenant string) float64 { return i.limitShare(tenant) },
		retain: func() time.Duration {
			if i.cfg.MetadataRetainPeriod > 0 {
				return i.cfg.MetadataRetainPeriod
			}
			return DefaultMetadataRetainPeriod
		},
		now:       func() time.Time { return i.now() },
		discarded: discarded,
		entries: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_ingester_memory_metadata", Help: "Metric metadata entries held in memory, by tenant.",
		}, []string{"tenant"}),
		tenants: map[string]*tenantMetadata{},
	}
}

func (s *ingesterMetadata) tenant(tenant string, create bool) *tenantMetadata {
	s.mtx.RLock()
	t := s.tenants[tenant]
	s.mtx.RUnlock()
	if t != nil || !create {
		return t
	}
	s.mtx.Lock()
	defer s.mtx.Unlock()
	if t = s.tenants[tenant]; t == nil {
		t = &tenantMetadata{families: map[string]map[metaEntry]int64{}}
		s.tenants[tenant] = t
	}
	return t
}

// add stores a tenant's metadata entries. It validates them as the distributor does (the ingester trusts no
// caller) and drops, counting them, the invalid ones and those beyond the tenant's limits: metadata is best
// effort and never fails a write (as in Mimir). md is not modified.
func (s *ingesterMetadata) add(tenant string, md []*prompb.MetricMetadata) {
	if len(md) == 0 {
		return
	}
	l := s.overrides.ForTenant(tenant)
	perUser := 0
	if g := l.MaxGlobalMetadataPerUser; g > 0 {
		perUser = max(1, int(float64(g)*s.limitShare(tenant)+0.999999))
	}
	perMetric := l.MaxGlobalMetadataPerMetric
	now := s.now().UnixNano()
	expired := now - s.retain().Nanoseconds()

	t := s.tenant(tenant, true)
	t.mtx.Lock()
	for t.removed { // purged between the lookup and the lock
		t.mtx.Unlock()
		t = s.tenant(tenant, true)
		t.mtx.Lock()
	}
	defer t.mtx.Unlock()
	before := t.n
	defer func() { s.entries.WithLabelValues(tenant).Add(float64(t.n - before)) }()
	for _, m := range md {
		if m == nil {
			continue
		}
		if reason, err := checkMetadata(l, m); err != nil {
			s.discarded.Add(tenant, reason, 1)
			continue
		}
		e := metaEntry{typ: m.GetType(), help: m.GetHelp(), unit: m.GetUnit()}
		if l.MaxMetadataLength > 0 {
			e.help = truncateUTF8(e.help, l.MaxMetadataLength)
		}
		name := m.GetMetricFamilyName()
		set, ok := t.families[name]
		if !ok {
			if perUser > 0 && len(t.families) >= perUser {
				t.purge(expired) // room may be held by expired families
				if len(t.families) >= perUser {
					s.discarded.Add(tenant, reasonMetadataPerUserLimit, 1)
					continue
				}
			}
			set = map[metaEntry]int64{}
			t.families[strings.Clone(name)] = set
		}
		if _, ok := set[e]; !ok {
			if perMetric > 0 && len(set) >= perMetric {
				t.purgeSet(set, expired)
				if len(set) >= perMetric {
					s.discarded.Add(tenant, reasonMetadataPerMetricLimit, 1)
					continue
				}
			}
			// Own copies: a kept entry must not hold on to the request it came in.
			e.help, e.unit = strings.Clone(e.help), strings.Clone(e.unit)
			t.n++
		}
		set[e] = now
	}
}

// purge drops every entry last received at or before expired, and the families left empty.
func (t *tenantMetadata) purge(expired int64) {
	for name, set := range t.families {
		if t.purgeSet(set, expired) == 0 {
			delete(t.families, name)
		}
	}
}

// purgeSet drops the entries of one family last received at or before expired; it returns how many are left.
func (t *tenantMetadata) purgeSet(set map[metaEntry]int64, expired int64) int {
	for e, seen := range set {
		if seen <= expired {
			delete(set, e)
			t.n--
		}
	}
	return len(set)
}

// purge drops the expired metadata of every tenant, and the tenants left without any.
func (s *ingesterMetadata) purge() {
	expired := s.now().UnixNano() - s.retain().Nanoseconds()
	s.mtx.Lock()
	defer s.mtx.Unlock()
	for tenant, t := range s.tenants {
		t.mtx.Lock()
		t.purge(expired)
		if len(t.families) == 0 {
			t.removed = true
			delete(s.tenants, tenant)
			s.entries.DeleteLabelValues(tenant)
		} else {
			s.entries.WithLabelValues(tenant).Set(float64(t.n))
		}
		t.mtx.Unlock()
	}
}

// read returns the unexpired metadata of tenants by metric family: only metric's when it is not empty, at most
// limit families when limit > 0 (the first ones by name). Entries of a family are sorted (type, help, unit).
func (s *ingesterMetadata) read(tenants []string, metric string, limit int) map[string][]*metadatapb.Meta {
	expired := s.now().UnixNano() - s.retain().Nanoseconds()
	out := map[string]map[metaEntry]bool{}
	for _, tenant := range tenants {
		t := s.tenant(tenant, false)
		if t == nil {
			continue
		}
		t.mtx.Lock()
		for name, set := range t.families {
			if metric != "" && name != metric {
				continue
			}
			for e, seen := range set {
				if seen <= expired {
					continue
				}
				if out[name] == nil {
					out[name] = map[metaEntry]bool{}
				}
				out[name][e] = true
			}
		}
		t.mtx.Unlock()
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
	}
	res := make(map[string][]*metadatapb.Meta, len(names))
	for _, name := range names {
		metas := make([]*metadatapb.Meta, 0, len(out[name]))
		for e := range out[name] {
			metas = append(metas, &metadatapb.Meta{Type: metricTypeString(e.typ), Help: e.help, Unit: e.unit})
		}
		sort.Slice(metas, func(a, b int) bool {
			x, y := metas[a], metas[b]
			if x.Type != y.Type {
				return x.Type < y.Type
			}
			if x.Help != y.Help {
				return x.Help < y.Help
			}
			return x.Unit < y.Unit
		})
		res[name] = metas
	}
	return res
}

// metricTypeString is the type as Prometheus's /api/v1/metadata names it (model.MetricType).
func metricTypeString(t prompb.MetricMetadata_MetricType) string {
	switch t {
	case prompb.MetricMetadata_COUNTER:
		return string(model.MetricTypeCounter)
	case prompb.MetricMetadata_GAUGE:
		return string(model.MetricTypeGauge)
	case prompb.MetricMetadata_HISTOGRAM:
		return string(model.MetricTypeHistogram)
	case prompb.MetricMetadata_GAUGEHISTOGRAM:
		return string(model.MetricTypeGaugeHistogram)
	case prompb.MetricMetadata_SUMMARY:
		return string(model.MetricTypeSummary)
	case prompb.MetricMetadata_INFO:
		return string(model.MetricTypeInfo)
	case prompb.MetricMetadata_STATESET:
		return string(model.MetricTypeStateset)
	}
	return string(model.MetricTypeUnknown)
}

// IngesterMetadataServer is the ingester's thanos.Metadata service.
type IngesterMetadataServer struct {
	metadatapb.UnimplementedMetadataServer
	ing *Ingester
}

// MetadataServer returns the ingester's thanos.Metadata gRPC service.
func (i *Ingester) MetadataServer() *IngesterMetadataServer { return &IngesterMetadataServer{ing: i} }

// ReadMetadata returns the metric metadata this ingester holds for the tenants of ctx (put there by tenancy's
// gRPC interceptor, or by an in-process caller with tenancy.WithTenants): only req.Metric's when set, at most
// req.Limit families when it is positive. A request without a tenant is refused (Unauthenticated).
func (i *Ingester) ReadMetadata(ctx context.Context, req *metadatapb.MetricMetadataRequest) (*metadatapb.MetricMetadata, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, tenancy.ErrNoTenant.Error())
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	res := &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{}}
	for name, metas := range i.metadata.read(tenants, req.GetMetric(), int(req.GetLimit())) {
		res.Metadata[name] = &metadatapb.MetricMetadataEntry{Metas: metas}
	}
	return res, nil
}

// MetricMetadata implements thanos.Metadata/MetricMetadata: the tenant's metadata, in messages of at most
// metadataResponseBatch families.
func (s *IngesterMetadataServer) MetricMetadata(req *metadatapb.MetricMetadataRequest, srv metadatapb.Metadata_MetricMetadataServer) error {
	res, err := s.ing.ReadMetadata(srv.Context(), req)
	if err != nil {
		return err
	}
	batch := &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{}}
	flush := func() error {
		err := srv.Send(&metadatapb.MetricMetadataResponse{Result: &metadatapb.MetricMetadataResponse_Metadata{Metadata: batch}})
		batch = &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{}}
		return err
	}
	for name, e := range res.Metadata {
		batch.Metadata[name] = e
		if len(batch.Metadata) == metadataResponseBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(batch.Metadata) > 0 {
		return flush()
	}
	return nil
}
