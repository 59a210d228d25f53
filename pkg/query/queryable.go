// Package query is the read path: a Prometheus storage.Queryable over the StoreAPI fan-out (with replica
// deduplication), the PromQL engine around it and the Prometheus-compatible HTTP API.
package query

import (
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// RequestOptions are the per-request knobs of the Thanos query API.
type RequestOptions struct {
	// Dedup merges series that differ only in replica labels (Thanos's `dedup`, default true).
	Dedup bool
	// PartialResponse turns a failing store into a warning instead of an error (Thanos's `partial_response`).
	PartialResponse bool
	// ReplicaLabels, when set, replace the querier's replica labels for this request.
	ReplicaLabels []string
	// MaxSourceResolution is the coarsest downsampling resolution the stores may answer from (Thanos's
	// `max_source_resolution`; 0: raw data only).
	MaxSourceResolution time.Duration
	// AutoDownsampling chooses MaxSourceResolution from the query's step: step/5 (Thanos's `auto`).
	AutoDownsampling bool
}

// maxResolution is the request's max_resolution_window in milliseconds.
func (o RequestOptions) maxResolution(hints *storage.SelectHints) int64 {
	if o.AutoDownsampling {
		if hints == nil {
			return 0
		}
		return max(hints.Step/5, 0)
	}
	return o.MaxSourceResolution.Milliseconds()
}

type optionsKey struct{}

// WithRequestOptions attaches the request's options to ctx; the Queryable reads them in Select.
func WithRequestOptions(ctx context.Context, o RequestOptions) context.Context {
	return context.WithValue(ctx, optionsKey{}, o)
}

func requestOptions(ctx context.Context) RequestOptions {
	if o, ok := ctx.Value(optionsKey{}).(RequestOptions); ok {
		return o
	}
	return RequestOptions{Dedup: true, PartialResponse: true}
}

type queryableMetrics struct {
	fetchedSeries     prometheus.Histogram
	fetchedChunkBytes prometheus.Histogram
}

func newQueryableMetrics(reg prometheus.Registerer) *queryableMetrics {
	return &queryableMetrics{
		fetchedSeries: promauto.With(reg).NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_querier_fetched_series",
			Help:    "Series one Select fetched from the stores, before deduplication.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}),
		fetchedChunkBytes: promauto.With(reg).NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_querier_fetched_chunk_bytes",
			Help:    "Chunk bytes one Select fetched from the stores.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 12),
		}),
	}
}

// Queryable is a storage.SampleAndChunkQueryable over a StoreAPI proxy, for the request's tenant (from the
// context, set by the HTTP edge). Series are merged sample by sample across stores: identical label sets (the
// ingesters' RF copies, a block on two gateways) are chained with duplicates dropped, and series that differ
// only in replica labels are deduplicated with Thanos's penalty algorithm. The `tenant_id` label stores attach
// is dropped, so users get back the labels they wrote. A request naming several tenants (a federated read) reads
// each on its own and labels its series with __tenant_id__ (federation.go).
type Queryable struct {
	proxy         *store.Proxy
	overrides     *tenancy.Overrides
	replicaLabels []string
	metrics       *queryableMetrics
}

// NewQueryable returns a Queryable over the proxy's stores. replicaLabels are the default replica labels;
// a tenant's `query_replica_labels` override them.
func NewQueryable(proxy *store.Proxy, overrides *tenancy.Overrides, replicaLabels []string, reg prometheus.Registerer) *Queryable {
	return &Queryable{proxy: proxy, overrides: overrides, replicaLabels: replicaLabels, metrics: newQueryableMetrics(reg)}
}

// Querier implements storage.Queryable. One querier serves one query: the per-query limits count across its
// Selects.
func (q *Queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return &querier{q: q, mint: mint, maxt: maxt}, nil
}

// ChunkQuerier implements storage.ChunkQueryable; the querier does not serve remote read.
func (q *Queryable) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return nil, errors.New("remote read is not supported by the querier")
}

type querier struct {
	q          *Queryable
	mint, maxt int64

	fetchedSeries int
	fetchedBytes  int

	mtx      sync.Mutex
	byTenant map[string]*querier // a federated read's queriers, one per tenant (federation.go)
}

func (q *querier) tenants(ctx context.Context) ([]string, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok || len(tenants) == 0 {
		return nil, tenancy.ErrNoTenant
	}
	return tenants, nil
}

func (q *querier) replicaLabels(tenant string, o RequestOptions) []string {
	if len(o.ReplicaLabels) > 0 {
		return o.ReplicaLabels
	}
	if l := q.q.overrides.QueryReplicaLabels(tenant); len(l) > 0 {
		return l
	}
	return q.q.replicaLabels
}

func strategy(o RequestOptions) storepb.PartialResponseStrategy {
	if o.PartialResponse {
		return storepb.PartialResponseStrategy_WARN
	}
	return storepb.PartialResponseStrategy_ABORT
}

// Select implements storage.Querier.
func (q *querier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	tenants, err := q.tenants(ctx)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if len(tenants) > 1 {
		return q.selectFederated(ctx, tenants, hints, ms)
	}
	ms, countSamples := withoutCountMarker(ms)
	ms, ok := withoutTenantMatchers(ms)
	if !ok {
		return storage.EmptySeriesSet()
	}
	o := requestOptions(ctx)
	mint, maxt := q.mint, q.maxt
	req := &storepb.SeriesRequest{MinTime: mint, MaxTime: maxt, PartialResponseStrategy: strategy(o)}
	if hints != nil {
		req.MinTime, req.MaxTime = hints.Start, hints.End
		req.SkipChunks = hints.Func == "series"
		if hints.Limit > 0 {
			req.Limit = int64(hints.Limit)
		}
	}
	req.Matchers = store.MatchersToPB(ms...)
	// Downsampled chunks are read through the aggregate the query's function needs.
	var fn string
	if hints != nil {
		fn = hints.Func
	}
	aggrs := aggrsFromFunc(fn)
	if countSamples { // count_over_time, evaluated as sum_over_time of each sample's raw count
		aggrs = []storepb.Aggr{storepb.Aggr_COUNT}
	}
	if res := o.maxResolution(hints); res > 0 {
		req.MaxResolutionWindow = res
		req.Aggregates = aggrs
	}
	// Replica labels are dropped here, after the stores answered: without_replica_labels is not sent, since a
	// store that honoured it would hand back replicas already merged under one label set, and the penalty
	// algorithm below could no longer tell them apart.
	var drop []string
	if o.Dedup {
		drop = q.replicaLabels(tenants[0], o)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the sets are read to the end below; this stops the streams if that ends early
	sets, err := q.q.proxy.SeriesSets(ctx, tenants, req)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	entries, warnings, err := q.fetch(tenants[0], sets, drop)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if countSamples {
		countEachSample(entries)
	}
	return newMergedSeriesSet(entries, len(drop) > 0, req.SkipChunks, hints, aggrs, warnings)
}

// withoutTenantMatchers handles matchers on tenant_id as on a label the series do not have (users never see it):
// one that matches the empty value is dropped, one that does not means nothing matches (ok false).
func withoutTenantMatchers(ms []*labels.Matcher) ([]*labels.Matcher, bool) {
	if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return m.Name == tenancy.TenantIDLabel }) {
		return ms, true
	}
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if m.Name != tenancy.TenantIDLabel {
			out = append(out, m)
			continue
		}
		if !m.Matches("") {
			return nil, false
		}
	}
	return out, true
}

// fetchedSeries is one store's series with the labels the user sees (tenant_id and, with dedup, replica labels
// dropped) next to the full ones.
type fetchedSeries struct {
	lset  labels.Labels // what the user sees
	full  labels.Labels // as the store sent it, less tenant_id: replicas differ here
	metas []chunks.Meta
}

// fetch reads every store's stream to the end, applying the tenant's per-query limits.
func (q *querier) fetch(tenant string, sets []storage.ChunkSeriesSet, replicaLabels []string) ([]fetchedSeries, annotations.Annotations, error) {
	var (
		out         []fetchedSeries
		warnings    annotations.Annotations
		maxSeries   = q.q.overrides.MaxFetchedSeriesPerQuery(tenant)
		maxBytes    = q.q.overrides.MaxFetchedChunkBytesPerQuery(tenant)
		bytesBefore = q.fetchedBytes
	)
	b := labels.NewBuilder(labels.EmptyLabels())
	for _, set := range sets {
		for set.Next() {
			cs := set.At()
			b.Reset(cs.Labels())
			b.Del(tenancy.TenantIDLabel)
			full := b.Labels()
			lset := full
			if len(replicaLabels) > 0 {
				b.Del(replicaLabels...)
				lset = b.Labels()
			}
			var metas []chunks.Meta
			it := cs.Iterator(nil)
			for it.Next() {
				m := it.At()
				if a, ok := m.Chunk.(*store.AggrChunk); ok {
					q.fetchedBytes += a.Size()
				} else {
					q.fetchedBytes += len(m.Chunk.Bytes())
				}
				metas = append(metas, m)
			}
			if err := it.Err(); err != nil {
				return nil, nil, err
			}
			if maxBytes > 0 && q.fetchedBytes > maxBytes {
				return nil, nil, tenancy.NewMaxChunkBytesPerQueryError(maxBytes)
			}
			out = append(out, fetchedSeries{lset: lset, full: full, metas: metas})
		}
		if err := set.Err(); err != nil {
			return nil, nil, storeError(err)
		}
		warnings.Merge(set.Warnings())
	}
	q.q.metrics.fetchedSeries.Observe(float64(len(out)))
	q.q.metrics.fetchedChunkBytes.Observe(float64(q.fetchedBytes - bytesBefore))
	// Series count once however many stores sent them; the limit is on distinct series (as Mimir's).
	sort.SliceStable(out, func(i, j int) bool {
		if c := labels.Compare(out[i].lset, out[j].lset); c != 0 {
			return c < 0
		}
		return labels.Compare(out[i].full, out[j].full) < 0
	})
	distinct := 0
	for i := range out {
		if i == 0 || !labels.Equal(out[i].lset, out[i-1].lset) {
			distinct++
		}
	}
	q.fetchedSeries += distinct
	if maxSeries > 0 && q.fetchedSeries > maxSeries {
		return nil, nil, tenancy.NewMaxSeriesPerQueryError(maxSeries)
	}
	return out, warnings, nil
}

// storeError keeps a store failure a server error (5xx) in the HTTP API rather than a bad query (422).
func storeError(err error) error {
	if s, ok := status.FromError(err); ok && s.Code() == codes.InvalidArgument {
		return err
	}
	return &StorageError{Err: err}
}

// StorageError is a failure of the stores behind a query (503 in the HTTP API).
type StorageError struct{ Err error }

func (e *StorageError) Error() string { return e.Err.Error() }
func (e *StorageError) Unwrap() error { return e.Err }

// LabelValues implements storage.LabelQuerier over the stores' LabelValues.
func (q *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	tenants, err := q.tenants(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(tenants) > 1 {
		return q.labelValuesFederated(ctx, tenants, name, hints, ms)
	}
	if name == tenancy.TenantIDLabel {
		return nil, nil, nil
	}
	ms, ok := withoutTenantMatchers(ms)
	if !ok {
		return nil, nil, nil
	}
	o := requestOptions(ctx)
	req := &storepb.LabelValuesRequest{Label: name, Start: q.mint, End: q.maxt, Matchers: store.MatchersToPB(ms...), PartialResponseStrategy: strategy(o)}
	if hints != nil && hints.Limit > 0 {
		req.Limit = int64(hints.Limit)
	}
	resp, err := q.q.proxy.LabelValues(ctx, req)
	if err != nil {
		return nil, nil, storeError(err)
	}
	return resp.GetValues(), warningsOf(resp.GetWarnings()), nil
}

// LabelNames implements storage.LabelQuerier over the stores' LabelNames, without tenant_id.
func (q *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	tenants, err := q.tenants(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(tenants) > 1 {
		return q.labelNamesFederated(ctx, tenants, hints, ms)
	}
	ms, ok := withoutTenantMatchers(ms)
	if !ok {
		return nil, nil, nil
	}
	o := requestOptions(ctx)
	req := &storepb.LabelNamesRequest{Start: q.mint, End: q.maxt, Matchers: store.MatchersToPB(ms...), PartialResponseStrategy: strategy(o)}
	if hints != nil && hints.Limit > 0 {
		req.Limit = int64(hints.Limit) + 1 // tenant_id may be one of them
	}
	resp, err := q.q.proxy.LabelNames(ctx, req)
	if err != nil {
		return nil, nil, storeError(err)
	}
	names := slices.DeleteFunc(resp.GetNames(), func(n string) bool { return n == tenancy.TenantIDLabel })
	if hints != nil && hints.Limit > 0 && len(names) > hints.Limit {
		names = names[:hints.Limit]
	}
	return names, warningsOf(resp.GetWarnings()), nil
}

func warningsOf(ws []string) annotations.Annotations {
	var out annotations.Annotations
	for _, w := range ws {
		out.Add(errors.New(w))
	}
	return out
}

func (q *querier) Close() error { return nil }

// mergedSeriesSet serves the fetched series, sorted by their user-visible labels, one series per label set:
// copies of one full label set are chained (duplicate samples dropped); replicas (same labels once replica
// labels are dropped, different before) are deduplicated with the penalty algorithm.
type mergedSeriesSet struct {
	entries  []fetchedSeries
	dedup    bool
	noChunks bool
	mint     int64
	maxt     int64
	aggrs    []storepb.Aggr // read of downsampled chunks
	cur      storage.Series
	warnings annotations.Annotations
}

func newMergedSeriesSet(entries []fetchedSeries, dedup, noChunks bool, hints *storage.SelectHints, aggrs []storepb.Aggr, warnings annotations.Annotations) *mergedSeriesSet {
	s := &mergedSeriesSet{entries: entries, dedup: dedup, noChunks: noChunks, mint: math.MinInt64, maxt: math.MaxInt64, aggrs: aggrs, warnings: warnings}
	if hints != nil && !hints.DisableTrimming {
		s.mint, s.maxt = hints.Start, hints.End
	}
	return s
}

func (s *mergedSeriesSet) Next() bool {
	if len(s.entries) == 0 {
		return false
	}
	n := 1
	for n < len(s.entries) && labels.Equal(s.entries[n].lset, s.entries[0].lset) {
		n++
	}
	group := s.entries[:n]
	s.entries = s.entries[n:]
	s.cur = &mergedSeries{lset: group[0].lset, group: group, noChunks: s.noChunks, mint: s.mint, maxt: s.maxt, aggrs: s.aggrs}
	return true
}

func (s *mergedSeriesSet) At() storage.Series                { return s.cur }
func (s *mergedSeriesSet) Err() error                        { return nil }
func (s *mergedSeriesSet) Warnings() annotations.Annotations { return s.warnings }

type mergedSeries struct {
	lset     labels.Labels
	group    []fetchedSeries // sorted by full labels
	noChunks bool
	mint     int64
	maxt     int64
	aggrs    []storepb.Aggr
}

func (s *mergedSeries) Labels() labels.Labels { return s.lset }

func (s *mergedSeries) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	if s.noChunks {
		return chunkenc.NewNopIterator()
	}
	// Replicas: runs of one full label set. Each run's copies are chained.
	var replicas []chunkenc.Iterator
	for start := 0; start < len(s.group); {
		end := start + 1
		for end < len(s.group) && labels.Equal(s.group[end].full, s.group[start].full) {
			end++
		}
		copies := s.group[start:end]
		if hasAggrChunks(copies) {
			replicas = append(replicas, downsampledIterator(copies, s.aggrs, s.mint, s.maxt))
		} else {
			replicas = append(replicas, copiesIterator(copies, s.mint, s.maxt))
		}
		start = end
	}
	if len(replicas) == 1 {
		return replicas[0]
	}
	return newDedupIterator(replicas)
}

// copiesIterator iterates the samples of one label set sent by one or several stores. A store's series may
// hold chunks that overlap in time — a store-gateway sends the chunks of every block that has the series, and
// the RF replicas' blocks of one range overlap, each possibly missing a sample another has — so each copy is
// split into lanes of chunks that do not overlap, and the lanes are chain-merged (duplicate timestamps once).
func copiesIterator(copies []fetchedSeries, mint, maxt int64) chunkenc.Iterator {
	if len(copies) == 1 {
		if lanes := nonOverlappingLanes(copies[0].metas); len(lanes) == 1 {
			return newChunksIterator(lanes[0], mint, maxt)
		}
	}
	var its []chunkenc.Iterator
	for _, c := range copies {
		for _, lane := range nonOverlappingLanes(c.metas) {
			its = append(its, newChunksIterator(lane, mint, maxt))
		}
	}
	return storage.ChainSampleIteratorFromIterators(nil, its)
}

// nonOverlappingLanes splits chunks into lanes, each a run of chunks in time order that do not overlap (the
// first lane that can take a chunk gets it). Chunks already in order without overlap are one lane: metas itself.
func nonOverlappingLanes(metas []chunks.Meta) [][]chunks.Meta {
	overlap := false
	for k := 1; k < len(metas); k++ {
		if metas[k].MinTime <= metas[k-1].MaxTime {
			overlap = true
			break
		}
	}
	if !overlap {
		return [][]chunks.Meta{metas}
	}
	var lanes [][]chunks.Meta
next:
	for _, m := range metas {
		for l, lane := range lanes {
			if lane[len(lane)-1].MaxTime < m.MinTime {
				lanes[l] = append(lane, m)
				continue next
			}
		}
		lanes = append(lanes, []chunks.Meta{m})
	}
	return lanes
}
