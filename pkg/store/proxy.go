package store

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

type proxyMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newProxyMetrics(reg prometheus.Registerer) *proxyMetrics {
	m := &proxyMetrics{
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_proxy_store_requests_total",
			Help: "StoreAPI requests the proxy sent to its stores, by method and outcome (success, error, timeout).",
		}, []string{"method", "outcome"}),
		duration: promauto.With(reg).NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "strata_proxy_store_request_duration_seconds",
			Help:                        "Time from sending a StoreAPI request to one store to its last response, by method.",
			Buckets:                     prometheus.DefBuckets,
			NativeHistogramBucketFactor: 1.1,
		}, []string{"method"}),
	}
	for _, method := range []string{"series", "label_names", "label_values"} {
		for _, outcome := range []string{"success", "error", "timeout"} {
			m.requests.WithLabelValues(method, outcome)
		}
	}
	return m
}

// Proxy fans a StoreAPI request out to the stores that may hold matching data and merges their answers.
// It implements thanos.Store and thanos.info.Info itself, so a Strata querier can be the endpoint of another
// querier (Thanos-style tiering).
//
// Series: each store's stream is sorted by labels; the proxy merges them (k-way, Prometheus's merge) into one
// sorted stream in which identical label sets from several stores become one series whose chunks are merged,
// duplicate samples dropped (Prometheus's compacting chunk merger: chunks that do not overlap pass through
// unchanged, overlapping ones are re-encoded). A store that fails or exceeds the per-store timeout becomes a
// warning with partial_response_strategy WARN (the default) and fails the request with ABORT.
type Proxy struct {
	storepb.UnimplementedStoreServer
	infopb.UnimplementedInfoServer

	logger   log.Logger
	selector StoreSelector
	timeout  time.Duration
	metrics  *proxyMetrics
}

// StoreSelector returns the stores that may answer a request of the tenants for data in [minT, maxT]: a querier
// binds endpoints to tenants and asks ingesters only for recent data. A nil tenants slice asks for every store
// (Info).
type StoreSelector func(tenants []string, minT, maxT int64) []StoreClient

// NewProxy returns a proxy over the stores the function returns at each request. storeTimeout bounds each
// store's whole answer (0: only the caller's deadline).
func NewProxy(stores func() []StoreClient, storeTimeout time.Duration, logger log.Logger, reg prometheus.Registerer) *Proxy {
	return NewSelectingProxy(func([]string, int64, int64) []StoreClient { return stores() }, storeTimeout, logger, reg)
}

// NewSelectingProxy returns a proxy that asks the selector which stores may answer each request; the proxy
// further skips those whose Info rules the request out.
func NewSelectingProxy(selector StoreSelector, storeTimeout time.Duration, logger log.Logger, reg prometheus.Registerer) *Proxy {
	return &Proxy{logger: logger, selector: selector, timeout: storeTimeout, metrics: newProxyMetrics(reg)}
}

// ReplicaStore is a store holding one replica of data that other stores of its group hold too (an ingester: every
// series is on RF of them). A request absorbs up to MaxFailures failures in the group silently — no warning, no
// abort — as Mimir's quorum reads do; beyond that they count as usual.
type ReplicaStore interface {
	ReplicaGroup() (name string, maxFailures int)
}

// ZonedReplicaStore is a ReplicaStore in an availability zone. With zone-aware replication every series is in RF
// distinct zones, so a request absorbs the failures of any number of a group's stores within up to
// maxUnavailableZones zones (as Mimir's quorum reads), on top of the group's maxFailures. An empty zone: the store
// only counts against maxFailures.
type ZonedReplicaStore interface {
	ReplicaStore
	ReplicaZone() (zone string, maxUnavailableZones int)
}

// failureBudget counts one request's store failures per replica group.
type failureBudget struct {
	mtx    sync.Mutex
	failed map[string]int
	zones  map[string]map[string]bool // failed zones per group
}

// absorb reports whether the store's failure is within its group's budget (and spends it).
func (b *failureBudget) absorb(s StoreClient) bool {
	rs, ok := s.(ReplicaStore)
	if !ok {
		return false
	}
	group, maxFailures := rs.ReplicaGroup()
	b.mtx.Lock()
	defer b.mtx.Unlock()
	if b.failed == nil {
		b.failed, b.zones = map[string]int{}, map[string]map[string]bool{}
	}
	if zs, ok := s.(ZonedReplicaStore); ok {
		if zone, maxZones := zs.ReplicaZone(); zone != "" {
			failed := b.zones[group]
			if failed[zone] {
				return true
			}
			if len(failed) < maxZones {
				if failed == nil {
					failed = map[string]bool{}
					b.zones[group] = failed
				}
				failed[zone] = true
				return true
			}
		}
	}
	if b.failed[group] >= maxFailures {
		return false
	}
	b.failed[group]++
	return true
}

// abort reports whether a request asked for failures to fail it rather than to become warnings.
func abort(strategy storepb.PartialResponseStrategy, disabled bool) bool {
	return disabled || strategy == storepb.PartialResponseStrategy_ABORT
}

// selectStores returns the stores whose time range overlaps [minT, maxT] and whose label sets do not rule the
// matchers out.
func (p *Proxy) selectStores(tenants []string, minT, maxT int64, ms []*labels.Matcher) []StoreClient {
	var out []StoreClient
	for _, s := range p.selector(tenants, minT, maxT) {
		sMin, sMax := s.TimeRange()
		if sMin > maxT || sMax < minT {
			continue
		}
		if !labelSetsMatch(ms, s.LabelSets()) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// labelSetsMatch is true when no label sets are known, or when at least one of them agrees with every matcher
// that names one of its labels.
func labelSetsMatch(ms []*labels.Matcher, lsets []labels.Labels) bool {
	if len(lsets) == 0 {
		return true
	}
	for _, ls := range lsets {
		if ok, _ := matchExternalLabels(ms, ls); ok {
			return true
		}
	}
	return false
}

func (p *Proxy) storeContext(ctx context.Context, tenants []string) (context.Context, context.CancelFunc) {
	ctx = tenancy.OutgoingContext(ctx, tenants...)
	if p.timeout > 0 {
		return context.WithTimeout(ctx, p.timeout)
	}
	return context.WithCancel(ctx)
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "success"
	case status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// Series implements thanos.Store.
func (p *Proxy) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	ctx := srv.Context()
	tenants, err := requestTenants(ctx)
	if err != nil {
		return err
	}
	ms, err := MatchersFromPB(r.GetMatchers())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops every store stream still running when the merge ends early
	sets := p.seriesSets(ctx, tenants, r, ms)
	sender := newSeriesSender(srv, r.GetResponseBatchSize())
	merged := storage.NewMergeChunkSeriesSet(sets, int(r.GetLimit()), storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge))

	sent := int64(0)
	for merged.Next() {
		if r.GetLimit() > 0 && sent >= r.GetLimit() {
			break
		}
		series, err := seriesToPB(merged.At(), r.GetSkipChunks())
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := sender.Series(series); err != nil {
			return err
		}
		sent++
	}
	if err := merged.Err(); err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Unavailable, err.Error())
	}
	for _, w := range merged.Warnings() {
		if err := sender.Warning(w.Error()); err != nil {
			return err
		}
	}
	return sender.Flush()
}

// SeriesSets starts the request's Series call on every store that may answer it and returns their streams, one
// sorted set per store, for a caller that merges them itself (the querier merges samples, not chunks). Cancel
// ctx to stop the streams still running. Store failures follow the request's partial-response strategy.
func (p *Proxy) SeriesSets(ctx context.Context, tenants []string, r *storepb.SeriesRequest) ([]storage.ChunkSeriesSet, error) {
	ms, err := MatchersFromPB(r.GetMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return p.seriesSets(ctx, tenants, r, ms), nil
}

func (p *Proxy) seriesSets(ctx context.Context, tenants []string, r *storepb.SeriesRequest, ms []*labels.Matcher) []storage.ChunkSeriesSet {
	stores := p.selectStores(tenants, r.GetMinTime(), r.GetMaxTime(), ms)
	strict := abort(r.GetPartialResponseStrategy(), r.GetPartialResponseDisabled())
	storeReq := proto.Clone(r).(*storepb.SeriesRequest)
	storeReq.ResponseBatchSize = DefaultResponseBatchSize
	sets := make([]storage.ChunkSeriesSet, 0, len(stores))
	budget := &failureBudget{}
	for _, s := range stores {
		sets = append(sets, p.openSeries(ctx, s, storeReq, tenants, strict, budget))
	}
	return sets
}

// openSeries starts one store's Series stream in the background and returns it as a ChunkSeriesSet. Responses
// are read ahead into a small buffer so that slow stores are waited for in parallel, not one after the other.
func (p *Proxy) openSeries(ctx context.Context, s StoreClient, r *storepb.SeriesRequest, tenants []string, strict bool, budget *failureBudget) storage.ChunkSeriesSet {
	set := &streamSeriesSet{store: s.String(), strict: strict, ch: make(chan streamItem, 64)}
	go func() {
		defer close(set.ch)
		start := time.Now()
		sctx, cancel := p.storeContext(ctx, tenants)
		defer cancel()
		err := func() error {
			stream, err := s.Series(sctx, r)
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				select {
				case set.ch <- streamItem{resp: resp}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}()
		p.metrics.requests.WithLabelValues("series", outcome(err)).Inc()
		p.metrics.duration.WithLabelValues("series").Observe(time.Since(start).Seconds())
		if err != nil && ctx.Err() == nil {
			level.Debug(p.logger).Log("msg", "store failed", "store", s.String(), "err", err)
			if budget.absorb(s) {
				return // its replicas answer for it
			}
			select {
			case set.ch <- streamItem{err: err}:
			case <-ctx.Done():
			}
		}
	}()
	return set
}

type streamItem struct {
	resp *storepb.SeriesResponse
	err  error
}

// streamSeriesSet is one store's Series stream as a storage.ChunkSeriesSet. With strict (ABORT) a store error
// is the set's error and fails the merge; otherwise it becomes a warning and the set just ends.
type streamSeriesSet struct {
	store    string
	strict   bool
	ch       chan streamItem
	batch    []*storepb.Series // the rest of a SeriesBatch being read
	cur      storage.ChunkSeries
	err      error
	warnings annotations.Annotations
}

func (s *streamSeriesSet) setCurrent(series *storepb.Series) bool {
	cs, err := seriesFromPB(series)
	if err != nil {
		s.err = status.Errorf(codes.Internal, "store %s: %v", s.store, err)
		return false
	}
	s.cur = cs
	return true
}

func (s *streamSeriesSet) Next() bool {
	if s.err != nil {
		return false
	}
	if len(s.batch) > 0 {
		next := s.batch[0]
		s.batch = s.batch[1:]
		return s.setCurrent(next)
	}
	for item := range s.ch {
		if item.err != nil {
			err := errors.Wrapf(item.err, "store %s", s.store)
			if s.strict {
				s.err = status.Error(status.Code(item.err), err.Error())
			} else {
				s.warnings.Add(err)
			}
			return false
		}
		switch res := item.resp.GetResult().(type) {
		case *storepb.SeriesResponse_Warning:
			s.warnings.Add(errors.Newf("store %s: %s", s.store, res.Warning))
		case *storepb.SeriesResponse_Series:
			return s.setCurrent(res.Series)
		case *storepb.SeriesResponse_Batch:
			if series := res.Batch.GetSeries(); len(series) > 0 {
				s.batch = series[1:]
				return s.setCurrent(series[0])
			}
		}
	}
	return false
}

func (s *streamSeriesSet) At() storage.ChunkSeries           { return s.cur }
func (s *streamSeriesSet) Err() error                        { return s.err }
func (s *streamSeriesSet) Warnings() annotations.Annotations { return s.warnings }

// seriesFromPB decodes a wire series into a ChunkSeries over its chunks (raw, or *AggrChunk for aggregates).
func seriesFromPB(s *storepb.Series) (storage.ChunkSeries, error) {
	lset := LabelsFromPB(s.GetLabels())
	metas := make([]chunks.Meta, 0, len(s.GetChunks()))
	for _, c := range s.GetChunks() {
		raw := c.GetRaw()
		if raw == nil {
			// A downsampled chunk: its aggregates, for a reader that knows them (the querier).
			a, err := aggrChunkFromPB(c)
			if err != nil {
				return nil, errors.Wrapf(err, "series %s", lset)
			}
			if a != nil {
				metas = append(metas, chunks.Meta{MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime(), Chunk: a})
			}
			continue
		}
		enc, ok := EncodingFromPB(raw.GetType())
		if !ok {
			return nil, errors.Newf("series %s: unknown chunk encoding %d", lset, raw.GetType())
		}
		chk, err := chunkenc.FromData(enc, raw.GetData())
		if err != nil {
			return nil, errors.Wrapf(err, "series %s: decode chunk", lset)
		}
		metas = append(metas, chunks.Meta{MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime(), Chunk: chk})
	}
	// Stores send a series' chunks by time; a merge needs them so.
	sort.SliceStable(metas, func(i, j int) bool { return metas[i].MinTime < metas[j].MinTime })
	return &storage.ChunkSeriesEntry{Lset: lset, ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
		return storage.NewListChunkSeriesIterator(metas...)
	}}, nil
}

// seriesToPB encodes a ChunkSeries for the wire; chunk bytes are passed as they are.
func seriesToPB(cs storage.ChunkSeries, skipChunks bool) (*storepb.Series, error) {
	out := &storepb.Series{Labels: LabelsToPB(cs.Labels())}
	if skipChunks {
		return out, nil
	}
	it := cs.Iterator(nil)
	for it.Next() {
		m := it.At()
		if a, ok := m.Chunk.(*AggrChunk); ok {
			c, err := a.toPB(m.MinTime, m.MaxTime)
			if err != nil {
				return nil, errors.Wrapf(err, "series %s", cs.Labels())
			}
			out.Chunks = append(out.Chunks, c)
			continue
		}
		enc, ok := EncodingToPB(m.Chunk.Encoding())
		if !ok {
			return nil, errors.Newf("series %s: chunk encoding %s has no StoreAPI name", cs.Labels(), m.Chunk.Encoding())
		}
		out.Chunks = append(out.Chunks, &storepb.AggrChunk{MinTime: m.MinTime, MaxTime: m.MaxTime, Raw: &storepb.Chunk{Type: enc, Data: m.Chunk.Bytes()}})
	}
	return out, errors.Wrapf(it.Err(), "merge chunks of %s", cs.Labels())
}

// fanOut calls f on every store concurrently and collects the string slices they return, failing or warning
// on store errors as the strategy says.
func (p *Proxy) fanOut(ctx context.Context, method string, stores []StoreClient, tenants []string, strict bool, f func(context.Context, StoreClient) ([]string, []string, error)) ([]string, []string, error) {
	budget := &failureBudget{}
	var (
		mtx      sync.Mutex
		wg       sync.WaitGroup
		all      []string
		warnings []string
		firstErr error
	)
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			sctx, cancel := p.storeContext(ctx, tenants)
			defer cancel()
			vals, warns, err := f(sctx, s)
			p.metrics.requests.WithLabelValues(method, outcome(err)).Inc()
			p.metrics.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
			mtx.Lock()
			defer mtx.Unlock()
			for _, w := range warns {
				warnings = append(warnings, fmt.Sprintf("store %s: %s", s, w))
			}
			if err != nil && budget.absorb(s) {
				return // its replicas answer for it
			}
			if err != nil {
				if strict && firstErr == nil {
					firstErr = status.Error(status.Code(err), errors.Wrapf(err, "store %s", s).Error())
				}
				warnings = append(warnings, errors.Wrapf(err, "store %s", s).Error())
				return
			}
			all = append(all, vals...)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return all, warnings, nil
}

// labelFanOut does what LabelNames and LabelValues share: the request's tenants and matchers, the stores whose
// time range and labels may answer, and the fan-out of f to them.
func (p *Proxy) labelFanOut(ctx context.Context, method string, matchers []*storepb.LabelMatcher, start, end int64, strict bool, f func(context.Context, StoreClient) ([]string, []string, error)) ([]string, []string, error) {
	tenants, err := requestTenants(ctx)
	if err != nil {
		return nil, nil, err
	}
	ms, err := MatchersFromPB(matchers)
	if err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if end == 0 {
		end = math.MaxInt64
	}
	return p.fanOut(ctx, method, p.selectStores(tenants, start, end, ms), tenants, strict, f)
}

// LabelNames implements thanos.Store: the union of the stores' answers.
func (p *Proxy) LabelNames(ctx context.Context, r *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	names, warnings, err := p.labelFanOut(ctx, "label_names", r.GetMatchers(), r.GetStart(), r.GetEnd(), abort(r.GetPartialResponseStrategy(), r.GetPartialResponseDisabled()),
		func(ctx context.Context, s StoreClient) ([]string, []string, error) {
			resp, err := s.LabelNames(ctx, r)
			return resp.GetNames(), resp.GetWarnings(), err
		})
	if err != nil {
		return nil, err
	}
	return &storepb.LabelNamesResponse{Names: sortedUnique(names, r.GetLimit()), Warnings: warnings}, nil
}

// LabelValues implements thanos.Store: the union of the stores' answers.
func (p *Proxy) LabelValues(ctx context.Context, r *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if r.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	values, warnings, err := p.labelFanOut(ctx, "label_values", r.GetMatchers(), r.GetStart(), r.GetEnd(), abort(r.GetPartialResponseStrategy(), r.GetPartialResponseDisabled()),
		func(ctx context.Context, s StoreClient) ([]string, []string, error) {
			resp, err := s.LabelValues(ctx, r)
			return resp.GetValues(), resp.GetWarnings(), err
		})
	if err != nil {
		return nil, err
	}
	return &storepb.LabelValuesResponse{Values: sortedUnique(values, r.GetLimit()), Warnings: warnings}, nil
}

// Info implements thanos.info.Info: the union of the stores' label sets and time ranges. A store whose label
// sets are unknown (none: the store-gateways, an endpoint before its first Info) makes them unknown for the
// union too: naming only the others' would let a querier rule out data of that store.
func (p *Proxy) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	resp := &infopb.InfoResponse{ComponentType: ComponentQuery, Store: &infopb.StoreInfo{MinTime: math.MaxInt64, MaxTime: math.MinInt64}}
	seen := map[string]bool{}
	var lsets []labels.Labels
	unknownLabels := false
	for _, s := range p.selector(nil, math.MinInt64, math.MaxInt64) {
		minT, maxT := s.TimeRange()
		resp.Store.MinTime = min(resp.Store.MinTime, minT)
		resp.Store.MaxTime = max(resp.Store.MaxTime, maxT)
		if len(s.LabelSets()) == 0 {
			unknownLabels = true
		}
		for _, ls := range s.LabelSets() {
			if k := ls.String(); !seen[k] {
				seen[k] = true
				lsets = append(lsets, ls)
			}
		}
	}
	if unknownLabels {
		return resp, nil
	}
	slices.SortFunc(lsets, labels.Compare)
	for _, ls := range lsets {
		resp.LabelSets = append(resp.LabelSets, &labelpb.ZLabelSet{Labels: LabelsToPB(ls)})
	}
	return resp, nil
}
