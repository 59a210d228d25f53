package store

import (
	"context"
	"math"
	"sort"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Component types reported by Info, as Thanos names them.
const (
	ComponentStore   = "store"
	ComponentReceive = "receive"
	ComponentSidecar = "sidecar"
	ComponentQuery   = "query"
)

// TenantDB is the storage of one tenant a TSDBStore reads: a *tsdb.DB, a block directory, a remote-read client.
type TenantDB interface {
	storage.ChunkQueryable
	// StartTime returns the oldest timestamp the storage holds (math.MaxInt64 when it is empty).
	StartTime() (int64, error)
}

// TenantDBs gives a TSDBStore the storage of each tenant. Implementations must be safe for concurrent use.
type TenantDBs interface {
	// DB returns the storage of a tenant, or nil when this store holds nothing of that tenant.
	DB(tenant string) TenantDB
	// Tenants lists the tenants this store holds data of.
	Tenants() []string
}

type singleTenant struct {
	tenant string
	db     TenantDB
}

// SingleTenant is the TenantDBs of a store that holds one tenant's data (a sidecar, a block directory).
func SingleTenant(tenant string, db TenantDB) TenantDBs { return singleTenant{tenant: tenant, db: db} }

func (s singleTenant) DB(tenant string) TenantDB {
	if tenant == s.tenant {
		return s.db
	}
	return nil
}
func (s singleTenant) Tenants() []string { return []string{s.tenant} }

// TSDBStore serves Prometheus storage as a Thanos StoreAPI (thanos.Store and thanos.info.Info).
//
// Tenancy: a request is answered only from the storage of the tenants its context names (set at the gRPC edge
// by tenancy's interceptors, or by an in-process caller with tenancy.WithTenants); no tenant, no data. Every
// series carries tenant_id=<tenant> plus the configured external labels, as Thanos receive does.
//
// Series are sent sorted by their full label set (external labels included), each once; chunks are the
// storage's own bytes (XOR or native histogram encodings), copied but never re-encoded, and may reach outside
// the requested time range, as in Thanos.
type TSDBStore struct {
	storepb.UnimplementedStoreServer
	infopb.UnimplementedInfoServer

	logger    log.Logger
	dbs       TenantDBs
	extLabels func() labels.Labels
	component string
}

// TSDBStoreOption configures a TSDBStore.
type TSDBStoreOption func(*TSDBStore)

// WithExternalLabels adds labels to every series besides tenant_id (e.g. an ingester's configured labels).
func WithExternalLabels(l labels.Labels) TSDBStoreOption {
	return func(s *TSDBStore) { s.extLabels = func() labels.Labels { return l } }
}

// WithExternalLabelsFunc is WithExternalLabels for labels that may change (a sidecar re-reads its Prometheus's):
// f is called once per request and must be safe for concurrent use.
func WithExternalLabelsFunc(f func() labels.Labels) TSDBStoreOption {
	return func(s *TSDBStore) { s.extLabels = f }
}

// WithComponentType sets the component type Info reports (default "store").
func WithComponentType(c string) TSDBStoreOption { return func(s *TSDBStore) { s.component = c } }

// NewTSDBStore returns a store over dbs.
func NewTSDBStore(dbs TenantDBs, logger log.Logger, opts ...TSDBStoreOption) *TSDBStore {
	s := &TSDBStore{logger: logger, dbs: dbs, component: ComponentStore, extLabels: labels.EmptyLabels}
	for _, o := range opts {
		o(s)
	}
	return s
}

// externalLabels returns the external labels of a tenant's series: tenant_id plus the configured ones.
func (s *TSDBStore) externalLabels(tenant string) labels.Labels {
	b := labels.NewBuilder(s.extLabels())
	b.Set(tenancy.TenantIDLabel, tenant)
	return b.Labels()
}

// requestTenants returns the tenants of a request; a request that passed no tenancy edge gets an error.
func requestTenants(ctx context.Context) ([]string, error) {
	ts, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, tenancy.ErrNoTenant.Error())
	}
	return ts, nil
}

// forEachTenant calls f for each tenant of the request this store holds data of and whose external labels the
// matchers do not rule out, with the matchers left for its TSDB.
func (s *TSDBStore) forEachTenant(ctx context.Context, pbMatchers []*storepb.LabelMatcher, f func(tenant string, db TenantDB, ext labels.Labels, rest []*labels.Matcher) error) error {
	tenants, err := requestTenants(ctx)
	if err != nil {
		return err
	}
	matchers, err := MatchersFromPB(pbMatchers)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	for _, tenant := range tenants {
		db := s.dbs.DB(tenant)
		if db == nil {
			continue
		}
		ext := s.externalLabels(tenant)
		ok, rest := matchExternalLabels(matchers, ext)
		if !ok {
			continue
		}
		if err := f(tenant, db, ext, rest); err != nil {
			return err
		}
	}
	return nil
}

// Series implements thanos.Store.
func (s *TSDBStore) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	ctx := srv.Context()
	var (
		out      []*storepb.Series
		warnings []string
	)
	err := s.forEachTenant(ctx, r.GetMatchers(), func(_ string, db TenantDB, ext labels.Labels, rest []*labels.Matcher) error {
		if len(rest) == 0 {
			return status.Error(codes.InvalidArgument, "no matchers specified (excluding external labels)")
		}
		series, warns, err := s.selectTenant(ctx, db, r, rest, ext)
		out = append(out, series...)
		warnings = append(warnings, warns...)
		return err
	})
	if err != nil {
		return err
	}

	// External labels can change the order of label sets (they are inserted, not appended), so the store sorts
	// what it sends, as Thanos's does.
	sort.Slice(out, func(i, j int) bool { return compareLabelsPB(out[i].Labels, out[j].Labels) < 0 })
	if r.GetLimit() > 0 && int64(len(out)) > r.GetLimit() {
		out = out[:r.GetLimit()]
	}
	sender := newSeriesSender(srv, r.GetResponseBatchSize())
	for _, w := range warnings {
		if err := sender.Warning(w); err != nil {
			return err
		}
	}
	for _, series := range out {
		if err := sender.Series(series); err != nil {
			return err
		}
	}
	return sender.Flush()
}

// selectTenant reads the series of one tenant's storage.
func (s *TSDBStore) selectTenant(ctx context.Context, db TenantDB, r *storepb.SeriesRequest, ms []*labels.Matcher, ext labels.Labels) ([]*storepb.Series, []string, error) {
	q, err := db.ChunkQuerier(r.GetMinTime(), r.GetMaxTime())
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "open chunk querier: %v", err)
	}
	defer func() {
		if err := q.Close(); err != nil {
			level.Warn(s.logger).Log("msg", "closing chunk querier", "err", err)
		}
	}()
	hints := &storage.SelectHints{Start: r.GetMinTime(), End: r.GetMaxTime(), Limit: int(r.GetLimit()), DisableTrimming: true}
	if r.GetSkipChunks() {
		hints.Func = "series" // tells the TSDB it need not read chunks
	}
	set := q.Select(ctx, true, hints, ms...)

	var (
		out   []*storepb.Series
		metas []chunks.Meta
		it    chunks.Iterator
	)
	for set.Next() {
		cs := set.At()
		series := &storepb.Series{Labels: labelsWithExternalToPB(cs.Labels(), ext)}
		if !r.GetSkipChunks() {
			metas = metas[:0]
			size := 0
			it = cs.Iterator(it)
			for it.Next() {
				m := it.At()
				metas = append(metas, m)
				size += len(m.Chunk.Bytes())
			}
			if err := it.Err(); err != nil {
				return nil, nil, status.Errorf(codes.Internal, "iterate chunks of %s: %v", cs.Labels(), err)
			}
			if len(metas) == 0 {
				continue
			}
			// One allocation each for the chunk structs and their bytes. The bytes are copied: a head chunk's
			// are appended to while the response is being sent.
			aggrs := make([]storepb.AggrChunk, len(metas))
			raws := make([]storepb.Chunk, len(metas))
			data := make([]byte, 0, size)
			series.Chunks = make([]*storepb.AggrChunk, len(metas))
			for i, m := range metas {
				enc, ok := EncodingToPB(m.Chunk.Encoding())
				if !ok {
					return nil, nil, status.Errorf(codes.Internal, "series %s: chunk encoding %s has no StoreAPI name", cs.Labels(), m.Chunk.Encoding())
				}
				start := len(data)
				data = append(data, m.Chunk.Bytes()...)
				raws[i] = storepb.Chunk{Type: enc, Data: data[start:len(data):len(data)]}
				aggrs[i] = storepb.AggrChunk{MinTime: m.MinTime, MaxTime: m.MaxTime, Raw: &raws[i]}
				series.Chunks[i] = &aggrs[i]
			}
		}
		out = append(out, series)
	}
	if err := set.Err(); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, status.FromContextError(err).Err()
		}
		if st, ok := status.FromError(err); ok {
			return nil, nil, st.Err() // the storage's own gRPC status (a limit: ResourceExhausted), kept
		}
		return nil, nil, status.Errorf(codes.Internal, "select series: %v", err)
	}
	var warnings []string
	for _, w := range set.Warnings() {
		warnings = append(warnings, w.Error())
	}
	return out, warnings, nil
}

// LabelNames implements thanos.Store: the names of the tenant's series in range, external label names included.
func (s *TSDBStore) LabelNames(ctx context.Context, r *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	resp := &storepb.LabelNamesResponse{}
	var all []string
	err := s.forEachTenant(ctx, r.GetMatchers(), func(_ string, db TenantDB, ext labels.Labels, rest []*labels.Matcher) error {
		names, warns, err := labelQuery(db, r.GetStart(), r.GetEnd(), func(q storage.ChunkQuerier) ([]string, []string, error) {
			// No limit pushed down: the TSDB would cut before sorting, and return an arbitrary subset.
			names, ws, err := q.LabelNames(ctx, &storage.LabelHints{}, rest...)
			return names, warningStrings(ws), err
		})
		resp.Warnings = append(resp.Warnings, warns...)
		if len(names) > 0 { // no series of this tenant match: its external labels are not there either
			all = append(all, names...)
			ext.Range(func(l labels.Label) { all = append(all, l.Name) })
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Names = sortedUnique(all, r.GetLimit())
	return resp, nil
}

// LabelValues implements thanos.Store. For an external label the value is the store's own.
func (s *TSDBStore) LabelValues(ctx context.Context, r *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if r.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	resp := &storepb.LabelValuesResponse{}
	var all []string
	err := s.forEachTenant(ctx, r.GetMatchers(), func(_ string, db TenantDB, ext labels.Labels, rest []*labels.Matcher) error {
		if v := ext.Get(r.GetLabel()); v != "" {
			// The value is known; it is returned only if the tenant has a series that matches.
			if len(rest) == 0 {
				rest = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")}
			}
			names, _, err := labelQuery(db, r.GetStart(), r.GetEnd(), func(q storage.ChunkQuerier) ([]string, []string, error) {
				names, ws, err := q.LabelNames(ctx, &storage.LabelHints{Limit: 1}, rest...)
				return names, warningStrings(ws), err
			})
			if len(names) > 0 {
				all = append(all, v)
			}
			return err
		}
		values, warns, err := labelQuery(db, r.GetStart(), r.GetEnd(), func(q storage.ChunkQuerier) ([]string, []string, error) {
			vals, ws, err := q.LabelValues(ctx, r.GetLabel(), &storage.LabelHints{}, rest...) // limit: as in LabelNames
			return vals, warningStrings(ws), err
		})
		all = append(all, values...)
		resp.Warnings = append(resp.Warnings, warns...)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Values = sortedUnique(all, r.GetLimit())
	return resp, nil
}

// Info implements thanos.info.Info: one label set per tenant (only the caller's tenants when it names any;
// all, as Thanos receive does, when it names none), and the time range held.
func (s *TSDBStore) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		tenants = s.dbs.Tenants()
	}
	resp := &infopb.InfoResponse{
		ComponentType: s.component,
		Store:         &infopb.StoreInfo{MinTime: math.MaxInt64, MaxTime: math.MinInt64},
	}
	sort.Strings(tenants)
	for _, tenant := range tenants {
		db := s.dbs.DB(tenant)
		if db == nil {
			continue
		}
		minT, err := db.StartTime()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "start time of tenant %s: %v", tenant, err)
		}
		lset := &labelpb.ZLabelSet{Labels: LabelsToPB(s.externalLabels(tenant))}
		resp.LabelSets = append(resp.LabelSets, lset)
		resp.Store.TsdbInfos = append(resp.Store.TsdbInfos, &infopb.TSDBInfo{Labels: lset, MinTime: minT, MaxTime: math.MaxInt64})
		resp.Store.MinTime = min(resp.Store.MinTime, minT)
		resp.Store.MaxTime = math.MaxInt64 // live storage: data up to now, and beyond as it arrives
	}
	return resp, nil
}

func labelQuery(db TenantDB, start, end int64, f func(storage.ChunkQuerier) ([]string, []string, error)) ([]string, []string, error) {
	if end == 0 {
		end = math.MaxInt64
	}
	q, err := db.ChunkQuerier(start, end)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "open querier: %v", err)
	}
	defer func() { _ = q.Close() }()
	vals, warns, err := f(q)
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return nil, nil, st.Err() // the storage's own gRPC status (a sidecar's Prometheus down: Unavailable), kept
		}
		return nil, nil, status.Errorf(codes.Internal, "label query: %v", err)
	}
	return vals, warns, nil
}

func warningStrings(ws interface{ AsErrors() []error }) []string {
	var out []string
	for _, w := range ws.AsErrors() {
		out = append(out, w.Error())
	}
	return out
}

// sortedUnique sorts and de-duplicates ss in place and cuts it to limit (0: no limit).
func sortedUnique(ss []string, limit int64) []string {
	sort.Strings(ss)
	ss = compactStrings(ss)
	if limit > 0 && int64(len(ss)) > limit {
		ss = ss[:limit]
	}
	if ss == nil {
		ss = []string{}
	}
	return ss
}

// compareLabelsPB orders wire label sets as labels.Compare orders labels.Labels.
func compareLabelsPB(a, b []*labelpb.Label) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].Name != b[i].Name {
			if a[i].Name < b[i].Name {
				return -1
			}
			return 1
		}
		if a[i].Value != b[i].Value {
			if a[i].Value < b[i].Value {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// compactStrings removes consecutive duplicates.
func compactStrings(ss []string) []string {
	if len(ss) < 2 {
		return ss
	}
	out := ss[:1]
	for _, s := range ss[1:] {
		if s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}
